"""What the README and docs/design.md show runs as written: every public name their Python blocks import
exists, and every `ao` command in their shell blocks passes the command line's argument validation."""
from __future__ import annotations

import ast
import importlib
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "docs" / "design.md"]


def _blocks(path: Path, langs: tuple[str, ...]) -> list[str]:
    return [m.group(2) for m in re.finditer(r"```(\w*)\n(.*?)```", path.read_text(), flags=re.S) if m.group(1) in langs]


def _imports() -> list[tuple[str, str]]:
    out = []
    for path in DOCS:
        for block in _blocks(path, ("python",)):
            for node in ast.walk(ast.parse(block)):
                if isinstance(node, ast.ImportFrom):
                    out += [(node.module, a.name) for a in node.names]
    return out


def _ao_commands() -> list[str]:
    out = []
    for path in DOCS:
        for block in _blocks(path, ("bash", "sh", "")):
            text = block.replace("\\\n", " ")
            for line in text.splitlines():
                for part in line.split(" #")[0].split("&&"):
                    if part.strip().startswith("ao ") or part.strip() == "ao demo":
                        out.append(part.strip())
    return out


def test_the_docs_show_imports_and_commands():
    assert len(_imports()) >= 4 and len(_ao_commands()) >= 5


@pytest.mark.parametrize("module, name", _imports())
def test_every_public_name_the_docs_import_exists(module, name):
    assert hasattr(importlib.import_module(module), name), f"from {module} import {name}"


@pytest.mark.parametrize("command", _ao_commands())
def test_every_ao_command_in_the_docs_parses(command):
    from oracle.cli.main import build_parser

    parser = build_parser()
    args = parser.parse_args(shlex.split(command)[1:])   # argparse exits (SystemExit) on a bad flag or value
    assert callable(args.func)
