"""Can the model answer the oracle's yes/no questions when it reads the text itself?

For the held-out classification sets (the same examples `ao eval` builds: n per set, seed 0) and the
training groups' eval split, the base model (no adapter, no injection) gets the plain text and the
question in one user turn, ``f"{text}\\n\\n{question}"``, and its P(Yes) / (P(Yes) + P(No)) at the answer
position is scored like the oracle's (accuracy at 0.5, AUROC). An oracle built on this model has to get
the same answer from activations alone, so this is a rough ceiling on what its questions can draw out:
where the model cannot answer from the text, the oracle has to learn the concept, not just read it.

    python experiments/2026-text-baseline/text_baseline.py                      # ~10 min on 2 CPU cores
    python experiments/2026-text-baseline/text_baseline.py --n 100 --out runs/text_baseline
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from hooks.capture import pad_batch, position_ids_from_mask
from hooks.models import load_model
from oracle.evals.heldout import p_yes_scores, scores_by_asked
from oracle.core.prompt import render_user_turn
from oracle.data.chat import tokenize_text
from oracle.core.yes_no import yes_share
from oracle.training.tasks.classification import (TRAIN_GROUPS, build_classification, build_heldout_classification,
                                         heldout_dataset_names)


def text_p_yes(lm, examples, batch_size: int = 16) -> list[float]:
    """The base model's P(Yes) for each example's question asked about its text, in the prompt."""
    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    seqs = [tokenize_text(tok, render_user_turn(tok, f"{e.meta['text']}\n\n{e.question}")) for e in examples]
    out: list[float] = []
    with torch.no_grad():
        for s in range(0, len(seqs), batch_size):
            tokens_BL, mask_BL = pad_batch(seqs[s:s + batch_size], pad, side="left", device=lm.device)
            logits_BV = lm.model(input_ids=tokens_BL, attention_mask=mask_BL,
                                 position_ids=position_ids_from_mask(mask_BL), use_cache=False).logits[:, -1].float()
            out += yes_share(logits_BV.log_softmax(-1), tok).tolist()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=200, help="examples per held-out set (ao eval's default)")
    ap.add_argument("--families-n", type=int, default=100, help="examples per training group's eval split")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="runs/text_baseline", help="folder for results.json and results.md")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    lm = load_model(args.model)
    lm.model.eval()
    rows: dict[str, dict] = {}
    for name in heldout_dataset_names(args.data_dir):
        exs = build_heldout_classification(lm.tokenizer, lm.n_layers, name, n=args.n, seed=0, data_dir=args.data_dir,
                                           position="last")
        rows[name] = {"split": "held-out", **scores_by_asked(text_p_yes(lm, exs), exs)}
        per_q = "  ".join(f"{a} {v['auroc']:.3f}" for a, v in rows[name]["by_asked"].items())
        print(f"{name:45s} acc {rows[name]['accuracy']:.3f} AUROC {rows[name]['auroc']:.3f}  per question: {per_q}",
              flush=True)
    for g in TRAIN_GROUPS:
        exs = build_classification(lm.tokenizer, lm.n_layers, args.families_n, 0, args.data_dir, "eval",
                                   datasets=[g], position="last")
        rows[g] = {"split": "training group, eval split", **p_yes_scores(text_p_yes(lm, exs),
                                                                          [e.answer == "Yes" for e in exs])}
        print(f"{g:45s} acc {rows[g]['accuracy']:.3f} AUROC {rows[g]['auroc']:.3f}", flush=True)
    held = [r for r in rows.values() if r["split"] == "held-out"]
    mean_acc = sum(r["accuracy"] for r in held) / max(1, len(held))
    print(f"held-out mean accuracy, the model reading the text: {mean_acc:.3f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "heldout_mean_accuracy": mean_acc,
                                                  "sets": rows}, indent=1))
    lines = ["| set | split | accuracy | AUROC | mean P(Yes) |", "|---|---|---:|---:|---:|"]
    lines += [f"| {k} | {r['split']} | {r['accuracy']:.3f} | {r['auroc']:.3f} | {r['mean_p_yes']:.3f} |"
              for k, r in rows.items()]
    lines.append(f"| **held-out mean** | | **{mean_acc:.3f}** | | |")
    lines += ["", "Held-out sets per question class (the answer is Yes exactly for the texts of the class named, or "
              "for a `not_` class, of the other): AUROC / accuracy", "",
              "| set | question names | AUROC | accuracy |", "|---|---|---:|---:|"]
    lines += [f"| {k} | {a} | {v['auroc']:.3f} | {v['accuracy']:.3f} |"
              for k, r in rows.items() for a, v in r.get("by_asked", {}).items()]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
