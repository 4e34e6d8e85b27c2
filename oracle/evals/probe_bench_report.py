"""Outputs of the probe-vs-oracle benchmark (:mod:`oracle.evals.probe_bench`): per-dataset CSV, Markdown and plot,
the summary table, and the number of labels a probe needs to match the oracle."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

from hooks.atomic import save_figure

PathLike = Union[str, Path]
LABEL_COUNTS = (8, 32, 128, 512)
#: depths every benchmark reads, as layer specs
DEPTHS = ("25%", "50%", "75%")
FIELDS = ("dataset", "method", "depth", "layer", "pooling", "n_labels", "accuracy", "ci_low", "ci_high", "n_test",
          "auroc", "frac_yes")


def label_counts(n_train: int) -> list[int]:
    """8, 32, 128, 512 where below the train pool size, then all of it.

    Example:
        >>> label_counts(100)
        [8, 32, 100]
    """
    return [k for k in LABEL_COUNTS if k < n_train] + [int(n_train)]


def safe_name(name: str) -> str:
    return name.replace("/", "__")

def _fmt(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def write_dataset_outputs(out: PathLike, name: str, rows: list[dict], question: str = "") -> list[Path]:
    """``<name>.csv``, ``<name>.md`` and ``<name>.png`` under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = out / safe_name(name)
    with open(base.with_suffix(".csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(FIELDS), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    lines = [f"# {name}", ""]
    if question:
        lines += [f"Oracle question: `{question}`", ""]
    lines += ["| method | depth (layer) | pooling | labels | accuracy | 95% CI | AUROC | answers Yes |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ci = f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if isinstance(r["ci_low"], float) else ""
        depth = f"{r['depth']} ({r['layer']})" if r["depth"] else ""
        lines.append(f"| {r['method']} | {depth} | {r['pooling']} | {r['n_labels']} | {r['accuracy']:.3f} | {ci} "
                     f"| {_fmt(r.get('auroc', ''))} | {_fmt(r.get('frac_yes', ''))} |")
    base.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _plot(base.with_suffix(".png"), name, rows)
    return [base.with_suffix(s) for s in (".csv", ".md", ".png")]


def _plot(path: Path, name: str, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    probes = [r for r in rows if r["method"] == "probe" and r["pooling"] == "last"]
    xs_all = sorted({r["n_labels"] for r in probes}) or [1, 2]
    for depth in DEPTHS:
        pts = sorted((r["n_labels"], r["accuracy"], r["ci_low"], r["ci_high"]) for r in probes if r["depth"] == depth)
        if pts:
            x, y, lo, hi = map(np.asarray, zip(*pts))
            layer = next(r["layer"] for r in probes if r["depth"] == depth)
            ax.errorbar(x, y, yerr=[y - lo, hi - y], marker="o", capsize=3, label=f"probe {depth} (layer {layer})")
    colors = {"oracle_trained": "tab:red", "oracle_untrained": "tab:gray"}
    for r in rows:
        if r["method"] in colors:
            c = colors[r["method"]]
            ax.axhline(r["accuracy"], color=c, lw=3 if r["method"] == "oracle_trained" else 1.5, label=r["method"].replace("_", " ") + f" ({r['accuracy']:.2f})")
            ax.axhspan(r["ci_low"], r["ci_high"], color=c, alpha=0.15)
        elif r["method"] == "majority":
            ax.axhline(r["accuracy"], color="k", ls="--", lw=1, zorder=5, label=f"majority ({r['accuracy']:.2f})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs_all)
    ax.set_xticklabels([str(x) for x in xs_all])
    ax.set_xlabel("labelled training examples (log scale)")
    ax.set_ylabel("test accuracy")
    lows = [r["ci_low"] if isinstance(r["ci_low"], float) else r["accuracy"] for r in rows]
    ax.set_ylim(max(0.0, min([0.4, *lows]) - 0.05), 1.02)
    ax.set_title(f"{name}: last-token probes vs oracle")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def labels_to_match(rows: list[dict], target: float) -> Optional[int]:
    """Smallest label count whose best probe (any depth, either pooling) reaches ``target``; None: never.

    Example:
        >>> rows = [{"method": "probe", "n_labels": 8, "accuracy": 0.6}, {"method": "probe", "n_labels": 32, "accuracy": 0.8}]
        >>> labels_to_match(rows, 0.7), labels_to_match(rows, 0.9)
        (32, None)
    """
    best: dict[int, float] = {}
    for r in rows:
        if r["method"] == "probe":
            best[r["n_labels"]] = max(best.get(r["n_labels"], -1.0), r["accuracy"])
    for k in sorted(best):
        if best[k] >= target - 1e-12:
            return k
    return None


def _best_probe(rows: list[dict], k: int) -> float:
    vals = [r["accuracy"] for r in rows if r["method"] == "probe" and r["n_labels"] == k]
    return max(vals) if vals else math.nan


def write_summary(out: PathLike, result: Any, data: Mapping[str, Any]) -> Path:
    """``summary.md``: one row per dataset (baseline, oracles, best probes, labels needed to match each oracle)."""
    out = Path(out)
    lines = ["# Probe vs oracle benchmark", "",
             "Accuracy on a fixed balanced test set. Probes: logistic regression (C chosen on a validation split) "
             "on the last-token or mean activation at 25/50/75 % depth; \"best probe\" takes the best depth and "
             "pooling. Oracle: zero-shot yes/no answer (P(Yes) >= 0.5) about the last-token activation at the 50 % "
             "layer (AUROC: of P(Yes), threshold-free). \"Labels to match\": smallest number of training labels whose best probe reaches the oracle's "
             "accuracy (\"never\" if none of the label counts tried does; \"<= 8\": already with the fewest labels tried). "
             "Picking the best of six probes on the test set flatters the probes slightly. "
             "95 % intervals by bootstrap over test examples.",
             ""]
    for note in result.notes:
        lines += [f"Note: {note}.", ""]
    lines += ["| dataset | train/test | majority | oracle trained | oracle untrained | best probe, fewest labels | best probe, all labels "
              "| labels to match trained | labels to match untrained |", "|---|---|---|---|---|---|---|---|---|"]
    for name, rows in result.rows.items():
        d = data[name]
        maj = next(r["accuracy"] for r in rows if r["method"] == "majority")
        cells = []
        matches = []
        for method in ("oracle_trained", "oracle_untrained"):
            r = next((r for r in rows if r["method"] == method), None)
            if r is None:
                cells.append("n/a")
                matches.append("n/a")
                continue
            au = f", AUROC {r['auroc']:.2f}" if isinstance(r.get("auroc"), float) else ""
            cells.append(f"{r['accuracy']:.3f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]{au}")
            k = labels_to_match(rows, r["accuracy"])
            small = min(label_counts(d.n_train))
            matches.append("never" if k is None else (f"<= {k}" if k == small else str(k)))
        small = min(label_counts(d.n_train))
        lines.append(f"| {name} | {d.n_train}/{len(d.test_idx)} | {maj:.3f} | {cells[0]} | {cells[1]} | "
                     f"{_best_probe(rows, small):.3f} ({small}) | {_best_probe(rows, d.n_train):.3f} ({d.n_train}) | {matches[0]} | {matches[1]} |")
    lines += ["", f"Wall time: {result.seconds:.0f} s.", ""]
    path = out / "summary.md"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
