"""A clean terminal: the ``ao`` commands silence third-party deprecation warnings and model-loader bars (shown
again with ``-v``) and keep the project's own warnings."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ASK = ["ask", "--oracle", "checkpoints/oracle-smollm2-135m", "--text", "The moon is bright tonight.",
       "--question", "What is this text about?", "--max-new-tokens", "4"]


def test_quiet_drops_third_party_warnings_and_keeps_the_projects(monkeypatch):
    from hooks import quiet

    for name in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.setenv(name, "")      # records the value to restore after the test
        monkeypatch.delenv(name)
    monkeypatch.setattr(quiet, "_state", {"quiet": False})
    levels = {n: logging.getLogger(n).level for n in quiet.THIRD_PARTY}
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            quiet.quiet_third_party()
            warnings.warn("`is_gradient_checkpointing` is deprecated", FutureWarning)
            warnings.warn_explicit("a library's note", UserWarning, "modeling_utils.py", 1,
                                   module="transformers.modeling_utils")
            warnings.warn("layer 3 is not one the oracle was trained on", UserWarning)
        assert [str(w.message) for w in seen] == ["layer 3 is not one the oracle was trained on"]
        assert quiet.is_quiet() and logging.getLogger("transformers").level == logging.ERROR
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _ask(*flags: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY", "PYTHONWARNINGS")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="",
               AO_MODEL_CACHE="0")   # load from the GGUF file: its de-quantizing bar too
    return subprocess.run([sys.executable, "-m", "oracle.cli", *flags, *ASK], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_ao_ask_prints_no_third_party_warning_or_loader_bar():
    proc = _ask()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip()                                   # the answer
    assert "Warning" not in proc.stderr, proc.stderr[-2000:]
    assert "Loading weights" not in proc.stderr and "de-quantizing" not in proc.stderr, proc.stderr[-2000:]
    verbose = _ask("-v")                                         # -v shows them again
    assert verbose.returncode == 0 and verbose.stdout == proc.stdout
    assert "de-quantizing" in verbose.stderr or "Warning" in verbose.stderr, verbose.stderr[-2000:]
