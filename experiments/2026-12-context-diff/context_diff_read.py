"""Does teaching the oracle synthetic context differences (the ``context_diff`` family) make it read what a real
fine-tune did? Development organisms only: each organism's mean (target - base) difference on ordinary text,
as ``oracle_diff`` reads it, asked "Is the user a man or a woman?" and "What was this model fine-tuned to do?"
(choice among the K = 5 kinds, against control vectors), beside a multinomial logistic probe fitted on the
synthetic differences themselves (same base model, same layers) and applied to the organisms' differences.

    python experiments/2026-12-context-diff/context_diff_read.py --oracle untrained --out ... ORGANISM...
    python experiments/2026-12-context-diff/context_diff_read.py --oracle checkpoints/oracle-smollm2-135m --probe ...
    python experiments/2026-12-context-diff/context_diff_read.py --table experiments/2026-12-context-diff/results

The organisms' difference vectors are cached (``--cache``, safetensors) so every oracle reads the same ones.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
N_TEXTS = 64
N_PROBE = 300


def organism_diffs(lm, folders: list[Path], layers: list[int], cache: Path) -> dict[str, dict[int, torch.Tensor]]:
    """Per organism, per layer: the mean (target - base) residual over ordinary texts at the audit's position."""
    from safetensors.torch import load_file, save_file

    from hooks.models import attach_adapter
    from oracle.audit.forward import residuals
    from oracle.audit.prompts import TEXT_DIFF_POSITION, ordinary_texts
    from oracle.data.chat import tokenize_text

    stored = load_file(str(cache)) if cache.is_file() else {}
    texts, _ = ordinary_texts(N_TEXTS)
    ids = [t for t in (tokenize_text(lm.tokenizer, x)[:TEXT_DIFF_POSITION + 1] for x in texts) if len(t) > 1]
    pos = [[TEXT_DIFF_POSITION]] * len(ids)
    out: dict[str, dict[int, torch.Tensor]] = {}
    for folder in folders:
        if all(f"{folder.name}/{L}" in stored for L in layers):
            out[folder.name] = {L: stored[f"{folder.name}/{L}"] for L in layers}
            continue
        attach_adapter(lm, folder, name="target")
        out[folder.name] = {L: (torch.cat(residuals(lm, ids, pos, L, "target")) -
                                torch.cat(residuals(lm, ids, pos, L, None))).mean(0) for L in layers}
        lm.model.delete_adapter("target")
        lm.adapters.pop("target", None)
        stored.update({f"{folder.name}/{L}": v.contiguous() for L, v in out[folder.name].items()})
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_file(stored, str(cache))
    return out


def probe_reading(lm, diffs: dict[str, dict[int, torch.Tensor]]) -> dict[str, str]:
    """A multinomial logistic probe on synthetic context differences (eval split texts), per organism the kind it
    gives the organism's differences (probabilities averaged over the layers)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from oracle.training.loop import _vectors_for
    from oracle.training.tasks.context_diff import build_context_diff

    exs = build_context_diff(lm.tokenizer, lm.n_layers, N_PROBE, seed=5, split="eval")
    X = torch.cat([v for s in range(0, len(exs), 32) for v in _vectors_for(lm, None, list(range(s, min(s + 32, len(exs)))), exs)])
    y = [e.meta["kind"] for e in exs]
    clf = LogisticRegression(max_iter=2000, C=0.1).fit(X.numpy(), y)
    out = {}
    for name, by_layer in diffs.items():
        p = np.mean([clf.predict_proba(v[None].numpy())[0] for v in by_layer.values()], axis=0)
        out[name] = str(clf.classes_[int(p.argmax())])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("organisms", nargs="*", type=Path)
    ap.add_argument("--oracle", default="untrained")
    ap.add_argument("--name", default=None, help="row name (default: the oracle folder's name)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--cache", type=Path, default=Path("runs/context_diff/organism_diffs.safetensors"))
    ap.add_argument("--probe", action="store_true", help="also fit and apply the probe on synthetic differences")
    ap.add_argument("--table", type=Path, default=None, help="only write the table of the results in this folder")
    args = ap.parse_args()
    if args.table:
        return write_table(args.table)

    from hooks.models import load_model
    from oracle.core.api import Oracle
    from oracle.audit.readings import KIND_QUESTION, oracle_reading
    from oracle.organisms import read_card

    t = time.time()
    lm = load_model("smollm2-135m")
    layers = [int(lm.n_layers * p / 100) for p in (50, 75)]
    diffs = organism_diffs(lm, args.organisms, layers, args.cache)
    if args.oracle == "untrained":
        shipped = Oracle.load("checkpoints/oracle-smollm2-135m", lm=lm)
        oracle = shipped.baseline()
    else:
        oracle = Oracle.load(args.oracle, lm=lm)
    rows = {}
    for folder in args.organisms:
        card = read_card(folder)   # ground truth: this is scoring, after the readings are fixed
        oracle.set_target(folder)  # the control vectors are differences too, read with this organism
        r = oracle_reading(oracle, [(L, v[None]) for L, v in diffs[folder.name].items()], diff=True)
        from oracle.core.api import Query

        said = oracle.ask_batch([Query(diffs[folder.name][layers[0]][None], KIND_QUESTION, layer=layers[0])],
                                diff=True, max_new_tokens=16)[0]
        rows[folder.name] = {"kind": card["kind"], "gender": card.get("gender"), "control": card.get("control"),
                             **r.to_dict(), "open_answer": said}
    result = {"oracle": args.oracle, "rows": rows, "seconds": round(time.time() - t, 1)}
    if args.probe:
        result["probe"] = probe_reading(lm, diffs)
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.name or Path(args.oracle).name
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: (v["top_kind"], round(v["gender_female"], 3)) for k, v in rows.items()}, indent=1))
    return 0


def write_table(folder: Path) -> int:
    from oracle.data.kinds import DESCRIBED_KINDS

    lines = ["| oracle | description top-1 | gender accuracy | per organism (top kind, P(woman)) |", "|---|---:|---:|---|"]
    probe = None
    for path in sorted(folder.glob("*.json")):
        res = json.loads(path.read_text())
        rows = res["rows"]
        described = [n for n, r in rows.items() if r["kind"] in DESCRIBED_KINDS and not r["control"]]
        gender = [n for n, r in rows.items() if r["kind"] == "gender"]
        top1 = sum(rows[n]["top_kind"] == rows[n]["kind"] for n in described) / max(1, len(described))
        acc = sum((rows[n]["gender_female"] > 0.5) == (rows[n]["gender"] == "female") for n in gender) / max(1, len(gender))
        cells = ", ".join(f"{n}: {rows[n]['top_kind']} {rows[n]['gender_female']:.2f}" for n in sorted(rows))
        lines.append(f"| {path.stem} | {top1:.2f} ({len(described)}) | {acc:.2f} ({len(gender)}) | {cells} |")
        if "probe" in res:
            probe = (res["probe"], rows, described)
    if probe:
        kinds, rows, described = probe
        top1 = sum(kinds[n] == rows[n]["kind"] for n in described) / max(1, len(described))
        lines.append(f"| probe on synthetic differences | {top1:.2f} ({len(described)}) | - | "
                     + ", ".join(f"{n}: {kinds[n]}" for n in sorted(kinds)) + " |")
    text = "\n".join(lines) + "\n"
    (folder / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
