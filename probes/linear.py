"""Binary linear probes on activations: logistic regression and difference of means.

A probe is one weight vector ``w_D`` and a bias ``b``: ``score = X_ND @ w_D + b``, positive
means the second of the two (sorted) label values. Feature standardisation used while
fitting is folded into ``w_D`` and ``b``, so applying a probe needs nothing else.

Checkpoint (a folder): ``probe.safetensors`` holds ``w_D`` (float64, ``(D,)``) and ``b``
(float64, ``(1,)``); ``probe.json`` holds everything else (kind, classes, config, fit
record, free-form metadata, the sha256 of the weights file). Nothing is ever pickled.

Two trainers give the same :class:`LinearProbe`:

- :meth:`LinearProbe.fit` (alias :func:`train_probe`): in memory, NumPy + scikit-learn.
- :func:`fit_logistic_torch`: full-batch L-BFGS in torch on whatever device the data is on,
  from a tensor or from a re-iterable stream of ``(X_chunk, y_chunk)`` batches, for stores
  too big for memory.
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
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

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

def _to_numpy(a: ArrayLike, dtype: Any = None) -> np.ndarray:
    """NumPy view/copy of an array, tensor (any device/dtype) or sequence."""
    if type(a).__module__.startswith("torch"):
        import torch

        a = a.detach()
        if a.is_floating_point():
            a = a.to(torch.float64)
        a = a.cpu().numpy()
    return np.asarray(a, dtype=dtype)


def _check_X(X: ArrayLike, name: str = "X") -> np.ndarray:
    """X as a finite float64 ``(N, D)`` array, or an InputError naming what is wrong."""
    try:
        X_ND = _to_numpy(X, dtype=np.float64)
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


def _check_labels(y: ArrayLike, n_rows: int) -> tuple[np.ndarray, list]:
    """Labels as a 0/1 int array plus the two original values ``[negative, positive]`` (sorted)."""
    y_N = _to_numpy(y)
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
        X_ND = _check_X(X_ND)
        y01_N, classes = _check_labels(y_N, X_ND.shape[0])
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
        X_ND = _check_X(X)
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
        _atomic_write(directory / WEIGHTS_FILE, blob)
        _atomic_write(directory / META_FILE, (json.dumps(meta, indent=2) + "\n").encode())
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


def train_probe(X_ND: ArrayLike, y_N: ArrayLike, config: Optional[ProbeConfig] = None,
                metadata: Optional[dict] = None) -> LinearProbe:
    """Same as :meth:`LinearProbe.fit`."""
    return LinearProbe.fit(X_ND, y_N, config, metadata)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


def _holdout_split(y01_N: np.ndarray, val_fraction: float, seed: int,
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
    val_N = _holdout_split(y01_N, config.val_fraction, config.seed)
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


# ----------------------------------------------------------------------------- torch (GPU / streaming)

Batches = Union[Iterable[tuple[ArrayLike, ArrayLike]], Callable[[], Iterator[tuple[ArrayLike, ArrayLike]]]]


class _Source:
    """Re-iterable chunks of (X, y01, val_mask) on one device, from a tensor or a stream of batches."""

    def __init__(self, data: Any, y_N: Optional[ArrayLike], device: Any, dtype: Any, chunk_rows: int,
                 val_fraction: float, seed: int):
        import torch

        self.torch = torch
        self.dtype = dtype
        self.val_fraction, self.seed = val_fraction, seed
        self.stream = y_N is None
        self.val_N = None  # in-memory stratified val mask (torch bool, on device)
        if not self.stream:
            X = data if isinstance(data, torch.Tensor) else torch.from_numpy(_check_X(data))
            if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
                raise InputError(f"X must be 2-D (documents, d_model) and non-empty, got shape {tuple(X.shape)}")
            self.device = torch.device(device) if device is not None else X.device
            y01_N, self.classes = _check_labels(y_N, X.shape[0])
            self.X = X
            self.y01 = torch.from_numpy(y01_N).to(self.device, dtype)
            self.y01_np = y01_N
            self.chunk_rows = max(1, int(chunk_rows))
            self.n, self.d = int(X.shape[0]), int(X.shape[1])
            for Xc, _, _ in self.chunks("all"):  # one pass to reject NaN/inf before fitting
                bad = ~torch.isfinite(Xc).all(dim=1)
                if bool(bad.any()):
                    raise InputError(f"X has NaN or inf values in {int(bad.sum())} rows of a chunk: "
                                     f"drop or fix those rows")
        else:
            if not callable(data) and iter(data) is data:
                raise InputError("batches is a one-shot iterator, but fitting reads the data many times: "
                                 "pass a list, a re-iterable object, or a function returning a fresh iterator")
            self.batches = data
            self.device = torch.device(device) if device is not None else None
            self._scan()

    # -- streaming helpers
    def _raw_batches(self) -> Iterator[tuple[Any, Any]]:
        it = self.batches() if callable(self.batches) else iter(self.batches)
        for item in it:
            try:
                Xc, yc = item
            except (TypeError, ValueError):
                raise InputError("each batch must be a pair (X_chunk, y_chunk)") from None
            yield Xc, yc

    def _scan(self) -> None:
        """First pass over a stream: shapes, label values, NaN check, counts."""
        torch = self.torch
        n, d, values = 0, None, set()
        for i, (Xc, yc) in enumerate(self._raw_batches()):
            try:
                Xc = Xc if isinstance(Xc, torch.Tensor) else torch.as_tensor(np.asarray(Xc))
                yc = yc if isinstance(yc, torch.Tensor) else torch.as_tensor(np.asarray(yc))
            except (TypeError, ValueError, RuntimeError) as e:
                raise InputError(f"batch {i}: X_chunk and y_chunk must be numeric arrays or tensors ({e})") from None
            if self.device is None:
                self.device = Xc.device
            if Xc.ndim != 2:
                raise InputError(f"batch {i}: X_chunk must be 2-D (rows, d_model), got shape {tuple(Xc.shape)}")
            if d is not None and Xc.shape[1] != d:
                raise InputError(f"batch {i} has {Xc.shape[1]} features but earlier batches have {d}")
            d = int(Xc.shape[1])
            if yc.ndim != 1 or yc.shape[0] != Xc.shape[0]:
                raise InputError(f"batch {i}: got {yc.numel()} labels for {Xc.shape[0]} documents (rows): "
                                 f"pass exactly one label per document")
            if yc.is_floating_point() and bool(torch.isnan(yc).any()):
                raise InputError(f"batch {i}: labels contain NaN: drop those documents")
            bad = ~torch.isfinite(Xc.float()).all(dim=1) if Xc.is_floating_point() else torch.zeros(1, dtype=bool)
            if bool(bad.any()):
                raise InputError(f"batch {i}: X_chunk has NaN or inf values in {int(bad.sum())} rows: "
                                 f"drop or fix those rows")
            values.update(torch.unique(yc).cpu().tolist())
            n += int(Xc.shape[0])
        if n == 0:
            raise InputError("batches yielded no rows: nothing to fit")
        classes = sorted(values)
        if len(classes) == 1:
            raise InputError(f"only one class in the labels ({classes[0]!r} x {n}): a probe needs both")
        if len(classes) > 2:
            raise InputError(f"{len(classes)} distinct label values ({classes[:5]}...): probes are binary; "
                             f"map the labels to two classes")
        self.classes, self.n, self.d = classes, n, d

    def chunks(self, part: str) -> Iterator[tuple[Any, Any, Any]]:
        """(X_chunk float on device, y01 chunk, weight chunk: 1 for rows in ``part`` else 0)."""
        torch = self.torch
        if not self.stream:
            for start in range(0, self.n, self.chunk_rows):
                sl = slice(start, start + self.chunk_rows)
                Xc = self.X[sl].to(self.device, self.dtype)
                yield Xc, self.y01[sl], self._weight(part, self.val_N[sl] if self.val_N is not None else None)
            return
        gen = torch.Generator().manual_seed(self.seed)
        n = 0
        for Xc, yc in self._raw_batches():
            Xc = torch.as_tensor(Xc) if not isinstance(Xc, torch.Tensor) else Xc
            yc = torch.as_tensor(np.asarray(yc)) if not isinstance(yc, torch.Tensor) else yc
            Xc = Xc.to(self.device, self.dtype)
            y01 = (yc.to(self.device) == self.classes[1]).to(self.dtype)
            val = (torch.rand(Xc.shape[0], generator=gen) < self.val_fraction).to(self.device)
            n += int(Xc.shape[0])
            yield Xc, y01, self._weight(part, val)
        if n != self.n:
            raise InputError(f"the batches gave {n} rows on a later pass but {self.n} on the first: "
                             f"the stream must yield the same data every time")

    def _weight(self, part: str, val: Any) -> Any:
        if part == "all" or val is None:
            return None
        return (val if part == "val" else ~val).to(self.dtype)

    def make_val_split(self) -> bool:
        """Set up the validation rows; False when both parts can't hold both classes."""
        torch = self.torch
        if not self.stream:
            val_N = _holdout_split(self.y01_np, self.val_fraction, self.seed, min_val=1)
            if val_N is None:
                return False
            self.val_N = torch.from_numpy(val_N).to(self.device)
            return True
        counts = torch.zeros(2, 2, dtype=torch.float64)  # [part(train,val), class]
        for _, y01, wv in self.chunks("val"):
            counts[1, 1] += float((y01 * wv).sum())
            counts[1, 0] += float(((1 - y01) * wv).sum())
            counts[0, 1] += float((y01 * (1 - wv)).sum())
            counts[0, 0] += float(((1 - y01) * (1 - wv)).sum())
        return bool((counts > 0).all())


def fit_logistic_torch(X_ND: Any, y_N: Optional[ArrayLike] = None, *, C: Optional[float] = None,
                       config: Optional[ProbeConfig] = None, device: Any = None, dtype: Any = None,
                       chunk_rows: int = 65536, metadata: Optional[dict] = None) -> LinearProbe:
    """L2 logistic probe fitted with full-batch L-BFGS in torch, on the data's device.

    ``X_ND`` is a tensor/array ``(N, D)`` with labels ``y_N``, or (``y_N=None``) a re-iterable
    stream of ``(X_chunk, y_chunk)`` batches (a list, an object whose ``__iter__`` starts over,
    or a zero-argument function returning a fresh iterator); every L-BFGS evaluation is one
    pass over the chunks, so nothing larger than a chunk is ever on the device at once.

    The objective equals scikit-learn's (``mean log-loss + ||w||^2 / (2 C N)`` on features
    standardised with the training rows' mean/std), so the same C gives the same probe up to
    optimiser tolerance. With ``C=None`` C is chosen from ``config.Cs`` by validation
    log-loss: a stratified ``val_fraction`` holdout in memory, a seeded random row holdout for
    streams (the same rows every pass); if a part would lack a class, ``config.fallback_C``.

    Example:
        >>> import torch
        >>> X = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
        >>> y = (X[:, 0] > 0).long()
        >>> probe = fit_logistic_torch([(X[:100], y[:100]), (X[100:], y[100:])], C=1.0)
        >>> float((probe.predict(X.numpy()) == y.numpy()).mean()) > 0.9
        True
    """
    import torch

    config = config or ProbeConfig()
    if config.kind != "logistic":
        raise InputError(f"fit_logistic_torch fits logistic probes; config.kind is {config.kind!r}")
    if C is not None and not (isinstance(C, (int, float)) and not isinstance(C, bool) and math.isfinite(C) and C > 0):
        raise InputError(f"C must be a positive finite number, got {C!r}")
    dtype = dtype or torch.float32
    src = _Source(X_ND, y_N, device, dtype, chunk_rows, config.val_fraction, config.seed)

    record: list = []
    if C is not None:
        chosen, how = float(C), "given"
    elif len(config.Cs) == 1:
        chosen, how = float(config.Cs[0]), "given"
    elif not src.make_val_split():
        log.warning("too few examples of a class to validate on: using fallback_C=%g", config.fallback_C)
        chosen, how = config.fallback_C, "fixed"
    else:
        how = "holdout"
        mu, sigma, n_tr = _torch_stats(src, "train")
        ws, bs, best = None, None, None
        best_loss = math.inf
        chosen = sorted(config.Cs)[0]
        for Cc in sorted(config.Cs):  # ascending, warm-started from the previous C
            ws, bs, _ = _lbfgs(src, "train", mu, sigma, n_tr, Cc, config.max_iter, ws, bs)
            loss, acc = _torch_eval(src, "val", mu, sigma, ws, bs)
            record.append({"C": Cc, "val_log_loss": loss, "val_accuracy": acc})
            if best is None or loss < best_loss - 1e-12:
                best_loss, chosen, best = loss, Cc, (ws.clone(), bs.clone(), mu, sigma)
        # warm start the final fit from the chosen C's solution, moved to the all-rows standardisation
        ws0, bs0, mu0, sigma0 = best
        w_raw = ws0 / sigma0
        b_raw = bs0 - (mu0 * w_raw).sum()
    mu, sigma, n_all = _torch_stats(src, "all")
    init_w = init_b = None
    if how == "holdout":
        init_w, init_b = w_raw * sigma, b_raw + (mu * w_raw).sum()
    ws, bs, converged = _lbfgs(src, "all", mu, sigma, n_all, chosen, config.max_iter, init_w, init_b)
    w_D = (ws.double() / sigma.double()).cpu().numpy()
    b = float(bs.double().cpu()) - float((mu.double().cpu().numpy() @ w_D))
    _, train_acc = _torch_eval(src, "all", mu, sigma, ws, bs)
    info = {"trainer": "torch-lbfgs", "device": str(src.device), "C": chosen, "selection": how, "search": record,
            "converged": converged, "n_train": src.n, "n_pos": _count_pos(src), "train_accuracy": train_acc}
    log.info("fitted logistic probe (torch, %s) on %d rows x %d features: C=%g (%s), train acc %.3f",
             src.device, src.n, src.d, chosen, how, train_acc)
    return LinearProbe(w_D=w_D, b=b, kind="logistic", classes=src.classes, config=config, info=info,
                       metadata=dict(metadata or {}))


def _count_pos(src: _Source) -> int:
    return int(sum(float(y01.sum()) for _, y01, _ in src.chunks("all")))


def _torch_stats(src: _Source, part: str) -> tuple[Any, Any, float]:
    """Mean and std (float64 accumulation) of the rows in ``part``; returned in the fit dtype."""
    torch = src.torch
    s1 = torch.zeros(src.d, dtype=torch.float64, device=src.device)
    s2 = torch.zeros_like(s1)
    n = 0.0
    for Xc, _, wc in src.chunks(part):
        X64 = Xc.double()
        if wc is not None:
            w64 = wc.double()[:, None]
            s1 += (X64 * w64).sum(0)
            s2 += (X64 * X64 * w64).sum(0)
            n += float(wc.sum())
        else:
            s1 += X64.sum(0)
            s2 += (X64 * X64).sum(0)
            n += Xc.shape[0]
    mu = s1 / n
    var = (s2 / n - mu * mu).clamp_min(0.0)
    sigma = var.sqrt()
    sigma = torch.where(sigma > 1e-12 * (1.0 + mu.abs()), sigma, torch.ones_like(sigma))
    return mu.to(src.dtype), sigma.to(src.dtype), n


def _lbfgs(src: _Source, part: str, mu: Any, sigma: Any, n: float, C: float, max_iter: int,
           init_w: Any = None, init_b: Any = None) -> tuple[Any, Any, bool]:
    torch = src.torch
    import torch.nn.functional as F

    w = (init_w.detach().clone() if init_w is not None
         else torch.zeros(src.d, dtype=src.dtype, device=src.device)).requires_grad_(True)
    b = (init_b.detach().clone().reshape(()) if init_b is not None
         else torch.zeros((), dtype=src.dtype, device=src.device)).requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, max_eval=int(max_iter * 1.25) + 1,
                            tolerance_grad=1e-7, tolerance_change=1e-10, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        total = 0.0
        for Xc, y01, wc in src.chunks(part):
            z = ((Xc - mu) / sigma) @ w + b
            loss_c = F.binary_cross_entropy_with_logits(z, y01, reduction="none")
            if wc is not None:
                loss_c = loss_c * wc
            loss_c = loss_c.sum() / n
            loss_c.backward()
            total += float(loss_c.detach())
        reg = (w * w).sum() / (2.0 * C * n)
        reg.backward()
        total += float(reg.detach())
        return torch.tensor(total, dtype=src.dtype)

    opt.step(closure)
    state = opt.state[opt.param_groups[0]["params"][0]]
    converged = int(state.get("n_iter", 0)) < max_iter and int(state.get("func_evals", 0)) < opt.defaults["max_eval"]
    if not converged:
        log.warning("torch logistic probe (C=%g) did not converge in %d iterations: raise max_iter", C, max_iter)
    return w.detach(), b.detach(), converged


def _torch_eval(src: _Source, part: str, mu: Any, sigma: Any, ws: Any, bs: Any) -> tuple[float, float]:
    """(mean log-loss, accuracy) over the rows of ``part``."""
    torch = src.torch
    import torch.nn.functional as F

    loss, correct, n = 0.0, 0.0, 0.0
    with torch.no_grad():
        for Xc, y01, wc in src.chunks(part):
            z = ((Xc - mu) / sigma) @ ws + bs
            lc = F.binary_cross_entropy_with_logits(z.double(), y01.double(), reduction="none")
            cc = ((z > 0).to(y01.dtype) == y01).double()
            if wc is not None:
                lc, cc = lc * wc.double(), cc * wc.double()
                n += float(wc.sum())
            else:
                n += Xc.shape[0]
            loss += float(lc.sum())
            correct += float(cc.sum())
    return loss / n, correct / n
