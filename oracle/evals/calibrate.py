"""Fit and judge an oracle's calibration and abstention (:mod:`oracle.core.confidence`) on reading-skill items.

:func:`calibrate` fits on the ``calibration`` split (a fifth of the eval documents, never in the suite) and
writes ``calibration.json``; :func:`confidence_report` scores the fitted oracle, and the untrained one with
the same thresholds, on the suite's own unseen items: expected calibration error before and after the
temperature, how often each abstains, and accuracy against coverage. ``ao calibrate`` and
``ao eval --suite skills --confidence`` drive them.

Example:
    >>> cal = calibrate(Oracle.load("checkpoints/oracle-smollm2-135m"), CalibrationConfig(n=24))   # doctest: +SKIP
    >>> cal.choice.temperature                                                                     # doctest: +SKIP
    1.7
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import torch

from hooks.atomic import atomic_write_text, save_figure
from hooks.errors import InputError
from hooks.progress import progress_bar

from oracle.core.api import Oracle, Query
from oracle.core.confidence import (N_CONTROLS, Calibration, confidence_bins, KindCalibration, check_threshold, choice_scores_and_sensitivity,
                         coverage_curve, expected_calibration_error, fit_temperature, fit_thresholds,
                         open_logprobs_and_sensitivity)
from oracle.evals.heldout import example_vectors
from oracle.training.tasks.base import OracleExample
from oracle.training.tasks.reading import CALIBRATION, SKILLS, build_reading

if TYPE_CHECKING:
    from oracle.evals.suite import SuiteConfig

log = logging.getLogger(__name__)


@dataclass
class CalibrationConfig:
    """One calibration fit (saved in ``calibration.json`` under ``fit``).

    Example:
        >>> CalibrationConfig(target_precision=1.2)
        Traceback (most recent call last):
        ...
        hooks.errors.InputError: --target-precision 1.2 is outside [0, 1]: give a share such as 0.6
    """

    n: int = 32                       # items per skill row
    target_precision: float = 0.8     # precision of the answered questions the thresholds aim for
    n_controls: int = N_CONTROLS
    seed: int = 0
    data_dir: Optional[str] = None

    def __post_init__(self) -> None:
        check_threshold("--target-precision", self.target_precision)
        if self.n < 4:
            raise InputError(f"--n {self.n}: calibration needs at least 4 items per skill")


def trained_rows() -> list[tuple[str, str, str]]:
    """``(row, skill, position)`` of every trained reading skill (held-out skills stay out of the fit)."""
    return [(name if len(spec.positions) == 1 else f"{name} ({pos})", name, pos)
            for name, spec in SKILLS.items() if spec.trained for pos in spec.positions]


def kind_of(item: OracleExample) -> str:
    return "choice" if item.meta["scoring"] == "choice" else "open"


def measure(oracle: Oracle, items: Sequence[OracleExample], vecs: Sequence[torch.Tensor],
            n_controls: int = N_CONTROLS) -> list[dict]:
    """Per item: its kind, the raw answer scores, the gold index, whether the oracle is right, the sensitivity."""
    queries = [Query(v, e.question, e.layer) for v, e in zip(vecs, items)]
    out: list[dict] = []
    if kind_of(items[0]) == "choice":
        scores, prior, sens = choice_scores_and_sensitivity(oracle, queries, [e.meta["candidates"] for e in items],
                                                            n_controls=n_controls)
        for s, pr, e, se in zip(scores, prior, items, sens):
            against = np.asarray(s, dtype=np.float32) - np.asarray(pr, dtype=np.float32)   # see debiased_choice
            out.append({"kind": "choice", "scores": against, "gold": e.meta["label"],
                        "correct": int(np.argmax(against)) == e.meta["label"],
                        "plain_correct": int(np.argmax(s)) == e.meta["label"], "sensitivity": se})
        return out
    tok = oracle.lm.tokenizer
    logp, sens = open_logprobs_and_sensitivity(oracle, queries, n_controls=n_controls)
    for row, e, se in zip(logp, items, sens):
        gold = tok.encode(e.answer, add_special_tokens=False)[0]
        pred = int(row.argmax())
        out.append({"kind": "open", "scores": row.numpy().astype(np.float32), "gold": gold,
                    "correct": tok.decode([pred]).strip().lower() == tok.decode([gold]).strip().lower(),
                    "sensitivity": se})
    return out


def confidences(records: Sequence[dict], temperature: float) -> list[float]:
    """Each record's calibrated probability of the answer the oracle gives (its top score)."""
    return [float(torch.as_tensor(r["scores"] / temperature).softmax(-1).max()) for r in records]


def fit_calibration(records: Sequence[dict], target_precision: float, adapter_sha256: str = "") -> Calibration:
    """Temperature and thresholds per kind from measured records."""
    cal = Calibration(target_precision=target_precision, adapter_sha256=adapter_sha256)
    for kind in ("choice", "open"):
        recs = [r for r in records if r["kind"] == kind]
        if not recs:
            continue
        t = fit_temperature([r["scores"] for r in recs], [r["gold"] for r in recs])
        conf = confidences(recs, t)
        ok = [r["correct"] for r in recs]
        sens = [r["sensitivity"] for r in recs]
        s_min, c_min, figs = fit_thresholds(conf, sens, ok, target_precision)
        setattr(cal, kind, KindCalibration(temperature=round(t, 4), min_sensitivity=round(s_min, 6),
                                           min_confidence=round(c_min, 6)))
        cal.fit[kind] = {"n": len(recs), "accuracy": round(float(np.mean(ok)), 4),
                         "ece_before": expected_calibration_error(confidences(recs, 1.0), ok),
                         "ece_after": expected_calibration_error(conf, ok), **figs}
        if not figs["reached_target"]:
            log.warning("%s answers: no thresholds reach precision %.2f on the calibration split; the best keep "
                        "%.2f at %.0f%% coverage", kind, target_precision, figs["precision"], 100 * figs["coverage"])
    return cal


def _items(oracle: Oracle, split: str, n: int, seed: int, data_dir, layer: int):
    untrained = oracle.baseline()
    out = {}
    for row, skill, pos in trained_rows():
        exs = build_reading(oracle.lm.tokenizer, oracle.lm.n_layers, n, seed, data_dir, split, skills={skill: 1.0},
                            position=pos, layer=layer, questions="all")
        out[row] = (exs, example_vectors(untrained, exs))
    return out


def calibrate(oracle: Oracle, cfg: CalibrationConfig, progress: bool = False) -> tuple[Calibration, list[dict]]:
    """Fit ``oracle``'s calibration on the calibration split; returns it (not yet saved) and the records."""
    from oracle.core.confidence import adapter_sha256

    layer = oracle.card.source_layers[len(oracle.card.source_layers) // 2]
    rows = _items(oracle, CALIBRATION, cfg.n, cfg.seed, cfg.data_dir, layer)
    bar = progress_bar(len(rows), "calibration", progress)
    records: list[dict] = []
    for row, (exs, vecs) in rows.items():
        recs = measure(oracle, exs, vecs, cfg.n_controls)
        records += [dict(r, row=row) for r in recs]
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    folder = oracle.lm.adapters.get("oracle")
    sha = adapter_sha256(folder) if folder and Path(folder, "adapter_model.safetensors").is_file() else ""
    cal = fit_calibration(records, cfg.target_precision, sha)
    cal.fit["config"] = asdict(cfg)
    cal.fit["layer"] = layer
    return cal, records


def judge(records: Sequence[dict], cal: Calibration) -> dict:
    """On measured records (e.g. the suite's): per kind, ECE before/after, the abstention share, accuracy of
    all and of the answered questions, and the coverage-accuracy curve."""
    out: dict = {}
    for kind in ("choice", "open"):
        recs = [r for r in records if r["kind"] == kind]
        if not recs:
            continue
        k = cal.kind(kind)
        conf = confidences(recs, k.temperature)
        ok = [bool(r["correct"]) for r in recs]
        sens = [float(r["sensitivity"]) for r in recs]
        answered = [not cal.abstains(kind, c, s) for c, s in zip(conf, sens)]
        kept = [o for o, a in zip(ok, answered) if a]
        plain = [r["plain_correct"] for r in recs if "plain_correct" in r]
        out[kind] = {"n": len(recs), "accuracy": round(float(np.mean(ok)), 4),
                     **({"accuracy_plain_scores": round(float(np.mean(plain)), 4)} if plain else {}),
                     "ece_before": expected_calibration_error(confidences(recs, 1.0), ok),
                     "ece_after": expected_calibration_error(conf, ok),
                     "abstained": round(1 - float(np.mean(answered)), 4),
                     "accuracy_answered": round(float(np.mean(kept)), 4) if kept else None,
                     "mean_sensitivity": round(float(np.mean(sens)), 4),
                     "curve": [(round(c, 4), round(a, 4)) for c, a in coverage_curve(conf, sens, ok)],
                     "reliability_before": reliability_bins(confidences(recs, 1.0), ok),
                     "reliability": reliability_bins(conf, ok)}
    return out


def reliability_bins(confidence: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> list:
    """:func:`oracle.core.confidence.confidence_bins`, rounded for the report."""
    return [(c, round(m, 4), round(a, 4), n) for c, m, a, n in confidence_bins(confidence, correct, n_bins)]


def confidence_report(oracle: Oracle, items: dict, n_controls: int = N_CONTROLS, progress: bool = False) -> dict:
    """The suite's items (``{row: (items, vectors)}``) judged for the trained oracle with its calibration and
    for the untrained oracle with the same thresholds and temperatures."""
    if oracle.calibration is None:
        raise InputError("this oracle has no calibration.json: run `ao calibrate --oracle <folder>` first")
    untrained = Oracle(oracle.lm, oracle.card, trained=False, scaler=oracle.scaler)
    rows = {row: v for row, v in items.items() if SKILLS[v[0][0].meta["skill"]].trained}
    bar = progress_bar(2 * len(rows), "confidence", progress)
    out = {}
    for name, who in (("trained", oracle), ("untrained", untrained)):
        records: list[dict] = []
        for row, (exs, vecs) in rows.items():
            records += [dict(r, row=row) for r in measure(who, exs, vecs, n_controls)]
            if bar:
                bar.update(1)
        out[name] = judge(records, oracle.calibration)
    if bar:
        bar.close()
    return out


def confidence_table(report: dict) -> list[str]:
    """Markdown rows: per oracle and kind, ECE before/after, abstention share, accuracy of all vs answered."""
    lines = ["| oracle | answers | n | ECE before | ECE after | abstains | accuracy, all | accuracy, answered |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for who, kinds in report.items():
        for kind, r in kinds.items():
            answered = "-" if r["accuracy_answered"] is None else f"{r['accuracy_answered']:.2f}"
            lines.append(f"| {who} | {kind} | {r['n']} | {r['ece_before']:.3f} | {r['ece_after']:.3f} | "
                         f"{r['abstained']:.0%} | {r['accuracy']:.2f} | {answered} |")
    return lines


def plot_confidence(report: dict, path: Path) -> None:
    """Reliability diagram of the trained oracle (before and after the temperature) and accuracy against
    coverage for both oracles, the fitted thresholds' operating point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    ax1.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    for kind, r in report.get("trained", {}).items():
        for key, style, label in (("reliability_before", "x:", "before"), ("reliability", "o-", "after")):
            pts = r[key]
            ax1.plot([p[1] for p in pts], [p[2] for p in pts], style, label=f"{kind}, {label} (ECE {r['ece_before' if label == 'before' else 'ece_after']:.3f})")
    ax1.set_xlabel("confidence")
    ax1.set_ylabel("accuracy")
    ax1.set_title("reliability, trained oracle")
    ax1.legend(fontsize=7)
    for who, kinds in report.items():
        for kind, r in kinds.items():
            pts = r["curve"]
            line, = ax2.plot([p[0] for p in pts], [p[1] for p in pts], label=f"{who}, {kind}",
                             ls="-" if who == "trained" else "--")
            if r["accuracy_answered"] is not None:
                ax2.plot([1 - r["abstained"]], [r["accuracy_answered"]], "o", color=line.get_color())
    ax2.set_xlabel("coverage (share answered, most confident first)")
    ax2.set_ylabel("accuracy of the answered")
    ax2.set_xlim(0, 1)
    ax2.set_ylim(0, 1)
    ax2.set_title("accuracy vs coverage (dots: fitted thresholds)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def append_confidence_section(oracle: Oracle, cfg: "SuiteConfig", layer: int, md: Path) -> dict:
    """Calibration and abstention on the suite's own items (``cfg``, ``layer``): a section appended to the
    suite report ``md`` and ``confidence.png`` beside it; returns the figures."""
    from oracle.evals.suite import suite_items

    untrained = type(oracle)(oracle.lm, oracle.card, trained=False, scaler=oracle.scaler)
    items = {row: (exs, example_vectors(untrained, exs)) for row, exs in suite_items(oracle.lm, cfg, layer).items()}
    report = confidence_report(oracle, items, progress=True)
    png = md.parent / "confidence.png"
    plot_confidence(report, png)
    atomic_write_text(md.parent / "confidence.json", json.dumps(report, indent=1) + "\n")
    cal = oracle.calibration
    section = ["", "## Calibration and abstention", "",
               f"Temperatures and thresholds fitted by `ao calibrate` on the calibration split (choice: T "
               f"{cal.choice.temperature:.2f}, answers when sensitivity >= {cal.choice.min_sensitivity:.4f} and "
               f"confidence >= {cal.choice.min_confidence:.3f}; open: T {cal.open.temperature:.2f}, sensitivity >= "
               f"{cal.open.min_sensitivity:.4f}, confidence >= {cal.open.min_confidence:.3f}); scored here on the "
               "suite's unseen items of the trained skills. The untrained oracle is judged with the same "
               "temperatures and thresholds.", ""]
    section += confidence_table(report) + ["", f"![calibration and coverage]({png.name})",
                                           "", "Every figure, with the coverage curves: `confidence.json`."]
    atomic_write_text(md, md.read_text() + "\n".join(section) + "\n")
    return report
