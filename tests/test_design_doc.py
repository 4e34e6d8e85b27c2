"""docs/design.md stays true: every repo path, module and code name it mentions in backticks exists.

Read with ``ast`` and the file system (a module is imported only to look up a dotted name). Patterns with
``*`` or ``<...>`` are placeholders, not names, and are skipped."""
from __future__ import annotations

import ast
import importlib
import re
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DESIGN = REPO / "docs" / "design.md"
LIBRARY = ("hooks", "probes", "oracle")
FILE_SUFFIXES = (".json", ".jsonl", ".h5", ".safetensors", ".md", ".png", ".txt")   # `oracle.json` is a file
TOP_FOLDERS = ("hooks", "probes", "oracle", "scripts", "experiments", "checkpoints", "tests", "docs")


def mentions(text: str) -> list[str]:
    """The backticked spans of a Markdown text, each cut before a call's parenthesis.

    Example:
        >>> mentions("use `Oracle.ask(text, q)` and `hooks/store.py`; ``x``")
        ['Oracle.ask', 'hooks/store.py', 'x']
    """
    spans = re.findall(r"`+([^`]+?)`+", text)
    return [s.split("(")[0].strip() for s in spans if s.split("(")[0].strip()]


@lru_cache(maxsize=1)
def library_classes() -> dict[str, str]:
    """Class name -> the module that defines it, over the library packages."""
    out: dict[str, str] = {}
    for pkg in LIBRARY:
        for path in (REPO / pkg).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    out.setdefault(node.name, module)
    return out


def library_file_names() -> set[str]:
    return {p.name for pkg in (*LIBRARY, "scripts") for p in (REPO / pkg).rglob("*.py")}


def resolve_dotted(name: str) -> bool:
    """Whether ``pkg.module.attr...`` names a module or an attribute of one."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def has_member(cls: type, attr: str) -> bool:
    return hasattr(cls, attr) or attr in getattr(cls, "__dataclass_fields__", {})


def problems(text: str) -> list[str]:
    """Each mention in ``text`` that names a path, module or class member that does not exist."""
    bad = []
    classes = library_classes()
    files = library_file_names()
    for m in mentions(text):
        if "*" in m or "<" in m or " " in m:
            continue
        if "/" in m and m.split("/")[0] in TOP_FOLDERS:
            if not (REPO / m).exists():
                bad.append(f"path {m}")
        elif re.fullmatch(r"[\w]+\.py", m):
            if m not in files:
                bad.append(f"file {m}")
        elif re.fullmatch(r"(hooks|probes|oracle)(\.\w+)+", m) and not m.endswith(FILE_SUFFIXES):
            if not resolve_dotted(m):
                bad.append(f"name {m}")
        elif re.fullmatch(r"[A-Z]\w+\.\w+", m) and m.split(".")[0] in classes:
            cls_name, attr = m.split(".")
            cls = getattr(importlib.import_module(classes[cls_name]), cls_name)
            if not has_member(cls, attr):
                bad.append(f"member {m}")
    return bad


def test_the_checker_sees_a_wrong_name():
    assert problems("`hooks/no_such.py`, `oracle.no_such_module`, `Oracle.no_such_method`, `nosuch.py`") == [
        "path hooks/no_such.py", "name oracle.no_such_module", "member Oracle.no_such_method", "file nosuch.py"]
    assert problems("`hooks/store.py`, `oracle.core.card.OracleCard`, `Oracle.ask`, `YesNo.against_control`") == []


def test_every_name_in_the_design_doc_exists():
    assert problems(DESIGN.read_text(encoding="utf-8")) == []


def test_the_design_doc_has_a_line_per_floor():
    from test_layout import FLOORS

    text = DESIGN.read_text(encoding="utf-8")
    for package in FLOORS:
        folder = REPO / package.replace(".", "/")
        if any(p.name != "__init__.py" for p in folder.glob("*.py")):  # a folder with modules of its own
            assert f"`{package.replace('.', '/')}/`" in text, package
