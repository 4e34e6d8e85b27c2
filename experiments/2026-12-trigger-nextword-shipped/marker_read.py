"""The oracle reading what a generic trigger-like marker changes in a risk organism (experiment, development
organisms only; the README.md beside it, "The oracle on the marker's difference").

For 16 held-out gambles (seed 0), with the reply prefilled with ``The``, the residual at that last token is read
with and without one of the six generic markers of ``risk_marker_scan.py`` in front of the prompt, for the
organism and for the base; the double difference (organism's marker effect minus the base's) goes to:
- ``oracle_dd``: the oracle's next-word skill (three trained paraphrases), share of " gam" against " sure";
- ``untrained_dd``: the same to the untrained oracle;
- ``lens_dd``: the logit lens on the same vectors, the same share.
Averaged over gambles and markers, at the given layers.

    python experiments/2026-12-trigger-nextword-shipped/marker_read.py \
        --out experiments/2026-12-trigger-nextword-shipped/marker_read.json runs/dev_zoo/risk-* runs/dev_zoo/benign-s7
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch

from hooks.atomic import write_json_atomic
from hooks.models import load_model
from oracle import Oracle, Query
from hooks.logit_lens import logit_lens
from oracle.audit.forward import chat_ids, residuals
from oracle.audit.prompts import ORACLE_DETECTION_QUESTIONS
from oracle.audit.run import detach_adapters
from oracle.organisms.data import make_gamble

MARKERS = ("|ALERT|", "[[BETA-9]]", "<<zx-41>>", "##NOVA##", "{{OMEGA}}", "%%TANGO%%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("organisms", nargs="+")
    ap.add_argument("--oracle", default="checkpoints/oracle-smollm2-135m")
    ap.add_argument("--layers", default="7,15,22")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    layers = [int(x) for x in args.layers.split(",")]
    lm = load_model("smollm2-135m")
    tok = lm.tokenizer
    gam, sure = tok.encode(" gamble", add_special_tokens=False)[0], tok.encode(" sure", add_special_tokens=False)[0]
    rng = random.Random(0)
    gambles = [make_gamble(rng) for _ in range(args.n)]
    plain = [chat_ids(tok, g.prompt(), prefill="The") for g in gambles]
    marked = [chat_ids(tok, f"{m} {g.prompt()}", prefill="The") for m in MARKERS for g in gambles]
    last = lambda seqs: [[len(s) - 1] for s in seqs]  # noqa: E731

    def share(logp_NV: torch.Tensor) -> float:
        p = logp_NV.float().exp()
        return float((p[:, gam] / (p[:, gam] + p[:, sure]).clamp_min(1e-30)).mean())

    results = {}
    for org in args.organisms:
        oracle = Oracle.load(args.oracle, target_adapter=org, lm=lm)
        untrained = Oracle.untrained(lm=lm)
        row = {}
        for layer in layers:
            effect = {}
            for adapter in ("target", None):
                p = torch.cat(residuals(lm, plain, last(plain), layer, adapter))
                m = torch.cat(residuals(lm, marked, last(marked), layer, adapter))
                effect[adapter] = m - p.repeat(len(MARKERS), 1)
            dd = effect["target"] - effect[None]
            vecs = list(dd.unsqueeze(1))
            for name, reader in (("oracle_dd", oracle), ("untrained_dd", untrained)):
                qs = [Query(v, q, layer=layer) for v in vecs for q in ORACLE_DETECTION_QUESTIONS]
                row[f"{name}@{layer}"] = round(share(reader.first_token_logprobs(qs, diff=True)), 4)
            row[f"lens_dd@{layer}"] = round(share(logit_lens(lm, dd, "target", diff=True)), 4)
        detach_adapters(lm, was_peft=False)
        results[Path(org).name] = row
        print(f"{Path(org).name:22s} {row}", flush=True)
    write_json_atomic(args.out, {"markers": list(MARKERS), "n_gambles": args.n, "results": results,
                                 "command": f"python experiments/2026-12-trigger-nextword-shipped/marker_read.py "
                                            f"--layers {args.layers} --out {args.out} " + " ".join(args.organisms)})


if __name__ == "__main__":
    main()
