"""The ``ao`` command line. Each subcommand lives in a module with ``register(subparsers)``; every
``AOError`` becomes one line on stderr and exit code 2."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import shlex
import sys
from typing import Optional, Sequence

from hooks.errors import AOError
from hooks.quiet import quiet_third_party

# Modules that add subcommands; a module missing here is skipped (optional features).
COMMAND_MODULES = (
    "oracle.cli.cmd_capture",
    "oracle.cli.cmd_oracle",
    "oracle.cli.cmd_card",
    "oracle.cli.cmd_probe",
    "oracle.cli.cmd_organism",
    "oracle.cli.cmd_audit",
    "oracle.cli.cmd_demo",
    "oracle.cli.cmd_data",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ao", description="Activation oracles: capture, train, ask, probe, audit.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log at INFO level, and show third-party warnings and model-loader progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # the command as the user would type it (``python -m oracle.cli X`` is ``ao X``), for reports
    args.command_line = "ao " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not args.verbose:
        quiet_third_party()   # a clean terminal: the project's own output and progress bars only
    try:
        rc = args.func(args)
    except AOError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:   # Ctrl-C: one line saying how to pick the work up again
        hint = getattr(args, "resume_hint", "nothing was saved")
        print(f"interrupted: {hint(args) if callable(hint) else hint}", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
