"""Logistic probes fitted in torch: full-batch L-BFGS on whatever device the data is on, from a tensor or
from a re-iterable stream of ``(X_chunk, y_chunk)`` batches, for stores too big for memory. Gives the same
:class:`probes.linear.LinearProbe` as the in-memory scikit-learn fit (tests compare the two)."""
from __future__ import annotations

import logging
import math
from typing import Any, Callable, Iterable, Iterator, Optional, Union

import numpy as np

from hooks.errors import InputError

from .linear import ArrayLike, LinearProbe, ProbeConfig, check_features, check_labels, holdout_split

log = logging.getLogger(__name__)

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
            X = data if isinstance(data, torch.Tensor) else torch.from_numpy(check_features(data))
            if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
                raise InputError(f"X must be 2-D (documents, d_model) and non-empty, got shape {tuple(X.shape)}")
            self.device = torch.device(device) if device is not None else X.device
            y01_N, self.classes = check_labels(y_N, X.shape[0])
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
            val_N = holdout_split(self.y01_np, self.val_fraction, self.seed, min_val=1)
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
