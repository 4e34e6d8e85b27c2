"""Does an answer come from the activations? Sensitivity, calibrated confidence and abstention.

* **Sensitivity**: the Jensen-Shannon divergence (bits, 0..1) between the oracle's answer distribution with the
  real vectors and with control vectors (the same number of vectors, at the same layer, from neutral texts
  that say nothing about the question), averaged over the controls (:data:`N_CONTROLS`). An answer the oracle would give whatever
  it reads scores near 0. Choice questions compare the distributions over the candidates; open questions
  the distribution of the first answer token. One extra batched forward per control.
* **Calibration**: a temperature per answer kind (``choice``, ``open``) that makes the softmax of the answer
  scores a probability one can trust, fitted by likelihood on the reading skills' ``calibration`` split (a
  fifth of the eval documents that the suite never reads), stored in ``calibration.json`` beside the adapter
  with the adapter's hash, and applied by :meth:`oracle.core.api.Oracle.load`.
* **Abstention**: answer "can't tell" when the sensitivity or the calibrated confidence is below thresholds
  fitted on the same split, the lowest that keep the precision of the answered questions at the target.

Example:
    >>> oracle = Oracle.load("checkpoints/oracle-smollm2-135m")                          # doctest: +SKIP
    >>> oracle.choose("I loved it.", "What is the sentiment of this text?", ["negative", "positive"],
    ...               positions="all", details=True)                                     # doctest: +SKIP
    Answer(text='positive', confidence=0.81, sensitivity=0.12, abstained=False)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence, Union

import numpy as np
import torch

from hooks.atomic import atomic_write_text
from hooks.errors import CheckpointError, InputError
from hooks.positions import ALL, LAST

from oracle.data.splits import check_share


log = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.json"
CANT_TELL = "can't tell"
N_CONTROLS = 2   # control texts per sensitivity (each costs one batched forward)
KINDS = ("choice", "open")

#: neutral texts whose vectors stand in for the real ones: they share no topic, tense or sentiment on purpose
CONTROL_TEXTS = (
    "The table lists the number of items in each box, sorted by the date on which they were counted.",
    "A committee will meet on the second floor to review the schedule for the next set of routine checks.",
    "Section four describes the format of the files and the order in which the fields appear in them.",
    "Water is pumped from the lower tank to the upper one and the level is measured every few minutes.",
    "The road runs north from the station, past a row of shops, and turns east after the old bridge.",
    "Each page has a header with the title, a number in the corner and two columns of plain text.",
    "Most of the samples were stored at room temperature and labelled with a code of six letters.",
    "The meeting notes record who attended, which points were raised and when the next one is planned.",
)


class ReadsActivations(Protocol):
    """What this module needs of an oracle (:class:`oracle.core.api.Oracle` has it); queries are ``api.Query``."""

    lm: Any
    card: Any   # an oracle.core.card.OracleCard: its chat_style says how yes/no questions were taught

    def query_vectors(self, queries: Sequence[Any], diff: bool = False) -> tuple[list[torch.Tensor], list[int]]: ...

    def activations(self, texts: Sequence[str], layer: int, positions: Sequence[Any], diff: bool = False,
                    use_target: bool = True) -> list[torch.Tensor]: ...

    def answer_logprobs(self, queries: Sequence[Any], candidates: Sequence[Sequence[str]], diff: bool = False,
                        batch_size: int = 32) -> list[list[float]]: ...

    def first_token_logprobs(self, queries: Sequence[Any], diff: bool = False, batch_size: int = 32) -> torch.Tensor: ...


@dataclass
class Answer:
    """An answer with the figures that say how far to trust it (``str()`` gives the text, or "can't tell").

    Example:
        >>> str(Answer("positive", confidence=0.4, sensitivity=0.01, abstained=True))
        "can't tell"
    """

    text: str
    confidence: float
    sensitivity: float
    abstained: bool = False

    def __str__(self) -> str:
        return CANT_TELL if self.abstained else self.text


@dataclass
class KindCalibration:
    """Temperature and abstention thresholds of one answer kind."""

    temperature: float = 1.0
    min_sensitivity: float = 0.0
    min_confidence: float = 0.0


@dataclass
class Calibration:
    """What ``calibration.json`` holds: a :class:`KindCalibration` per kind, the adapter it was fitted for
    (sha256 of ``adapter_model.safetensors``), and the fit's figures.

    Example:
        >>> [round(p, 4) for p in Calibration().probabilities(torch.tensor([[0.0, math.log(3)]]), "choice")[0].tolist()]
        [0.25, 0.75]
    """

    choice: KindCalibration = field(default_factory=KindCalibration)
    open: KindCalibration = field(default_factory=KindCalibration)
    target_precision: Optional[float] = None
    adapter_sha256: str = ""
    fit: dict = field(default_factory=dict)

    def with_thresholds(self, min_confidence: Optional[float] = None,
                        min_sensitivity: Optional[float] = None) -> "Calibration":
        """A copy whose abstention thresholds (both kinds) are replaced where given; temperatures kept.

        Example:
            >>> Calibration().with_thresholds(min_confidence=0.7).open
            KindCalibration(temperature=1.0, min_sensitivity=0.0, min_confidence=0.7)
        """
        def kind(k: KindCalibration) -> KindCalibration:
            return KindCalibration(k.temperature, k.min_sensitivity if min_sensitivity is None else min_sensitivity,
                                   k.min_confidence if min_confidence is None else min_confidence)

        return dataclasses.replace(self, choice=kind(self.choice), open=kind(self.open))

    def kind(self, kind: str) -> KindCalibration:
        if kind not in KINDS:
            raise InputError(f"unknown answer kind {kind!r}: use {' or '.join(KINDS)}")
        return getattr(self, kind)

    def probabilities(self, scores_NC: torch.Tensor, kind: str) -> torch.Tensor:
        """Calibrated probabilities from answer scores (log-probabilities or logits), softmax over the last axis."""
        return (scores_NC.float() / self.kind(kind).temperature).softmax(-1)

    def abstains(self, kind: str, confidence: float, sensitivity: float) -> bool:
        k = self.kind(kind)
        return sensitivity < k.min_sensitivity or confidence < k.min_confidence

    def save(self, folder: Union[str, Path]) -> Path:
        path = Path(folder) / CALIBRATION_FILE
        atomic_write_text(path, json.dumps(asdict(self), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, folder: Union[str, Path], check_adapter: bool = True) -> Optional["Calibration"]:
        """The calibration beside an oracle's adapter (None when there is none); refuses one fitted for
        another adapter, in one line."""
        path = Path(folder) / CALIBRATION_FILE
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text())
            cal = cls(choice=KindCalibration(**raw["choice"]), open=KindCalibration(**raw["open"]),
                      target_precision=raw.get("target_precision"), adapter_sha256=raw.get("adapter_sha256", ""),
                      fit=raw.get("fit", {}))
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{path} is not a calibration file ({type(e).__name__}: {e}): delete it and run "
                                  f"`ao calibrate --oracle {folder}`") from None
        for kind in KINDS:
            k = cal.kind(kind)
            if not (k.temperature > 0 and math.isfinite(k.temperature)):
                raise CheckpointError(f"{path}: temperature {k.temperature} must be a positive number: refit it "
                                      f"with `ao calibrate --oracle {folder}`")
        if check_adapter and cal.adapter_sha256 != adapter_sha256(folder):
            raise CheckpointError(f"{path} was fitted for another adapter: refit it with `ao calibrate --oracle "
                                  f"{folder}` (or delete it)")
        return cal


def adapter_sha256(folder: Union[str, Path]) -> str:
    """sha256 of an oracle folder's ``adapter_model.safetensors``: what a calibration file is tied to."""
    h = hashlib.sha256()
    with open(Path(folder) / "adapter_model.safetensors", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_threshold(name: str, value: Optional[float]) -> Optional[float]:
    """A probability-like threshold must lie in [0, 1].

    Example:
        >>> check_threshold("--min-confidence", 1.5)
        Traceback (most recent call last):
        ...
        hooks.errors.InputError: --min-confidence 1.5 is outside [0, 1]: give a share such as 0.6
    """
    return None if value is None else check_share(name, value)


# ---------------------------------------------------------------- sensitivity

def js_bits(p_NC: torch.Tensor, q_NC: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence in bits (0 for equal rows, 1 for disjoint ones), row by row.

    Example:
        >>> js_bits(torch.tensor([[1.0, 0.0], [0.5, 0.5]]), torch.tensor([[0.0, 1.0], [0.5, 0.5]])).tolist()
        [1.0, 0.0]
    """
    p, q = p_NC.double(), q_NC.double()
    m = (p + q) / 2

    def kl(a: torch.Tensor) -> torch.Tensor:
        return torch.where(a > 0, a * (a.clamp_min(1e-300).log2() - m.clamp_min(1e-300).log2()), 0.0).sum(-1)

    return ((kl(p) + kl(q)) / 2).clamp(0.0, 1.0).float()


def control_vectors(oracle: ReadsActivations, layer: int, k: int, diff: bool, n_controls: int) -> list[torch.Tensor]:
    """``n_controls`` stand-ins ``(k, D)`` for a query reading ``k`` vectors at ``layer``: the last ``k`` token
    vectors of each control text (repeated when the text is shorter), captured once per oracle and setting."""
    if not 1 <= n_controls <= len(CONTROL_TEXTS):
        raise InputError(f"n_controls={n_controls}: use 1..{len(CONTROL_TEXTS)}")
    cache = oracle.__dict__.setdefault("_control_cache", {})
    key = (layer, diff, oracle.lm.adapters.get("target"))
    if key not in cache:
        texts = list(CONTROL_TEXTS)
        cache[key] = oracle.activations(texts, layer, [ALL] * len(texts), diff=diff)
    out = []
    for acts in cache[key][:n_controls]:
        idx = [(len(acts) - k + i) % len(acts) for i in range(k)]
        out.append(acts[idx])
    return out


def _control_queries(oracle: ReadsActivations, queries: Sequence[Any], diff: bool, n_controls: int):
    vecs, layers = oracle.query_vectors(queries, diff)
    per_control: list[list[Any]] = [[] for _ in range(n_controls)]
    for q, v, layer in zip(queries, vecs, layers):
        for c, ctrl in enumerate(control_vectors(oracle, layer, len(v), diff, n_controls)):
            per_control[c].append(dataclasses.replace(q, source=ctrl, layer=layer, positions=LAST))
    real = [dataclasses.replace(q, source=v, layer=layer, positions=LAST) for q, v, layer in zip(queries, vecs, layers)]
    return real, per_control


def choice_scores_and_sensitivity(oracle: ReadsActivations, queries: Sequence[Any],
                                  candidates: Sequence[Sequence[str]], diff: bool = False,
                                  n_controls: int = N_CONTROLS) -> tuple[list[list[float]], list[list[float]], list[float]]:
    """The candidates' summed log-probabilities with the real vectors, the same averaged over the control
    vectors (what the oracle says when it reads nothing relevant: the candidates' prior), and each query's
    sensitivity (JS over the candidates, real against each control, mean over ``n_controls`` controls)."""
    real, controls = _control_queries(oracle, queries, diff, n_controls)
    scores = oracle.answer_logprobs(real, candidates, diff=diff)
    sens = torch.zeros(len(queries))
    prior = [[0.0] * len(c) for c in candidates]
    for ctrl in controls:
        ctrl_scores = oracle.answer_logprobs(ctrl, candidates, diff=diff)
        sens += torch.stack([js_bits(torch.tensor(a).softmax(-1)[None], torch.tensor(b).softmax(-1)[None])[0]
                             for a, b in zip(scores, ctrl_scores)])
        prior = [[p + c / n_controls for p, c in zip(ps, cs)] for ps, cs in zip(prior, ctrl_scores)]
    return scores, prior, (sens / n_controls).tolist()


def debiased_choice(scores: Sequence[float], prior: Sequence[float]) -> list[float]:
    """Choice scores against the control: each candidate's log-probability with the real vectors minus its mean
    log-probability with the control vectors (contextual calibration). The calibrated answers use these: a
    summed log-probability also carries the candidate string's own prior (a long title, a common word), which
    the control measures; on the calibration split this raised the choice accuracy of the shipped oracle from
    0.73 to 0.77 and cut the calibration error in half (experiments/2026-12-calibration/README.md).

    Example:
        >>> debiased_choice([-1.0, -9.0], [-3.0, -8.0])
        [2.0, -1.0]
    """
    return [float(s) - float(p) for s, p in zip(scores, prior)]


def open_logprobs_and_sensitivity(oracle: ReadsActivations, queries: Sequence[Any], diff: bool = False,
                                  n_controls: int = N_CONTROLS) -> tuple[torch.Tensor, list[float]]:
    """``(N, vocab)`` first-answer-token log-probabilities with the real vectors, and each query's sensitivity
    (JS over the first token's distribution, real against controls)."""
    real, controls = _control_queries(oracle, queries, diff, n_controls)
    logp = oracle.first_token_logprobs(real, diff=diff)
    sens = torch.zeros(len(queries))
    for ctrl in controls:
        sens += js_bits(logp.exp(), oracle.first_token_logprobs(ctrl, diff=diff).exp())
    return logp, (sens / n_controls).tolist()


# ---------------------------------------------------------------- fitting

def fit_temperature(scores: Sequence[np.ndarray], gold: Sequence[int]) -> float:
    """The temperature that minimises the Brier score (squared error of the probability vector against the
    gold answer's one-hot) of softmax(scores / T), over a log-spaced grid 0.05 .. 50; rows may have different
    numbers of candidates. Brier rather than likelihood: summed answer log-probabilities of multi-token
    candidates can differ by tens of nats, and a few confident mistakes would otherwise push T so high that every
    answer looks like a coin toss.

    Example:
        >>> round(fit_temperature([np.array([0.0, 4.0])] * 3 + [np.array([4.0, 0.0])], [1, 1, 1, 1]), 1) > 1
        True
    """
    if not scores:
        return 1.0
    grid = np.exp(np.linspace(math.log(0.05), math.log(50.0), 120))
    loss = np.zeros(len(grid))
    for s, g in zip(scores, gold):
        z = np.asarray(s, dtype=np.float64)[None, :] / grid[:, None]          # (T, C)
        p = np.exp(z - np.logaddexp.reduce(z, axis=1, keepdims=True))
        p[:, g] -= 1.0
        loss += (p * p).sum(1)
    return float(grid[int(np.argmin(loss))])


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> float:
    """ECE: the mean gap between confidence and accuracy over equal-width confidence bins, weighted by size.

    Example:
        >>> expected_calibration_error([0.9, 0.9, 0.6, 0.6], [True, True, True, False])
        0.1
    """
    bins = confidence_bins(confidence, correct, n_bins)
    if not bins:
        return float("nan")
    gap = sum(abs(mean_conf - acc) * count for _, mean_conf, acc, count in bins)
    return round(float(gap / sum(count for *_, count in bins)), 6)


def confidence_bins(confidence: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> list:
    """(bin centre, mean confidence, accuracy, count) of every non-empty equal-width confidence bin: the
    reliability diagram's points, and what the ECE averages.

    Example:
        >>> confidence_bins([0.9, 0.95, 0.3], [True, False, False])
        [(0.35, 0.3, 0.0, 1), (0.95, 0.925, 0.5, 2)]
    """
    conf, ok = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    return [((b + 0.5) / n_bins, float(conf[bins == b].mean()), float(ok[bins == b].mean()), int((bins == b).sum()))
            for b in sorted(set(bins.tolist()))]


def fit_thresholds(confidence: Sequence[float], sensitivity: Sequence[float], correct: Sequence[bool],
                   target_precision: float) -> tuple[float, float, dict]:
    """The (min sensitivity, min confidence) pair that answers the most questions while the answered ones stay
    at ``target_precision`` (searched over the observed values' quantiles); when no pair reaches it, the pair
    with the best precision that still answers a fifth of the questions. Returns the pair and its figures.

    Example:
        >>> s, c, fig = fit_thresholds([0.9, 0.8, 0.6, 0.55], [0.5, 0.4, 0.01, 0.02], [1, 1, 0, 0], 0.9)
        >>> fig["precision"], fig["coverage"]
        (1.0, 0.5)
    """
    conf, sens, ok = (np.asarray(x, dtype=float) for x in (confidence, sensitivity, correct))
    qs = np.linspace(0, 1, 21)
    s_grid = np.unique(np.concatenate([[0.0], np.quantile(sens, qs)]))
    c_grid = np.unique(np.concatenate([[0.0], np.quantile(conf, qs)]))
    best, fallback = None, None
    for s in s_grid:
        for c in c_grid:
            keep = (sens >= s) & (conf >= c)
            cov = float(keep.mean())
            if cov == 0:
                continue
            prec = float(ok[keep].mean())
            cand = (cov, prec, float(s), float(c))
            if prec >= target_precision and (best is None or cand[:2] > best[:2]):
                best = cand
            if cov >= 0.2 and (fallback is None or (prec, cov) > (fallback[1], fallback[0])):
                fallback = cand
    chosen = best or fallback or (1.0, float(ok.mean()), 0.0, 0.0)
    cov, prec, s, c = chosen
    return s, c, {"coverage": round(cov, 4), "precision": round(prec, 4), "reached_target": best is not None}


def coverage_curve(confidence: Sequence[float], sensitivity: Sequence[float], correct: Sequence[bool],
                   min_sensitivity: float = 0.0) -> list[tuple[float, float]]:
    """(coverage, accuracy) when answering only the most confident questions, confidence threshold swept over
    every observed value (questions below ``min_sensitivity`` are never answered)."""
    conf, sens, ok = (np.asarray(x, dtype=float) for x in (confidence, sensitivity, correct))
    order = np.argsort(-conf, kind="stable")
    pts = []
    answered = 0
    right = 0.0
    for i in order:
        if sens[i] < min_sensitivity:
            continue
        answered += 1
        right += ok[i]
        pts.append((answered / len(conf), right / answered))
    return pts
