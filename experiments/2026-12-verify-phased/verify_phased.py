"""Experiment: teach the yes/no form first, then mix the reading skills back in (development sets only).

The mixed arms of ``2026-12-verify-curves`` (reading with 50-60 % yes/no) did not move yes/no in 60 steps, while a
topic-only continuation (earlier lead: 150 steps) taught it at the cost of the reading skills. This tests a
phased recipe from the shipped oracle:

- phase 1 (``--first``), lr 1e-3, ``--steps1`` steps of one yes/no kind only: ``topic`` (topic/mention yes/no,
  "Is this text about X?", "Does this text mention X?", no negated questions, no open ones: the earlier lead's
  form) or ``word`` (verification of the word at one position, "Is the word at this position 'X'?": the
  strongest feature, the one check that learned on the GPU);
- phase ``mix``: ``--steps2`` steps of the reading skills with yes/no kept in the mix, lr 5e-4, from the end of
  phase 1.

Checked (same items and code as ``2026-12-verify-curves/verify_curves.py``) at step 0, then every
``--eval-every`` steps: yes/no AUROC on held-out verification kinds, WikiText-test topic/mention, three dev
relations no training family asks, the same relations asked without the "Answer with 'Yes' or 'No' only."
prefix (how a user asks), and three reading rows. The six unseen sets are not read here.

    python experiments/2026-12-verify-phased/verify_phased.py --out experiments/2026-12-verify-phased --first topic
    python experiments/2026-12-verify-phased/verify_phased.py --out experiments/2026-12-verify-phased --first word \
        --steps1 150 --eval-every 50 --no-mix
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import time
from functools import partial
from pathlib import Path

from hooks.models import load_model
from oracle.core.api import Oracle, Query
from oracle.evals.heldout import example_vectors
from oracle.training.config import TrainConfig
from oracle.training.loop import train_oracle
from oracle.training.tasks import mix as mix_builders
from oracle.training.tasks.base import YES, YES_NO_PREFIX
from oracle.training.tasks.topics import build_topics
from oracle.training.tasks.verify import build_verify
from probes.metrics import auroc

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHIPPED = REPO / "checkpoints" / "oracle-smollm2-135m"
_spec = importlib.util.spec_from_file_location("verify_curves", HERE.parent / "2026-12-verify-curves" / "verify_curves.py")
curves = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(curves)   # the earlier experiment's check items and plot, reused unchanged

MIX2 = {"reading": 0.6, "topic": 0.2, "verify": 0.2}
FIRST = {   # phase-1 name: (task mix, builder overrides)
    "topic": ({"topic": 1.0}, {}),
    "word": ({"verify": 1.0}, {"verify": partial(build_verify, kinds={"word": 1.0})}),
}


def make_eval_fn(lm, layer: int):
    base_fn = curves.make_eval_fn(lm, layer)
    bare = {f"bare/{k}": v for k, v in curves.dev_relation_items(lm.tokenizer, layer).items()}
    for exs in bare.values():   # the question as a user types it: no answer-format instruction
        for i, e in enumerate(exs):
            exs[i] = dataclasses.replace(e, question=e.question[len(YES_NO_PREFIX):])
    cache: dict = {}

    def fn(oracle: Oracle) -> dict:
        res = base_fn(oracle)
        if not cache:
            base = Oracle(oracle.lm, oracle.card, trained=False, scaler=oracle.scaler)
            cache.update({k: example_vectors(base, v) for k, v in bare.items()})
        for k, exs in bare.items():
            p = oracle.yes_probability_batch([Query(v, e.question, e.layer) for v, e in zip(cache[k], exs)])
            res[k] = round(auroc([e.answer == YES for e in exs], p), 4)
        return res
    return fn


def run_phase(name: str, init: Path, mix: dict, steps: int, lr: float, eval_every: int, lm, results: dict,
              results_path: Path) -> Path:
    out = REPO / "runs" / "verify_phased" / name
    if name not in results:
        cfg = TrainConfig(out=str(out), n_examples=steps * 16, mix=mix, steps=steps, lr=lr, warmup_steps=5,
                          eval_every=eval_every, save_every=eval_every, activations="on_the_fly", onpolicy=0,
                          calibration_n=0, init_from=str(init), seed=3)
        t0 = time.perf_counter()
        train_oracle(cfg, lm=lm, eval_fn=make_eval_fn(lm, 15), progress=True)
        rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        results[name] = {"wall_s": round(time.perf_counter() - t0), "mix": mix, "lr": lr, "steps": steps,
                         "init": str(init.relative_to(REPO)), "curve": [r for r in rows if "eval" in r]}
        results_path.write_text(json.dumps(results, indent=1))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps1", type=int, default=80)
    ap.add_argument("--steps2", type=int, default=40)
    ap.add_argument("--eval-every", type=int, default=40)
    ap.add_argument("--first", choices=sorted(FIRST), default="topic")
    ap.add_argument("--no-mix", action="store_true", help="stop after phase 1")
    ap.add_argument("--tag", default="", help="prefix of the arm names (a second run of the same phases)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    # the lead's form: plain "about" / "mention" questions, no negations, no open ones
    mix_builders.BUILDERS["topic"] = partial(build_topics, negated_frac=0.0, open_frac=0.0)
    lm = load_model("smollm2-135m")
    if "untrained" not in results:
        shipped = Oracle.load(SHIPPED, lm=lm)
        results["untrained"] = make_eval_fn(lm, 15)(Oracle(lm, shipped.card, trained=False, scaler=shipped.scaler))
        results_path.write_text(json.dumps(results, indent=1))
    mix1, overrides = FIRST[args.first]
    saved = dict(mix_builders.BUILDERS)
    mix_builders.BUILDERS.update(overrides)
    p1 = run_phase(f"{args.tag}{args.first} lr1e-3", SHIPPED, mix1, args.steps1, 1e-3, args.eval_every, lm, results, results_path)
    mix_builders.BUILDERS.update({k: saved[k] for k in overrides})
    if not args.no_mix:
        run_phase(f"{args.tag}{args.first}, then mix lr5e-4", p1, MIX2, args.steps2, 5e-4, args.eval_every // 2, lm, results,
                  results_path)
    plot(results, out / "curves.png")
    print(json.dumps({k: v.get("curve", v) for k, v in results.items()}, indent=1)[:6000])
    return 0


PANELS = {
    "dev relations never taught (yes/no AUROC, mean of 3)": "dev-unseen/",
    "the same, asked bare (first two arms only)": "bare/",
    "verification: persona (yes/no AUROC)": "verify/persona",
    "verification: word at a position (yes/no AUROC)": "verify/word",
    "topic/mention, WikiText test (yes/no AUROC)": "topic/wikitext-test",
    "reading: tense, last vector (accuracy)": "suite:tense (last)",
    "reading: SST-2 over the review (accuracy)": "suite:sst2 (last:50)",
    "reading: word at a position (accuracy)": "suite:word_at",
}


def _getter(key: str):
    """The value of one check in an eval dict: a suite row, the mean of a prefix's sets, or one set."""
    if key.startswith("suite:"):
        return lambda ev: ev["suite"][key[6:]]
    if key.endswith("/"):
        return lambda ev: sum(v for k, v in ev.items() if k.startswith(key)) / sum(k.startswith(key) for k in ev)
    return lambda ev: ev[key]


def plot(results: dict, path: Path) -> None:
    """The earlier experiment's figure with these panels; a second phase is drawn after the phase it started from."""
    steps_of = {str((REPO / "runs" / "verify_phased" / k).relative_to(REPO)): v["steps"]
                for k, v in results.items() if k != "untrained"}
    curves.plot(results, path, panels={t: _getter(k) for t, k in PANELS.items()}, cols=4,
                title="yes/no taught from the strongest feature first (word check), then the reading skills mixed back in",
                offset=lambda r: steps_of.get(r["init"], 0))

if __name__ == "__main__":
    raise SystemExit(main())
