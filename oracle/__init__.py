"""The oracle, with a subpackage per stage of what a user does with it, each importing only those below it:

``oracle.cli`` (the ``ao`` command) > ``oracle.audit`` > ``oracle.evals`` > ``oracle.organisms`` >
``oracle.training`` > ``oracle.core`` (what a user loads and asks: the query API, its card, prompt, injection
scaling, batching and confidence) > ``oracle.data`` (dataset readers, hash splits, chat helpers).

The public names load on first use, so ``import oracle.data`` stays light::

    >>> from oracle import Oracle, Query
    >>> Oracle.__name__, Query.__name__
    ('Oracle', 'Query')
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Oracle": "core.api", "Query": "core.api",
    "OracleCard": "core.card", "read_card": "core.card",
    "OracleRef": "core.reference", "parse_oracle_ref": "core.reference",
    "TrainConfig": "training.config", "train_oracle": "training.loop",
    "SuiteConfig": "evals.suite", "run_suite": "evals.suite",
    "Answer": "core.confidence", "Calibration": "core.confidence",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'oracle' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this hook
    return value
