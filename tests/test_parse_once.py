"""Parse once, at the edge: ``ao ask --positions`` and ``ao audit --oracle`` (and every other entry) turn a user's
string into a typed value in one place, and nothing below parses or re-derives it.

- positions: the grammar's checker (``hooks.positions.parse_positions``) is called by ``Positions.parse`` only;
- oracle references: the path rule (``resolve_oracle_path``) and the card read (``load_card``) are called by
  ``parse_oracle_ref`` only, and ``"none"`` becomes ``None`` there alone;
- below the edges (batching, the audit's run and methods) nothing calls a parse function.

Read with ``ast`` over the library (tests excluded), then checked at run time on the tiny model.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIBRARY = ("hooks", "probes", "oracle")


def _modules() -> dict[str, ast.Module]:
    out = {}
    for pkg in LIBRARY:
        for path in sorted((REPO / pkg).rglob("*.py")):
            out[str(path.relative_to(REPO))] = ast.parse(path.read_text(encoding="utf-8"))
    return out


def callers(name: str) -> set[str]:
    """``"path:Qual.name"`` of every library function (or ``"path:<module>"``) that calls ``name`` (a plain name
    or an attribute, e.g. ``parse_positions`` or ``Positions.parse``).

    Example:
        >>> "hooks/positions.py:Positions.parse" in callers("parse_positions")
        True
    """
    owner, _, attr = name.rpartition(".")
    found: set[str] = set()

    def visit(node: ast.AST, stack: list[str], path: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(child, stack + [child.name], path)
                continue
            if isinstance(child, ast.Call):
                f = child.func
                hit = (isinstance(f, ast.Name) and not owner and f.id == attr) or (
                    isinstance(f, ast.Attribute) and f.attr == attr
                    and (not owner or isinstance(f.value, ast.Name) and f.value.id in (owner, "cls")))
                if hit:
                    found.add(f"{path}:{'.'.join(stack) or '<module>'}")
            visit(child, stack, path)

    for path, tree in _modules().items():
        visit(tree, [], path)
    return found


def test_the_positions_grammar_is_read_by_the_one_parse_function_only():
    assert callers("parse_positions") == {"hooks/positions.py:Positions.parse"}


def test_the_oracle_reference_is_resolved_and_its_card_read_by_the_one_parse_function_only():
    assert callers("resolve_oracle_path") == {"oracle/core/reference.py:parse_oracle_ref"}
    assert callers("load_card") == {"oracle/core/reference.py:parse_oracle_ref"}
    assert callers("shipped_path") <= {"oracle/core/reference.py:resolve_oracle_path", "oracle/cli/cmd_demo.py:_demo"}


def test_ao_ask_parses_positions_once_and_ao_audit_its_oracle_once():
    assert {f for f in callers("Positions.parse") if f.startswith("oracle/cli/")} == {"oracle/cli/cmd_oracle.py:_ask"}
    cli_oracle = {f for f in callers("parse_oracle_ref") if f.startswith("oracle/cli/")}
    assert {"oracle/cli/cmd_audit.py:_audit", "oracle/cli/cmd_oracle.py:_ask", "oracle/cli/cmd_oracle.py:_eval",
            "oracle/cli/cmd_demo.py:_demo"} <= cli_oracle


@pytest.mark.parametrize("below", ["oracle/core/batching.py", "oracle/audit/run.py", "oracle/audit/methods.py",
                                   "oracle/audit/forward.py", "oracle/audit/target.py", "hooks/inject.py"])
def test_nothing_below_the_edges_parses_again(below):
    for parse in ("Positions.parse", "select_positions", "parse_positions", "parse_oracle_ref", "read_card"):
        assert not {f for f in callers(parse) if f.startswith(below + ":")}, (below, parse)


def test_the_one_none_rule():
    """``none`` (any case) means no oracle in one place; an ``OracleRef`` or ``None`` passes through untouched."""
    from oracle.audit import AuditConfig
    from oracle.core.reference import parse_oracle_ref

    assert parse_oracle_ref(" NONE ", allow_none=True) is None and parse_oracle_ref("", allow_none=True) is None
    ref = parse_oracle_ref("checkpoints/oracle-smollm2-135m")
    assert parse_oracle_ref(ref) is ref and AuditConfig(target="t", oracle=ref).oracle is ref
    plan = AuditConfig(target="t", oracle="None", methods=None)
    assert plan.oracle is None and not plan.loads_oracle and "oracle" not in plan.methods
    assert AuditConfig(target="t", methods=("logit_lens",)).loads_oracle is False


def _count(monkeypatch, module, name: str) -> list:
    calls: list = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_ao_ask_positions_reach_the_oracle_parsed_once(monkeypatch, capsys):
    """``ao ask --positions last:2`` on the tiny model: the grammar is read once, and the vectors read are the
    last two tokens'."""
    import hooks.models
    import hooks.positions
    from hooks.testing import tiny_loaded
    from oracle.core.api import Oracle
    from oracle.cli.main import build_parser, main

    build_parser()   # every command module imported (their own constants parsed) before counting
    lm = tiny_loaded("llama", n_layers=4)
    monkeypatch.setattr(hooks.models, "load_model", lambda *a, **k: lm)
    read: list = []
    real_activations = Oracle.activations

    def activations(self, texts, layer, positions, **kw):
        read.append(positions)
        return real_activations(self, texts, layer, positions, **kw)

    monkeypatch.setattr(Oracle, "activations", activations)
    parsed = _count(monkeypatch, hooks.positions, "parse_positions")
    argv = ["ask", "--untrained", "--text", "The cat sat.", "--question", "What is it?", "--positions", "last:2",
            "--max-new-tokens", "1"]
    assert main(argv) == 0, capsys.readouterr().err
    assert [a[0] for a in parsed] == ["last:2"]
    assert len(read) == 1 and isinstance(read[0][0], hooks.positions.Positions) and str(read[0][0]) == "last:2"


def test_ao_audit_reads_the_oracle_card_once(monkeypatch, capsys, tmp_path):
    """``ao audit --oracle DIR``: the folder is checked and its card read once, in the CLI; the audit's plan gets
    the parsed reference (run stopped before any model loads)."""
    import oracle.audit
    import oracle.core.reference
    from oracle.cli.main import main

    class Stop(Exception):
        pass

    seen: list = []

    def run_audit(config, lm=None):
        seen.append(config)
        raise Stop

    monkeypatch.setattr(oracle.audit, "run_audit", run_audit)
    cards = _count(monkeypatch, oracle.core.reference, "load_card")
    target = str(REPO / "checkpoints" / "organisms" / "benign")
    with pytest.raises(Stop):
        main(["audit", "--target", target, "--oracle", "checkpoints/oracle-smollm2-135m", "--out", str(tmp_path / "r")])
    assert len(cards) == 1
    plan = seen[0]
    assert isinstance(plan.oracle, oracle.core.reference.OracleRef) and plan.oracle.card.source_layers == [7, 15, 22]
    assert plan.loads_oracle and plan.methods[:2] == ("oracle", "oracle_diff")
    with pytest.raises(Stop):
        main(["audit", "--target", target, "--oracle", "none", "--out", str(tmp_path / "r")])
    assert seen[1].oracle is None and "oracle" not in seen[1].methods and len(cards) == 1
