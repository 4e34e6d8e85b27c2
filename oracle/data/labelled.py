"""The labelled texts of ``classification/``: Geometry-of-Truth statements, relations, SST-2 reviews, tense
sentences, and the held-out sets (``singular_plural`` and the ``engels`` files) no training family reads.

Readers only: the questions asked about these texts live with the task builders
(:mod:`oracle.training.tasks.classification`).

Example:
    >>> sorted({c for _, c in labelled_texts("tense", "eval")})
    ['future', 'past', 'present']
"""
from __future__ import annotations

import csv
import json
from functools import lru_cache
from pathlib import Path
from typing import Optional

from hooks.errors import InputError

from oracle.data.files import PathLike, data_file, resolve_data_dir
from oracle.data.splits import check_split, split_of

#: Geometry-of-Truth files used for training (AO's five, plus the negated, counterfact, common-claim
#: and conjunction/disjunction sets; ``likely*`` hold code snippets and ``common_claim.csv`` has no true/false).
GMT_FILES = ("sp_en_trans", "cities", "smaller_than", "larger_than", "companies_true_false", "neg_cities",
             "neg_sp_en_trans", "common_claim_true_false", "counterfact_true_false", "cities_cities_conj",
             "cities_cities_disj")
TENSES = ("past", "present", "future")
#: the two classes of ``singular_plural.csv`` (its ``n_subjects`` column), in class-index order
SUBJECT_COUNTS = ("single", "multiple")


def _read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@lru_cache(maxsize=32)
def gmt_rows(root: str, name: str) -> tuple[tuple[str, int], ...]:
    """``(statement, 1 true / 0 false)`` of one Geometry-of-Truth file.

    Example:
        >>> sorted({y for _, y in gmt_rows(str(resolve_data_dir()), "cities")})
        [0, 1]
    """
    rows = _read_csv(data_file(root, f"classification/gmt/{name}.csv"))
    return tuple((r["statement"].strip(), int(r["label"])) for r in rows
                 if r.get("statement") and str(r.get("label")).strip() in ("0", "1"))


@lru_cache(maxsize=64)
def relation_rows(root: str, name: str) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """``(prompt templates, (subject, object) samples)`` of one relations file (``<type>/<name>``).

    Example:
        >>> templates, samples = relation_rows(str(resolve_data_dir()), "factual/city_in_country")
        >>> "{}" in templates[0], len(samples[0])
        (True, 2)
    """
    path = data_file(root, f"classification/relations/{name}.json")
    d = json.loads(path.read_text(encoding="utf-8"))
    return tuple(d["prompt_templates"]), tuple((s["subject"], s["object"]) for s in d["samples"])


@lru_cache(maxsize=4)
def sst2_rows(root: str, file: str) -> tuple[tuple[str, str], ...]:
    """``(review, "negative" / "positive")`` of the SST-2 ``train`` or ``dev`` file.

    Example:
        >>> sorted({c for _, c in sst2_rows(str(resolve_data_dir()), "dev")})
        ['negative', 'positive']
    """
    out = []
    for line in data_file(root, f"classification/sst2/{file}.tsv").read_text(encoding="utf-8").splitlines():
        text, _, label = line.rpartition("\t")
        if text.strip() and label.strip() in ("0", "1"):
            out.append((text.strip(), "positive" if label.strip() == "1" else "negative"))
    return tuple(out)


@lru_cache(maxsize=4)
def tense_rows(root: str) -> tuple[tuple[str, str], ...]:
    """``(sentence, tense)`` of the tense set, tenses in :data:`TENSES`."""
    rows = json.loads(data_file(root, "classification/tense/tense_processed.json").read_text(encoding="utf-8"))
    return tuple((r["sentence"].strip(), r["label"]) for r in rows if r.get("label") in TENSES)


@lru_cache(maxsize=4)
def singular_plural_rows(root: str) -> tuple[tuple[str, int], ...]:
    """``(sentence, class index into SUBJECT_COUNTS)`` of the held-out ``singular_plural`` set."""
    rows = _read_csv(data_file(root, "classification/singular_plural/singular_plural.csv"))
    return tuple((r["sentence"].strip(), SUBJECT_COUNTS.index(r["n_subjects"].strip())) for r in rows
                 if r.get("n_subjects", "").strip() in SUBJECT_COUNTS)


def engels_rows(root: str, stem: str) -> list[tuple[str, int]]:
    """``(prompt, target 0/1)`` of one held-out ``classification/engels`` file (target 1: the file's concept holds).

    Example:
        >>> sorted({y for _, y in engels_rows(str(resolve_data_dir()), "139_news_class_Politics")})
        [0, 1]
    """
    rows = _read_csv(data_file(root, f"classification/engels/{stem}.csv"))
    return [(r["prompt"].strip(), int(str(r["target"]).strip())) for r in rows
            if r.get("prompt", "").strip() and str(r.get("target")).strip() in ("0", "1")]


def labelled_texts(dataset: str, split: str, data_dir: Optional[PathLike] = None) -> list[tuple[str, str]]:
    """``(text, class name)`` rows of one split of a classification set, for open questions answered with the
    class: ``tense`` (past/present/future), ``gmt`` (true/false, every file of :data:`GMT_FILES`), ``sst2``
    (negative/positive; train file vs dev file) and ``singular_plural`` (singular/plural; held out from
    training, its two halves split by a hash of the text serve a probe and the suite).

    Example:
        >>> sorted({c for _, c in labelled_texts("sst2", "eval")})
        ['negative', 'positive']
    """
    check_split(split)
    root = str(resolve_data_dir(data_dir))
    if dataset == "tense":
        return [r for r in tense_rows(root) if split_of(r[0], salt="tense") == split]
    if dataset == "gmt":
        return [(t, "true" if y else "false") for f in GMT_FILES for t, y in gmt_rows(root, f)
                if split_of(t, salt="gmt") == split]
    if dataset == "sst2":
        return list(sst2_rows(root, "train" if split == "train" else "dev"))
    if dataset == "singular_plural":
        return [(t, ("singular", "plural")[c]) for t, c in singular_plural_rows(root)
                if split_of(t, 0.5, salt="heldout-half") == split]
    raise InputError(f"no labelled texts for {dataset!r}: use tense, gmt, sst2 or singular_plural")


def relation_names(data_dir: Optional[PathLike] = None) -> list[str]:
    """``<type>/<name>`` of every relations file, e.g. ``commonsense/object_superclass``.

    Example:
        >>> "factual/city_in_country" in relation_names()
        True
    """
    root = data_file(data_dir, "classification/relations")
    return sorted(f"{p.parent.name}/{p.stem}" for p in root.glob("*/*.json"))


def heldout_dataset_names(data_dir: Optional[PathLike] = None) -> list[str]:
    """The held-out evaluation sets present: ``singular_plural`` and ``engels/<file stem>``.

    Example:
        >>> heldout_dataset_names()[:2]
        ['singular_plural', 'engels/139_news_class_Politics']
    """
    root = resolve_data_dir(data_dir) / "classification"
    names = ["singular_plural"] if (root / "singular_plural" / "singular_plural.csv").is_file() else []
    engels = sorted((root / "engels").glob("*.csv"))
    return names + [f"engels/{p.stem}" for p in engels]
