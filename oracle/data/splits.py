"""Reproducible randomness and the hash split of items into train and eval: every reader and task builder
splits the same way, so an item is never in both."""
from __future__ import annotations

import hashlib
import random

from hooks.errors import InputError

EVAL_FRACTION = 0.1
SPLITS = ("train", "eval")


def make_rng(seed: int, name: str) -> random.Random:
    """A ``random.Random`` seeded from ``(seed, name)``; stable across runs and Python processes."""
    return random.Random(f"{int(seed)}:{name}")


def stable_hash(key: str) -> int:
    """A 64-bit hash of ``key`` that does not depend on PYTHONHASHSEED."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


def split_of(key: str, eval_fraction: float = EVAL_FRACTION, salt: str = "ao-split") -> str:
    """Deterministic ``"train"``/``"eval"`` assignment of an item by a hash of ``key``.

    Example:
        >>> split_of("goal-vocabulary-contronym") in ("train", "eval")
        True
    """
    return "eval" if stable_hash(f"{salt}:{key}") % 1_000_000 < eval_fraction * 1_000_000 else "train"


def check_split(split: str) -> str:
    """Validate a split name."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}: use 'train' or 'eval'")
    return split


def check_share(name: str, value: float) -> float:
    """Validate a share of examples (0..1), naming the option in the error.

    Example:
        >>> check_share("open_frac", 0.5)
        0.5
    """
    if not 0.0 <= float(value) <= 1.0:   # NaN fails too
        raise InputError(f"{name} {value} is outside [0, 1]: give a share such as 0.6")
    return float(value)
