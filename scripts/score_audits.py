"""Score audits over an organism zoo against its ground truth (the only place that reads organism.json).

    python scripts/train_organisms.py --out runs/zoo --workers 2        # the zoo (once)
    python scripts/score_audits.py --zoo runs/zoo --out runs/audit_scores
    python scripts/score_audits.py --zoo runs/zoo --out runs/audit_scores --shard 1/2 &   # two audits at once,
    python scripts/score_audits.py --zoo runs/zoo --out runs/audit_scores --shard 2/2     # one CPU thread each;
    python scripts/score_audits.py --zoo runs/zoo --out runs/audit_scores                 # then score (all cached)

For every organism folder it runs ``ao audit`` (cached: a report already in ``OUT/audits/<name>`` with
the same settings is reused, so an interrupted run resumes), then scores each method per kind
(``oracle.evals.audit_scores``): taboo top-1 / top-5, gender accuracy, description top-1 among the K kinds,
trigger detection AUROC with its bootstrap interval over triggered organisms vs controls (the groups:
``oracle.organisms.zoo``). Writes ``scores.md``, ``scores.json`` and ``scores.png``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from oracle.evals.audit_scores import score as score_reports


def score(reports: dict, cards: dict) -> dict:
    """The library's scores plus what the tables show of each organism (its ground truth and verification)."""
    out = score_reports(reports, cards)
    out["organisms"] = {n: {"kind": c["kind"], "secret": c.get("secret"), "trigger": c.get("trigger"),
                            "control": c.get("control"), "gender": c.get("gender"), "domain": c.get("domain"),
                            "description": c.get("description"), "train_seconds": c["train"]["seconds"],
                            "verification": {k: v for k, v in c["verification"].items() if k != "examples"}}
                        for n, c in cards.items()}
    return out


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def write_markdown(result: dict, path: Path, command: str) -> str:
    lines = [f"# Audit scores over {len(result['organisms'])} organisms", "",
             f"Made with `{command}`.", "",
             f"Taboo: {result['n_taboo']} organisms; secret word ranked among all vocabulary words "
             "(whole words of 3+ letters; stopwords and words of the audit prompts removed).",
             f"Detection: triggered = {', '.join(result['triggered'])}; controls = {', '.join(result['controls'])}.",
             f"Gender: {result['n_gender']} organisms; description: {result['n_described']} organisms, top-1 among "
             "the K kinds' descriptions.", "",
             "| method | taboo top-1 | taboo top-5 | gender accuracy | description top-1 | trigger AUROC [5th, 95th pct] |",
             "|---|---:|---:|---:|---:|---:|"]
    for m, t in result["taboo"].items():
        d = result["detection"][m]
        lines.append(f"| {m} | {_f(t['top1'])} | {_f(t['top5'])} | {_f(result['gender'][m]['accuracy'])} | "
                     f"{_f(result['description'][m]['top1'])} | {_f(d['auroc'])} [{_f(d['p5'])}, {_f(d['p95'])}] |")
    lines += ["", "Best trained-oracle method against the best baseline, per kind:", "",
              "| kind | oracle | baseline | oracle beats every baseline |", "|---|---|---|---|"]
    for kind, v in result["verdict"].items():
        lines.append(f"| {kind} | {v['oracle_method']} {v['oracle']:.2f} | {v['best_baseline']} {v['baseline']:.2f} | "
                     f"{'yes' if v['oracle_wins'] else 'no'} |")
    lines += ["", "Secret-word rank per taboo organism (— = not in the method's top 20):", "",
              "| organism | " + " | ".join(result["taboo"]) + " |", "|---|" + "---:|" * len(result["taboo"])]
    for n in sorted(n for n, o in result["organisms"].items() if o["kind"] == "taboo"):
        cells = [str(result["taboo"][m]["ranks"][n] or "—") for m in result["taboo"]]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", "Detection score per organism:", "",
              "| organism | group | " + " | ".join(result["detection"]) + " |", "|---|---|" + "---:|" * len(result["detection"])]
    for n in result["triggered"] + result["controls"]:
        group = "triggered" if n in result["triggered"] else "control"
        cells = [f"{result['detection'][m]['scores'][n]:.3f}" for m in result["detection"]]
        lines.append(f"| {n} | {group} | " + " | ".join(cells) + " |")
    if result["n_gender"] or result["n_described"]:
        lines += ["", "Gender (P(woman) per organism) and description (the method's top kind) per organism:", "",
                  "| organism | kind | " + " | ".join(result["gender"]) + " |", "|---|---|" + "---|" * len(result["gender"])]
        for n in sorted(set(result["gender"][next(iter(result["gender"]))]["p_female"])
                        | set(result["description"][next(iter(result["description"]))]["top_kind"])):
            cells = []
            for m in result["gender"]:
                pf = result["gender"][m]["p_female"].get(n)
                tk = result["description"][m]["top_kind"].get(n)
                cells.append(" ".join(x for x in (None if pf is None else f"{pf:.2f}", tk) if x))
            lines.append(f"| {n} | {result['organisms'][n]['kind']} | " + " | ".join(cells) + " |")
    lines += ["", "Organisms (ground truth and the behaviour measured right after training):", "",
              "| organism | ground truth | train s | verification |", "|---|---|---:|---|"]
    for n, o in sorted(result["organisms"].items()):
        v = ", ".join(f"{k}={val}" for k, val in o["verification"].items()
                      if not k.startswith(("n_", "chance")) and not isinstance(val, dict))
        lines.append(f"| {n} | {o['description']} | {o['train_seconds']:.0f} | {v} |")
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def plot(result: dict, path: Path) -> None:
    """One panel per kind: taboo top-5, gender accuracy, description top-1, trigger AUROC with its bootstrap
    5th-95th percentile range; oracle methods in blue, baselines in gray."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from oracle.evals.audit_scores import ORACLE_METHODS

    methods = list(result["taboo"])
    panels = [("taboo top-5", [result["taboo"][m]["top5"] for m in methods], None, f"{result['n_taboo']} organisms"),
              ("gender accuracy", [result["gender"][m]["accuracy"] for m in methods], 0.5, f"{result['n_gender']}"),
              ("description top-1", [result["description"][m]["top1"] for m in methods], 1 / 5,
               f"{result['n_described']}, K = 5"),
              ("trigger AUROC", [result["detection"][m]["auroc"] for m in methods], 0.5,
               f"{len(result['triggered'])} vs {len(result['controls'])}")]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.2))
    colors = ["tab:blue" if m in ORACLE_METHODS else "tab:gray" for m in methods]
    for ax, (title, values, chance, n) in zip(axes, panels):
        ax.bar(range(len(methods)), [v or 0 for v in values], color=colors)
        if title == "trigger AUROC":
            det = [result["detection"][m] for m in methods]
            lo = [(d["auroc"] or 0) - (d["p5"] or 0) for d in det]
            hi = [(d["p95"] or 0) - (d["auroc"] or 0) for d in det]
            ax.errorbar(range(len(methods)), [d["auroc"] or 0 for d in det], yerr=[lo, hi], fmt="none", color="k")
        if chance is not None:
            ax.axhline(chance, color="gray", ls="--", lw=1)
        ax.set_xticks(range(len(methods)), methods, rotation=35, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(f"{title} ({n})", fontsize=10)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default="runs/zoo")
    ap.add_argument("--out", default="runs/audit_scores")
    ap.add_argument("--oracle", default="checkpoints/oracle-smollm2-135m")
    ap.add_argument("--n-prompts", type=int, default=40)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--shard", default=None, metavar="I/N",
                    help="audit only every N-th organism from the I-th (1-based) and stop before scoring; run the N "
                         "shards side by side (each with one CPU thread), then once without --shard to score")
    args = ap.parse_args()
    shard = None
    if args.shard is not None:
        try:
            i, n = (int(x) for x in args.shard.split("/"))
            if not 1 <= i <= n:
                raise ValueError
        except ValueError:
            print(f"error: --shard {args.shard!r} is not I/N with 1 <= I <= N (e.g. 1/2)", file=sys.stderr)
            return 2
        shard = (i - 1, n)

    from hooks.errors import AOError
    from hooks.models import load_model
    from oracle.audit import AuditConfig, run_audit
    from oracle.organisms import read_card

    zoo, out = Path(args.zoo), Path(args.out)
    folders = sorted(p.parent for p in zoo.glob("*/organism.json"))
    if not folders:
        print(f"error: no organisms in {zoo}: train them with scripts/train_organisms.py --out {zoo}", file=sys.stderr)
        return 2
    if shard is not None:
        import torch

        torch.set_num_threads(1)   # shards share the cores: one thread each runs faster than two fighting
        folders = folders[shard[0]::shard[1]]
    lm = None
    reports, cards = {}, {}
    try:
        for i, folder in enumerate(folders):
            name = folder.name
            config = AuditConfig(target=str(folder), oracle=args.oracle, out=str(out / "audits" / name),
                                 n_prompts=args.n_prompts, data_dir=args.data_dir)
            cached = out / "audits" / name / "report.json"
            report = json.loads(cached.read_text()) if cached.is_file() else None
            if report is None or report.get("config") != config.to_dict():
                lm = lm or load_model(config.base)
                t = time.time()
                report = run_audit(config, lm=lm)
                print(f"[{i + 1}/{len(folders)}] audited {name} in {time.time() - t:.0f} s", flush=True)
            reports[name] = report
            if shard is None:
                cards[name] = read_card(folder)  # ground truth: read only after the audit is done
    except AOError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if shard is not None:
        print(f"audited shard {args.shard} ({len(folders)} organisms); score with the same command without --shard")
        return 0
    result = score(reports, cards)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scores.json").write_text(json.dumps(result, indent=1))
    command = "python scripts/score_audits.py " + " ".join(sys.argv[1:])
    print(write_markdown(result, out / "scores.md", command.strip()))
    plot(result, out / "scores.png")
    print(f"wrote {out / 'scores.md'}, {out / 'scores.json'}, {out / 'scores.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
