"""``ao train``, ``ao ask``, ``ao eval``, ``ao calibrate``."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from hooks.errors import InputError
from hooks.layers import Layer
from hooks.positions import GRAMMAR, Positions

from oracle.cli.args import add_card_arguments, overrides_from_args, split_list
from oracle.core.api import Query
from oracle.evals.calibrate import CalibrationConfig
from oracle.core.confidence import check_threshold
from oracle.evals.suite import SuiteConfig
from oracle.evals.unseen import UnseenConfig
from oracle.core.reference import parse_oracle_ref
from oracle.training.loop import TrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train an oracle (LoRA) on the task mix")
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("mix", "skills", "verify_kinds"):
            t.add_argument("--" + f.name.replace("_", "-"), default=None, help=f.metadata["help"])
            continue
        t.add_argument("--" + f.name.replace("_", "-"), type=f.metadata["kind"], default=f.default,
                       help=f.metadata["help"] + ("" if f.default is None else " (default: %(default)s)"))
    t.add_argument("--no-eval", action="store_true", help="skip held-out checks during training")
    t.add_argument("--eval-examples-per-skill", type=int, default=16,
                   help="unseen items per reading-suite row in the in-training checks (default: %(default)s)")
    t.set_defaults(func=_train, resume_hint=_train_resume_hint)

    a = sub.add_parser("ask", help="ask the oracle a question about a text's activations",
                       description="Ask an oracle (a checkpoint folder with oracle.json, or a bare PEFT adapter such "
                                   "as a published Activation Oracle, whose card is derived) about a text.")
    a.add_argument("--oracle", default="checkpoints/oracle-smollm2-135m",
                   help="oracle checkpoint folder, or a bare PEFT oracle adapter folder")
    a.add_argument("--untrained", action="store_true", help="no adapter: the Patchscopes-style baseline")
    a.add_argument("--model", default="smollm2-135m", help="base model for --untrained")
    a.add_argument("--target-adapter", default=None, help="the audited model's own adapter folder")
    a.add_argument("--text", required=True)
    a.add_argument("--question", required=True)
    a.add_argument("--layer", default=None)
    a.add_argument("--positions", default="last", help=f"tokens to read: {GRAMMAR} (default: last)")
    a.add_argument("--diff", action="store_true", help="inject (target - base) activations")
    a.add_argument("--yes-prob", action="store_true", help="print P(Yes) instead of generating")
    a.add_argument("--choices", default=None,
                   help="candidate answers separated by '|' (e.g. 'negative|positive'): print each one's summed "
                        "log-probability and the oracle's choice instead of generating")
    a.add_argument("--max-new-tokens", type=int, default=32)
    a.add_argument("--abstain", action="store_true",
                   help="answer \"can't tell\" when the answer barely depends on the activations or its calibrated "
                        "confidence is low (thresholds from the oracle's calibration.json)")
    a.add_argument("--details", action="store_true", help="print the answer's confidence and sensitivity too")
    a.add_argument("--min-confidence", type=float, default=None, help="override the fitted confidence threshold")
    a.add_argument("--min-sensitivity", type=float, default=None, help="override the fitted sensitivity threshold")
    add_card_arguments(a)
    a.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, or auto (spread over the GPUs)")
    a.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    a.set_defaults(func=_ask)

    e = sub.add_parser("eval", help="held-out evaluation: table + bar chart, trained vs untrained vs chance")
    e.add_argument("--oracle", default="checkpoints/oracle-smollm2-135m")
    e.add_argument("--out", default=None, help="report folder (default: the oracle folder's eval/)")
    e.add_argument("--n", type=int, default=200, help="examples per held-out set (0: skip held-out classification)")
    e.add_argument("--families-n", type=int, default=100,
                   help="examples for context prediction, system-prompt QA and each training classification group "
                        "(0: skip them)")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--no-card", action="store_true", help="do not write the figures into oracle.json")
    e.add_argument("--device", default="cpu")
    e.add_argument("--suite", choices=("skills", "unseen"), default=None,
                   help="skills: the reading-skills suite instead (untrained vs trained vs probes on unseen texts); "
                        "unseen: questions never taught about concepts never trained on (yes/no, choice, open; "
                        "with probes and the text baseline)")
    e.add_argument("--sets", default=None, help="with --suite unseen: sets to run, comma-separated (default: all six)")
    e.add_argument("--skills", default=None, help="suite rows to run, comma-separated (default: every skill)")
    e.add_argument("--suite-n", type=int, default=None,
                   help=f"unseen items per suite row or set (default: {SuiteConfig.n} for skills, {UnseenConfig.n} for unseen)")
    e.add_argument("--probe-n", type=int, default=None,
                   help=f"most labels a suite probe gets (default: {SuiteConfig.probe_n} for skills, {UnseenConfig.probe_n} "
                        "for unseen)")
    e.add_argument("--confidence", action="store_true",
                   help="with --suite: also judge calibration and abstention on the suite's items (needs the "
                        "oracle's calibration.json; slower: two control passes per oracle)")
    e.set_defaults(func=_eval)

    c = sub.add_parser("calibrate", help="fit the oracle's temperature and abstention thresholds (calibration.json)",
                       description="Fit, on the reading skills' calibration split (eval documents the suite never "
                                   "reads), a temperature per answer kind and the sensitivity and confidence "
                                   "thresholds below which the oracle answers \"can't tell\"; written beside the "
                                   "adapter as calibration.json.")
    c.add_argument("--oracle", default="checkpoints/oracle-smollm2-135m")
    c.add_argument("--n", type=int, default=CalibrationConfig.n, help="items per skill row (default: %(default)s)")
    c.add_argument("--target-precision", type=float, default=CalibrationConfig.target_precision,
                   help="precision of the answered questions the thresholds keep (default: %(default)s)")
    c.add_argument("--data-dir", default=None)
    c.add_argument("--device", default="cpu")
    c.set_defaults(func=_calibrate)


def _train_resume_hint(args: argparse.Namespace) -> str:
    """What Ctrl-C left: a checkpoint to resume from, or nothing yet."""
    from oracle.training.checkpoint import TRAIN_STATE

    if (Path(args.out) / TRAIN_STATE).exists():
        return "the run was saved at its last step; rerun the same command to resume from there"
    return "nothing was saved yet (the run stopped before its first checkpoint); rerun the same command to start again"


def _train(args: argparse.Namespace) -> int:
    json_fields = {"mix": '{"reading":0.8,"context_prediction":0.2}', "skills": '{"word_at":1.0}', "verify_kinds": '{"word":1.0}'}
    kwargs = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name not in json_fields}
    for name, example in json_fields.items():
        value = getattr(args, name)
        if not value:
            continue
        try:
            kwargs[name] = json.loads(value)
        except json.JSONDecodeError as e:
            raise InputError(f"--{name.replace('_', '-')} is not valid JSON ({e.msg}): write it like '{example}'") from None
        if not isinstance(kwargs[name], dict):
            raise InputError(f"--{name.replace('_', '-')} must be a JSON object of weights, e.g. '{example}'")
    cfg = TrainConfig(**kwargs)
    from oracle.evals.runs import calibrate_after_training, train_with_checks

    checks = not args.no_eval
    summary = train_with_checks(cfg, checks=checks, n_per_skill=args.eval_examples_per_skill, progress=True)
    print(f"trained {summary['steps']} steps on {summary['examples']} examples in {summary['wall_time_s']:.0f}s; "
          f"final loss {summary['final_loss']}; last held-out check {summary['last_eval']}")
    fitted = calibrate_after_training(cfg, checks=checks, progress=True)
    if fitted is not None:
        cal, path = fitted
        print(f"calibration written to {path} (choice: T {cal.choice.temperature:.2f}, ECE "
              f"{cal.fit['choice']['ece_before']:.3f} -> {cal.fit['choice']['ece_after']:.3f})")
    elif cfg.calibration_n and "reading" in cfg.mix:
        print(f"no calibration fitted (--no-eval skips it): run `ao calibrate --oracle {cfg.out}`")
    print(f"oracle written to {cfg.out}")
    return 0


def _ask(args: argparse.Namespace) -> int:
    cands = [c.strip() for c in args.choices.split("|")] if args.choices is not None else None
    if cands is not None and len(cands) < 2:   # before the (slow) model load
        raise InputError(f"--choices needs at least two candidate answers separated by '|', got {args.choices!r}")
    pos = Positions.parse(args.positions)   # the one parse of --positions; everything below takes the value
    layer = None if args.layer is None else Layer.parse(args.layer)   # resolved against the model once it loads
    if args.max_new_tokens < 1:
        raise InputError(f"--max-new-tokens must be at least 1, not {args.max_new_tokens}")
    ref = None if args.untrained else parse_oracle_ref(args.oracle)   # folder checked, card read: before the load
    overrides = overrides_from_args(args)
    check_threshold("--min-confidence", args.min_confidence)
    check_threshold("--min-sensitivity", args.min_sensitivity)
    if (args.abstain or args.details) and args.untrained or args.abstain and args.yes_prob:
        raise InputError("--abstain works with a trained oracle's answers and --choices, --details with those and "
                         "--yes-prob; neither with --untrained")
    if args.yes_prob:
        from oracle.core.yes_no import check_yes_no_question

        check_yes_no_question(args.question)
    from hooks.models import load_model

    from oracle.core.api import Oracle

    if ref is None:
        oracle = Oracle.untrained(lm=load_model(args.model, dtype=args.dtype, device=args.device))
        oracle.set_target(args.target_adapter)
    else:
        oracle = Oracle.load(ref, target_adapter=args.target_adapter, device=args.device, dtype=args.dtype,
                             overrides=overrides)
    q = Query(args.text, args.question, layer, pos)
    if args.yes_prob and args.details:
        yn = oracle.yes_probability(q.source, q.question, layer=q.layer, positions=q.positions, diff=args.diff,
                                    details=True)
        print(f"P(Yes) = {yn.p_yes:.3f} (with control vectors {yn.p_yes_control:.3f}; log-odds against them "
              f"{yn.against_control:+.2f}; sensitivity {yn.sensitivity:.3f})")
        return 0
    if args.abstain or args.details:
        oracle.set_thresholds(min_confidence=args.min_confidence, min_sensitivity=args.min_sensitivity)
        kw = dict(layer=q.layer, positions=q.positions, diff=args.diff, abstain=args.abstain, details=True)
        if cands is not None:
            ans = oracle.choose(q.source, q.question, cands, **kw)
        else:
            ans = oracle.ask(q.source, q.question, max_new_tokens=args.max_new_tokens, **kw)
        print(str(ans))
        print(f"confidence {ans.confidence:.3f}, sensitivity {ans.sensitivity:.3f}"
              + (f" (abstained; answer would be {ans.text!r})" if ans.abstained else ""))
        return 0
    if cands is not None:
        scores = oracle.answer_logprobs([q], [cands], diff=args.diff)[0]
        for c, sc in sorted(zip(cands, scores), key=lambda cs: -cs[1]):
            print(f"{sc:9.3f}  {c}")
        print(f"choice: {max(zip(scores, cands))[1]}")
    elif args.yes_prob:
        p = oracle.yes_probability(q.source, q.question, layer=q.layer, positions=q.positions, diff=args.diff)
        print(f"P(Yes) = {p:.3f}")
    else:
        print(oracle.ask(q.source, q.question, layer=q.layer, positions=q.positions, diff=args.diff,
                         max_new_tokens=args.max_new_tokens))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from oracle.evals.runs import fit_calibration

    cfg = CalibrationConfig(n=args.n, target_precision=args.target_precision, data_dir=args.data_dir)
    cal, path = fit_calibration(parse_oracle_ref(args.oracle, require_card=True), cfg, device=args.device,
                                progress=True)
    for kind in ("choice", "open"):
        k, f = cal.kind(kind), cal.fit.get(kind)
        if f:
            print(f"{kind}: n {f['n']}, accuracy {f['accuracy']:.2f}, temperature {k.temperature:.2f}, ECE "
                  f"{f['ece_before']:.3f} -> {f['ece_after']:.3f}; answers when sensitivity >= {k.min_sensitivity:.4f} "
                  f"and confidence >= {k.min_confidence:.3f}: {f['coverage']:.0%} answered at precision "
                  f"{f['precision']:.2f}")
    print(f"wrote {path}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from hooks.outputs import check_output_path

    from oracle.evals.runs import report_folder

    if args.sets and args.suite != "unseen":
        raise InputError("--sets picks unseen sets: add --suite unseen (or drop --sets)")
    if args.suite == "unseen":
        cfg = UnseenConfig(n=UnseenConfig.n if args.suite_n is None else args.suite_n,
                           probe_n=UnseenConfig.probe_n if args.probe_n is None else args.probe_n,
                           sets=split_list(args.sets), data_dir=args.data_dir)
    elif args.suite:
        cfg = SuiteConfig(n=SuiteConfig.n if args.suite_n is None else args.suite_n,
                          probe_n=SuiteConfig.probe_n if args.probe_n is None else args.probe_n,
                          skills=split_list(args.skills), data_dir=args.data_dir)
    elif args.n < 0 or args.families_n < 0 or args.n == args.families_n == 0:
        raise InputError("--n and --families-n must be >= 0 and not both 0 (0 skips that part)")
    # the held-out evaluation reads the card, and a run recorded in the card needs one
    ref = parse_oracle_ref(args.oracle, require_card=not (args.suite and args.no_card))
    out = check_output_path(report_folder(ref, args.out))
    if args.suite:
        from oracle.evals.runs import evaluate_skills, evaluate_unseen

        if args.suite == "unseen":
            run = evaluate_unseen(ref, cfg, out, command=args.command_line, record=not args.no_card,
                                  device=args.device, progress=True)
        else:
            run = evaluate_skills(ref, cfg, out, command=args.command_line, confidence=args.confidence,
                                  record=not args.no_card, device=args.device, progress=True)
        md, png = run.markdown, run.figure
    else:
        from oracle.evals.heldout import run_heldout_eval

        md, png = run_heldout_eval(ref, n=args.n, families_n=args.families_n, data_dir=args.data_dir,
                                   device=args.device, out=out, command=args.command_line,
                                   write_card=not args.no_card)
    print(md.read_text())
    print(f"wrote {md}" + (f" and {png}" if png else ""))
    return 0
