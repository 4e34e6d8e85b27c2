"""The unseen-question sets: concepts and datasets that no part of the training mix reads, asked three ways
(yes/no naming the concept, a content choice, an open question) by :mod:`oracle.evals.unseen`.

Six sets from the public engels probing files (``classification/engels``): news headlines about politics
(AG News) and the five wikidata occupation sets, where a passage ends at a person's name and the label says
whether that person is a journalist, athlete, politician, singer or researcher. The training families never
open ``classification/engels`` and never name a concept of :data:`UNSEEN_CONCEPTS` (:func:`names_unseen_concept`
filters them; ``tests/test_unseen.py`` proves both), so every question here is one the oracle was never taught.

Example:
    >>> [s.name for s in UNSEEN_SETS][:2]
    ['news_politics', 'journalist']
    >>> names_unseen_concept("The Political career of Nero")
    True
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence

from hooks.errors import InputError

from oracle.data.files import PathLike, data_file, resolve_data_dir
from oracle.data.splits import stable_hash

UNSEEN_DATASET_DIR = "classification/engels"
OCCUPATIONS = ("journalist", "athlete", "politician", "singer", "researcher")
NEWS_TOPICS = ("politics", "sports", "business", "science")


@dataclass(frozen=True)
class UnseenSet:
    """One never-trained concept set: where its texts are, the concept, and its three questions."""

    name: str
    file: str                          # under classification/engels
    concept: str                       # the word the yes/no question names and the open answer should start with
    yes_no: str                        # "... {concept} ...?" is already filled in
    choice: str                        # the content question; ``candidates`` are its answers, ``concept`` first
    candidates: tuple[str, ...]
    open: str                          # answered with one word, scored on the concept's first token
    read: str                          # "first" or "last": which token vectors of the text are injected


def _occupation(name: str, file: str) -> UnseenSet:
    article = "an" if name[0] in "aeiou" else "a"
    return UnseenSet(name, file, name, f"Is the person named at the end of this text {article} {name}?",
                     "What is the occupation of the person named at the end of this text?",
                     (name,) + tuple(o for o in OCCUPATIONS if o != name),
                     "What is the occupation of the person named at the end of this text? Answer with one word.",
                     "last")


UNSEEN_SETS: tuple[UnseenSet, ...] = (
    UnseenSet("news_politics", "139_news_class_Politics.csv", "politics", "Is this news article about politics?",
              "What is this news article about?", NEWS_TOPICS,
              "What is this news article about? Answer with one word.", "first"),
    _occupation("journalist", "59_wikidata_occupation_isjournalist.csv"),
    _occupation("athlete", "60_wikidata_occupation_isathlete.csv"),
    _occupation("politician", "62_wikidata_occupation_ispolitician.csv"),
    _occupation("singer", "63_wikidata_occupation_issinger.csv"),
    _occupation("researcher", "64_wikidata_occupation_isresearcher.csv"),
)

#: every concept the unseen sets name, and word stems that would give one away ("political", "singers")
UNSEEN_CONCEPTS: tuple[str, ...] = tuple(sorted({s.concept for s in UNSEEN_SETS} | set(OCCUPATIONS)))
_UNSEEN_STEMS = ("politic", "journalis", "athlet", "singer", "research")


def names_unseen_concept(text: str) -> bool:
    """Whether ``text`` names (a word form of) a concept of the unseen sets: training questions never do.

    Example:
        >>> names_unseen_concept("Does this text mention harbour?"), names_unseen_concept("Is he an Athlete?")
        (False, True)
    """
    low = text.lower()
    return any(stem in low for stem in _UNSEEN_STEMS)


def unseen_set(name: str) -> UnseenSet:
    """The set called ``name`` (one-line error naming the known ones).

    Example:
        >>> unseen_set("singer").candidates[0]
        'singer'
    """
    for s in UNSEEN_SETS:
        if s.name == name:
            return s
    raise InputError(f"no unseen set {name!r}: use one of {', '.join(s.name for s in UNSEEN_SETS)}")


def check_unseen_names(names: Optional[Sequence[str]]) -> list[UnseenSet]:
    """The sets named (all when ``names`` is empty or None)."""
    return [unseen_set(n) for n in names] if names else list(UNSEEN_SETS)


_MAX_CHARS = 400   # the wikidata passages end at the person's name; the news texts start with the headline


def _trim(text: str, read: str) -> str:
    """At most ``_MAX_CHARS`` characters, cut at a space so no word is split (the end kept for "last")."""
    text = " ".join(text.split())
    if len(text) <= _MAX_CHARS:
        return text
    if read == "last":
        cut = text[-_MAX_CHARS:]
        return cut[cut.index(" ") + 1:] if " " in cut else cut
    cut = text[:_MAX_CHARS]
    return cut[:cut.rindex(" ")] if " " in cut else cut


@lru_cache(maxsize=16)
def unseen_rows(root: str, name: str) -> tuple[tuple[str, int], ...]:
    """``(text, label)`` of every row of one set (label 1: the concept holds), texts trimmed to the part read."""
    spec = unseen_set(name)
    path = data_file(root, f"{UNSEEN_DATASET_DIR}/{spec.file}")
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "prompt" not in rows[0] or "target" not in rows[0]:
        raise InputError(f"{path} has no prompt,target columns: restore it from shared/data")
    out = []
    for r in rows:
        text, label = (r.get("prompt") or "").strip(), str(r.get("target")).strip()
        if text and label in ("0", "1") and re.search(r"[A-Za-z]", text):
            out.append((_trim(text, spec.read), int(label)))
    return tuple(out)


def unseen_split(text: str) -> str:
    """``"eval"`` (the items asked) or ``"probe"`` (labels for the probes), half and half by a hash of the text.

    Example:
        >>> sorted({unseen_split(f"text {i}") for i in range(50)})
        ['eval', 'probe']
    """
    return "eval" if stable_hash("unseen:" + " ".join(text.split()).lower()) % 2 else "probe"


def unseen_items(name: str, n: int, split: str = "eval", seed: int = 0,
                 data_dir: Optional[PathLike] = None) -> list[tuple[str, int]]:
    """``n`` label-balanced ``(text, label)`` rows of one side of a set, drawn reproducibly.

    Example:
        >>> rows = unseen_items("news_politics", 10)
        >>> sum(y for _, y in rows)
        5
    """
    if split not in ("eval", "probe"):
        raise InputError(f"unseen split {split!r}: use eval or probe")
    if n < 2:
        raise InputError(f"an unseen set needs at least 2 items, not {n}: raise --suite-n")
    root = str(resolve_data_dir(data_dir))
    rows = [r for r in unseen_rows(root, name) if unseen_split(r[0]) == split]
    by_label = {y: sorted((r for r in rows if r[1] == y), key=lambda r: stable_hash(f"{seed}:{r[0]}")) for y in (0, 1)}
    half = n // 2
    if min(len(v) for v in by_label.values()) < n - half:
        have = min(len(v) for v in by_label.values())
        raise InputError(f"unseen set {name} has only {have} items of one label on its {split} side: use --suite-n "
                         f"<= {2 * have}")
    picked = by_label[1][:half] + by_label[0][:n - half]
    return sorted(picked, key=lambda r: stable_hash(f"order:{seed}:{r[0]}"))
