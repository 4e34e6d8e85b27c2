"""The one positions grammar (hooks.positions) that capture, ao ask and the Oracle API share."""
from __future__ import annotations

import re

import pytest

from hooks.errors import InputError
from hooks.positions import parse_positions, select_positions


@pytest.mark.parametrize("spec, want", [
    ("all", list(range(6))), ("last", [5]), ("last:2", [4, 5]), ("last:9", list(range(6))),
    ("slice:1:3", [1, 2]), ("slice::-4", [0, 1]), ("2", [2]), ("-1", [5]), ("0,-1", [0, 5]),
    (3, [3]), ([1, -2], [1, 4]), (slice(4, None), [4, 5]),
])
def test_every_spelling_of_the_grammar(spec, want):
    assert select_positions(6, spec) == want


@pytest.mark.parametrize("spec, message", [
    ("full", "old spelling: write all (every token) or last:K"),
    ("2:5", "old spelling: write slice:2:5"),
    (":3", "old spelling: write slice::3"),
    ("first", "bad positions 'first'"),
    ("last:0", "last:K needs K >= 1"),
    ([], "empty list"),
])
def test_old_and_bad_spellings_name_the_fix(spec, message):
    with pytest.raises(InputError, match=re.escape(message)):
        parse_positions(spec)


def test_out_of_range_is_an_error_not_a_wrap():
    with pytest.raises(InputError, match="position 6 is outside the text, which has 6 tokens"):
        select_positions(6, "6")
    with pytest.raises(InputError, match="position -7 is outside"):
        select_positions(6, [0, -7])


@pytest.mark.parametrize("argv", [
    ["ask", "--text", "hi", "--question", "q", "--positions", "2:5"],
    ["capture", "--texts", "x.txt", "--out", "o", "--positions", "full"],
])
def test_cli_refuses_an_old_spelling_in_one_line(argv, capsys, tmp_path, monkeypatch):
    from oracle.cli.main import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.txt").write_text("one text\n")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "old spelling: write" in err[0]
