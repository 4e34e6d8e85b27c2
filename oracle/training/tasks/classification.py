"""Yes/no classification questions over the texts of ``classification/`` (gmt, relations, sst2, tense),
and the held-out evaluation sets (``singular_plural`` and the ``engels`` files), which are never
used for training.

Question templates come from ``classification/paraphrases/question.json``; every question carries
the prefix ``"Answer with 'Yes' or 'No' only. "``, the answer is ``"Yes"`` or ``"No"`` (balanced).
Where the data has a natural negative (gmt true/false statements, relations with a wrong object),
the question is fixed and the text decides the answer; elsewhere (sst2, tense, held-out sets) half
the questions ask about a wrong label ("Is this sentence in the past tense?" for a future one).
Optionally (``open_frac``) a share of the examples asks an open question instead ("Which tense is this
sentence in?"), answered with the class name, and (``negated_frac``) a share of the yes/no questions is
negated ("Is this sentence not in the past tense?", "Is this statement false?"), answered Yes when the text
is *not* of the class named.

The context is the plain text (no chat template); the positions are one of the last 3 tokens or a
window ending at the last token.
"""
from __future__ import annotations

import json
import logging
import random
import re
from functools import lru_cache
from typing import Callable, Optional, Sequence, Union

from hooks.errors import InputError

from oracle.data.chat import tokenize_text
from oracle.data.files import PathLike, data_file, resolve_data_dir
from oracle.data.labelled import (GMT_FILES, SUBJECT_COUNTS, TENSES, engels_rows, gmt_rows, heldout_dataset_names,
                                    relation_names, relation_rows, singular_plural_rows, sst2_rows, tense_rows)
from oracle.data.splits import check_share, check_split, make_rng, split_of
from oracle.training.tasks.base import (LAST_MAX, MAX_POSITIONS, NO, OracleExample, YES, YES_NO_PREFIX, allocate,
                                        balanced_bools, balanced_layers, check_n)

log = logging.getLogger(__name__)

FAMILY = "classification"

TRAIN_GROUPS = ("gmt", "relations", "sst2", "tense")
HELDOUT_GROUPS = ("singular_plural", "engels")

#: One open question per training group, answered with the text's class name ("Past", "True"): a direct
#: readout of the feature with no class named in the question. Mixed into training (``open_frac``), it is
#: what lets the yes/no questions that name a class learn on the 135M default model
#: (``experiments/2026-learnability/oracle_learnability.py --open-frac``; numbers in the README).
OPEN_QUESTIONS = {
    "gmt": "Is this statement true or false? Answer with one word.",
    "relations": "Is this statement true or false? Answer with one word.",
    "sst2": "Is this review positive or negative? Answer with one word.",
    "tense": "Which tense is this sentence in? Answer with one word.",
}

#: Negated yes/no questions per training group (``{}``: the class asked about). question.json has none for
#: the training groups, yet half the engels held-out questions are negations ("Is this person not a
#: journalist?"): an oracle that reads the feature but ignores "not" scores exactly chance on those sets.
NEGATED_QUESTIONS = {
    "gmt": ("Is this statement false?", "Is this statement not true?", "Would you say this is incorrect?",
            "Is this claim untrue?", "Does this statement get the facts wrong?"),
    "sst2": ("Is this review not {}?", "Is the sentiment of this review something other than {}?",
             "Would you say this review is not {}?", "Is this review anything but {}?"),
    "tense": ("Is this sentence not in the {} tense?", "Is the tense of this sentence something other than {}?",
              "Would you say this is not written in the {} tense?", "Is this sentence in a tense other than {}?"),
}
NEGATED_QUESTIONS["relations"] = NEGATED_QUESTIONS["gmt"]


# ---------------------------------------------------------------- loading

@lru_cache(maxsize=4)
def class_questions(root: str) -> dict:
    path = data_file(root, "classification/paraphrases/question.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON ({e.msg}): restore it from shared/data") from None


def classification_dataset_names(data_dir: Optional[PathLike] = None) -> list[str]:
    """Training dataset names: ``gmt/<file>``, ``relations/<type>/<name>``, ``sst2``, ``tense``.

    Example:
        >>> "gmt/cities" in classification_dataset_names()
        True
    """
    return ([f"gmt/{g}" for g in GMT_FILES] + [f"relations/{r}" for r in relation_names(data_dir)] + ["sst2", "tense"])


def _normalize_name(name: str) -> str:
    name = str(name).strip().strip("/")
    return name[len("classification/"):] if name.startswith("classification/") else name


def _is_heldout(name: str) -> bool:
    head = _normalize_name(name).split("/", 1)[0]
    return head in HELDOUT_GROUPS or bool(re.match(r"^\d+_", head))


def _resolve_train_datasets(datasets: Optional[Sequence[str]], data_dir) -> dict[str, list[str]]:
    """Group -> dataset names, refusing held-out sets and unknown names."""
    known = classification_dataset_names(data_dir)
    wanted = list(TRAIN_GROUPS) if datasets is None else list(datasets)
    if isinstance(datasets, str):
        wanted = [datasets]
    groups: dict[str, list[str]] = {}
    for name in map(_normalize_name, wanted):
        if _is_heldout(name):
            raise InputError(f"classification/{name} is held out for evaluation and is never used for training: "
                             f"use build_heldout_classification() to evaluate on it")
        matches = [k for k in known if k == name or k.startswith(name.rstrip("/") + "/")]
        if not matches:
            raise InputError(f"unknown classification dataset {name!r}: use a group ({', '.join(TRAIN_GROUPS)}) "
                             f"or a name from classification_dataset_names()")
        for m in matches:
            group = m.split("/", 1)[0]
            if m not in groups.setdefault(group, []):
                groups[group].append(m)
    return groups


# ---------------------------------------------------------------- per-dataset question makers

Sample = tuple[str, str, str, str]   # (text, question, class of the text, class the question asks about)
Sampler = Callable[[random.Random, bool, bool], Sample]   # (rng, want_yes, negated) -> Sample


class _EmptySplit(InputError):
    """A training dataset has no rows in the requested split."""


def _make_sampler(root: str, name: str, split: str) -> Sampler:
    """A function ``(rng, want_yes, negated) -> (text, question, class, asked)`` for one training dataset and
    split. A negated question about ``asked`` is answered Yes when the text's class is not ``asked``; with
    ``negated=False`` the random draws are exactly those of the affirmative-only mix."""
    q = class_questions(root)
    neg = NEGATED_QUESTIONS[name.split("/", 1)[0]]
    if name.startswith("gmt/"):
        rows = [r for r in gmt_rows(root, name[4:]) if split_of(r[0], salt="gmt") == split]
        by_label = {1: [r for r in rows if r[1] == 1], 0: [r for r in rows if r[1] == 0]}
        if not by_label[0] or not by_label[1]:
            raise _EmptySplit(f"classification/{name} has no true or no false statements in split {split!r}")

        def gmt(rng: random.Random, want_yes: bool, negated: bool) -> Sample:
            text, label = rng.choice(by_label[1 if want_yes != negated else 0])
            return text, rng.choice(neg if negated else q["geometry_of_truth"]), "true" if label else "false", "true"
        return gmt
    if name.startswith("relations/"):
        templates, samples = relation_rows(root, name[len("relations/"):])
        objects = sorted({o for _, o in samples})
        mine = [s for s in samples if split_of(f"{name}:{s[0]}", salt="relations") == split]
        if not mine or len(objects) < 2:
            raise _EmptySplit(f"classification/{name} has too few samples for split {split!r}")

        def relation(rng: random.Random, want_yes: bool, negated: bool) -> Sample:
            true = want_yes != negated
            subject, obj = rng.choice(mine)
            if not true:
                obj = rng.choice([o for o in objects if o != obj])
            text = rng.choice(templates).format(subject) + f" {obj}."
            return text, rng.choice(neg if negated else q["relations"]), "true" if true else "false", "true"
        return relation
    if name == "sst2":
        rows = sst2_rows(root, "train" if split == "train" else "dev")

        def sst2(rng: random.Random, want_yes: bool, negated: bool) -> Sample:
            text, label = rng.choice(rows)
            asked = label if want_yes != negated else ("negative" if label == "positive" else "positive")
            return text, rng.choice(neg).format(asked) if negated else rng.choice(q["sst2"][asked]), label, asked
        return sst2
    if name == "tense":
        rows = [r for r in tense_rows(root) if split_of(r[0], salt="tense") == split]

        def tense(rng: random.Random, want_yes: bool, negated: bool) -> Sample:
            text, label = rng.choice(rows)
            asked = label if want_yes != negated else rng.choice([t for t in TENSES if t != label])
            return text, rng.choice(neg if negated else q["tense"]).format(asked), label, asked
        return tense
    raise InputError(f"unknown classification dataset {name!r}: use a name from classification_dataset_names()")


def choose_positions(rng: random.Random, n_tokens: int, position: str = "mixed", max_window: int = 20) -> list[int]:
    """Read positions at the end of an ``n_tokens`` context.

    ``"last"``: the last token; ``"near_end"``: one of the last 3; ``"window"``: 2..max_window tokens
    ending at the last; ``"last:50"`` (:data:`LAST_MAX`): the last 50 tokens (every token of a shorter context);
    ``"mixed"``: near_end or window.

    Example:
        >>> choose_positions(random.Random(0), 10, "last"), choose_positions(random.Random(0), 3, "last:50")
        ([9], [0, 1, 2])
    """
    if n_tokens < 1:
        raise InputError("cannot choose positions in an empty context")
    if position == "mixed":
        position = rng.choice(("near_end", "window"))
    if position == "last":
        return [n_tokens - 1]
    if position == "near_end":
        return [n_tokens - 1 - rng.randint(0, min(2, n_tokens - 1))]
    if position == "window":
        k = rng.randint(min(2, n_tokens), max(min(2, n_tokens), min(max_window, MAX_POSITIONS, n_tokens)))
        return list(range(n_tokens - k, n_tokens))
    if position == LAST_MAX:
        return list(range(max(0, n_tokens - MAX_POSITIONS), n_tokens))
    raise InputError(f"unknown position mode {position!r}: use last, near_end, window, {LAST_MAX} or mixed")


def build_classification(
    tokenizer,
    n_layers: int,
    n: int,
    seed: int,
    data_dir: Optional[PathLike] = None,
    split: str = "train",
    *,
    datasets: Optional[Sequence[str]] = None,
    group_weights: Optional[dict[str, float]] = None,
    max_context_tokens: int = 64,
    position: str = "mixed",
    max_window: int = 20,
    open_frac: float = 0.0,
    negated_frac: float = 0.0,
) -> list[OracleExample]:
    """``n`` balanced yes/no examples over the training groups (equal weight per group by default,
    uniform over the files of a group). ``datasets``: groups or names to restrict to; naming a held-out
    set (``singular_plural``, ``engels/...``) raises InputError. The eval split holds texts hashed out
    of training (SST-2: its dev file). ``open_frac``: the share of examples that ask the group's open
    question (:data:`OPEN_QUESTIONS`) instead, answered with the text's class name. ``negated_frac``: the share
    of the yes/no examples whose question is negated (:data:`NEGATED_QUESTIONS`; meta ``negated=True``).

    Example:
        >>> ex = build_classification(tok, 30, n=1, seed=0)[0]                       # doctest: +SKIP
        >>> ex.question, ex.answer                                                  # doctest: +SKIP
        ("Answer with 'Yes' or 'No' only. Is this statement true?", 'No')
    """
    n, split = check_n(n), check_split(split)
    check_share("open_frac", open_frac)
    check_share("negated_frac", negated_frac)
    root = str(resolve_data_dir(data_dir))
    groups = _resolve_train_datasets(datasets, root)
    if group_weights is None:
        weights = {g: 1.0 for g in groups}
    else:
        weights = {g: float(group_weights.get(g, 0.0)) for g in groups}
    if sum(weights.values()) <= 0:
        raise InputError(f"group_weights {group_weights} give no weight to the chosen groups {sorted(groups)}")
    rng = make_rng(seed, f"{FAMILY}:{split}")
    samplers: dict[str, Sampler] = {}
    plan: list[str] = []
    for group, count in (allocate(n, weights) if n else {}).items():
        if count == 0:
            continue
        for name in groups[group]:
            try:
                samplers[name] = _make_sampler(root, name, split)
            except _EmptySplit as e:   # a small relations file may have no subject hashed into a split
                log.debug("skipping %s: %s", name, e)
        names = [nm for nm in groups[group] if nm in samplers]
        if not names:
            raise InputError(f"the classification group {group} has no data in split {split!r}")
        plan += [rng.choice(names) for _ in range(count)]
    answers = balanced_bools(rng, len(plan))
    # drawn only when asked for, so that open_frac=0 builds exactly the yes/no-only mix
    is_open = set(rng.sample(range(len(plan)), round(open_frac * len(plan)))) if open_frac > 0 else set()
    yes_no = [i for i in range(len(plan)) if i not in is_open]
    is_negated = set(rng.sample(yes_no, round(negated_frac * len(yes_no)))) if negated_frac > 0 else set()
    out: list[OracleExample] = []
    for i, (name, want_yes) in enumerate(zip(plan, answers)):
        for _ in range(100):
            text, question, cls, asked = samplers[name](rng, want_yes, i in is_negated)
            ids = tokenize_text(tokenizer, text)
            if 0 < len(ids) <= max_context_tokens:
                break
        else:
            raise InputError(f"classification/{name} has no texts within {max_context_tokens} tokens: "
                             f"raise max_context_tokens")
        meta = {"split": split, "label": int(want_yes), "class": cls, "asked": asked, "text": text,
                "negated": i in is_negated}
        if i in is_open:
            question, answer = OPEN_QUESTIONS[name.split("/", 1)[0]], cls.capitalize()
            meta.update(open=True, label=None, asked=None)
        else:
            question, answer = YES_NO_PREFIX + question, YES if want_yes else NO
        out.append(OracleExample(
            family=FAMILY, context_ids=ids, positions=choose_positions(rng, len(ids), position, max_window), layer=-1,
            question=question, answer=answer, dataset=name, meta=meta,
        ))
    rng.shuffle(out)
    for ex, layer in zip(out, balanced_layers(rng, len(out), n_layers)):
        ex.layer = layer
    log.info("built %d classification examples (%s split) over %s", len(out), split, sorted(groups))
    return out


# ---------------------------------------------------------------- held-out evaluation sets

def _engels_key(stem: str) -> str:
    """question.json key of an engels file stem.

    Example:
        >>> _engels_key("59_wikidata_occupation_isjournalist")
        'wikidata_isjournalist'
    """
    return re.sub(r"^\d+_", "", stem).lower().replace("occupation_", "")


def heldout_rows(root: str, dataset: str) -> tuple[list[tuple[str, int]], dict[int, list[str]], list[str]]:
    """(rows (text, class index), class index -> question paraphrases, class names)."""
    q = class_questions(root)
    if dataset == "singular_plural":
        classes = list(SUBJECT_COUNTS)
        data = list(singular_plural_rows(root))
        return data, {i: list(q["singular_plural"][c]) for i, c in enumerate(classes)}, classes
    stem = dataset.split("/", 1)[1]
    key = _engels_key(stem)
    if key not in q.get("engels", {}):
        raise InputError(f"no question templates for engels set {stem!r} in paraphrases/question.json")
    pos_name, neg_name = list(q["engels"][key])[:2]
    data = [(text, 0 if target == 1 else 1) for text, target in engels_rows(root, stem)]
    return data, {0: list(q["engels"][key][pos_name]), 1: list(q["engels"][key][neg_name])}, [pos_name, neg_name]


def build_heldout_classification(
    tokenizer,
    n_layers: int,
    dataset: str,
    n: Optional[int] = 200,
    seed: int = 0,
    data_dir: Optional[PathLike] = None,
    position: str = "last",
    *,
    max_context_tokens: int = 128,
    layers: Optional[Union[int, Sequence[int]]] = None,
    text_half: Optional[str] = None,
) -> list[OracleExample]:
    """``n`` balanced held-out yes/no examples (a quarter per text class x answer) from one set of
    :func:`heldout_dataset_names`. ``position``: ``"last"`` (the last token) or ``"last:50"`` (every token,
    the last 50 at most). Texts longer than ``max_context_tokens`` are skipped. ``layers``: a layer or
    list of layers to cycle through (default: the three depths, one third each). ``n=None``: every usable
    text once (twice the smaller class's count).

    ``text_half`` (``"train"`` or ``"eval"``) keeps only one half of the set's texts, split by a hash of the
    text. It exists for ceiling diagnostics (``experiments/2026-learnability/oracle_learnability.py --dataset singular_plural``:
    how well does an oracle trained on this very set do?), never for the shipped oracle's training.

    Example:
        >>> exs = build_heldout_classification(tok, 30, "singular_plural", n=4)       # doctest: +SKIP
        >>> sorted(e.answer for e in exs)                                            # doctest: +SKIP
        ['No', 'No', 'Yes', 'Yes']
    """
    if n is not None:
        n = check_n(n)
    if text_half is not None:
        check_split(text_half)
    if position not in ("last", LAST_MAX):
        raise InputError(f"unknown held-out position mode {position!r}: use last or {LAST_MAX}")
    root = str(resolve_data_dir(data_dir))
    names = heldout_dataset_names(root)
    if dataset not in names:
        aliases = {nm.split("/", 1)[-1]: nm for nm in names}
        aliases.update({_engels_key(nm.split("/", 1)[-1]): nm for nm in names if nm.startswith("engels/")})
        if dataset not in aliases:
            raise InputError(f"unknown held-out dataset {dataset!r}: use one of {', '.join(names)}")
        dataset = aliases[dataset]
    rows, questions, classes = heldout_rows(root, dataset)
    rng = make_rng(seed, f"heldout:{dataset}")
    by_class: dict[int, list[str]] = {0: [], 1: []}
    for text, c in rows:
        if text_half is None or split_of(text, 0.5, salt="heldout-half") == text_half:
            by_class[c].append(text)
    for c in by_class:
        rng.shuffle(by_class[c])
    if n is None:
        n = 2 * min(sum(0 < len(tokenize_text(tokenizer, t)) <= max_context_tokens for t in texts)
                    for texts in by_class.values())
    # a quarter of the examples per (text class, answer)
    plan = [(i % 2, (i // 2) % 2 == 0) for i in range(n)]
    cursor = {0: 0, 1: 0}
    out: list[OracleExample] = []
    for c, want_yes in plan:
        while True:
            if cursor[c] >= len(by_class[c]):
                raise InputError(f"{dataset} has too few '{classes[c]}' texts within {max_context_tokens} tokens for "
                                 f"n={n}: lower n or raise max_context_tokens")
            text = by_class[c][cursor[c]]
            cursor[c] += 1
            ids = tokenize_text(tokenizer, text)
            if 0 < len(ids) <= max_context_tokens:
                break
        asked = c if want_yes else 1 - c
        out.append(OracleExample(
            family=FAMILY, context_ids=ids, positions=choose_positions(rng, len(ids), position), layer=-1,
            question=YES_NO_PREFIX + rng.choice(questions[asked]), answer=YES if want_yes else NO, dataset=dataset,
            meta={"split": "heldout", "label": int(want_yes), "class": classes[c], "asked": classes[asked], "text": text,
                  "position": position},
        ))
    rng.shuffle(out)
    if layers is None:
        chosen = balanced_layers(rng, len(out), n_layers)
    else:
        cycle = [int(layers)] if isinstance(layers, int) else [int(x) for x in layers]
        if not cycle or any(not 0 <= x < n_layers for x in cycle):
            raise InputError(f"layers {layers} must be block indices in 0..{n_layers - 1}")
        chosen = [cycle[i % len(cycle)] for i in range(len(out))]
    for ex, layer in zip(out, chosen):
        ex.layer = layer
    log.info("built %d held-out examples from %s (%s)", len(out), dataset, position)
    return out
