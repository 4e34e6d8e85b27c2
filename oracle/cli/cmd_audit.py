"""``ao audit``: audit a fine-tuned adapter with the oracle and baselines, side by side."""
from __future__ import annotations

import argparse

from oracle.audit.config import DEFAULT_ORACLE, METHODS, SECRET_THRESHOLD
from oracle.cli.args import split_list
from oracle.core.reference import parse_oracle_ref


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("audit", help="audit a fine-tuned adapter for a secret word or hidden trigger: oracle vs baselines",
                       description="Audit a PEFT adapter (e.g. checkpoints/organisms/NAME) with the trained oracle, the "
                                   "oracle on (target - base) activations, the untrained oracle, black-box prompting, "
                                   "prefill and the logit lens. Writes report.json, report.md and PNG plots.")
    a.add_argument("--target", required=True, help="PEFT adapter folder of the fine-tune to audit")
    a.add_argument("--base", default="smollm2-135m", help="base model the adapter was trained on")
    a.add_argument("--oracle", default=DEFAULT_ORACLE, help="oracle checkpoint folder ('none': skip the trained oracle)")
    a.add_argument("--out", required=True, help="report folder")
    a.add_argument("--prompts", nargs="+", default=None, metavar="FILE",
                   help="prompt files (one prompt a line) replacing the built-in audit prompts")
    a.add_argument("--data-dir", default=None, help="shared data folder (adds the taboo test prompts when present)")
    a.add_argument("--n-prompts", type=int, default=40, help="audit prompts in total")
    a.add_argument("--layer", default="50%", help="residual layer read (index, percent or TransformerLens name)")
    a.add_argument("--detect-layer", default="75%", help="residual layer the oracles' trigger detection reads")
    a.add_argument("--n-positions", type=int, default=16, help="last tokens of each prompt that are read")
    a.add_argument("--methods", default=None, help=f"comma-separated subset of {','.join(METHODS)}")
    a.add_argument("--threshold", type=float, default=SECRET_THRESHOLD, help="confidence at which a secret counts as found")
    a.add_argument("--batch-size", type=int, default=16)
    a.add_argument("--max-new-tokens", type=int, default=16, help="length of the free-text answers")
    a.add_argument("--device", default="cpu")
    a.add_argument("--dtype", default="float32")
    a.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 is much faster when other jobs share the cores)")
    a.set_defaults(func=_audit)


def _audit(args: argparse.Namespace) -> int:
    from oracle.audit import AuditConfig, run_audit
    from oracle.audit.report import summary_rows

    if args.threads is not None:
        import torch

        if args.threads < 1:
            from hooks.errors import InputError

            raise InputError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    oracle = parse_oracle_ref(args.oracle, allow_none=True)   # the one parse of --oracle ("none": no oracle)
    methods = split_list(args.methods)   # None: every method the plan can run (AuditConfig decides)
    cmd = args.command_line
    cfg = AuditConfig(target=args.target, base=args.base, oracle=oracle, out=args.out,
                      prompt_files=tuple(args.prompts or ()), data_dir=args.data_dir, n_prompts=args.n_prompts,
                      layer=args.layer, detect_layer=args.detect_layer, n_positions=args.n_positions, methods=methods, threshold=args.threshold,
                      batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, device=args.device,
                      dtype=args.dtype, progress=True, extra={"command": cmd} if cmd else {})
    report = run_audit(cfg)
    print(f"audit of {args.target}: {len(report['prompts'])} prompts, layer {report['layer']}, "
          f"{report['timings']['total_s']:.1f} s")
    print(f"{'method':<17} {'top-3 words':<42} {'conf':>6} {'found':>6} {'detect':>7}")
    for r in summary_rows(report, k=3):
        print(f"{r['method']:<17} {r['words'][:42]:<42} {r['confidence']:>6.3f} {'yes' if r['found'] else 'no':>6} "
              f"{r['detection']:>7.3f}")
    print(f"report: {report['files']['markdown']} (data: {report['files']['json']})")
    return 0
