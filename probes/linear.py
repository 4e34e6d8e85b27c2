"""Binary linear probes on activations: logistic regression and difference of means.

A probe is one weight vector ``w_D`` and a bias ``b``: ``score = X_ND @ w_D + b``, positive
means the second of the two (sorted) label values. Feature standardisation used while
fitting is folded into ``w_D`` and ``b``, so applying a probe needs nothing else.

Checkpoint (a folder): ``probe.safetensors`` holds ``w_D`` (float64, ``(D,)``) and ``b``
(float64, ``(1,)``); ``probe.json`` holds everything else (kind, classes, config, fit
record, free-form metadata, the sha256 of the weights file). Nothing is ever pickled.

:meth:`LinearProbe.fit` trains one in memory with NumPy + scikit-learn.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from hooks.atomic import atomic_write_bytes
from hooks.errors import CheckpointError, InputError

log = logging.getLogger(__name__)

KINDS = ("logistic", "diff_means")
FORMAT = "ao-probe"
FORMAT_VERSION = 1
WEIGHTS_FILE = "probe.safetensors"
META_FILE = "probe.json"

# Holdout validation needs at least this many validation rows of each class; with fewer the
# C search switches to stratified k-fold (k = min(smallest class count, CV_FOLDS)), and with a
# class of a single example it uses ``ProbeConfig.fallback_C`` without searching.
MIN_VAL_PER_CLASS = 5
CV_FOLDS = 5

ArrayLike = Any  # numpy array, torch tensor, or nested sequence


def _default_Cs() -> tuple[float, ...]:
    return tuple(float(c) for c in np.logspace(-4, 2, 10))


@dataclass
class ProbeConfig:
    """How to fit a probe.

    Args:
        kind: ``"logistic"`` (L2 logistic regression, C chosen on validation data) or
            ``"diff_means"`` (``w = mean(pos) - mean(neg)``, threshold at the midpoint).
        Cs: inverse regularisation strengths to try (scikit-learn's ``C``, on standardised
            features). One value means "use it, no search".
        val_fraction: share of the training rows held out (stratified) to choose ``C``.
        seed: seed of the validation split (fits are otherwise deterministic).
        max_iter: L-BFGS iteration cap.
        fallback_C: ``C`` used when a class is too small to validate on (one example).

    Example:
        >>> ProbeConfig(kind="diff_means").kind
        'diff_means'
    """

    kind: str = "logistic"
    Cs: Sequence[float] = field(default_factory=_default_Cs)
    val_fraction: float = 0.2
    seed: int = 0
    max_iter: int = 1000
    fallback_C: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"unknown probe kind {self.kind!r}: use one of {', '.join(KINDS)}")
        try:
            Cs = tuple(float(c) for c in np.atleast_1d(np.asarray(self.Cs, dtype=np.float64)))
        except (TypeError, ValueError):
            raise InputError(f"Cs must be a list of positive numbers, got {self.Cs!r}") from None
        if not Cs or not all(math.isfinite(c) and c > 0 for c in Cs):
            raise InputError(f"Cs must be a non-empty list of positive finite numbers, got {list(Cs)}")
        self.Cs = Cs
        if isinstance(self.val_fraction, bool) or not isinstance(self.val_fraction, (int, float)) \
                or not 0.0 < float(self.val_fraction) < 1.0:
            raise InputError(f"val_fraction must be a number strictly between 0 and 1, got {self.val_fraction!r}")
        self.val_fraction = float(self.val_fraction)
        for name in ("seed", "max_iter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise InputError(f"{name} must be an integer, got {value!r}")
            setattr(self, name, int(value))
        if self.seed < 0:
            raise InputError(f"seed must be >= 0, got {self.seed}")
        if self.max_iter < 1:
            raise InputError(f"max_iter must be >= 1, got {self.max_iter}")
        if isinstance(self.fallback_C, bool) or not isinstance(self.fallback_C, (int, float)) \
                or not (math.isfinite(self.fallback_C) and self.fallback_C > 0):
            raise InputError(f"fallback_C must be a positive finite number, got {self.fallback_C!r}")
        self.fallback_C = float(self.fallback_C)

    def to_json(self) -> dict:
        d = asdict(self)
        d["Cs"] = list(self.Cs)
        return d


# ----------------------------------------------------------------------------- input checks

def to_numpy(a: ArrayLike, dtype: Any = None) -> np.ndarray:
    """NumPy view/copy of an array, tensor (any device/dtype) or sequence."""
    if type(a).__module__.startswith("torch"):
        import torch

        a = a.detach()
        if a.is_floating_point():
            a = a.to(torch.float64)
        a = a.cpu().numpy()
    return np.asarray(a, dtype=dtype)


def check_features(X: ArrayLike, name: str = "X") -> np.ndarray:
    """X as a finite float64 ``(N, D)`` array, or an InputError naming what is wrong."""
    try:
        X_ND = to_numpy(X, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(f"{name} must be a numeric (documents, d_model) array: {e}") from None
    if X_ND.ndim != 2:
        raise InputError(f"{name} must be 2-D (documents, d_model), got shape {tuple(X_ND.shape)}")
    if X_ND.shape[0] == 0 or X_ND.shape[1] == 0:
        raise InputError(f"{name} is empty (shape {tuple(X_ND.shape)}): need at least one row and one feature")
    bad_N = ~np.isfinite(X_ND).all(axis=1)
    if bad_N.any():
        rows = np.flatnonzero(bad_N)
        raise InputError(f"{name} has NaN or inf values in {rows.size} of {X_ND.shape[0]} rows "
                         f"(first: row {rows[0]}): drop or fix those rows")
    return X_ND


def check_labels(y: ArrayLike, n_rows: int) -> tuple[np.ndarray, list]:
    """Labels as a 0/1 int array plus the two original values ``[negative, positive]`` (sorted)."""
    y_N = to_numpy(y)
    if y_N.ndim != 1:
        raise InputError(f"labels must be 1-D (one per document), got shape {tuple(y_N.shape)}")
    if y_N.shape[0] != n_rows:
        raise InputError(f"got {y_N.shape[0]} labels for {n_rows} documents (rows of X): "
                         f"pass exactly one label per document")
    if y_N.dtype.kind == "f" and np.isnan(y_N).any():
        raise InputError(f"labels contain NaN at {int(np.isnan(y_N).sum())} rows: drop those documents")
    if y_N.dtype.kind == "O":
        raise InputError("labels must be numbers, booleans or strings of one type")
    classes = np.unique(y_N)
    if classes.size == 0:
        raise InputError("no labels: need at least one document of each class")
    if classes.size == 1:
        raise InputError(f"only one class in the labels ({classes[0].item()!r} x {n_rows}): a probe needs both")
    if classes.size > 2:
        raise InputError(f"{classes.size} distinct label values ({classes[:5].tolist()}...): "
                         f"probes are binary; map the labels to two classes")
    return (y_N == classes[1]).astype(np.int64), classes.tolist()


# ----------------------------------------------------------------------------- the probe

@dataclass
class LinearProbe:
    """A fitted binary linear probe: ``score = X_ND @ w_D + b``.

    ``classes`` is ``[negative, positive]`` (the two label values, sorted). ``info`` records
    the fit (chosen C, how it was chosen, counts, train accuracy); ``metadata`` is free-form
    JSON the caller attaches (layer, store, task) and is saved with the probe.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(40, 4)); y = (X[:, 0] > 0).astype(int)
        >>> probe = LinearProbe.fit(X, y, ProbeConfig(kind="diff_means"))
        >>> float((probe.predict(X) == y).mean()) > 0.8
        True
    """

    w_D: np.ndarray = field(repr=False)
    b: float
    kind: str
    classes: list
    config: Optional[ProbeConfig] = None
    info: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.w_D = np.ascontiguousarray(self.w_D, dtype=np.float64).reshape(-1)
        self.b = float(self.b)
        self.classes = list(self.classes)

    @property
    def d_model(self) -> int:
        return int(self.w_D.shape[0])

    # --- fitting
    @classmethod
    def fit(cls, X_ND: ArrayLike, y_N: ArrayLike, config: Optional[ProbeConfig] = None,
            metadata: Optional[dict] = None) -> "LinearProbe":
        """Fit a probe in memory (NumPy/scikit-learn). See :class:`ProbeConfig` for the options.

        Logistic: features are standardised with the training rows' mean/std, C is chosen by
        validation log-loss (stratified holdout of ``val_fraction``; stratified k-fold when a
        class would have fewer than ``MIN_VAL_PER_CLASS`` validation rows; ``fallback_C`` when
        a class has one example), then the model is refit on all rows with that C and the
        standardisation folded into ``w_D``/``b``.

        Example:
            >>> rng = np.random.default_rng(0)
            >>> X = rng.normal(size=(8, 3)); y = [0, 1] * 4
            >>> LinearProbe.fit(X, y).info["selection"]
            'cv4'
        """
        config = config or ProbeConfig()
        X_ND = check_features(X_ND)
        y01_N, classes = check_labels(y_N, X_ND.shape[0])
        if config.kind == "diff_means":
            w_D, b = _diff_means(X_ND, y01_N)
            info: dict = {"trainer": "numpy"}
        else:
            C, selection, record = _select_C(X_ND, y01_N, config)
            w_D, b, converged = _fit_logistic_sklearn(X_ND, y01_N, C, config.max_iter)
            info = {"trainer": "sklearn-lbfgs", "C": C, "selection": selection, "search": record,
                    "converged": converged}
        info.update(n_train=int(X_ND.shape[0]), n_pos=int(y01_N.sum()),
                    train_accuracy=float(((X_ND @ w_D + b > 0).astype(np.int64) == y01_N).mean()))
        probe = cls(w_D=w_D, b=b, kind=config.kind, classes=classes, config=config, info=info,
                    metadata=dict(metadata or {}))
        log.info("fitted %s probe on %d rows x %d features: %s", config.kind, X_ND.shape[0], X_ND.shape[1],
                 {k: v for k, v in info.items() if k != "search"})
        return probe

    # --- applying
    def _check_input(self, X: ArrayLike) -> np.ndarray:
        X_ND = check_features(X)
        if X_ND.shape[1] != self.d_model:
            raise InputError(f"X has {X_ND.shape[1]} features but the probe was trained on {self.d_model}: "
                             f"use activations of the same model and layer")
        return X_ND

    def decision_function(self, X_ND: ArrayLike) -> np.ndarray:
        """Scores ``X_ND @ w_D + b`` (float64, ``(N,)``); positive means ``classes[1]``."""
        return self._check_input(X_ND) @ self.w_D + self.b

    def predict_proba(self, X_ND: ArrayLike) -> np.ndarray:
        """P(``classes[1]``) per row, ``(N,)`` (not scikit-learn's ``(N, 2)``).

        Only meaningful for logistic probes; for diff_means it is a squashed score.
        """
        from scipy.special import expit

        return expit(self.decision_function(X_ND))

    def predict(self, X_ND: ArrayLike) -> np.ndarray:
        """Predicted label values (elements of ``classes``), ``(N,)``."""
        return np.asarray(self.classes)[(self.decision_function(X_ND) > 0).astype(np.int64)]

    def direction(self) -> np.ndarray:
        """Unit vector along ``w_D`` (zeros if ``w_D`` is zero)."""
        norm = float(np.linalg.norm(self.w_D))
        return self.w_D / norm if norm > 0 else self.w_D.copy()

    # --- checkpoint
    def save(self, directory: Union[str, os.PathLike]) -> Path:
        """Write ``probe.safetensors`` and ``probe.json`` into ``directory`` (created if needed).

        Example:
            >>> import tempfile
            >>> p = LinearProbe(w_D=np.ones(3), b=0.5, kind="diff_means", classes=[0, 1])
            >>> d = p.save(tempfile.mkdtemp())
            >>> LinearProbe.load(d).b
            0.5
        """
        from safetensors.numpy import save as st_save

        directory = Path(directory)
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "kind": self.kind, "d_model": self.d_model,
            "classes": self.classes, "config": self.config.to_json() if self.config is not None else None,
            "info": self.info, "metadata": self.metadata,
        }
        try:
            json.dumps(meta, allow_nan=True)
        except (TypeError, ValueError) as e:
            raise InputError(f"probe metadata/info is not JSON-serialisable ({e}): use plain numbers and strings") \
                from None
        blob = st_save({"w_D": self.w_D, "b": np.array([self.b], dtype=np.float64)},
                       metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
        meta["weights_sha256"] = hashlib.sha256(blob).hexdigest()
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(directory / WEIGHTS_FILE, blob)
        atomic_write_bytes(directory / META_FILE, (json.dumps(meta, indent=2) + "\n").encode())
        log.info("saved %s probe (D=%d) to %s", self.kind, self.d_model, directory)
        return directory

    @classmethod
    def load(cls, directory: Union[str, os.PathLike]) -> "LinearProbe":
        """Load a probe written by :meth:`save`; raises ``CheckpointError`` if anything is off."""
        from safetensors.numpy import load as st_load

        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"no probe at {directory}: the folder does not exist")
        for name in (META_FILE, WEIGHTS_FILE):
            if not (directory / name).is_file():
                raise CheckpointError(f"{directory} is not a complete probe folder: {name} is missing "
                                      f"(write probes with LinearProbe.save)")
        try:
            meta = json.loads((directory / META_FILE).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{directory / META_FILE} is not valid JSON ({e}): the probe is corrupt") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CheckpointError(f"{directory / META_FILE} is not a probe card (format is not {FORMAT!r})")
        if meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{directory} holds probe format v{meta.get('format_version')}; "
                                  f"this version reads v{FORMAT_VERSION}")
        blob = (directory / WEIGHTS_FILE).read_bytes()
        if hashlib.sha256(blob).hexdigest() != meta.get("weights_sha256"):
            raise CheckpointError(f"{directory / WEIGHTS_FILE} does not match {META_FILE} (sha256 differs): "
                                  f"the files come from different saves or were modified")
        try:
            tensors = st_load(blob)
        except Exception as e:  # noqa: BLE001 - any parse failure is a corrupt checkpoint
            raise CheckpointError(f"{directory / WEIGHTS_FILE} is not a valid safetensors file ({e})") from None
        try:
            d_model = int(meta["d_model"])
            kind = meta["kind"]
            classes = list(meta["classes"])
            w_D, b_1 = tensors["w_D"], tensors["b"]
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"probe in {directory} lacks {e}: the checkpoint is incomplete") from None
        if kind not in KINDS or len(classes) != 2:
            raise CheckpointError(f"probe in {directory} has kind {kind!r} and classes {classes}: "
                                  f"expected one of {KINDS} and two classes")
        if w_D.shape != (d_model,) or b_1.shape != (1,) or w_D.dtype != np.float64 or b_1.dtype != np.float64:
            raise CheckpointError(f"probe weights in {directory} have shapes w_D {w_D.shape}, b {b_1.shape} "
                                  f"(dtype {w_D.dtype}); probe.json says d_model={d_model} (float64)")
        config = None
        if meta.get("config") is not None:
            try:
                config = ProbeConfig(**meta["config"])
            except (TypeError, InputError) as e:
                raise CheckpointError(f"probe config in {directory / META_FILE} is invalid: {e}") from None
        return cls(w_D=w_D, b=float(b_1[0]), kind=kind, classes=classes, config=config,
                   info=dict(meta.get("info") or {}), metadata=dict(meta.get("metadata") or {}))


# ----------------------------------------------------------------------------- numpy/sklearn fitting

def _diff_means(X_ND: np.ndarray, y01_N: np.ndarray) -> tuple[np.ndarray, float]:
    mu_pos_D = X_ND[y01_N == 1].mean(axis=0)
    mu_neg_D = X_ND[y01_N == 0].mean(axis=0)
    w_D = mu_pos_D - mu_neg_D
    if not np.any(w_D):
        log.warning("diff_means: the two classes have identical means; the probe predicts one class everywhere")
    b = -float(w_D @ (mu_pos_D + mu_neg_D)) / 2.0
    return w_D, b


def _standardiser(X_ND: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu_D = X_ND.mean(axis=0)
    sigma_D = X_ND.std(axis=0)
    # constant features: leave unscaled (their weight ends up 0 under L2 anyway)
    sigma_D = np.where(sigma_D > 1e-12 * (1.0 + np.abs(mu_D)), sigma_D, 1.0)
    return mu_D, sigma_D


def _fold(ws_D: np.ndarray, bs: float, mu_D: np.ndarray, sigma_D: np.ndarray) -> tuple[np.ndarray, float]:
    """Weights on standardised features -> weights on raw features."""
    w_D = ws_D / sigma_D
    return w_D, float(bs - mu_D @ w_D)


def _fit_logistic_sklearn(X_ND: np.ndarray, y01_N: np.ndarray, C: float, max_iter: int,
                          ) -> tuple[np.ndarray, float, bool]:
    """L2 logistic regression (lbfgs) on standardised features, folded back to raw features."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    mu_D, sigma_D = _standardiser(X_ND)
    model = LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit((X_ND - mu_D) / sigma_D, y01_N)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    if not converged:
        log.warning("logistic probe (C=%g) did not converge in %d iterations: raise max_iter", C, max_iter)
    w_D, b = _fold(model.coef_[0].astype(np.float64), float(model.intercept_[0]), mu_D, sigma_D)
    return w_D, b, converged


def holdout_split(y01_N: np.ndarray, val_fraction: float, seed: int,
                   min_val: int = MIN_VAL_PER_CLASS) -> Optional[np.ndarray]:
    """Stratified validation mask, or None when a class would get < ``min_val`` val rows or none for training."""
    rng = np.random.default_rng(seed)
    val_N = np.zeros(y01_N.shape[0], dtype=bool)
    for c in (0, 1):
        idx = np.flatnonzero(y01_N == c)
        n_val = int(round(idx.size * val_fraction))
        if n_val < min_val or idx.size - n_val < 1:
            return None
        val_N[rng.permutation(idx)[:n_val]] = True
    return val_N


def _log_loss(y01_N: np.ndarray, score_N: np.ndarray) -> float:
    # mean of log(1 + exp(-s)) for positives and log(1 + exp(s)) for negatives, stably
    signed_N = np.where(y01_N == 1, -score_N, score_N)
    return float(np.logaddexp(0.0, signed_N).mean())


def _select_C(X_ND: np.ndarray, y01_N: np.ndarray, config: ProbeConfig) -> tuple[float, str, list]:
    """Choose C by validation log-loss; returns (C, how, per-C record). Ties go to the smaller C."""
    Cs = sorted(config.Cs)
    if len(Cs) == 1:
        return Cs[0], "given", []
    val_N = holdout_split(y01_N, config.val_fraction, config.seed)
    if val_N is not None:
        folds = [(~val_N, val_N)]
        how = "holdout"
    else:
        n_min = int(min((y01_N == 0).sum(), (y01_N == 1).sum()))
        if n_min < 2:
            log.warning("a class has a single example: no validation possible, using fallback_C=%g",
                        config.fallback_C)
            return config.fallback_C, "fixed", []
        from sklearn.model_selection import StratifiedKFold

        k = min(n_min, CV_FOLDS)
        skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=config.seed)
        folds = []
        for tr, va in skf.split(X_ND, y01_N):
            tr_N = np.zeros(y01_N.shape[0], dtype=bool)
            tr_N[tr] = True
            folds.append((tr_N, ~tr_N))
        how = f"cv{k}"
    oof = {C: np.zeros(y01_N.shape[0]) for C in Cs}
    scored_N = np.zeros(y01_N.shape[0], dtype=bool)
    for tr_N, va_N in folds:
        for C in Cs:
            w_D, b, _ = _fit_logistic_sklearn(X_ND[tr_N], y01_N[tr_N], C, config.max_iter)
            oof[C][va_N] = X_ND[va_N] @ w_D + b
        scored_N |= va_N
    record = []
    best_C, best_loss = Cs[0], math.inf
    for C in Cs:
        s_N, y_N = oof[C][scored_N], y01_N[scored_N]
        loss = _log_loss(y_N, s_N)
        record.append({"C": C, "val_log_loss": loss, "val_accuracy": float(((s_N > 0) == (y_N == 1)).mean())})
        if loss < best_loss - 1e-12:
            best_C, best_loss = C, loss
    log.debug("C search (%s): %s", how, record)
    return best_C, how, record
