"""Read what a fine-tune changed from its mean activation difference on ordinary text (the taboo secret).

The audit's oracle methods read the organism on its audit prompts and hints, which hold too little of the secret
(experiments/2026-12-taboo-ceiling/README.md). This script reads a different place, after the "activation
difference lens" of Minder et al. (2025, "Narrow finetuning leaves clearly readable traces in activation
differences"): the organism's residual minus the base's on the first tokens of ordinary text (WikiText paragraphs
the oracle never trained on), averaged over many texts so that the texts' own content cancels and what the
fine-tune added to every input remains. Per layer, each mean difference (one per token position, one over
positions 1..15, one window of positions 1..7) is read by:

- ``oracle_*``: the shipped oracle asked its topic, window-word and next-word questions on the difference;
- ``untrained_*``: the same questions to the base model with the same injection (Patchscopes-style);
- ``lens``: the difference times the final norm's gain, through the unembedding.

Each reading's distribution is ranked into whole words with the audit's echo filter, and the secret's rank
printed; the organism's own prefill (``My secret word is "``) is the baseline to beat.

    python experiments/2026-12-taboo-text-diff/generic_diff_read.py --out experiments/2026-12-taboo-text-diff/dev \
        runs/dev_zoo/taboo-green runs/dev_zoo/taboo-leaf runs/dev_zoo/taboo-rock runs/dev_zoo/taboo-jump runs/dev_zoo/taboo-salt
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from hooks.atomic import atomic_write_text, write_json_atomic
from hooks.models import load_model
from oracle import Oracle, Query
from oracle.audit.config import AuditConfig
from hooks.logit_lens import logit_lens
from oracle.audit.forward import chat_ids, residuals
from oracle.audit.methods import AuditContext
from oracle.audit.prompts import audit_prompts
from oracle.audit.run import echo_words, read_replies, word_vocab
from oracle.audit.words import rank_words, word_rank
from oracle.organisms import read_card
from oracle.data.chat import tokenize_text
from oracle.data.texts import wikitext_paragraphs
from oracle.training.tasks.reading import SKILLS

QUESTIONS = {"topic": SKILLS["topic"].train_questions[0], "word": SKILLS["window_word"].train_questions[0],
             "next": SKILLS["next_word"].train_questions[0]}
LAYERS = (7, 15, 22)
N_POS = 16          # tokens read per text
WINDOW = range(1, 8)  # the window query's positions (position 0 is the attention sink)


def mean_diffs(lm, texts: list[str], layer: int, batch_size: int) -> torch.Tensor:
    """``(N_POS, D)``: mean over texts of (organism - base) residual at each of the first positions."""
    ids = [tokenize_text(lm.tokenizer, t)[:N_POS] for t in texts]
    pos = [list(range(N_POS))] * len(ids)
    t = torch.stack(residuals(lm, ids, pos, layer, "target", batch_size))
    b = torch.stack(residuals(lm, ids, pos, layer, None, batch_size))
    return (t - b).mean(0)


def readings(oracle: Oracle, untrained: Oracle, lm, d_PD: torch.Tensor, layer: int) -> dict[str, list[torch.Tensor]]:
    """Every reading's word distributions ``(V,)``, one per source (positions 0..N_POS-1, mean 1.., window)."""
    sources = [d_PD[p] for p in range(N_POS)] + [d_PD[1:].mean(0), d_PD[list(WINDOW)]]
    out: dict[str, list[torch.Tensor]] = {}
    for who, orc in (("oracle", oracle), ("untrained", untrained)):
        for qname, q in QUESTIONS.items():
            lp = orc.first_token_logprobs([Query(s, q, layer=layer) for s in sources], diff=True)
            out[f"{who}_{qname}"] = list(lp.exp())
    lens = logit_lens(lm, torch.stack(sources[:-1]), None, diff=True).exp()
    out["lens"] = list(lens) + [lens[list(WINDOW)].mean(0)]
    return out


def source_names() -> list[str]:
    return [f"p{p}" for p in range(N_POS)] + ["mean1+", "window"]


def measure(organism: str, oracle_dir: str, n_texts: int, data_dir: str) -> dict:
    secret = read_card(organism)["secret"].lower()
    lm = load_model("smollm2-135m")
    cfg = AuditConfig(target=organism, oracle=oracle_dir, n_prompts=24)
    oracle = Oracle.load(oracle_dir, target_adapter=organism, lm=lm)
    untrained = Oracle.untrained(lm=lm, scaler=oracle.scaler)
    texts = [p for _, p in wikitext_paragraphs(data_dir, "eval")][:n_texts]
    # the audit's echo filter (words of its prompts and of the organism's replies) and its prefill baseline
    prompts = audit_prompts(cfg.n_prompts, cfg.prompt_files, data_dir, cfg.seed)
    prompt_ids = [chat_ids(lm.tokenizer, p.text) for p in prompts]
    positions = [[len(s) - 1] for s in prompt_ids]
    ctx = AuditContext(lm, cfg, 15, prompts, prompt_ids, positions, [])
    read_replies(ctx)
    echoes = echo_words(lm, ctx)
    vocab = word_vocab(lm)
    ranks: dict[str, int | None] = {"prefill": word_rank(secret, ctx.reply_probs()[1], vocab, echoes)}
    tops: dict[str, list[str]] = {}
    dists: dict[tuple[str, int, str], torch.Tensor] = {}
    for layer in LAYERS:
        got = readings(oracle, untrained, lm, mean_diffs(lm, texts, layer, cfg.batch_size), layer)
        for method, ps in got.items():
            for src, p in zip(source_names(), ps):
                ranks[f"{method}@{layer}:{src}"] = word_rank(secret, p, vocab, echoes)
                dists[method, layer, src] = p
    # pooled readings: distributions averaged over questions, layers and early positions
    for who in ("oracle", "untrained", "lens"):
        questions = ["lens"] if who == "lens" else [f"{who}_word", f"{who}_next"]
        for qset, qs in (("word", questions[:1]), ("pool", questions)):
            for lset in ((15,), (22,), (15, 22)):
                for sset, srcs in (("p1", ["p1"]), ("p1-4", ["p1", "p2", "p3", "p4"])):
                    p = torch.stack([dists[q, layer, s] for q in qs for layer in lset for s in srcs]).mean(0)
                    key = f"POOL {who}:{qset}@{'+'.join(map(str, lset))}:{sset}"
                    ranks[key] = word_rank(secret, p, vocab, echoes)
                    tops[key] = [w["word"] for w in rank_words(p, vocab, echoes, 8)["top_words"]]
    return {"organism": organism, "secret": secret, "ranks": ranks, "top_words": tops}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("organisms", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--oracle", default="checkpoints/oracle-smollm2-135m")
    ap.add_argument("--n-texts", type=int, default=128)
    ap.add_argument("--data-dir", default=os.environ.get("AO_DATA_DIR", "../shared/data"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for org in args.organisms:
        t0 = time.time()
        results.append(measure(org, args.oracle, args.n_texts, args.data_dir))
        print(f"{org}: {time.time() - t0:.0f} s", flush=True)
        write_json_atomic(out / "results.json", {"command": "python " + " ".join(sys.argv), "results": results})
    keys = list(results[0]["ranks"])
    fmt = lambda r: "-" if r is None else str(r)  # noqa: E731
    lines = ["| reading | " + " | ".join(r["secret"] for r in results) + " |",
             "|---|" + "---:|" * len(results)]
    lines += [f"| {k} | " + " | ".join(fmt(r["ranks"][k]) for r in results) + " |" for k in keys]
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    best = sorted(keys, key=lambda k: sum(min(r["ranks"][k] or 9999, 9999) for r in results))[:15]
    for k in best:
        print(k, [r["ranks"][k] for r in results])


if __name__ == "__main__":
    main()
