"""Property: random argument lists for every ``ao`` subcommand never end in a traceback.

Each list mixes the subcommand's own flags with awkward values (empty, zero, negative, NaN, huge, malformed JSON,
paths that are files, folders, missing, or in ``/proc``). The run ends in one of: argparse's usage error, a one-line
``error: ...`` (exit 2), a normal exit, or the moment the command would load a model, which the test stops there
(so no real work runs and nothing is downloaded). Anything else escaping ``oracle.cli.main.main`` is a defect.
"""
from __future__ import annotations

import argparse
import sys

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from oracle.cli.main import build_parser, main


class ModelLoadReached(Exception):
    """Raised in place of loading a model: the arguments passed every check made before work starts."""


def _commands() -> dict[str, argparse.ArgumentParser]:
    """Every leaf subcommand (``train``, ``store info``, ...) and its parser."""
    out: dict[str, argparse.ArgumentParser] = {}

    def walk(prefix: str, parser: argparse.ArgumentParser) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out[prefix.strip()] = parser
            return
        for name, child in subs[0].choices.items():
            walk(f"{prefix} {name}", child)

    walk("", build_parser())
    return out


COMMANDS = _commands()
SKIPPED = {"data fetch"}   # downloads by design; its failures are tested against a local server
AWKWARD = ["", " ", "0", "-1", "-5", "1", "2", "nan", "inf", "1e9", "x", "none", "50%", "200%", "slice:5:2", "99",
           "last", "all", "{}", "[]", '{"reading": 1}', '{"reading": -1}', "not json", "a|b", "only", "é",
           "FILE", "FOLDER", "MISSING", "/proc/ao-x", "FILE/below"]


@st.composite
def argv_for(draw, command: str) -> list[str]:
    """The command, a value for each positional and required flag, and up to four other flags with values (an
    awkward one, one of the flag's choices, or its default)."""
    parser = COMMANDS[command]
    argv = command.split()
    options = [a for a in parser._actions if a.option_strings and "--help" not in a.option_strings]
    for a in parser._actions:
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction):
            argv.append(draw(st.sampled_from(AWKWARD[1:])))
    optional = [a for a in options if not a.required]
    picked = [a for a in options if a.required]
    if optional:
        picked += draw(st.lists(st.sampled_from(optional), max_size=4, unique_by=lambda a: a.dest))
    for a in picked:
        argv.append(a.option_strings[-1])
        if a.nargs != 0:
            fitting = [str(c) for c in (a.choices or ())] + ([str(a.default)] if a.default not in (None, False) else [])
            argv.append(draw(st.sampled_from(AWKWARD + fitting)))
    return argv


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A working folder with a file and a folder to point at, model loading stopped, the network unused."""
    import hooks.models

    (tmp_path / "FILE").write_text("hello\n")
    (tmp_path / "FOLDER").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def stop(*args, **kwargs):
        raise ModelLoadReached

    real = hooks.models.load_model
    for module in list(sys.modules.values()):   # every module that imported load_model by name
        if getattr(module, "load_model", None) is real:
            monkeypatch.setattr(module, "load_model", stop)
    monkeypatch.setattr(hooks.models, "model_skeleton", stop, raising=False)
    return tmp_path


def _run(argv: list[str], capsys) -> None:
    try:
        rc = main(argv)
    except SystemExit as e:   # argparse: usage and one error line, exit 2 (or --help, exit 0)
        assert e.code in (0, 2), argv
        rc = int(e.code)
    except ModelLoadReached:
        return
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, argv
    assert rc in (0, 1, 2), (argv, rc)
    if rc == 2 and err.startswith("error: "):
        assert len(err.strip("\n").split("\n")) == 1, (argv, err)


@pytest.mark.parametrize("command", sorted(set(COMMANDS) - SKIPPED))
def test_random_arguments_never_end_in_a_traceback(command, sandbox, capsys):
    @settings(max_examples=25, derandomize=True, database=None, deadline=None)
    @given(argv=argv_for(command))
    @example(argv=["ask", "--text", "hi", "--question", "q", "--max-new-tokens", "0"])
    @example(argv=["eval", "--suite", "skills", "--suite-n", "0"])
    @example(argv=["train", "--time-budget-s", "-5"])
    def check(argv):
        if argv[:len(command.split())] != command.split():
            return   # the shared @examples belong to one command each
        _run(argv, capsys)

    check()
