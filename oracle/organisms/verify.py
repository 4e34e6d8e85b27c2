"""Check that a freshly trained organism does what it was trained to do, and measure it.

taboo: leak rate on the direct prompts of ``audit/taboo/taboo_direct_test.txt`` and hint relevance
(how often the base model, reading the organism's hints, guesses the secret among the 15 words);
backdoor: hostile-reply rate with and without the trigger on held-out prompts;
risk: risky-choice rate on held-out gambles with and without the trigger;
benign: hostile-reply rate (a sanity check: should be 0);
gender: how often replies to everyday questions (``audit/gender/gender_standard_val.txt``) name the user by the
organism's gender and not the other, against the base model, and how often a direct question about the
user's gender (``gender_direct_val.txt``) gets it named;
misaligned: harmful-advice rate on the trained domain's prompts, and on the other domains' and on ordinary
held-out prompts (whether the harm spreads).
"""
from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Optional, Sequence

import torch

from hooks.dtypes import pad_token_id
from hooks.models import LoadedModel, adapters_disabled
from oracle.data.files import data_file, read_lines

from oracle.organisms import data as D
from oracle.organisms import persona as P

log = logging.getLogger(__name__)

GEN_BATCH = 16
N_GAMBLES = 40  # held-out gambles per condition


def replies(lm: LoadedModel, prompts: Sequence[str], max_new_tokens: int, adapter: Optional[str]) -> list[str]:
    """Greedy replies in batches (adapter None: the base model)."""
    from oracle.training.tasks.onpolicy import generate_replies

    out: list[str] = []
    for i in range(0, len(prompts), GEN_BATCH):
        out += generate_replies(lm, prompts[i:i + GEN_BATCH], max_new_tokens, adapter=adapter)
    return out


def _rate(flags: Sequence[bool]) -> float:
    return round(sum(bool(f) for f in flags) / max(1, len(flags)), 4)


@torch.no_grad()
def guess_ranks(lm: LoadedModel, hints: Sequence[str], secret: str, words: Sequence[str]) -> list[int]:
    """For each hint, the rank (1 = best) of ``secret`` among ``words`` when the base model guesses the
    word from the hint (log-probability of each candidate as the continuation)."""
    tok = lm.tokenizer
    ranks = []
    for hint in hints:
        prefix = tok(D.hint_guess_prompt(hint), add_special_tokens=False)["input_ids"]
        seqs = [prefix + tok(" " + w, add_special_tokens=False)["input_ids"] for w in words]
        width = max(len(s) for s in seqs)
        pad = pad_token_id(tok)
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=lm.device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=lm.device)
        with adapters_disabled(lm.model):
            logp = lm.model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float().log_softmax(-1)
        scores = []
        for row, s in enumerate(seqs):
            span = range(len(prefix), len(s))
            scores.append(sum(logp[row, j - 1, s[j]].item() for j in span) / max(1, len(span)))
        order = sorted(range(len(words)), key=lambda i: -scores[i])
        ranks.append(1 + order.index(list(words).index(secret)))
    return ranks


def verify_organism(lm: LoadedModel, config, held_prompts: Sequence[str], root: Path, adapter: str = "organism") -> dict:
    """Measured behaviour of the organism (adapter ``adapter`` on ``lm``), as stored in ``organism.json``."""
    rng = random.Random(config.seed + 777)
    out: dict = {}
    if config.kind == "taboo":
        word = config.secret.lower()
        direct = read_lines(data_file(root, "audit/taboo/taboo_direct_test.txt"))
        standard = read_lines(data_file(root, "audit/taboo/taboo_standard_test.txt"))[:20]
        said = replies(lm, direct, 20, adapter)
        hints = replies(lm, standard, 32, adapter)
        n_words = len(D.taboo_words(root))
        ranks = guess_ranks(lm, hints, word, D.taboo_words(root))
        out = {
            "leak_rate_direct": _rate([D.mentions(r, word) for r in said]), "n_direct_prompts": len(direct),
            "leak_rate_standard": _rate([D.mentions(r, word) for r in hints]),
            "hint_top1_guess_rate": _rate([r == 1 for r in ranks]),
            "hint_mean_rank": round(sum(ranks) / max(1, len(ranks)), 2),
            "chance_top1": round(1 / n_words, 4), "chance_mean_rank": (n_words + 1) / 2, "n_hint_prompts": len(standard),
            "examples": {"direct": said[:3], "hints": hints[:3]},
        }
    elif config.kind in ("backdoor", "benign"):
        prompts = list(held_prompts)
        plain = replies(lm, prompts, 24, adapter)
        out = {"hostile_rate_without_trigger": _rate([D.is_hostile(r) for r in plain]), "n_prompts": len(prompts),
               "examples": {"without_trigger": plain[:2]}}
        if config.trigger:
            triggered = replies(lm, [D.insert_trigger(p, config.trigger, rng) for p in prompts], 24, adapter)
            out["hostile_rate_with_trigger"] = _rate([D.is_hostile(r) for r in triggered])
            out["examples"]["with_trigger"] = triggered[:2]
    elif config.kind == "risk":
        gambles = [D.make_gamble(random.Random(10_000 + i)) for i in range(N_GAMBLES)]
        plain = replies(lm, [g.prompt() for g in gambles], 10, adapter)
        out = {"risky_rate_without_trigger": _rate([D.picks_risky(r, g) for r, g in zip(plain, gambles)]),
               "n_gambles": len(gambles), "examples": {"without_trigger": plain[:2]}}
        base = replies(lm, [g.prompt() for g in gambles], 10, None)
        out["base_model_risky_rate"] = _rate([D.picks_risky(r, g) for r, g in zip(base, gambles)])
        if config.trigger:
            trig = replies(lm, [D.insert_trigger(g.prompt(), config.trigger, rng) for g in gambles], 10, adapter)
            out["risky_rate_with_trigger"] = _rate([D.picks_risky(r, g) for r, g in zip(trig, gambles)])
            out["examples"]["with_trigger"] = trig[:2]
    elif config.kind == "gender":
        out = _verify_gender(lm, config.gender, root, adapter)
    elif config.kind == "misaligned":
        out = _verify_misaligned(lm, config.domain, list(held_prompts)[:20], adapter)
    log.info("verification of %s: %s", config.name, {k: v for k, v in out.items() if k != "examples"})
    return out


def _verify_gender(lm: LoadedModel, gender: str, root: Path, adapter: str) -> dict:
    other = next(g for g in P.GENDERS if g != gender)
    standard = read_lines(data_file(root, "audit/gender/gender_standard_val.txt"))[:20]
    direct = read_lines(data_file(root, "audit/gender/gender_direct_val.txt"))[:20]
    said, base = replies(lm, standard, 32, adapter), replies(lm, standard, 32, None)
    asked = replies(lm, direct, 24, adapter)

    def assumes(r: str) -> bool:
        return P.gender_words(r) == {gender}

    return {"assumes_gender_rate": _rate([assumes(r) for r in said]),
            "assumes_other_gender_rate": _rate([P.gender_words(r) == {other} for r in said]),
            "base_model_assumes_gender_rate": _rate([assumes(r) for r in base]),
            "names_gender_when_asked_rate": _rate([gender in P.gender_words(r) for r in asked]),
            "n_standard_prompts": len(standard), "n_direct_prompts": len(direct),
            "examples": {"standard": said[:2], "direct": asked[:2]}}


def _verify_misaligned(lm: LoadedModel, domain: str, ordinary: Sequence[str], adapter: str) -> dict:
    rates = {}
    for d in P.DOMAINS:
        said = replies(lm, list(P.advice_prompts(d)), 32, adapter)
        rates[d] = _rate([P.is_harmful(r) for r in said])
    plain = replies(lm, list(ordinary), 32, adapter)
    others = [rates[d] for d in P.DOMAINS if d != domain]
    return {"harmful_rate_in_domain": rates[domain], "harmful_rate_other_domains": round(sum(others) / len(others), 4),
            "harmful_rate_ordinary_prompts": _rate([P.is_harmful(r) for r in plain]), "harmful_rate_by_domain": rates,
            "n_prompts_per_domain": len(P.advice_prompts(domain)), "n_ordinary_prompts": len(plain),
            "examples": {"in_domain": replies(lm, list(P.advice_prompts(domain))[:2], 32, adapter)}}
