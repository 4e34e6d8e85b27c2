"""``ao data fetch / check / where`` without the internet: a local HTTP server on 127.0.0.1 serves a copy of the
shared data folder under the upstream layout (``<owner>/<repo>/<commit>/<path>``, what raw.githubusercontent.com
serves), and ``--base-url`` points the fetch at it. Also: the registry matches the real ``../shared/data`` byte for
byte, the resolver's order, and ``ao train`` / ``ao eval --suite skills`` on a fetched folder alone."""
from __future__ import annotations

import functools
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from oracle.cli.main import main
from hooks.data_registry import PACKAGE, check_folder, load_registry
from hooks.errors import InputError
from hooks.paths import data_dir

REPO = Path(__file__).resolve().parents[1]


class _Upstream(http.server.SimpleHTTPRequestHandler):
    """Serves the upstream layout; ``server.mode`` injects failures: ``status`` (every answer is that HTTP
    error), ``fail_after`` (503 once that many files were served), ``truncate`` / ``alter`` (a URL ending: send half
    of that file and drop the connection / send it with its first byte changed)."""

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        mode = self.server.mode
        if mode.get("status"):
            self.send_error(mode["status"])
            return
        if mode.get("fail_after") is not None and mode["served"] >= mode["fail_after"]:
            self.send_error(503)
            return
        for key in ("truncate", "alter"):
            if mode.get(key) and self.path.endswith(mode[key]):
                data = Path(self.translate_path(self.path)).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if key == "truncate":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                else:
                    self.wfile.write(bytes([data[0] ^ 1]) + data[1:])
                return
        super().do_GET()
        mode["served"] += 1


@pytest.fixture(scope="module")
def source() -> Path:
    """The real shared data folder (what the server re-lays out)."""
    try:
        return data_dir()
    except InputError:
        pytest.skip("no shared data folder here")


@pytest.fixture(scope="module")
def upstream(source, tmp_path_factory):
    """A local server with every remote file of the registry at ``<owner>/<repo>/<commit>/<upstream path>``."""
    root = tmp_path_factory.mktemp("upstream")
    for f in load_registry().files:
        if f.source != PACKAGE:
            dst = root / f.repo / f.commit / f.upstream
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(source / f.path, dst)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Upstream, directory=str(root)))
    server.mode = {"served": 0}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_address[1]}", mode=server.mode)
    server.shutdown()
    server.server_close()


@pytest.fixture
def server(upstream, monkeypatch):
    """The upstream server, healthy at the start of each test; no proxy between it and the client."""
    upstream.mode.clear()
    upstream.mode["served"] = 0
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy", "AO_DATA_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return upstream


def ao(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def fetch_args(folder: Path, server, *groups: str, url: str = "") -> list[str]:
    return ["data", "fetch", *groups, "--data-dir", str(folder), "--base-url", url or server.url, "--retries", "0",
            "--no-progress"]


def files_in(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture(scope="module")
def reading_folder(upstream, tmp_path_factory) -> Path:
    """A folder holding only what ``ao data fetch reading`` fetched (shared by the tests that read it)."""
    from hooks.data_fetch import fetch

    folder = tmp_path_factory.mktemp("fetched") / "reading"
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    fetch(folder, ["reading"], url=upstream.url, retries=0)
    return folder


def test_the_registry_lists_every_file_of_the_shared_folder_at_a_pinned_commit(source):
    reg = load_registry()
    assert sorted(f.path for f in reg.files) == files_in(source) and len(reg.files) == 175
    for f in reg.files:
        if f.source == PACKAGE:   # no upstream: shipped inside the package
            assert f.path in ("README.md", "LICENSES.md", "taboo/taboo_words.txt") or f.path.startswith("licenses/")
        else:
            assert re.fullmatch(r"https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/[0-9a-f]{40}/\S+", f.url()), f
    assert reg.file("taboo/chats/moon.jsonl").url().endswith(
        "EmilRyd/eliciting-secrets/5632f9d7c9993bdf46aec6de6bf7cc64a29d2eb9/generated_datasets/"
        "moon_guessing_game_dataset.jsonl")
    assert reg.file("classification/sst2/dev.tsv").upstream == "data/SST2/dev.tsv"
    assert reg.file("latentqa/controls/harry_potter.json").upstream == "controls/harry_potter.json"


def test_ao_data_check_passes_on_the_real_shared_data(source, capsys):
    rc, out, _ = ao(capsys, "data", "check", "--data-dir", str(source))
    assert rc == 0 and out.strip() == f"all: all 175 files in {source} match the registry"
    proc = subprocess.run([sys.executable, "scripts/make_data_registry.py", "--check", "--data-dir", str(source)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr    # the registry and the shipped copies are up to date


def test_fetch_into_an_empty_folder_then_check_passes(server, tmp_path, capsys):
    folder = tmp_path / "data"
    rc, out, err = ao(capsys, *fetch_args(folder, server))
    assert rc == 0, err
    assert out.splitlines()[0] == f"all: fetched 175 files (36.5 MB) into {folder}; 0 were already there"
    assert files_in(folder) == sorted(f.path for f in load_registry().files)     # no temporary file left
    assert ao(capsys, "data", "check", "--data-dir", str(folder))[0] == 0
    rc, out, _ = ao(capsys, *fetch_args(folder, server))                              # nothing left to do
    assert rc == 0 and "fetched 0 files" in out and "175 were already there" in out


def test_the_reading_group_alone_feeds_the_reading_suite_and_mix(reading_folder, hf_tokenizer, capsys):
    from oracle.evals.suite import SuiteConfig, suite_items
    from oracle.training.tasks.mix import build_training_mix

    assert ao(capsys, "data", "check", "reading", "--data-dir", str(reading_folder))[0] == 0
    rc, out, _ = ao(capsys, "data", "check", "--data-dir", str(reading_folder))
    assert rc == 1 and "missing  text/tinyshakespeare.txt" in out and "altered  " not in out
    assert out.splitlines()[-1].endswith(f"run `ao data fetch --data-dir {reading_folder}` to repair")
    lm = SimpleNamespace(tokenizer=hf_tokenizer, n_layers=30)
    items = suite_items(lm, SuiteConfig(n=4, data_dir=str(reading_folder)), layer=15)
    assert len(items) == len(SuiteConfig(n=4).rows()) and all(len(v) == 4 for v in items.values())
    mix = build_training_mix(hf_tokenizer, 30, 64, 0, data_dir=str(reading_folder), weights={"reading": 1.0})
    assert len(mix) == 64


def test_check_names_a_corrupted_byte_and_fetch_repairs_it(server, tmp_path, capsys):
    folder = tmp_path / "data"
    assert ao(capsys, *fetch_args(folder, server, "unseen"))[0] == 0
    victim = folder / "classification" / "engels" / "63_wikidata_occupation_issinger.csv"
    data = bytearray(victim.read_bytes())
    data[1000] ^= 1
    victim.write_bytes(bytes(data))
    rc, out, _ = ao(capsys, "data", "check", "unseen", "--data-dir", str(folder))
    assert rc == 1
    assert out.splitlines() == [
        "altered  classification/engels/63_wikidata_occupation_issinger.csv",
        f"unseen: 0 missing and 1 altered of 13 files in {folder}: run `ao data fetch unseen --data-dir {folder}` "
        "to repair"]
    rc, out, _ = ao(capsys, *fetch_args(folder, server, "unseen"))
    assert rc == 0 and "fetched 1 file (" in out
    assert check_folder(folder, ["unseen"]).ok


@pytest.mark.parametrize("case", ["down", "refuses"])
def test_a_server_that_is_down_or_refuses_gives_one_line_and_no_file(server, tmp_path, capsys, case):
    folder = tmp_path / "data"
    if case == "down":
        with socket.socket() as s:       # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{s.getsockname()[1]}"
        argv = fetch_args(folder, server, url=url)
    else:
        server.mode["status"] = 403
        argv = fetch_args(folder, server)
    rc, out, err = ao(capsys, *argv)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: could not fetch ")
    assert ("connection refused" if case == "down" else "HTTP 403") in err
    assert "rerun `ao data fetch` to resume" in err
    assert files_in(folder) == []


@pytest.mark.parametrize("how, reason", [("truncate", "mid-file"), ("alter", "sha256 differs")])
def test_a_broken_download_leaves_no_partial_file(server, tmp_path, capsys, how, reason):
    folder = tmp_path / "data"
    server.mode[how] = "63_wikidata_occupation_issinger.csv"
    rc, _, err = ao(capsys, *fetch_args(folder, server, "unseen"))
    assert rc == 2 and len(err.strip().splitlines()) == 1 and reason in err
    assert "could not fetch classification/engels/63_wikidata_occupation_issinger.csv" in err
    got = files_in(folder)
    assert "classification/engels/63_wikidata_occupation_issinger.csv" not in got
    assert all(f in [x.path for x in load_registry().select(["unseen"])] for f in got)   # no temporary file
    result = check_folder(folder, ["unseen"])
    assert not result.altered and "classification/engels/63_wikidata_occupation_issinger.csv" in result.missing


def test_an_interrupted_fetch_resumes_with_the_files_still_missing(server, tmp_path, capsys):
    folder = tmp_path / "data"
    server.mode["fail_after"] = 10
    rc, _, err = ao(capsys, *fetch_args(folder, server, "audit"))
    assert rc == 2 and "HTTP 503" in err and "10 of " in err
    assert len(files_in(folder)) == 10 and not check_folder(folder, ["audit"]).altered
    server.mode["fail_after"] = None
    total = len(load_registry().select(["audit"]))
    rc, out, _ = ao(capsys, *fetch_args(folder, server, "audit"))
    assert rc == 0 and f"fetched {total - 10} files" in out and "; 10 were already there" in out
    assert check_folder(folder, ["audit"]).ok


def test_the_resolver_order_and_its_error(monkeypatch, tmp_path, capsys):
    import hooks.paths as paths

    repo, cache, named = tmp_path / "shared" / "data", tmp_path / "cache", tmp_path / "named"
    monkeypatch.setattr(paths, "repo_data_dir", lambda: repo)
    monkeypatch.setenv("AO_CACHE_DIR", str(cache))
    monkeypatch.delenv("AO_DATA_DIR", raising=False)
    with pytest.raises(InputError, match=r"no data folder \(looked at .*\): run `ao data fetch`"):
        paths.data_dir()
    (cache / "data").mkdir(parents=True)
    assert paths.data_dir() == cache / "data" == paths.fetch_dir()
    repo.mkdir(parents=True)
    assert paths.data_dir() == repo and paths.fetch_dir() == cache / "data"   # fetch never writes the workspace's
    monkeypatch.setenv("AO_DATA_DIR", str(named))
    with pytest.raises(InputError, match=r"no data folder at .*named \(from AO_DATA_DIR\): run `ao data fetch"):
        paths.data_dir()
    named.mkdir()
    assert paths.data_dir() == named == paths.fetch_dir()
    assert paths.data_dir(repo) == repo and paths.fetch_dir(repo) == repo
    rc, out, _ = ao(capsys, "data", "where")
    assert rc == 0 and out == f"{named}\n"
    rc, _, err = ao(capsys, "data", "where", "--data-dir", str(tmp_path / "nowhere"))
    assert rc == 2 and "--data-dir" in err and "ao data fetch --data-dir" in err


def test_a_missing_file_names_the_group_to_fetch(reading_folder):
    from oracle.data.unseen_sets import unseen_items

    with pytest.raises(InputError, match=r"missing data file .*engels.*: run `ao data fetch unseen --data-dir "):
        unseen_items("journalist", 4, data_dir=str(reading_folder))


@pytest.mark.slow
def test_train_and_suite_run_on_a_fetched_folder_alone(reading_folder, tmp_path):
    """The issue's commands (``ao train --n-examples 64 --time-budget-s 30``, ``ao eval --suite skills --suite-n 4``)
    with only ``ao data fetch reading``'s folder: the in-training checks, calibration and the suite's probes are
    kept small so the test stays short."""
    env = dict(os.environ, AO_DATA_DIR=str(reading_folder), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="")
    out = tmp_path / "oracle"
    train = [sys.executable, "-m", "oracle.cli", "train", "--out", str(out), "--store-dir", str(tmp_path / "cache"),
             "--n-examples", "64", "--time-budget-s", "30", "--no-eval", "--calibration-n", "0"]
    proc = subprocess.run(train, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "adapter_model.safetensors").is_file()
    suite = [sys.executable, "-m", "oracle.cli", "eval", "--oracle", str(out), "--suite", "skills", "--suite-n", "4",
             "--probe-n", "8", "--out", str(tmp_path / "suite"), "--no-card"]
    proc = subprocess.run(suite, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| word_at |" in proc.stdout and "Warning" not in proc.stderr
