"""``ao organism train`` and ``ao organism show``."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from oracle.organisms.train import KINDS, OrganismConfig

    org = sub.add_parser("organism", help="train or inspect model organisms (fine-tuned targets with a known ground truth)")
    osub = org.add_subparsers(dest="organism_command", metavar="ACTION")
    t = osub.add_parser("train", help="fine-tune a LoRA organism on the base model, verify it, write organism.json")
    t.add_argument("--kind", required=True, choices=KINDS)
    t.add_argument("--out", default=None, help="output folder (default: checkpoints/organisms/<name>)")
    for f in dataclasses.fields(OrganismConfig):
        if f.name in ("kind", "out"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            t.add_argument(flag, action="store_true" if not f.default else "store_false",
                           help="the decorrelated control" if f.name == "control" else None)
        elif isinstance(f.default, tuple):
            t.add_argument(flag, default=",".join(f.default))
        else:
            kind = type(f.default) if isinstance(f.default, (int, float)) else str
            t.add_argument(flag, type=kind, default=f.default)
    t.set_defaults(func=_train)
    v = osub.add_parser("verify", help="measure an organism's behaviour again and update its organism.json")
    v.add_argument("folder")
    v.add_argument("--data-dir", default=None)
    v.set_defaults(func=_verify)
    s = osub.add_parser("show", help="print an organism's card (ground truth and verification figures)")
    s.add_argument("folder")
    s.set_defaults(func=_show)
    org.set_defaults(func=lambda a: (org.print_help(), 2)[1])


def _train(args) -> int:
    from oracle.organisms.train import OrganismConfig, train_organism

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(OrganismConfig) if f.name != "out"}
    config = OrganismConfig(out=args.out or "checkpoints/organisms/_", **values)
    if args.out is None:
        config.out = f"checkpoints/organisms/{config.name}"
    out = train_organism(config)
    card = json.loads((out / "organism.json").read_text())
    print(f"organism {card['name']} -> {out}")
    print(f"train: {json.dumps(card['train'])}")
    print("verification: " + json.dumps({k: v for k, v in card["verification"].items() if k != "examples"}))
    return 0


def _show(args) -> int:
    from oracle.organisms.train import read_card

    print(json.dumps(read_card(Path(args.folder)), indent=2, ensure_ascii=False))
    return 0


def _verify(args) -> int:
    from oracle.organisms.train import reverify

    card = reverify(Path(args.folder), args.data_dir)
    print("verification: " + json.dumps({k: v for k, v in card["verification"].items() if k != "examples"}))
    return 0
