"""``ao demo`` prints the same table run after run: a refactor that changes what the demo shows fails here.

The recorded table is ``tests/golden/demo_taboo_moon.txt`` (the shipped oracle auditing the shipped
taboo-moon organism, 24 prompts, the audit's fixed seed, then the shipped backdoor beside its control). After a deliberate change (a new shipped
oracle, a new audit method), rewrite it with ``AO_UPDATE_GOLDEN=1 python -m pytest tests/test_demo_table.py``
and say why in the commit.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "demo_taboo_moon.txt"
_NUMBER = re.compile(r"-?\d+\.\d+")


def table_of(stdout: str) -> str:
    """The demo's tables and answers: from the first ground-truth line to the backdoor-above-control line (no
    timing line)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ground truth:"))
    end = next(i for i, line in enumerate(lines) if line.startswith("backdoor above control"))
    return "\n".join(lines[start:end + 1]) + "\n"


def same_up_to_rounding(got: str, want: str, tol: float = 0.0015) -> list[str]:
    """Lines that differ, where numbers may differ by ``tol`` (the last printed digit) and nothing else may.

    Example:
        >>> same_up_to_rounding("a 0.501 b\\n", "a 0.500 b\\n"), same_up_to_rounding("a 0.51\\n", "a 0.50\\n")
        ([], ['line 1: a 0.51 != a 0.50'])
    """
    g, w = got.splitlines(), want.splitlines()
    bad = [f"line count {len(g)} != {len(w)}"] if len(g) != len(w) else []
    for i, (a, b) in enumerate(zip(g, w), 1):
        na, nb = _NUMBER.findall(a), _NUMBER.findall(b)
        same_text = _NUMBER.sub("#", a) == _NUMBER.sub("#", b) and len(na) == len(nb)
        if not same_text or any(abs(float(x) - float(y)) > tol for x, y in zip(na, nb)):
            bad.append(f"line {i}: {a} != {b}")
    return bad


@pytest.mark.slow
def test_ao_demo_prints_the_recorded_table(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-m", "oracle.cli", "demo", "--out", str(tmp_path / "demo")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = table_of(proc.stdout)
    if os.environ.get("AO_UPDATE_GOLDEN"):
        GOLDEN.write_text(got, encoding="utf-8")
    assert not same_up_to_rounding(got, GOLDEN.read_text(encoding="utf-8")), \
        "ao demo's table changed:\n" + "\n".join(same_up_to_rounding(got, GOLDEN.read_text(encoding="utf-8")))


GOLDEN_NO_DATA = REPO / "tests" / "golden" / "demo_taboo_moon_no_data.txt"


@pytest.mark.slow
def test_ao_demo_without_the_data_folder(tmp_path, monkeypatch, capsys):
    """The README's first command on a machine without ``../shared/data`` (``AO_DATA_DIR`` unset, no workspace
    folder, an empty user cache): the demo still runs, says in its first line what differs (its 32 built-in
    prompts only, and ``oracle_diff`` reads them instead of WikiText) and prints its own recorded table,
    ``tests/golden/demo_taboo_moon_no_data.txt`` (rewritten like the other with ``AO_UPDATE_GOLDEN=1``)."""
    import hooks.paths as paths
    from oracle.cli.cmd_demo import NO_DATA_NOTE
    from oracle.cli.main import main
    from hooks.errors import InputError

    monkeypatch.chdir(REPO)
    monkeypatch.delenv("AO_DATA_DIR", raising=False)
    monkeypatch.setattr(paths, "repo_data_dir", lambda: tmp_path / "shared" / "data")
    monkeypatch.setattr(paths, "user_data_dir", lambda: tmp_path / "cache" / "data")
    with pytest.raises(InputError, match="run `ao data fetch`"):
        paths.data_dir()
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"note: {NO_DATA_NOTE}"
    got = table_of(out)
    if os.environ.get("AO_UPDATE_GOLDEN"):
        GOLDEN_NO_DATA.write_text(got, encoding="utf-8")
    assert not same_up_to_rounding(got, GOLDEN_NO_DATA.read_text(encoding="utf-8")), \
        "ao demo's table without data changed:\n" + "\n".join(
            same_up_to_rounding(got, GOLDEN_NO_DATA.read_text(encoding="utf-8")))
    report = json.loads((tmp_path / "demo" / "report.json").read_text(encoding="utf-8"))
    assert set(report["prompt_sources"]) == {"builtin_secret", "builtin_ordinary"}
    assert report["text_diff"]["source"] == "builtin_ordinary"


def test_ao_demo_names_a_missing_pair_organism_in_one_line(tmp_path, monkeypatch, capsys):
    """Checked before any model loads: the missing folder and the two ways out."""
    import oracle.cli.cmd_demo as cmd_demo
    from oracle.cli.main import main

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(cmd_demo, "PAIR", (str(tmp_path / "gone"), "checkpoints/organisms/benign"))
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "gone" in err and "--no-pair" in err, err
    assert not (tmp_path / "demo").exists()
