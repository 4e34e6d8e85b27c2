"""The ``ao`` command line, on top of every package: each ``cmd_*`` module registers its subcommands and
stays thin (parse, call the library, print). :func:`oracle.cli.main.main` is the entry point.

    >>> from oracle.cli.main import build_parser
    >>> build_parser().prog
    'ao'
"""
