"""Property-based tests of the activation store: any documents round-trip through ``StoreWriter`` and
``ActivationStore``; any ``manifest.json`` opens or is one ``StoreError`` (and ``verify`` never raises); and a
capture interrupted at any document, then resumed, equals an uninterrupted one, file by file (the tiny random-init
Llama of tests/conftest.py). Each defect found is kept as an ``@example``.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("hypothesis")

from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from hooks.errors import StoreError  # noqa: E402
from hooks.store import MANIFEST, ActivationStore, DocActs, StoreWriter  # noqa: E402


def _files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


# ---------------------------------------------------------------------------------------------- round trip


@st.composite
def stores(draw):
    d_model = draw(st.integers(1, 6))
    layers = sorted(draw(st.sets(st.integers(0, 5), min_size=1, max_size=3)))
    dtype = draw(st.sampled_from(["float32", "float16", "bfloat16"]))
    lengths = draw(st.lists(st.integers(0, 5), min_size=1, max_size=8))
    dps = draw(st.integers(1, 4))
    chunk_rows = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    docs = [DocActs(tokens=np.arange(n, dtype=np.int32) + i, positions=np.arange(n, dtype=np.int32),
                    acts={L: torch.randn(n, d_model, generator=g) * 100 for L in layers})
            for i, n in enumerate(lengths)]
    return d_model, layers, dtype, docs, dps, chunk_rows


@given(spec=stores())
def test_any_documents_round_trip(spec):
    d_model, layers, dtype, docs, dps, chunk_rows = spec
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s"
        with StoreWriter(path, model_spec="m", weights_hash="h", tokenizer_name="t", d_model=d_model, layers=layers,
                         dtype=dtype, docs_per_shard=dps, chunk_rows=chunk_rows) as w:
            for k, start, stop in w.pending_shards(len(docs)):
                w.write_shard(k, start, docs[start:stop])
        store = ActivationStore(path)
        assert store.verify() == [] and store.n_docs == len(docs)
        assert store.n_tokens == sum(doc.n_tokens for doc in docs)
        for i, doc in enumerate(docs):
            got = store.doc(i)
            assert np.array_equal(got.tokens, doc.tokens) and np.array_equal(got.positions, doc.positions)
            for L in layers:
                want = doc.acts[L].to(getattr(torch, dtype)).float()
                assert torch.equal(got.acts[L], want)
        store.close()


# ---------------------------------------------------------------------------------------------- any manifest


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prop") / "s"
    docs = [DocActs(np.arange(n, dtype=np.int32), np.arange(n, dtype=np.int32), {1: torch.ones(n, 4) * n})
            for n in (2, 3, 1, 4, 2)]
    with StoreWriter(path, model_spec="m", weights_hash="h", tokenizer_name="t", d_model=4, layers=[1],
                     docs_per_shard=2) as w:
        for k, start, stop in w.pending_shards(len(docs)):
            w.write_shard(k, start, docs[start:stop], tokens_sha256="0" * 64)
    return path


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2**40) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
TOP_FIELDS = ["format_version", "model_spec", "weights_hash", "tokenizer", "d_model", "layers", "dtype",
              "capture_options", "docs_per_shard", "n_docs", "n_tokens", "shards", "texts"]
ENTRY_FIELDS = ["file", "shard_index", "doc_start", "doc_stop", "n_tokens", "sha256", "tokens_sha256"]


@st.composite
def damaged_manifests(draw, manifest: dict):
    """A manifest with one thing changed: the whole value, a top-level field, or one field of one shard entry."""
    m = json.loads(json.dumps(manifest))
    where = draw(st.sampled_from(["whole", "field", "entry", "entry-whole"]))
    if where == "whole":
        return draw(json_values)
    if where == "field":
        name = draw(st.sampled_from(TOP_FIELDS))
        if draw(st.booleans()):
            m.pop(name, None)
        else:
            m[name] = draw(json_values)
        return m
    i = draw(st.integers(0, len(m["shards"]) - 1))
    if where == "entry-whole":
        m["shards"][i] = draw(json_values)
        return m
    name = draw(st.sampled_from(ENTRY_FIELDS))
    if draw(st.booleans()):
        m["shards"][i].pop(name, None)
    else:
        m["shards"][i][name] = draw(json_values)
    return m


@given(data=st.data())
@example(data=None)   # the two manifests of issue 32, below
def test_any_manifest_json_opens_or_is_one_store_error(small_store, data):
    """A damaged manifest is one StoreError line on open (the header), or a problem ``verify`` names (a shard
    entry), never a KeyError or TypeError."""
    original = json.loads((small_store / MANIFEST).read_text())
    if data is None:
        cases = [[], {**original, "n_docs": "two"},
                 {**original, "shards": [{k: v for k, v in original["shards"][0].items() if k != "file"}]}]
    else:
        cases = [data.draw(damaged_manifests(original))]
    for manifest in cases:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "s"
            path.mkdir()
            for p in small_store.iterdir():
                (path / p.name).write_bytes(p.read_bytes())
            (path / MANIFEST).write_text(json.dumps(manifest))
            try:
                store = ActivationStore(path)
            except StoreError as e:
                assert "\n" not in str(e)
                continue
            problems = store.verify()
            assert all(isinstance(p, str) and "\n" not in p for p in problems)
            if manifest != original and problems == []:
                # a change verify cannot see must leave the data as it was
                for i in range(store.n_docs):
                    assert store.doc(i).n_tokens == [2, 3, 1, 4, 2][i]
            store.close()


# ---------------------------------------------------------------------------------------------- interrupt + resume


TEXTS = ["The cat sat on the mat.", "It rained all day in the old town.", "Prices rose again this spring.",
         "She wrote the letter by hand.", "The river was high after the storm.", "A quiet morning at the harbour.",
         "He fixed the bicycle in the shed."]


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    from hooks.models import load_model

    return load_model(str(tiny_model_dir))


class _Interrupted(KeyboardInterrupt):
    """Ctrl-C, as the test raises it."""


_baselines: dict[tuple, dict[str, str]] = {}


def _capture(lm, out: Path, dps: int, batch: int, resume: bool = False):
    from hooks.capture_job import CaptureConfig, run_capture

    cfg = CaptureConfig(out=str(out), model=lm.spec, layers="1,3", positions="all", docs_per_shard=dps,
                        batch_size=batch, resume=resume, workers=1)
    return run_capture(cfg, TEXTS, lm=lm, source="docs.txt")


@settings(max_examples=12)
@given(dps=st.integers(1, 4), batch=st.integers(1, 3), stop_at=st.integers(0, len(TEXTS) - 1),
       leftovers=st.sampled_from(["none", "tmp-shard", "stale-lock", "both"]))
@example(dps=3, batch=2, stop_at=4, leftovers="both")
def test_capture_interrupted_at_any_document_then_resumed_equals_an_uninterrupted_one(
        tiny_lm, dps, batch, stop_at, leftovers):
    import hooks.capture_job as job

    key = (dps, batch)
    with tempfile.TemporaryDirectory() as d:
        if key not in _baselines:
            _capture(tiny_lm, Path(d) / "fresh", dps, batch)
            _baselines[key] = _files(Path(d) / "fresh")
        out = Path(d) / "stopped"
        real = job.capture_documents
        seen = {"docs": 0}

        def stopping(model, docs_tokens, *a, **k):
            # documents [seen, seen + len) form the shard being captured: stop inside it, at document stop_at
            first = seen["docs"]
            seen["docs"] += len(docs_tokens)
            if first <= stop_at < seen["docs"]:
                if leftovers in ("tmp-shard", "both"):
                    (out / f"shard-{stop_at // dps:05d}.h5.tmp").write_bytes(b"half a shard")
                raise _Interrupted
            return real(model, docs_tokens, *a, **k)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(job, "capture_documents", stopping)
            with pytest.raises(_Interrupted):
                _capture(tiny_lm, out, dps, batch)
        assert len(json.loads((out / MANIFEST).read_text())["shards"]) == stop_at // dps
        if leftovers in ("stale-lock", "both"):   # as a killed process leaves it
            (out / ".lock").write_text(f"{_dead_pid()}\n")
        res = _capture(tiny_lm, out, dps, batch, resume=True)
        assert res.skipped_docs == (stop_at // dps) * dps
        assert _files(out) == _baselines[key]


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid
