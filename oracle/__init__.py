"""The oracle: prompt and injection, the training mix, training, the query API, evaluation and audits.

The public names load on first use, so ``import oracle.tasks`` stays light::

    >>> from oracle import Oracle, Query
    >>> Oracle.__name__, Query.__name__
    ('Oracle', 'Query')
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Oracle": "api", "Query": "api",
    "OracleCard": "card", "read_card": "card",
    "TrainConfig": "train", "train_oracle": "train",
    "SuiteConfig": "suite", "run_suite": "suite",
    "Answer": "confidence", "Calibration": "confidence",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'oracle' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this hook
    return value
