"""``ao probe-bench``: linear probes vs the oracle, per dataset (see :mod:`oracle.evals.probe_bench`)."""
from __future__ import annotations

import argparse


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    """The probe-bench options (of ``ao probe-bench``)."""
    from oracle.evals.probe_bench import DEFAULT_ORACLE

    p.add_argument("--model", default="smollm2-135m", help="target model (the oracle's base model)")
    p.add_argument("--oracle", default=DEFAULT_ORACLE,
                   help="trained oracle checkpoint folder (skipped with a warning when missing)")
    p.add_argument("--no-untrained", action="store_true", help="skip the untrained-oracle column")
    p.add_argument("--out", default="runs/probe-bench", help="output folder (stores go to OUT/stores/<name>)")
    p.add_argument("--datasets", nargs="+", default=None,
                   help="dataset names (default: singular_plural and the engels sets)")
    p.add_argument("--include-train-families", action="store_true",
                   help="also benchmark a few training families (sst2, gmt/cities)")
    p.add_argument("--n", type=int, default=200, help="balanced examples per dataset (half test, half train pool)")
    p.add_argument("--data-dir", default=None, help="shared data folder (default: `ao data where`)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")


def run_from_args(args: argparse.Namespace) -> int:
    from oracle.evals.probe_bench import run_probe_bench

    res = run_probe_bench(args.out, model=args.model, oracle_path=args.oracle, datasets=args.datasets, n=args.n,
                          data_dir=args.data_dir, include_train_families=args.include_train_families,
                          untrained=not args.no_untrained, seed=args.seed, n_boot=args.n_boot, progress=True)
    print((res.out / "summary.md").read_text(encoding="utf-8"))
    print(f"wrote {len(res.rows)} datasets to {res.out} in {res.seconds:.0f}s")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe-bench", help="linear probes vs the oracle: labels needed to match it, per dataset")
    add_bench_arguments(p)
    p.set_defaults(func=run_from_args)
