"""``ao capture`` / ``ao store``: bad input, verify, SIGKILL + resume, data-parallel under accelerate, the texts a
store was made from, the manifest schema, lengths."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hooks.store import MANIFEST, ActivationStore, StoreWriter
from oracle.cli.main import main

REPO = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file in a store folder (manifest included)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def write_txt(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_error_line(err: str, *needles: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory, wikitext_lines) -> Path:
    """Ten wikitext paragraphs, cut to at most 200 characters."""
    return write_txt(tmp_path_factory.mktemp("texts") / "docs.txt", [line[:200] for line in wikitext_lines[:10]])


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, tiny_model_dir, texts_file) -> Path:
    """A finished store made by the tiny model folder: 10 docs, 3 per shard -> 4 shards."""
    out = tmp_path_factory.mktemp("stores") / "tiny"
    rc = main(["capture", "--model", str(tiny_model_dir), "--texts", str(texts_file), "--layers", "1,3",
               "--out", str(out), "--docs-per-shard", "3", "--batch-size", "4"])
    assert rc == 0
    return out


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("offline_env", [False, True])
def test_unknown_model_offline_fails_at_once(tmp_path, capsys, texts_file, monkeypatch, offline_env):
    """No network (every connection refused) and not cached: one line before any retry, with or without HF_HUB_OFFLINE."""
    import socket

    from huggingface_hub import constants

    def refuse(*args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline_env)
    out = tmp_path / "out"
    rc, _, err = run_cli(capsys, "capture", "--model", "no-such-org/no-such-model-xyz", "--texts", str(texts_file),
                         "--out", str(out))
    assert rc == 2
    assert_one_error_line(err, "'no-such-org/no-such-model-xyz' is not embedded", "not in the Hugging Face cache",
                          "smollm2-135m")
    assert not out.exists()


def test_unknown_model_with_a_hanging_network_fails_after_one_bounded_probe(tmp_path, capsys, texts_file,
                                                                           monkeypatch):
    """A network that never answers (a name lookup or connect that hangs) costs one probe of
    HUB_PROBE_TIMEOUT_S, not the hub client's retries: the one line comes once the probe gives up."""
    import socket
    import threading

    import hooks.models
    from huggingface_hub import constants

    # the 10-second promise of docs/reliability.md row 1: the probe is the only wait on this path
    assert hooks.models.HUB_PROBE_TIMEOUT_S <= 5.0
    released, gave_up, calls = threading.Event(), threading.Event(), []

    def hang(*args, **kwargs):
        calls.append(args)
        released.wait(30)        # does not answer while the command runs (30 s: a hung test still ends)
        gave_up.set()
        raise OSError("released")

    monkeypatch.setattr(socket, "create_connection", hang)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hooks.models, "HUB_PROBE_TIMEOUT_S", 0.2)
    out = tmp_path / "out"
    try:
        rc, _, err = run_cli(capsys, "capture", "--model", "no-such-org/no-such-model-xyz", "--texts",
                             str(texts_file), "--out", str(out))
        answered_before_the_network = not gave_up.is_set()
    finally:
        released.set()
    assert answered_before_the_network, "the command waited for the hanging connection instead of the probe's timeout"
    assert rc == 2 and len(calls) == 1
    assert_one_error_line(err, "'no-such-org/no-such-model-xyz' is not embedded", "the hub is unreachable")
    assert not out.exists()


@pytest.mark.slow
def test_unknown_model_with_the_hub_reachable(tmp_path, capsys, texts_file, monkeypatch):
    """When the hub answers, the loader's own refusal becomes the one line."""
    import hooks.models

    monkeypatch.setattr(hooks.models, "hub_reachable", lambda timeout_s=3.0: True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the loader itself must not go to the network in a test
    out = tmp_path / "out"
    rc, _, err = run_cli(capsys, "capture", "--model", "no-such-org/no-such-model-xyz", "--texts", str(texts_file),
                         "--out", str(out))
    assert rc == 2
    assert_one_error_line(err, "unknown model", "no-such-org/no-such-model-xyz")
    assert not out.exists()


@pytest.mark.slow
def test_layer_out_of_range(tmp_path, capsys, texts_file, tiny_model_dir):
    out = tmp_path / "out"
    rc, _, err = run_cli(capsys, "capture", "--model", str(tiny_model_dir), "--texts", str(texts_file),
                         "--layers", "1,9", "--out", str(out))
    assert rc == 2
    assert_one_error_line(err, "out of range", "4 layers")
    assert not out.exists()


def test_empty_text_file(tmp_path, capsys):
    texts = tmp_path / "empty.txt"
    texts.write_text("\n\n   \n")
    out = tmp_path / "out"
    rc, _, err = run_cli(capsys, "capture", "--texts", str(texts), "--out", str(out))
    assert rc == 2
    assert_one_error_line(err, "empty")
    assert not out.exists()


def test_empty_string_among_texts(tmp_path, capsys):
    texts = tmp_path / "docs.jsonl"
    texts.write_text("\n".join(json.dumps({"text": t}) for t in ["first doc", "", "third doc"]) + "\n")
    out = tmp_path / "out"
    rc, _, err = run_cli(capsys, "capture", "--texts", str(texts), "--out", str(out))
    assert rc == 2
    assert_one_error_line(err, "text 1 is empty")
    assert not out.exists()


def test_missing_text_file_and_bad_options(tmp_path, capsys):
    out = tmp_path / "out"
    rc, _, err = run_cli(capsys, "capture", "--texts", str(tmp_path / "nope.txt"), "--out", str(out))
    assert rc == 2 and "no text file" in err
    rc, _, err = run_cli(capsys, "capture", "--texts", str(tmp_path / "nope.txt"), "--out", str(out),
                         "--positions", "first")
    assert rc == 2 and "bad positions" in err
    assert not out.exists()


def test_text_file_that_is_not_utf8(tmp_path, capsys):
    texts = tmp_path / "latin1.txt"
    texts.write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
    out = tmp_path / "out"
    rc, _, err = run_cli(capsys, "capture", "--texts", str(texts), "--out", str(out))
    assert rc == 2
    assert_one_error_line(err, "latin1.txt is not UTF-8", "byte 3")
    assert not out.exists()


def test_out_folder_with_other_files_is_refused(tmp_path, capsys, texts_file, tiny_model_dir):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "paper.tex").write_text("x")
    rc, _, err = run_cli(capsys, "capture", "--model", str(tiny_model_dir), "--texts", str(texts_file),
                         "--out", str(out))
    assert rc == 2
    assert_one_error_line(err, "holds other files (paper.tex)", "no store", "or pass --force")
    assert sorted(p.name for p in out.iterdir()) == ["paper.tex"]
    rc, _, _ = run_cli(capsys, "capture", "--model", str(tiny_model_dir), "--texts", str(texts_file),
                       "--out", str(out), "--force")
    assert rc == 0 and ActivationStore(out).n_docs == 10 and (out / "paper.tex").read_text() == "x"


@pytest.mark.slow
def test_non_safetensors_adapter(tmp_path, capsys, texts_file, tiny_model_dir):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    (adapter / "adapter_model.bin").write_bytes(b"\x80\x04not loaded, ever")
    out = tmp_path / "out"
    rc, _, err = run_cli(capsys, "capture", "--model", str(tiny_model_dir), "--adapter", str(adapter),
                         "--texts", str(texts_file), "--out", str(out))
    assert rc == 2
    assert_one_error_line(err, "pickled adapter", "safe_serialization=True")
    assert not out.exists()


@pytest.mark.slow
def test_store_made_with_another_model(tmp_path, capsys, texts_file, tiny_store, embedded_lm):
    """Resuming a tiny-model store with the embedded model, or with a store whose weights hash differs,
    fails before anything is written."""
    store = tmp_path / "store"
    store.mkdir()
    for p in tiny_store.iterdir():
        (store / p.name).write_bytes(p.read_bytes())
    before = snapshot(store)
    rc, _, err = run_cli(capsys, "capture", "--model", "smollm2-135m", "--texts", str(texts_file),
                         "--layers", "1,3", "--out", str(store), "--docs-per-shard", "3", "--resume")
    assert rc == 2
    assert_one_error_line(err, "was made with model", "not smollm2-135m")
    assert snapshot(store) == before

    manifest = json.loads((store / MANIFEST).read_text())
    tiny_spec = manifest["model_spec"]
    manifest["weights_hash"] = "0" * 64
    (store / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    before = snapshot(store)
    rc, _, err = run_cli(capsys, "capture", "--model", tiny_spec, "--texts", str(texts_file),
                         "--layers", "1,3", "--out", str(store), "--docs-per-shard", "3", "--resume")
    assert rc == 2
    assert_one_error_line(err, "weights hash")
    assert snapshot(store) == before


@pytest.mark.slow
def test_existing_store_without_resume(capsys, texts_file, tiny_store, tiny_model_dir):
    before = snapshot(tiny_store)
    rc, _, err = run_cli(capsys, "capture", "--model", str(tiny_model_dir), "--texts", str(texts_file),
                         "--layers", "1,3", "--out", str(tiny_store), "--docs-per-shard", "3")
    assert rc == 2
    assert_one_error_line(err, "already holds a store", "--resume")
    assert snapshot(tiny_store) == before


@pytest.mark.slow
def test_second_writer_on_the_same_store(tmp_path, capsys, texts_file, tiny_store, tiny_model_dir):
    """While one writer holds the store's lock, a second ``ao capture --resume`` refuses, naming the holder."""
    store = tmp_path / "store"
    store.mkdir()
    for p in tiny_store.iterdir():
        (store / p.name).write_bytes(p.read_bytes())
    m = json.loads((store / MANIFEST).read_text())
    header = dict(model_spec=m["model_spec"], weights_hash=m["weights_hash"], tokenizer_name=m["tokenizer"],
                  d_model=m["d_model"], layers=m["layers"], dtype=m["dtype"], capture_options=m["capture_options"],
                  docs_per_shard=m["docs_per_shard"])
    with StoreWriter(store, resume=True, **header):
        before = snapshot(store)
        assert ".lock" in before
        rc, _, err = run_cli(capsys, "capture", "--model", str(tiny_model_dir), "--texts", str(texts_file),
                             "--layers", "1,3", "--out", str(store), "--docs-per-shard", "3", "--resume")
        assert rc == 2
        assert_one_error_line(err, "is being written by process", str(os.getpid()))
        assert snapshot(store) == before
    assert not (store / ".lock").exists()


# ---------------------------------------------------------------------------------------------- store info / verify


@pytest.mark.slow
def test_store_info_and_verify_ok(capsys, tiny_store):
    rc, out, _ = run_cli(capsys, "store", "info", str(tiny_store))
    assert rc == 0 and "documents  10" in out and "layers     [1, 3]" in out
    rc, out, _ = run_cli(capsys, "store", "verify", str(tiny_store))
    assert rc == 0 and out.startswith("OK") and "4 shards" in out


@pytest.mark.slow
def test_verify_reports_damaged_shards_by_name(tmp_path, capsys, tiny_store):
    """Flip bytes in shard 1 and truncate shard 2: verify names both (exit 1); shards 0 and 3 still read."""
    store = tmp_path / "store"
    store.mkdir()
    for p in tiny_store.iterdir():
        (store / p.name).write_bytes(p.read_bytes())
    reference = ActivationStore(tiny_store)
    flipped = store / "shard-00001.h5"
    data = bytearray(flipped.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 16):
        data[i] ^= 0xFF
    flipped.write_bytes(bytes(data))
    truncated = store / "shard-00002.h5"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 3])

    rc, out, _ = run_cli(capsys, "store", "verify", str(store))
    assert rc == 1
    bad = [line for line in out.splitlines() if line.startswith("BAD")]
    assert any("shard-00001.h5" in line and "checksum" in line for line in bad)
    assert any("shard-00002.h5" in line for line in bad)
    assert not any("shard-00000.h5" in line or "shard-00003.h5" in line for line in bad)

    damaged = ActivationStore(store)
    for i in (0, 1, 2, 9):  # shards 0 and 3
        a, b = damaged.doc(i), reference.doc(i)
        assert np.array_equal(a.tokens, b.tokens)
        assert all(np.array_equal(a.acts[L].numpy(), b.acts[L].numpy()) for L in (1, 3))
    from hooks.errors import StoreError

    with pytest.raises(StoreError, match="shard-00002.h5"):
        damaged.doc(7)


# ---------------------------------------------------------------------------------------------- SIGKILL + resume


def _default_sigint() -> None:
    """In the child, before exec: Ctrl-C back to its default (a background job's children inherit it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _subprocess_env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_identical(tmp_path, capsys, wikitext_lines, embedded_lm):
    """Kill ``ao capture`` (embedded model, 40 docs, 4 per shard) with SIGKILL right after its first
    shard is finalized, resume it with --resume: every file equals an uninterrupted run's."""
    texts = write_txt(tmp_path / "docs.txt", [line[:160] for line in wikitext_lines[:40]])
    args = ["--model", "smollm2-135m", "--texts", str(texts), "--layers", "25%,50%,75%",
            "--docs-per-shard", "4", "--batch-size", "4", "--max-length", "48"]
    killed = tmp_path / "killed"
    log = open(tmp_path / "killed.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "oracle.cli", "capture", *args, "--out", str(killed)],
                            cwd=REPO, env=_subprocess_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        n_done = 0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                n_done = len(json.loads((killed / MANIFEST).read_text())["shards"])
            except (OSError, ValueError, KeyError):
                n_done = 0
            if n_done >= 1:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text(errors="replace")[-2000:]
    shards_at_kill = json.loads((killed / MANIFEST).read_text())["shards"]
    assert 1 <= len(shards_at_kill) < 10, "the capture finished before it could be killed: make the job longer"
    assert (killed / ".lock").exists()  # a stale lock from the dead process, taken over on resume

    rc, out, _ = run_cli(capsys, "capture", *args, "--out", str(killed), "--resume")
    assert rc == 0, out
    assert f"({len(shards_at_kill) * 4} already done)" in out
    fresh = tmp_path / "fresh"
    rc, _, _ = run_cli(capsys, "capture", *args, "--out", str(fresh))
    assert rc == 0
    a, b = snapshot(killed), snapshot(fresh)
    assert list(a) == list(b) == [MANIFEST] + [f"shard-{k:05d}.h5" for k in range(10)]
    assert a == b
    assert json.loads((killed / MANIFEST).read_text())["tokenizer"] == "smollm2-135m"  # no machine-specific path
    rc, out, _ = run_cli(capsys, "store", "verify", str(killed))
    assert rc == 0


@pytest.mark.slow
def test_ctrl_c_then_resume_is_bitwise_identical(tmp_path, capsys, wikitext_lines, embedded_lm):
    """Ctrl-C (SIGINT) during ``ao capture`` after its first shard: exit 130 with one line saying how to resume;
    ``--resume`` then gives a store equal, file by file, to an uninterrupted run's."""
    texts = write_txt(tmp_path / "docs.txt", [line[:160] for line in wikitext_lines[:40]])
    args = ["--model", "smollm2-135m", "--texts", str(texts), "--layers", "25%,50%,75%",
            "--docs-per-shard", "4", "--batch-size", "4", "--max-length", "48"]
    stopped = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, "-m", "oracle.cli", "capture", *args, "--out", str(stopped)],
                            cwd=REPO, env=_subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if json.loads((stopped / MANIFEST).read_text())["shards"]:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip() and "capture" not in ln[:8]]
    assert proc.returncode == 130, err.decode(errors="replace")[-2000:]
    assert lines[-1] == ("interrupted: the finished shards are kept; rerun the same command with --resume to "
                         "continue")
    assert not any("Traceback" in ln for ln in lines)
    n_kept = len(json.loads((stopped / MANIFEST).read_text())["shards"])
    assert 1 <= n_kept < 10 and not list(stopped.glob("*.tmp"))
    rc, out, _ = run_cli(capsys, "capture", *args, "--out", str(stopped), "--resume")
    assert rc == 0 and f"({n_kept * 4} already done)" in out
    fresh = tmp_path / "fresh"
    assert run_cli(capsys, "capture", *args, "--out", str(fresh))[0] == 0
    assert snapshot(stopped) == snapshot(fresh)


# ---------------------------------------------------------------------------------------------- data parallel


@pytest.mark.slow
def test_data_parallel_under_accelerate_equals_single_process(tmp_path, capsys, tiny_model_dir, texts_file):
    """Two CPU processes under ``accelerate launch`` write one store whose merged manifest and shards
    equal a single-process capture (so every document's arrays are equal too).

    ``accelerate launch --cpu`` starts a single process whatever ``--num_processes`` says (multi-CPU
    needs MPI); ``--multi_gpu`` starts N processes through torchrun, and on a machine without GPUs
    (``CUDA_VISIBLE_DEVICES=""``) the capture synchronises its ranks over gloo.
    """
    args = ["--model", str(tiny_model_dir), "--texts", str(texts_file), "--layers", "0,2",
            "--docs-per-shard", "2", "--batch-size", "3"]
    dp = tmp_path / "dp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           "-m", "oracle.cli", "capture", *args, "--out", str(dp)]
    res = subprocess.run(cmd, cwd=REPO, env=_subprocess_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "rank 0/2" in res.stdout and "rank 1/2" in res.stdout
    assert {"manifest-rank0.json", "manifest-rank1.json"} <= {p.name for p in dp.iterdir()}

    single = tmp_path / "single"
    rc, _, _ = run_cli(capsys, "capture", *args, "--out", str(single))
    assert rc == 0
    a, b = snapshot(dp), snapshot(single)
    for rank_manifest in ("manifest-rank0.json", "manifest-rank1.json"):
        a.pop(rank_manifest)
    assert a == b  # manifest.json and every shard, bitwise
    sa, sb = ActivationStore(dp), ActivationStore(single)
    assert sa.n_docs == sb.n_docs == 10
    for i in range(sa.n_docs):
        x, y = sa.doc(i), sb.doc(i)
        assert np.array_equal(x.tokens, y.tokens) and np.array_equal(x.positions, y.positions)
        assert all(np.array_equal(x.acts[L].numpy(), y.acts[L].numpy()) for L in (0, 2))
    rc, _, _ = run_cli(capsys, "store", "verify", str(dp))
    assert rc == 0


# ---------------------------------------------------------------------------------------------- issue 32: inputs


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oracle.cli", *args], cwd=REPO, env=_subprocess_env(), capture_output=True,
                          text=True, timeout=timeout)


def _one_line(res: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in res.stdout + res.stderr, res.stderr[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-3000:]
    return lines[0]


@pytest.mark.slow
def test_resume_with_other_texts_is_refused_naming_both_files(tmp_path, tiny_model_dir, wikitext_lines):
    """The store records the texts it was made from: ``--resume`` with another file (or with the same file,
    edited) is one line naming both files, exit 2, the store untouched; the same texts resume as before."""
    a = write_txt(tmp_path / "a.txt", [line[:120] for line in wikitext_lines[:2]])
    b = write_txt(tmp_path / "b.txt", [line[:120] for line in wikitext_lines[2:32]])
    store = tmp_path / "S"
    common = ["capture", "--model", str(tiny_model_dir), "--out", str(store), "--docs-per-shard", "1",
              "--layers", "50%"]
    res = _cli(*common, "--texts", str(a))
    assert res.returncode == 0, res.stderr[-3000:]
    manifest = json.loads((store / MANIFEST).read_text())
    assert manifest["texts"]["source"] == "a.txt" and manifest["texts"]["n_docs"] == 2
    assert all(len(s["tokens_sha256"]) == 64 for s in manifest["shards"])
    before = snapshot(store)

    res = _cli(*common, "--texts", str(b), "--resume")
    assert res.returncode == 2
    line = _one_line(res)
    assert f"store {store} was captured from a.txt (2 docs" in line and "not from b.txt (30 docs" in line, line
    assert "resume with the texts it was made from (--texts a.txt), or choose another --out for b.txt" in line
    assert snapshot(store) == before and not (store / ".lock").exists()

    write_txt(a, [line[:120] for line in wikitext_lines[5:7]])   # the same file, edited
    line = _one_line(_cli(*common, "--texts", str(a), "--resume"))
    assert "was captured from a.txt (2 docs" in line and "(the file changed since)" in line, line
    assert snapshot(store) == before

    write_txt(a, [line[:120] for line in wikitext_lines[:2]])     # the original texts resume (nothing to do)
    res = _cli(*common, "--texts", str(a), "--resume")
    assert res.returncode == 0 and "(2 already done)" in res.stdout, res.stderr[-3000:]
    assert snapshot(store) == before


def test_resume_with_other_texts_from_python_is_refused(tmp_path, tiny_model_dir):
    """The library path: ``run_capture(..., resume=True)`` with other texts raises StoreError before the writer
    changes anything; the same texts resume."""
    from hooks.capture_job import CaptureConfig, run_capture
    from hooks.errors import StoreError
    from hooks.models import load_model

    lm = load_model(str(tiny_model_dir))
    out = tmp_path / "s"
    cfg = dict(out=str(out), model=str(tiny_model_dir), layers="1", docs_per_shard=1)
    run_capture(CaptureConfig(**cfg), ["one text.", "two texts."], lm=lm, source="a.txt")
    before = snapshot(out)
    with pytest.raises(StoreError, match=r"was captured from a\.txt \(2 docs.*not from the texts given in Python"):
        run_capture(CaptureConfig(**cfg, resume=True), ["one text.", "other text."], lm=lm)
    assert snapshot(out) == before
    assert run_capture(CaptureConfig(**cfg, resume=True), ["one text.", "two texts."], lm=lm).skipped_docs == 2


@pytest.mark.parametrize("where", ["file", "proc", "below-a-file"])
def test_out_that_cannot_hold_a_store_is_refused_before_any_work(tmp_path, capsys, monkeypatch, texts_file, where):
    """``--out`` an existing file, a path under /proc or below a file: one line, exit 2, and the model is never
    loaded; the file is left as it was."""
    import hooks.models

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(hooks.models, "load_model", no_model)
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    out = {"file": f, "proc": Path("/proc/ao-store"), "below-a-file": f / "store"}[where]
    rc, _, err = run_cli(capsys, "capture", "--texts", str(texts_file), "--out", str(out))
    assert rc == 2
    assert_one_error_line(err, {"file": "is a file: choose a folder", "proc": "lies in the system folder /proc",
                                "below-a-file": "lies below the file"}[where])
    assert f.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_positions_are_checked_against_every_text_before_anything_is_written(tmp_path, capsys, tiny_model_dir):
    """``--positions 99`` on a 7-token text leaves no folder (so the corrected rerun is not "already holds a
    store"); ``slice:5:2`` selects nothing and is refused, not captured as an empty store."""
    texts = write_txt(tmp_path / "t.txt", ["A long enough first text with many words in it, more than ninety-nine "
                                            * 12, "The cat sat on the mat."])
    out = tmp_path / "out"
    rc, _, err = run_cli(capsys, "capture", "--model", str(tiny_model_dir), "--texts", str(texts), "--out", str(out),
                         "--positions", "99", "--layers", "1")
    assert rc == 2
    assert_one_error_line(err, "text 1: position 99 is outside the text, which has 7 tokens")
    assert not out.exists()
    rc, _, err = run_cli(capsys, "capture", "--model", str(tiny_model_dir), "--texts", str(texts), "--out", str(out),
                         "--positions", "slice:5:2", "--layers", "1")
    assert rc == 2
    assert_one_error_line(err, "positions 'slice:5:2' select no token of any text (5 >= 2): use slice:A:B with A < B")
    assert not out.exists()
    rc, _, err = run_cli(capsys, "capture", "--model", str(tiny_model_dir), "--texts", str(texts), "--out", str(out),
                         "--positions", "slice:10:", "--layers", "1")
    assert rc == 2
    assert_one_error_line(err, "text 1: positions 'slice:10:' select no token of a text of 7 tokens")
    assert not out.exists()
    rc, _, _ = run_cli(capsys, "capture", "--model", str(tiny_model_dir), "--texts", str(texts), "--out", str(out),
                       "--positions", "-1", "--layers", "1")
    assert rc == 0 and ActivationStore(out).n_tokens == 2


@pytest.mark.parametrize("line, message", [
    ('{"text": null}', "docs.jsonl line 2: 'text' is null, not a string"),
    ('{"text": 42}', "docs.jsonl line 2: 'text' is a number, not a string"),
    ('{"text": ["a"]}', "docs.jsonl line 2: 'text' is a list, not a string"),
    ('42', "docs.jsonl line 2 is a number, not an object"),
    ('{"messages": "Hi"}', "docs.jsonl line 2: 'messages' is a string, not a non-empty list of messages"),
    ('{"messages": [{"role": "user"}]}', "docs.jsonl line 2: message 0 has no 'content'"),
    ('{"text": "\\ud800"}', "docs.jsonl line 2 holds a lone surrogate"),
])
def test_jsonl_records_of_the_wrong_type_name_their_line(tmp_path, capsys, line, message):
    texts = tmp_path / "docs.jsonl"
    texts.write_text('{"text": "fine"}\n' + line + "\n", encoding="utf-8")
    out = tmp_path / "out"
    rc, _, err = run_cli(capsys, "capture", "--texts", str(texts), "--out", str(out))
    assert rc == 2
    assert_one_error_line(err, message)
    assert not out.exists()


def test_byte_order_mark_is_dropped_and_lines_end_at_newlines_only(tmp_path):
    from hooks.texts import load_texts

    txt = tmp_path / "bom.txt"
    txt.write_bytes("\ufefffirst\r\nsecond\u2028still second\n".encode("utf-8"))
    assert load_texts(txt) == ["first", "second\u2028still second"]
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes("\ufeff".encode() + json.dumps({"text": "a\u2028b\x0cc"}, ensure_ascii=False).encode() + b"\n")
    assert load_texts(jsonl) == ["a\u2028b\x0cc"]


@pytest.mark.slow
def test_chat_jsonl_is_rendered_with_the_models_chat_template(tmp_path, capsys, tiny_model_dir):
    """A valid chat record is captured as the chat the model's template renders (the command loads the texts
    before the model, and renders the chats once the model's tokenizer is there)."""
    from hooks.models import load_model

    texts = tmp_path / "chats.jsonl"
    chat = [{"role": "user", "content": "Hi"}]
    texts.write_text(json.dumps({"messages": chat}) + "\n" + json.dumps({"text": "Plain text."}) + "\n")
    out = tmp_path / "out"
    rc, _, err = run_cli(capsys, "capture", "--model", str(tiny_model_dir), "--texts", str(texts), "--out", str(out),
                         "--layers", "1")
    assert rc == 0, err
    tok = load_model(str(tiny_model_dir)).tokenizer
    want = tok(tok.apply_chat_template(chat, tokenize=False))["input_ids"]
    store = ActivationStore(out)
    assert store.doc(0).tokens.tolist() == want and store.n_docs == 2
    assert store.info.texts.source == "chats.jsonl"
    # resuming re-renders the chats the same way
    rc, out_text, err = run_cli(capsys, "capture", "--model", str(tiny_model_dir), "--texts", str(texts), "--out",
                                str(out), "--layers", "1", "--resume")
    assert rc == 0 and "(2 already done)" in out_text, err


@pytest.mark.slow
def test_cuts_at_max_length_and_at_the_models_context_are_reported(tmp_path, capsys, caplog, tiny_model_dir):
    """A text cut at ``--max-length`` is a warning (how many documents, how many tokens) and is recorded in the
    manifest; a text longer than the model's context (512 positions here) is cut there even when ``--max-length``
    is larger, with a warning that says so; nothing is read past the context."""
    long_text = "word " * 700          # about 700 tokens
    texts = write_txt(tmp_path / "t.txt", [long_text, "Short text."])
    out = tmp_path / "cut"
    with caplog.at_level(logging.WARNING, logger="hooks.lengths"):
        rc, _, err = run_cli(capsys, "capture", "--model", str(tiny_model_dir), "--texts", str(texts), "--out",
                             str(out), "--layers", "1", "--max-length", "16")
    assert rc == 0, err
    warning = " ".join(r.getMessage() for r in caplog.records if r.name == "hooks.lengths")
    assert "1 of 2 documents are longer than --max-length 16 tokens and were cut there" in warning, warning
    store = ActivationStore(out)
    t = store.info.texts
    assert (t.max_tokens, t.cut_docs) == (16, 1) and t.cut_tokens > 600
    assert len(store.doc(0).tokens) == 16
    caplog.clear()

    out = tmp_path / "context"
    with caplog.at_level(logging.WARNING, logger="hooks.lengths"):
        rc, _, err = run_cli(capsys, "capture", "--model", str(tiny_model_dir), "--texts", str(texts), "--out",
                             str(out), "--layers", "1", "--max-length", "4096")
    assert rc == 0, err
    warning = " ".join(r.getMessage() for r in caplog.records if r.name == "hooks.lengths")
    assert "longer than the model's context of 512 positions (--max-length 4,096 is past it)" in warning, warning
    store = ActivationStore(out)
    assert store.info.texts.max_tokens == 512 and len(store.doc(0).tokens) == 512
    assert int(store.doc(0).positions.max()) == 511


# ---------------------------------------------------------------------------------------------- the manifest schema


def _store_copy(tiny_store: Path, tmp_path: Path) -> Path:
    store = tmp_path / "store"
    store.mkdir()
    for p in tiny_store.iterdir():
        (store / p.name).write_bytes(p.read_bytes())
    return store


@pytest.mark.slow
@pytest.mark.parametrize("command", ["info", "verify"])
@pytest.mark.parametrize("manifest, message", [
    ([], "is a list, not a JSON object"),
    ({"n_docs": "two"}, "field 'n_docs' is 'two', not an integer >= 0"),
    ({"layers": [1, True]}, "field 'layers' is [1, True], not a non-empty list of distinct layer indices"),
    ({"shards": {}}, "field 'shards' is {}, not a list of shard entries"),
    ({"format_version": 9}, "has format version 9, this code reads versions 1, 2"),
    ({"texts": {"source": "a.txt"}}, "field 'texts': no field 'n_docs'"),
])
def test_malformed_manifest_is_one_line(tmp_path, capsys, tiny_store, command, manifest, message):
    store = _store_copy(tiny_store, tmp_path)
    m = json.loads((store / MANIFEST).read_text())
    (store / MANIFEST).write_text(json.dumps(manifest if isinstance(manifest, list) else {**m, **manifest}))
    rc, out, err = run_cli(capsys, "store", command, str(store))
    assert rc == 2 and not out
    assert_one_error_line(err, str(store / MANIFEST), message, "restore it, or recapture into another --out"
                          if "format version" not in message else "recapture it")


@pytest.mark.slow
def test_shard_entry_without_a_file_is_reported_by_verify_and_info(tmp_path, capsys, tiny_store):
    """A shard entry missing a field is not "OK": verify names it (exit 1), info says so, the other shards read,
    and a resume rewrites that shard."""
    store = _store_copy(tiny_store, tmp_path)
    m = json.loads((store / MANIFEST).read_text())
    del m["shards"][1]["file"]
    (store / MANIFEST).write_text(json.dumps(m))
    rc, out, _ = run_cli(capsys, "store", "verify", str(store))
    assert rc == 1
    bad = [line for line in out.splitlines() if line.startswith("BAD")]
    assert any("manifest.json: shard entry 1: no field 'file'" in line for line in bad), out
    assert any("shard-00001.h5: missing" in line for line in bad), out
    rc, out, _ = run_cli(capsys, "store", "info", str(store))
    assert rc == 0 and "1 shard entries of the manifest do not parse" in out
    s = ActivationStore(store)
    assert s.doc(0).n_tokens == ActivationStore(tiny_store).doc(0).n_tokens
    from hooks.errors import StoreError

    with pytest.raises(StoreError, match="shard-00001.h5, which is missing"):
        s.doc(4)


@pytest.mark.slow
def test_format_v1_stores_still_read_and_verify(tmp_path, capsys, tiny_store, tiny_model_dir, texts_file):
    """A store written in format v1 (no ``texts``, no ``tokens_sha256``; the shards are v1's, byte for byte) reads
    and verifies; ``ao capture --resume`` refuses it in one line, since it cannot tell which texts it holds."""
    store = _store_copy(tiny_store, tmp_path)
    m = json.loads((store / MANIFEST).read_text())
    m["format_version"] = 1
    del m["texts"]
    for entry in m["shards"]:
        del entry["tokens_sha256"]
    (store / MANIFEST).write_text(json.dumps(m, indent=1) + "\n")
    rc, out, _ = run_cli(capsys, "store", "verify", str(store))
    assert rc == 0, out
    s, ref = ActivationStore(store), ActivationStore(tiny_store)
    assert s.info.format_version == 1 and s.info.texts is None
    assert np.array_equal(s.doc(5).acts[3].numpy(), ref.doc(5).acts[3].numpy())
    before = snapshot(store)
    rc, _, err = run_cli(capsys, "capture", "--model", str(tiny_model_dir), "--texts", str(texts_file),
                         "--layers", "1,3", "--out", str(store), "--docs-per-shard", "3", "--resume")
    assert rc == 2
    assert_one_error_line(err, "was made with format version 1, not 2")
    assert snapshot(store) == before
