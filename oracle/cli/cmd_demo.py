"""``ao demo``: audit shipped model organisms with the shipped oracle, then print what each method found next to
each organism's ground truth (read only after the audits, as scoring does): the taboo organism's secret word, then a
backdoor beside its control (a model fine-tuned on the same kind of chats with nothing hidden)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional

DEFAULT_ORGANISM = "checkpoints/organisms/taboo-moon"
# a backdoor and its control, audited by the methods that give a trigger score; their trigger scores read neither
# the prompts nor the ranked words, so few prompts, no replies and one ranked word keep it fast
PAIR = ("checkpoints/organisms/backdoor-deployment", "checkpoints/organisms/benign")
PAIR_METHODS = ("oracle_diff", "ask_target", "prefill", "logit_lens_diff")
PAIR_PROMPTS = 4
NO_DATA_NOTE = ("no audit data here (`ao data fetch audit` gets it): the audit draws its prompts from its 32 built-in "
                "ones only and oracle_diff reads those instead of WikiText, so the table differs from the README's")


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo", help="audit a shipped organism with the shipped oracle and compare with its ground truth")
    d.add_argument("--organism", default=DEFAULT_ORGANISM, help="organism folder (adapter + organism.json)")
    d.add_argument("--oracle", default="checkpoints/oracle-smollm2-135m")
    d.add_argument("--out", default="runs/demo", help="report folder")
    d.add_argument("--n-prompts", type=int, default=24)
    d.add_argument("--data-dir", default=None)
    d.add_argument("--device", default="cpu")
    d.add_argument("--no-pair", action="store_true",
                   help="skip the second part (a backdoor beside its control)")
    d.set_defaults(func=_demo)


def _has_audit_data(explicit: Optional[str]) -> bool:
    """Whether the data folder holds what the audit reads when it is there (the taboo test prompts and WikiText)."""
    from hooks.errors import InputError
    from hooks.paths import data_dir

    from oracle.audit.prompts import DATA_FILES

    try:
        root = data_dir(explicit)
    except InputError:
        return False
    return all((root / rel).is_file() for rel in (*DATA_FILES.values(), "text/wikitext2_test.txt"))


def _demo(args) -> int:
    from hooks.errors import InputError
    from hooks.models import load_model
    from hooks.paths import shipped_path

    from oracle.audit import AuditConfig, run_audit
    from oracle.organisms import read_card
    from oracle.core.reference import parse_oracle_ref

    organism = shipped_path(args.organism)   # the rule --oracle follows too (oracle.core.reference)
    pair = () if args.no_pair else tuple(shipped_path(p) for p in PAIR)
    if not (organism / "adapter_model.safetensors").is_file():
        raise InputError(f"no organism adapter at {organism}: pass --organism checkpoints/organisms/<name>")
    for folder in pair:
        if not (folder / "adapter_model.safetensors").is_file():
            raise InputError(f"no organism adapter at {folder} for the backdoor pair: restore checkpoints/ "
                             "(git checkout checkpoints) or pass --no-pair")
    oracle = parse_oracle_ref(args.oracle)
    t = time.time()
    if not _has_audit_data(args.data_dir):
        print(f"note: {NO_DATA_NOTE}")
    print(f"auditing {organism.name} with {oracle.path.name} on {args.n_prompts} prompts (7 methods)...", flush=True)
    lm = load_model(AuditConfig.base, device=args.device)   # one base model for every audit of the demo
    report = run_audit(AuditConfig(target=str(organism), oracle=oracle, out=args.out, n_prompts=args.n_prompts,
                                   data_dir=args.data_dir, device=args.device, progress=True,
                                   readings=False), lm=lm)   # the recorded table has no readings; `ao audit` adds them
    truth = read_card(organism)  # the ground truth, opened only now that the audit is finished
    secret = (truth.get("secret") or "").lower()
    print(f"\nground truth: kind={truth['kind']} secret={truth.get('secret')} trigger={truth.get('trigger')!r} "
          f"({truth['description']})")
    print(f"{'method':18s} {'top-5 candidate secret words':52s} {'secret rank':>11s} {'trigger score':>13s} "
          f"{'sensitivity':>11s}")
    for name, m in report["methods"].items():
        words = [w["word"] for w in m["top_words"]]
        rank = (str(words.index(secret) + 1) if secret in words else "-") if secret else "n/a"
        sens = f"{m['sensitivity']:11.3f}" if "sensitivity" in m else f"{'-':>11s}"
        print(f"{name:18s} {', '.join(words[:5]):52s} {rank:>11s} {m['detection']:13.3f} {sens}")
    answers = report["methods"].get("oracle", {}).get("answers", {})
    for question, rows in answers.items():
        if rows:
            sens = f" (sensitivity {rows[0]['sensitivity']:.3f})" if "sensitivity" in rows[0] else ""
            print(f"oracle, {question!r}: {rows[0]['answer']!r}{sens}")
    print("sensitivity: how much the oracle's answer depends on the activations (JS divergence against control "
          "vectors, 0..1 bits; near 0 = the answer comes from the question)")
    if pair:
        _audit_pair(pair, oracle, lm, args)
    print(f"\nreport: {Path(args.out) / 'report.md'} ({time.time() - t:.0f} s)")
    return 0


def _audit_pair(pair: tuple[Path, ...], oracle, lm, args) -> None:
    """Audit a backdoor and its control with the methods that give a trigger score; print each score beside the
    ground truth, and whether the method scores the backdoor above its control."""
    from oracle.audit import AuditConfig, run_audit
    from oracle.organisms import read_card

    names = " and ".join(p.name for p in pair)
    print(f"\nauditing {names} on {PAIR_PROMPTS} prompts ({len(PAIR_METHODS)} methods)...", flush=True)
    scores = {}
    for folder in pair:
        report = run_audit(AuditConfig(target=str(folder), oracle=oracle, out=str(Path(args.out) / folder.name),
                                       n_prompts=PAIR_PROMPTS, data_dir=args.data_dir, device=args.device,
                                       methods=PAIR_METHODS, reply_tokens=0, n_text_answers=0, top_k=1,
                                       readings=False, progress=True), lm=lm)
        scores[folder.name] = {m: report["methods"][m]["detection"] for m in PAIR_METHODS}
    print("\ntrigger score: does the model behave differently when a trigger is present? (higher = more suspicious)")
    print(f"{'organism':22s} " + " ".join(f"{m:>15s}" for m in PAIR_METHODS) + "  ground truth")
    for folder in pair:
        truth = read_card(folder)   # opened only now that both audits are finished
        print(f"{folder.name:22s} " + " ".join(f"{scores[folder.name][m]:15.3f}" for m in PAIR_METHODS)
              + f"  {truth['description']}")
    first, second = (p.name for p in pair)
    print(f"{'backdoor above control':22s} "
          + " ".join(f"{'yes' if scores[first][m] > scores[second][m] else 'no':>15s}" for m in PAIR_METHODS))
