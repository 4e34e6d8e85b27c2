"""Classification metrics for probes and oracles: accuracy, AUROC, percentile-bootstrap CIs, baselines."""
from __future__ import annotations

import logging
import math
import warnings
from typing import Any, Callable

import numpy as np

from hooks.errors import InputError

log = logging.getLogger(__name__)


def _pair(y_true: Any, other: Any, other_name: str) -> tuple[np.ndarray, np.ndarray]:
    from probes.linear import to_numpy

    a, b = to_numpy(y_true), to_numpy(other)
    if a.ndim != 1 or b.ndim != 1:
        raise InputError(f"y_true and {other_name} must be 1-D, got shapes {a.shape} and {b.shape}")
    if a.shape[0] != b.shape[0]:
        raise InputError(f"got {a.shape[0]} labels but {b.shape[0]} {other_name}: pass one per example")
    if a.shape[0] == 0:
        raise InputError("no examples to score")
    return a, b


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Share of ``y_pred`` equal to ``y_true``.

    Example:
        >>> accuracy([0, 1, 1, 0], [0, 1, 0, 0])
        0.75
    """
    a, b = _pair(y_true, y_pred, "predictions")
    return float((a == b).mean())


def auroc(y_true: Any, scores: Any) -> float:
    """Area under the ROC curve (scikit-learn); the positive class is the larger label value.

    Raises ``InputError`` when ``y_true`` holds one class (AUROC is undefined then).

    Example:
        >>> auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.75
    """
    from sklearn.metrics import roc_auc_score

    a, s = _pair(y_true, scores, "scores")
    classes = np.unique(a)
    if classes.size != 2:
        raise InputError(f"AUROC needs exactly two classes in y_true, got {classes.size}")
    s = s.astype(np.float64)
    if not np.isfinite(s).all():
        raise InputError("scores contain NaN or inf")
    return float(roc_auc_score(a == classes[1], s))


def bootstrap_ci(metric_fn: Callable[[np.ndarray, np.ndarray], float], y_true: Any, scores: Any,
                 n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float, float]:
    """Percentile-bootstrap confidence interval: ``(point, low, high)``.

    ``point`` is ``metric_fn(y_true, scores)`` on all examples; ``low``/``high`` are the
    ``alpha/2`` and ``1 - alpha/2`` quantiles of the metric over ``n_boot`` resamples (with
    replacement, same size) drawn from ``np.random.default_rng(seed)``, so the result is
    deterministic. Resamples where the metric is undefined (it raises ``InputError`` or
    ``ValueError``, or returns NaN, e.g. AUROC on a one-class resample) are skipped.
    ``scores`` can be predictions (for accuracy) or real-valued scores (for AUROC).

    Example:
        >>> y = [0, 1] * 20; pred = [0, 1] * 15 + [1, 0] * 5
        >>> point, low, high = bootstrap_ci(accuracy, y, pred, n_boot=200)
        >>> point, low <= point <= high
        (0.75, True)
    """
    a, s = _pair(y_true, scores, "scores")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise InputError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not (isinstance(alpha, (int, float)) and 0.0 < alpha < 1.0):
        raise InputError(f"alpha must be strictly between 0 and 1, got {alpha!r}")
    point = float(metric_fn(a, s))
    rng = np.random.default_rng(seed)
    n = a.shape[0]
    values = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. sklearn's UndefinedMetricWarning on one-class resamples
        for _ in range(int(n_boot)):
            idx = rng.integers(0, n, size=n)
            try:
                v = float(metric_fn(a[idx], s[idx]))
            except (InputError, ValueError):
                continue
            if math.isfinite(v):
                values.append(v)
    if not values:
        raise InputError(f"the metric was undefined on all {n_boot} bootstrap resamples "
                         f"(e.g. AUROC with too few examples of a class): collect more examples")
    if len(values) < n_boot:
        log.info("bootstrap: skipped %d of %d resamples where the metric was undefined", n_boot - len(values), n_boot)
    low, high = np.quantile(np.asarray(values), [alpha / 2.0, 1.0 - alpha / 2.0])
    return point, float(low), float(high)


def majority_baseline(y_train: Any, y_test: Any) -> float:
    """Accuracy on ``y_test`` of always predicting the most frequent class of ``y_train``
    (ties: the smallest label value).

    Example:
        >>> majority_baseline([1, 1, 0], [1, 0, 0, 0])
        0.25
    """
    from probes.linear import to_numpy

    tr, te = to_numpy(y_train), to_numpy(y_test)
    if tr.ndim != 1 or te.ndim != 1 or tr.size == 0 or te.size == 0:
        raise InputError(f"y_train and y_test must be non-empty 1-D label arrays, got shapes {tr.shape} and {te.shape}")
    values, counts = np.unique(tr, return_counts=True)
    majority = values[int(np.argmax(counts))]
    return float((te == majority).mean())
