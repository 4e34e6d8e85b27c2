"""The training mix of all task families, its summary for the checkpoint card, and JSONL save/load.

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

from .base import (FAMILIES, OracleExample, PathLike, TaskBuilder, allocate, check_n, load_examples, make_rng,
                   save_examples)
from .classification import build_classification
from .context_prediction import build_context_prediction
from .latentqa import build_latentqa
from .reading import build_reading
from .topics import build_topics
from .verify import build_verify

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = {"context_prediction": 0.4, "classification": 0.4, "latentqa": 0.2}

#: the builder of each task family (a new family: write its builder, add it here and to ``FAMILIES``)
BUILDERS: dict[str, TaskBuilder] = {
    "context_prediction": build_context_prediction,
    "classification": build_classification,
    "latentqa": build_latentqa,
    "topic": build_topics,
    "reading": build_reading,
    "verify": build_verify,
}

__all__ = ["BUILDERS", "DEFAULT_WEIGHTS", "build_training_mix", "summarize", "save_examples", "load_examples"]


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
