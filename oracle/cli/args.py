"""Command-line arguments that several subcommands share, and their parsing into the library's typed values."""
from __future__ import annotations

import argparse

from oracle.core.published import CardOverrides


def add_card_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that override an oracle card's fields (``ao ask``, ``ao card init``)."""
    parser.add_argument("--base", default=None,
                        help="base model of the oracle (default: its card's, or its adapter_config.json's)")
    parser.add_argument("--source-layers", default=None,
                        help="layers the oracle reads, e.g. 9,18,27 or 25%%,50%%,75%% (default: the card's; "
                             "a bare adapter: 25%%,50%%,75%%)")
    parser.add_argument("--injection-layer", default=None, help="block whose output receives the vectors (default 1)")
    parser.add_argument("--coef", default=None, help="injection coefficient (default 1)")
    parser.add_argument("--placeholder", default=None, help="placeholder string (default ' ?')")


def overrides_from_args(args: argparse.Namespace) -> CardOverrides:
    """:class:`oracle.core.published.CardOverrides` from the flags :func:`add_card_arguments` added.

    Example:
        >>> p = argparse.ArgumentParser(); add_card_arguments(p)
        >>> overrides_from_args(p.parse_args(["--source-layers", "9,18"])).source_layers
        (9, 18)
    """
    return CardOverrides.parse(base=args.base, source_layers=args.source_layers, injection_layer=args.injection_layer,
                               coef=args.coef, placeholder=args.placeholder)


def split_list(value: str | None) -> list[str] | None:
    """A comma-separated flag as a list of its non-empty parts (``None`` when not given).

    Example:
        >>> split_list("tense, sst2,"), split_list(None)
        (['tense', 'sst2'], None)
    """
    return [s.strip() for s in value.split(",") if s.strip()] if value else None
