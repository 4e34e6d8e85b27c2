"""Does the oracle path learn on this model, and how many examples does it need next to a probe?

Two checks, on one yes/no question about one training dataset (default: SST-2, "Is this a
positive review?", last-token activation at the 50% layer), with a fresh LoRA (the `ao train`
defaults: all-linear, r 16):

1. memorize: train on a fixed set of ``--memorize`` examples (full batch) until the answer loss
   is near zero. Since every example has the same question, the only way to get there is to read
   the injected activations; the same batch with the injection turned off (coef 0) must stay at
   chance. Then the Oracle API answers the memorized set (its accuracy must be 1.0).
2. generalize: train on fresh examples, ``--batch-size`` per step, and score the eval split every
   ``--eval-every`` steps (accuracy of P(Yes) >= 0.5, and AUROC). A logistic probe on the same
   activations, trained on the same number of labels, is the baseline measured in the same run.

    python experiments/2026-learnability/oracle_learnability.py                         # SST-2, ~12 min on 2 CPU cores
    python experiments/2026-learnability/oracle_learnability.py --dataset gmt/cities --question "Is this statement true?" --yes-class true
    python experiments/2026-learnability/oracle_learnability.py --dataset tense --question ''   # the training questions (no memorize check)
    python experiments/2026-learnability/oracle_learnability.py --dataset tense --question '' --open-frac 0.5   # half ask "Which tense...?"
    python experiments/2026-learnability/oracle_learnability.py --dataset tense --question '' --open-frac 0.5 --negated-frac 0.5   # and negations

With ``--question ''`` every example keeps the question ``ao train`` would ask (paraphrases, half about another
class), and the probe baseline answers with its probability of the class the question names.

A held-out set as ``--dataset`` (``singular_plural``, ``engels/139_news_class_Politics``, ...) is a ceiling
diagnostic, never a way to train the shipped oracle: the oracle trains on one half of that set's texts and is
scored on the other half, both with the questions ``ao eval`` asks::

    python experiments/2026-learnability/oracle_learnability.py --dataset singular_plural --question '' --input-scaling standardize
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from hooks.models import load_model
from oracle.core.api import Oracle, Query
from oracle.core.card import OracleCard
from oracle.core.batching import make_oracle_batch
from oracle.evals.heldout import example_vectors, p_yes_scores
from oracle.core.scaling import SCALINGS, InputScaler
from hooks.layers import source_layers
from oracle.training.tasks.classification import (OPEN_QUESTIONS, YES_NO_PREFIX, build_classification,
                                         build_heldout_classification, heldout_dataset_names)
from oracle.training.loop import TrainConfig, _LoraModel, oracle_loss


def labelled_set(lm, dataset: str, n: int, seed: int, split: str, question: str, yes_class: str, layer: int,
                 open_frac: float = 0.0, negated_frac: float = 0.0):
    """``n`` examples of ``dataset`` (last token), all asked ``question``; answer Yes iff the text's class is
    ``yes_class``. An empty ``question`` keeps the training questions (paraphrases; half ask about another class).
    ``open_frac``: that share asks the open question instead (answered with the class name); ``negated_frac``:
    that share of the yes/no questions is negated (with the training questions only)."""
    if dataset in heldout_dataset_names():
        exs = heldout_ceiling_set(lm, dataset, n, seed, split, layer)
    else:
        exs = build_classification(lm.tokenizer, lm.n_layers, n, seed, datasets=[dataset], split=split,
                                   position="last", open_frac=open_frac, negated_frac=negated_frac)
        for e in exs:
            e.layer = layer
            if question and not e.meta.get("open"):
                e.question = YES_NO_PREFIX + question
                e.answer = "Yes" if e.meta["class"] == yes_class else "No"
                e.meta["asked"] = yes_class
    return exs, example_vectors(Oracle.from_model(lm, card=OracleCard.for_model(lm), trained=False), exs)


def heldout_ceiling_set(lm, dataset: str, n: int, seed: int, split: str, layer: int):
    """Ceiling diagnostic: ``n`` examples of a held-out set with its own evaluation questions, from one half of its
    texts (``split``; the halves share no text). The training half is passed over again with fresh questions
    when ``n`` exceeds it."""
    exs: list = []
    epoch = 0
    while len(exs) < n:
        exs += build_heldout_classification(lm.tokenizer, lm.n_layers, dataset, None if split == "train" else n,
                                            seed + 1000 * epoch, layers=layer, text_half=split)
        epoch += 1
    return exs[:n]


def open_accuracy(lm, exs, vecs) -> float:
    """Share of ``exs`` whose class name the oracle says first when asked its group's open question."""
    lm.model.eval()
    said = Oracle.from_model(lm, card=OracleCard.for_model(lm)).ask_batch([Query(v, OPEN_QUESTIONS[e.dataset.split("/", 1)[0]], e.layer)
                                            for v, e in zip(vecs, exs)], max_new_tokens=4)
    lm.model.train()
    return sum(a.lower().split()[:1] == [str(e.meta["class"]).lower()] for a, e in zip(said, exs)) / len(exs)


def batch_of(lm, exs, vecs):
    return make_oracle_batch(lm.tokenizer, vecs, [e.layer for e in exs], [e.question for e in exs],
                             [e.answer for e in exs], side="right")


def p_yes(lm, exs, vecs) -> list[float]:
    lm.model.eval()
    p = Oracle.from_model(lm, card=OracleCard.for_model(lm)).yes_probability_batch(
        [Query(v, e.question, e.layer) for v, e in zip(vecs, exs)], batch_size=32)
    lm.model.train()
    return p


def scores(p: list[float], exs) -> tuple[float, float]:
    sc = p_yes_scores(p, [e.answer == "Yes" for e in exs])
    return sc["accuracy"], sc["auroc"]


def probe_scores(train_vecs, train_exs, eval_vecs, eval_exs) -> tuple[float, float]:
    """A logistic probe for the text's class; its P(Yes) is its probability of the class the question asks about
    (with one fixed question, the yes class), or one minus that for a negated question."""
    from sklearn.linear_model import LogisticRegression

    X = torch.cat(train_vecs).float().numpy()
    y = [e.meta["class"] for e in train_exs]
    if len(set(y)) < 2:
        return float("nan"), float("nan")
    clf = LogisticRegression(max_iter=5000, C=0.1).fit(X, y)
    proba = clf.predict_proba(torch.cat(eval_vecs).float().numpy())
    col = {c: i for i, c in enumerate(clf.classes_)}
    p = [row[col[e.meta["asked"]]] if e.meta["asked"] in col else 0.0 for row, e in zip(proba, eval_exs)]
    p = [1.0 - pi if e.meta.get("negated") else pi for pi, e in zip(p, eval_exs)]
    return scores(p, eval_exs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dataset", default="sst2")
    ap.add_argument("--question", default="Is this a positive review?",
                    help="one fixed question for every example; '' keeps the dataset's training questions")
    ap.add_argument("--yes-class", default="positive")
    ap.add_argument("--layer", default=None, help="source layer (default: 50%% depth)")
    ap.add_argument("--memorize", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--eval-n", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--open-frac", type=float, default=0.0,
                    help="share of training examples that ask the group's open question instead (\"Which tense is this "
                         "sentence in?\", answered with the class name); its eval accuracy is reported too")
    ap.add_argument("--negated-frac", type=float, default=0.0,
                    help="share of the yes/no questions that are negated (\"Is this sentence not in the past tense?\"); "
                         "needs --question ''; their eval AUROC is reported too")
    ap.add_argument("--input-scaling", choices=SCALINGS, default="none",
                    help="standardize: z-score each activation dimension before injecting, as ao train does by default")
    ap.add_argument("--out", default="runs/learnability", help="folder for results.json and curve.png")
    args = ap.parse_args(argv)
    if args.negated_frac and args.question:
        ap.error("--negated-frac needs --question '' (the training questions)")
    if args.dataset in heldout_dataset_names() and (args.question or args.open_frac or args.negated_frac):
        ap.error(f"{args.dataset} is a held-out set: the ceiling diagnostic asks its own evaluation questions, so "
                 "pass --question '' and no --open-frac or --negated-frac")
    torch.manual_seed(args.seed)
    lm = load_model(args.model)
    layer = int(args.layer) if args.layer is not None else source_layers(lm.n_layers)[1]
    mk = dict(question=args.question, yes_class=args.yes_class, layer=layer)
    if args.question:
        mem_exs, mem_vecs = labelled_set(lm, args.dataset, args.memorize, args.seed, "train", **mk)
    tr_exs, tr_vecs = labelled_set(lm, args.dataset, args.steps * args.batch_size, args.seed + 1, "train",
                                   open_frac=args.open_frac, negated_frac=args.negated_frac, **mk)
    ev_exs, ev_vecs = labelled_set(lm, args.dataset, args.eval_n, args.seed + 2, "eval", negated_frac=args.negated_frac,
                                   **mk)
    if args.input_scaling == "standardize":  # as ao train does: statistics of the first training vectors
        scaler = InputScaler.fit({layer: tr_vecs[:TrainConfig.__dataclass_fields__["scaling_examples"].default]})
        tr_vecs, ev_vecs = ([scaler(v, layer) for v in vs] for vs in (tr_vecs, ev_vecs))
        if args.question:
            mem_vecs = [scaler(v, layer) for v in mem_vecs]
    negated = [i for i, e in enumerate(ev_exs) if e.meta.get("negated")]
    print(f"{args.dataset}, question {args.question!r}, layer {layer}: {len(tr_exs)} training and {len(ev_exs)} eval "
          f"examples ({sum(e.answer == 'Yes' for e in ev_exs)} Yes)")

    config = TrainConfig(out=str(args.out), lr=args.lr)
    off = TrainConfig(out=str(args.out), coef=0.0)
    results: dict = {"args": vars(args), "layer": layer}

    # 1. memorize (fresh adapter); only meaningful with one fixed question, since otherwise the
    #    question text alone can tell the examples apart
    if args.question:
        _LoraModel.attach(lm, config)
        lm.model.train()
        params = [p for p in lm.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=args.lr)
        mem = batch_of(lm, mem_exs, mem_vecs)
        t0, curve = time.perf_counter(), []
        for step in range(1, 101):
            loss = oracle_loss(lm, mem, config, False)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            with torch.no_grad():
                loss_off = float(oracle_loss(lm, mem, off, False))
            curve.append((step, float(loss.detach()), loss_off))
            if curve[-1][1] < 0.01:
                break
        acc_mem, _ = scores(p_yes(lm, mem_exs, mem_vecs), mem_exs)
        results["memorize"] = {"n": len(mem_exs), "steps": step, "loss": curve[-1][1], "loss_injection_off": curve[-1][2],
                               "accuracy_via_api": acc_mem, "seconds": round(time.perf_counter() - t0, 1)}
        print(f"memorize {len(mem_exs)} examples: {step} full-batch steps, answer loss {curve[-1][1]:.4f} "
              f"(same batch with the injection off: {curve[-1][2]:.3f}); accuracy through the Oracle API {acc_mem:.3f}")
    else:
        results["memorize"] = {"skipped": "the questions differ, so memorizing them proves nothing about reading"}

    # 2. generalize (another fresh adapter)
    lm.model = lm.model.unload() if hasattr(lm.model, "unload") else lm.model
    lm.adapters.pop("oracle", None)
    _LoraModel.attach(lm, config)
    lm.model.train()
    params = [p for p in lm.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr)
    rows = []
    def extra_scores(p_ev: list[float]) -> dict:
        """AUROC on the negated eval questions alone, and how often the oracle names the class, where asked for."""
        out = {}
        if negated:
            out["negated_auroc"] = scores([p_ev[i] for i in negated], [ev_exs[i] for i in negated])[1]
        if args.open_frac:
            out["open_acc"] = open_accuracy(lm, ev_exs, ev_vecs)
        return out

    p_ev = p_yes(lm, ev_exs, ev_vecs)
    acc, auc = scores(p_ev, ev_exs)
    rows.append({"labels": 0, "oracle_acc": acc, "oracle_auroc": auc, "probe_acc": 0.5, "probe_auroc": 0.5,
                 **extra_scores(p_ev)})
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        lo, hi = (step - 1) * args.batch_size, step * args.batch_size
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, step / 10)
        loss = oracle_loss(lm, batch_of(lm, tr_exs[lo:hi], tr_vecs[lo:hi]), config, False)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % args.eval_every == 0 or step == args.steps:
            p_ev = p_yes(lm, ev_exs, ev_vecs)
            acc, auc = scores(p_ev, ev_exs)
            pacc, pauc = probe_scores(tr_vecs[:hi], tr_exs[:hi], ev_vecs, ev_exs)
            rows.append({"labels": hi, "oracle_acc": acc, "oracle_auroc": auc, "probe_acc": pacc, "probe_auroc": pauc,
                         "seconds": round(time.perf_counter() - t0, 1), **extra_scores(p_ev)})
            extra = "".join(f" | {label} {rows[-1][k]:.3f}" for k, label in
                            (("negated_auroc", "negated questions: AUROC"), ("open_acc", "open question: says the class"))
                            if k in rows[-1])
            print(f"  {hi:5d} labels: oracle acc {acc:.3f} AUROC {auc:.3f} | probe acc {pacc:.3f} AUROC {pauc:.3f}"
                  + extra, flush=True)
    for n in (8, 32):
        pacc, pauc = probe_scores(tr_vecs[:n], tr_exs[:n], ev_vecs, ev_exs)
        rows.append({"labels": n, "probe_only": True, "probe_acc": pacc, "probe_auroc": pauc})
    results["generalize"] = rows
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    _plot(rows, out / "curve.png", args)
    print(f"wrote {out / 'results.json'} and {out / 'curve.png'}")
    return 0


def _plot(rows: list, path: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    oracle = [r for r in rows if not r.get("probe_only")]
    probe = sorted(rows, key=lambda r: r["labels"])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["labels"] for r in oracle], [r["oracle_auroc"] for r in oracle], "o-", label="oracle (LoRA) AUROC")
    ax.plot([r["labels"] for r in probe], [r["probe_auroc"] for r in probe], "s--", label="logistic probe AUROC")
    opened = [r for r in oracle if "open_acc" in r]
    if opened:
        ax.plot([r["labels"] for r in opened], [r["open_acc"] for r in opened], "^:",
                label="oracle names the class (open question): accuracy")
    neg = [r for r in oracle if "negated_auroc" in r]
    if neg:
        ax.plot([r["labels"] for r in neg], [r["negated_auroc"] for r in neg], "v-.",
                label="oracle AUROC, negated questions only")
    ax.axhline(0.5, color="grey", lw=0.8)
    ax.set_xscale("symlog", linthresh=8)
    ax.set_xlim(0, 1.3 * max(r["labels"] for r in probe))
    ax.set_xlabel("training labels seen")
    ax.set_ylabel("eval AUROC" + (" / accuracy" if opened else ""))
    own = "its eval questions, trained on half its texts" if args.dataset in heldout_dataset_names() \
        else "its training questions"
    ax.set_title(f"{args.dataset}: {args.question or own}"
                 + (f", {args.open_frac:.0%} open questions" if args.open_frac else "")
                 + (f", {args.negated_frac:.0%} of yes/no negated" if args.negated_frac else "")
                 + (", inputs z-scored" if args.input_scaling == "standardize" else ""), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
