"""How much of a model's residual activations is the same for every input: the case for input scaling.

For the last-token activations of a few held-out texts at chosen layers, prints the mean norm, the share of the
squared norm held by the top-5 dimensions, the mean cosine between the vectors of different texts, and the same
cosine after the mean vector is subtracted (what ``--input-scaling standardize`` removes before injection).

    python experiments/2026-input-scaling/activation_geometry.py                      # smollm2-135m, layers 7 15 22, 3 x 40 texts
    python experiments/2026-input-scaling/activation_geometry.py --model gemma3-270m --layers 4 9 13
"""
from __future__ import annotations

import argparse

import torch

from hooks.models import load_model
from oracle.core.batching import target_vectors
from oracle.training.tasks.classification import build_heldout_classification


def mean_off_diagonal_cosine(x_ND: torch.Tensor) -> float:
    u = x_ND / x_ND.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    cos = u @ u.T
    return float(cos[~torch.eye(len(u), dtype=torch.bool)].mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layers", type=int, nargs="+", default=[7, 15, 22])
    ap.add_argument("--n", type=int, default=40, help="texts per held-out set (3 sets)")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    lm = load_model(args.model)
    exs = []
    for d in ("singular_plural", "engels/60_wikidata_occupation_isathlete", "engels/139_news_class_Politics"):
        exs += build_heldout_classification(lm.tokenizer, lm.n_layers, d, n=args.n, data_dir=args.data_dir)
    ctx = [e.context_ids for e in exs]
    print(f"{args.model}: last-token activations of {len(ctx)} texts")
    print("| layer | mean norm | top-5 dims | their share of the squared norm | mean cosine | mean cosine, mean removed |")
    print("|---|---:|---|---:|---:|---:|")
    for L in args.layers:
        v_ND = torch.cat(target_vectors(lm, ctx, [[len(c) - 1] for c in ctx], [L] * len(ctx)))
        share_D = (v_ND ** 2).sum(0) / (v_ND ** 2).sum()
        top = share_D.topk(5)
        print(f"| {L} | {float(v_ND.norm(dim=-1).mean()):.1f} | {top.indices.tolist()} | {float(top.values.sum()):.3f} | "
              f"{mean_off_diagonal_cosine(v_ND):.3f} | {mean_off_diagonal_cosine(v_ND - v_ND.mean(0)):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
