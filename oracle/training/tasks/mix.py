"""The registry of task families (:data:`BUILDERS`, whose keys are :data:`FAMILIES`) and the check of an example
against it, the training mix of all families, its summary for the checkpoint card, and JSONL save/load.

Example:
    >>> exs = build_training_mix(tok, 30, n_total=100, seed=0)                     # doctest: +SKIP
    >>> summarize(exs)["families"]                                                 # doctest: +SKIP
    {'classification': 40, 'context_prediction': 40, 'latentqa': 20}
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Iterable, Optional, Sequence

from hooks.errors import InputError

from oracle.data.files import PathLike
from oracle.data.splits import make_rng
from oracle.training.tasks.base import (MAX_POSITIONS, OracleExample, TaskBuilder, allocate, check_n, load_examples,
                                        save_examples)
from oracle.training.tasks.classification import build_classification
from oracle.training.tasks.context_prediction import build_context_prediction
from oracle.training.tasks.latentqa import build_latentqa
from oracle.training.tasks.reading import build_reading
from oracle.training.tasks.context_diff import build_context_diff
from oracle.training.tasks.topics import build_topics
from oracle.training.tasks.verify import build_verify

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = {"context_prediction": 0.4, "classification": 0.4, "latentqa": 0.2}

#: the builder of each task family, the one list of families (a new family: write its builder and add it here)
BUILDERS: dict[str, TaskBuilder] = {
    "context_prediction": build_context_prediction,
    "classification": build_classification,
    "latentqa": build_latentqa,
    "topic": build_topics,
    "reading": build_reading,
    "verify": build_verify,
    "context_diff": build_context_diff,
}

#: the task families, in the order of :data:`BUILDERS`
FAMILIES: tuple[str, ...] = tuple(BUILDERS)

__all__ = ["BUILDERS", "DEFAULT_WEIGHTS", "FAMILIES", "build_training_mix", "check_example", "summarize",
           "save_examples", "load_examples"]


def check_example(ex: OracleExample, n_layers: Optional[int] = None) -> OracleExample:
    """Raise InputError unless ``ex`` is usable: known family, 1..50 positions inside the context, answer given.

    Example:
        >>> check_example(OracleExample("classification", [1, 2, 3], [2], 15, "Is it?", "No")).answer
        'No'
    """
    if ex.family not in FAMILIES:
        raise InputError(f"unknown task family {ex.family!r}: use one of {', '.join(FAMILIES)}")
    if not ex.context_ids:
        raise InputError(f"example from {ex.dataset or ex.family} has no context tokens")
    where = ex.dataset or ex.family
    if not 1 <= len(ex.positions) <= MAX_POSITIONS:
        raise InputError(f"example from {where} has {len(ex.positions)} positions: use 1..{MAX_POSITIONS}")
    if any(not 0 <= p < len(ex.context_ids) for p in ex.positions):
        raise InputError(f"example from {where} has a position outside its {len(ex.context_ids)}-token context")
    if n_layers is not None and not 0 <= ex.layer < n_layers:
        raise InputError(f"example from {where} reads layer {ex.layer}, but the model has {n_layers} blocks")
    if not ex.question.strip() or not ex.answer.strip():
        raise InputError(f"example from {ex.dataset or ex.family} has an empty question or answer")
    return ex


def build_training_mix(
    tokenizer,
    n_layers: int,
    n_total: int,
    seed: int,
    data_dir: Optional[PathLike] = None,
    weights: Optional[dict[str, float]] = None,
    onpolicy_chats: Optional[Sequence[Sequence[dict]]] = None,
    options: Optional[dict[str, dict]] = None,
    split: str = "train",
) -> list[OracleExample]:
    """``n_total`` examples split over the families by ``weights`` (default 40/40/20), shuffled
    deterministically. ``onpolicy_chats`` join the context-prediction sources; ``options`` passes extra
    keyword arguments per family, e.g. ``{"classification": {"position": "last"}}``.
    """
    n_total = check_n(n_total)
    weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
    bad = set(weights) - set(FAMILIES)
    if bad:
        raise InputError(f"unknown task famil(ies) {sorted(bad)} in weights: use {', '.join(FAMILIES)}")
    options = dict(options or {})
    bad = set(options) - set(FAMILIES)
    if bad:
        raise InputError(f"unknown task famil(ies) {sorted(bad)} in options: use {', '.join(FAMILIES)}")
    counts = allocate(n_total, weights) if n_total else {k: 0 for k in weights}
    out: list[OracleExample] = []
    for family, count in counts.items():
        if count == 0:
            continue
        opts = dict(options.get(family, {}))
        if family == "context_prediction" and onpolicy_chats is not None:
            opts.setdefault("chats", onpolicy_chats)
        out += BUILDERS[family](tokenizer, n_layers, count, seed, data_dir, split, **opts)
    make_rng(seed, f"mix:{split}").shuffle(out)
    log.info("built a %s mix of %d examples: %s", split, len(out), counts)
    return out


def summarize(examples: Iterable[OracleExample]) -> dict:
    """Counts for the checkpoint card: per family, per family and dataset, per layer, per answer
    (yes/no ones), plus the mean number of positions and of context tokens.

    Example:
        >>> summarize([OracleExample("classification", [1, 2], [1], 7, "Q?", "Yes", "sst2")])["datasets"]
        {'classification': {'sst2': 1}}
    """
    examples = list(examples)
    families: Counter = Counter()
    datasets: dict[str, Counter] = {}
    layers: Counter = Counter()
    answers: Counter = Counter()
    for ex in examples:
        families[ex.family] += 1
        datasets.setdefault(ex.family, Counter())[ex.dataset or "?"] += 1
        layers[str(ex.layer)] += 1
        if ex.answer in ("Yes", "No"):
            answers[ex.answer] += 1
    n = len(examples)
    return {
        "n": n,
        "families": dict(sorted(families.items())),
        "datasets": {f: dict(sorted(c.items())) for f, c in sorted(datasets.items())},
        "layers": dict(sorted(layers.items(), key=lambda kv: int(kv[0]))),
        "yes_no_answers": dict(sorted(answers.items())),
        "mean_positions": round(sum(len(e.positions) for e in examples) / n, 2) if n else 0.0,
        "mean_context_tokens": round(sum(len(e.context_ids) for e in examples) / n, 2) if n else 0.0,
    }
