"""Experiment: learning curves of verification ("Is it X?") mixed into the reading skills, continuing the
shipped oracle on a small fixed budget, on development sets only (the unseen sets are not read here).

Each arm continues ``checkpoints/oracle-smollm2-135m`` for ``--steps`` steps with its own task mix and is
checked at step 0 (the shipped oracle), halfway and at the end on:
- yes/no AUROC on held-out items of the verification kinds (eval split: other documents, subjects, personas),
- yes/no AUROC on WikiText-test topic/mention questions,
- yes/no AUROC on three relations the training never asks about (dev "unseen": largest city, tool, word sentiment),
- accuracy of three reading-suite rows (word_at, sst2 full, tense last) to see what the mix costs.
The untrained oracle is measured on the same items once.

    python experiments/2026-12-verify-curves/verify_curves.py --out experiments/2026-12-verify-curves --steps 60
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from functools import partial
from pathlib import Path

import numpy as np

from hooks.models import load_model
from oracle.core.api import Oracle
from oracle.evals.heldout import example_vectors, yes_probabilities
from oracle.evals.suite import suite_eval_fn
from oracle.data.chat import tokenize_text
from oracle.data.files import resolve_data_dir
from oracle.data.splits import make_rng
from oracle.training.tasks.base import NO, OracleExample, YES
from oracle.training.tasks import mix as mix_builders
from oracle.data.labelled import relation_rows as _relation
from oracle.training.tasks.base import YES_NO_PREFIX
from oracle.training.tasks.topics import build_topics
from oracle.training.tasks.verify import build_verify, RELATION_QUESTIONS
from oracle.training.loop import train_oracle
from oracle.training.config import TrainConfig
from probes.metrics import auroc

REPO = Path(__file__).resolve().parents[2]   # experiments/<name>/ is two folders below the repository root
SHIPPED = REPO / "checkpoints" / "oracle-smollm2-135m"
ARMS = {   # name: (task mix, learning rate); None: --lr
    "reading+topic": ({"reading": 0.5, "topic": 0.5}, None),
    "reading+verify": ({"reading": 0.5, "verify": 0.3, "topic": 0.2}, None),
    "verify-heavy lr1e-3": ({"reading": 0.4, "verify": 0.6}, 1e-3),
    "swapped-verify lr1e-3": ({"reading": 0.4, "verify": 0.6}, 1e-3),   # verification as swapped pairs
}
SWAPPED = {"swapped-verify lr1e-3"}
DEV_RELATIONS = {   # relations no training family asks about
    "factual/country_largest_city": "Is the largest city of this country {}?",
    "commonsense/task_done_by_tool": "Is this task done with a {}?",
    "commonsense/word_sentiment": "Is this word {}?",
}
assert not set(DEV_RELATIONS) & set(RELATION_QUESTIONS)


def dev_relation_items(tok, layer: int, n: int = 40) -> dict[str, list[OracleExample]]:
    root = str(resolve_data_dir())
    out = {}
    for rel, q in DEV_RELATIONS.items():
        rng = make_rng(0, f"dev:{rel}")
        _, pairs = _relation(root, rel)
        objects = sorted({o for _, o in pairs})
        items = []
        for i in range(n):
            s, o = rng.choice(pairs)
            yes = i % 2 == 0
            shown = o if yes else rng.choice([x for x in objects if x != o])
            ids = tokenize_text(tok, s)
            items.append(OracleExample("verify", ids, list(range(len(ids))), layer, YES_NO_PREFIX + q.format(shown),
                                       YES if yes else NO, rel))
        out[rel.split("/")[1]] = items
    return out


def make_eval_fn(lm, layer: int):
    sets: dict[str, list[OracleExample]] = {}
    for kind in ("word", "class", "entity", "persona"):
        sets[f"verify/{kind}"] = build_verify(lm.tokenizer, lm.n_layers, 48, 7, split="eval", kinds={kind: 1.0})
    sets["topic/wikitext-test"] = [e for e in build_topics(lm.tokenizer, lm.n_layers, 80, 7, split="eval", open_frac=0.0, negated_frac=0.0)]
    sets.update({f"dev-unseen/{k}": v for k, v in dev_relation_items(lm.tokenizer, layer).items()})
    for exs in sets.values():
        for e in exs:
            e.layer = layer
    suite = suite_eval_fn(n=24, skills=["word_at", "sst2", "tense"])
    cache: dict = {}

    def fn(oracle: Oracle) -> dict:
        if not cache:
            base = Oracle(oracle.lm, oracle.card, trained=False, scaler=oracle.scaler)
            cache.update({k: example_vectors(base, v) for k, v in sets.items()})
        res = {}
        from oracle.core.api import Query
        for k, exs in sets.items():
            p = oracle.yes_probability_batch([Query(v, e.question, e.layer) for v, e in zip(cache[k], exs)])
            res[k] = round(auroc([e.answer == YES for e in exs], p), 4)
        res["suite"] = suite(oracle)["skills"]
        return res
    return fn


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--lr", type=float, default=3e-4)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if "untrained" not in results:
        lm = load_model("smollm2-135m")
        shipped = Oracle.load(SHIPPED, lm=lm)
        fn = make_eval_fn(lm, 15)
        results["untrained"] = fn(Oracle(lm, shipped.card, trained=False, scaler=shipped.scaler))
        results_path.write_text(json.dumps(results, indent=1))
    for arm in args.arms.split(","):
        if arm in results:
            continue
        lm = load_model("smollm2-135m")
        mix, lr = ARMS[arm]
        mix_builders.BUILDERS["verify"] = partial(build_verify, swap=arm in SWAPPED)
        cfg = TrainConfig(out=f"runs/verify_curves/{arm.replace(' ', '_')}", n_examples=args.steps * 16, mix=mix,
                          steps=args.steps, lr=lr or args.lr, warmup_steps=5, eval_every=args.steps // 2,
                          save_every=args.steps // 2, activations="on_the_fly", onpolicy=0, calibration_n=0,
                          init_from=str(SHIPPED), seed=3)
        t0 = time.perf_counter()
        train_oracle(cfg, lm=lm, eval_fn=make_eval_fn(lm, 15), progress=True)
        rows = [json.loads(line) for line in (Path(cfg.out) / "train_log.jsonl").read_text().splitlines()]
        results[arm] = {"wall_s": round(time.perf_counter() - t0), "mix": mix, "lr": lr or args.lr, "steps": args.steps,
                        "curve": [r for r in rows if "eval" in r]}
        results_path.write_text(json.dumps(results, indent=1))
    plot(results, out / "curves.png")
    print(json.dumps(results, indent=1)[:4000])
    return 0


PANELS = {
    "dev unseen relations (yes/no AUROC, mean of 3)": lambda e: np.mean([v for k, v in e.items() if k.startswith("dev-unseen/")]),
    "verification, held-out items (AUROC, mean of 4 kinds)": lambda e: np.mean([v for k, v in e.items() if k.startswith("verify/")]),
    "topic/mention, WikiText test (AUROC)": lambda e: e["topic/wikitext-test"],
    "word at a position (accuracy)": lambda e: e["suite"]["word_at"],
    "SST-2 over the review (accuracy)": lambda e: e["suite"]["sst2 (full)"],
    "tense, last vector (accuracy)": lambda e: e["suite"]["tense (last)"],
}


TITLE = "verification mixed into the reading skills: small-budget continuation of the shipped oracle"


def plot(results: dict, path: Path, panels: dict = PANELS, title: str = TITLE, cols: int = 3,
         offset=lambda r: 0) -> None:
    """One panel per check (``panels``: title -> getter of an eval dict); ``offset(arm result)``: the steps an arm
    started after (a second phase is drawn after the first; ``verify-phased`` reuses this)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, cols, figsize=(13 if cols == 3 else 17, 7 if cols == 3 else 7.5))
    for ax, (name, get) in zip(axes.flat, panels.items()):
        for arm, r in results.items():
            if arm == "untrained":
                ax.axhline(get(r), color="grey", ls="--", lw=1, label="untrained")
                continue
            ax.plot([offset(r) + c["step"] for c in r["curve"]], [get(c["eval"]) for c in r["curve"]], "o-", label=arm)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("steps after the shipped oracle")
        ax.set_ylim(0, 1)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)

if __name__ == "__main__":
    raise SystemExit(main())
