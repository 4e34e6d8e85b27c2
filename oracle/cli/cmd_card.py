"""``ao card init``: write the derived card (``oracle.json``) of a bare PEFT oracle adapter."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from oracle.cli.args import add_card_arguments, overrides_from_args

INIT_DESCRIPTION = ("Derive oracle.json for a PEFT oracle adapter folder that has none, from its adapter_config.json "
                    "and the Activation Oracle conventions (layers 25/50/75%, injection at block 1, placeholder ' ?', "
                    "coef 1, no input scaling). Reads the base model's config and tokenizer only, not its weights.")


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("card", help="oracle cards (oracle.json)")
    csub = c.add_subparsers(dest="card_command", metavar="ACTION")
    i = csub.add_parser("init", help="write the derived card of a bare PEFT oracle adapter (e.g. a published one)",
                        description=INIT_DESCRIPTION)
    i.add_argument("folder", help="PEFT adapter folder (adapter_config.json + adapter_model.safetensors)")
    add_card_arguments(i)
    i.add_argument("--force", action="store_true", help="replace an existing oracle.json")
    i.set_defaults(func=_init)
    c.set_defaults(func=lambda args: (c.print_help(), 2)[1])


def _init(args: argparse.Namespace) -> int:
    from oracle.core.published import init_card

    card = init_card(args.folder, overrides_from_args(args), force=args.force)
    summary = {k: v for k, v in asdict(card).items() if k not in ("train_config", "evaluation")}
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.folder}/oracle.json")
    return 0
