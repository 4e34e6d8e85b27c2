"""Overlay the learning curves of several `oracle_learnability.py` runs (experiments/2026-learnability/) in one PNG.

    python experiments/2026-input-scaling/plot_learnability.py experiments/2026-learnability/tense-open-seed1 \
        experiments/2026-input-scaling/tense-open-scaled-seed1 \
        --names "raw inputs" "z-scored inputs" --out experiments/2026-input-scaling/tense-open-scaling.png
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="run folders (each with results.json)")
    ap.add_argument("--names", nargs="+", default=None, help="one legend name per run (default: folder names)")
    ap.add_argument("--out", required=True, help="PNG to write")
    args = ap.parse_args(argv)
    names = args.names or [Path(r).name for r in args.runs]
    if len(names) != len(args.runs):
        print(f"error: {len(args.runs)} runs but {len(names)} names: give one name per run", file=sys.stderr)
        return 2
    runs = []
    for r in args.runs:
        path = Path(r) / "results.json"
        if not path.is_file():
            print(f"error: {path} does not exist: pass folders written by oracle_learnability.py", file=sys.stderr)
            return 2
        runs.append(json.loads(path.read_text()))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for res, name, color in zip(runs, names, plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        rows = [g for g in res["generalize"] if not g.get("probe_only")]
        ax.plot([g["labels"] for g in rows], [g["oracle_auroc"] for g in rows], "o-", color=color,
                label=f"{name}: yes/no AUROC")
        opened = [g for g in rows if "open_acc" in g]
        if opened:
            ax.plot([g["labels"] for g in opened], [g["open_acc"] for g in opened], "^:", color=color,
                    label=f"{name}: names the class (open question)")
    ax.axhline(0.5, color="grey", lw=0.8)
    ax.set_xlabel("training labels seen")
    ax.set_ylabel("eval AUROC / accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
