"""The HDF5 activation store (format v2; v1 still read): round trips, locks, resume, determinism, verify, data parallel."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from hooks.errors import InputError, StoreError
from hooks.store import (
    STORE_FORMAT_VERSION, ActivationStore, DocActs, StoreWriter, from_storage, merge_manifests, to_storage,
)
from hooks.store_format import SHARD_FORMAT_VERSION

D = 8
LAYERS = [1, 3]
N_DOCS = 7
DPS = 3  # docs per shard: shards of 3, 3, 1 documents


def make_docs(n: int = N_DOCS, seed: int = 0) -> list[DocActs]:
    """Documents of varying length (one of them a single row) with random float32 activations."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        t = 1 if i == 2 else int(rng.integers(2, 6))
        docs.append(DocActs(tokens=rng.integers(3, 250, t).astype(np.int32), positions=np.arange(t, dtype=np.int32) + i,
                            acts={layer: torch.from_numpy(rng.standard_normal((t, D)).astype(np.float32) * 10)
                                  for layer in LAYERS}))
    return docs


def writer(path: Path, **kw) -> StoreWriter:
    args = dict(model_spec="tiny-llama", weights_hash="abc123", tokenizer_name="byte-tokenizer", d_model=D,
                layers=LAYERS, dtype="float32", capture_options={"positions": "all", "max_length": 64},
                docs_per_shard=DPS, chunk_rows=4)
    args.update(kw)
    return StoreWriter(path, **args)


def write_all(w: StoreWriter, docs: list[DocActs], n_docs: int = N_DOCS) -> None:
    for k, start, stop in w.pending_shards(n_docs):
        w.write_shard(k, start, docs[start:stop])


def build(path: Path, docs: list[DocActs], **kw) -> Path:
    with writer(path, **kw) as w:
        write_all(w, docs)
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(path: Path) -> dict[str, str]:
    """sha256 of every file of a store folder."""
    return {p.name: sha(p) for p in sorted(path.iterdir()) if p.is_file()}


def expected(doc: DocActs, layer: int, dtype: str) -> torch.Tensor:
    return doc.acts[layer].to(getattr(torch, dtype)).float()


@pytest.fixture(scope="module")
def docs() -> list[DocActs]:
    return make_docs()


# ---------------------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_round_trip(tmp_path, docs, dtype):
    path = build(tmp_path / "s", docs, dtype=dtype)
    store = ActivationStore(path)
    assert (store.n_docs, store.layers, store.d_model, store.dtype) == (N_DOCS, LAYERS, D, dtype)
    assert store.n_tokens == sum(d.n_tokens for d in docs)
    assert store.model_spec == "tiny-llama" and store.weights_hash == "abc123"
    for i, doc in enumerate(docs):
        got = store.doc(i)
        np.testing.assert_array_equal(got.tokens, doc.tokens)
        np.testing.assert_array_equal(got.positions, doc.positions)
        assert got.tokens.dtype == np.int32 and got.positions.dtype == np.int32
        for layer in LAYERS:
            assert got.acts[layer].dtype == torch.float32
            assert torch.equal(got.acts[layer], expected(doc, layer, dtype))
            assert torch.equal(store.doc_acts(i, layer), expected(doc, layer, dtype))
    assert store.verify() == []
    store.close()


def test_bfloat16_bits_exact_both_ways():
    bits = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)  # every bfloat16 bit pattern
    bf_N = bits.view(torch.bfloat16)
    raw = to_storage(bf_N.reshape(-1, 1), "bfloat16")
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw.reshape(-1).view(np.int16), bits.numpy())  # write: bits unchanged
    back = from_storage(raw, "bfloat16").reshape(-1)
    assert back.dtype == torch.float32
    finite = ~torch.isnan(bf_N.float())
    # read: float32 holds every bfloat16 value exactly, so casting back gives the same bits
    assert torch.equal(back[finite].to(torch.bfloat16).view(torch.int16), bits[finite])
    assert torch.isnan(back[~finite]).all()


def test_bfloat16_shard_layout(tmp_path, docs):
    path = build(tmp_path / "s", docs, dtype="bfloat16")
    with h5py.File(path / "shard-00000.h5", "r") as f:
        ds = f["acts/3"]
        assert ds.dtype == np.uint16 and ds.attrs["dtype"] == "bfloat16"
        want = torch.cat([d.acts[3] for d in docs[:DPS]]).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        np.testing.assert_array_equal(ds[()], want)


def test_shard_contents_match_design(tmp_path, docs):
    path = build(tmp_path / "s", docs)
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "shard-00000.h5", "shard-00001.h5",
                                                       "shard-00002.h5"]
    with h5py.File(path / "shard-00001.h5", "r") as f:
        n = sum(d.n_tokens for d in docs[3:6])
        assert f["tokens"].dtype == np.int32 and f["tokens"].shape == (n,)
        assert f["positions"].dtype == np.int32 and f["positions"].shape == (n,)
        offsets = f["doc_offsets"][()]
        assert offsets.dtype == np.int64 and list(offsets) == [0, *np.cumsum([d.n_tokens for d in docs[3:6]])]
        assert f["acts/1"].shape == (n, D) and f["acts/1"].dtype == np.float32
        assert f["acts/1"].chunks == (4, D) and f["acts/1"].compression is None
        assert f.attrs["format_version"] == SHARD_FORMAT_VERSION and f.attrs["model_spec"] == "tiny-llama"
        assert list(f.attrs["layers"]) == LAYERS
        assert (f.attrs["doc_start"], f.attrs["doc_stop"]) == (3, 6)
    manifest = json.loads((path / "manifest.json").read_text())
    assert {k: manifest[k] for k in ("format_version", "model_spec", "weights_hash", "tokenizer", "d_model", "layers",
                                     "dtype", "capture_options", "docs_per_shard", "n_docs")} == {
        "format_version": STORE_FORMAT_VERSION, "model_spec": "tiny-llama", "weights_hash": "abc123",
        "tokenizer": "byte-tokenizer",
        "d_model": D, "layers": LAYERS, "dtype": "float32", "capture_options": {"max_length": 64, "positions": "all"},
        "docs_per_shard": DPS, "n_docs": N_DOCS}
    assert manifest["n_tokens"] == sum(d.n_tokens for d in docs)
    assert [(s["file"], s["shard_index"], s["doc_start"], s["doc_stop"]) for s in manifest["shards"]] == [
        ("shard-00000.h5", 0, 0, 3), ("shard-00001.h5", 1, 3, 6), ("shard-00002.h5", 2, 6, 7)]
    assert all(s["sha256"] == sha(path / s["file"]) for s in manifest["shards"])


def test_doc_and_pooled(tmp_path, docs):
    store = ActivationStore(build(tmp_path / "s", docs))
    for i in range(N_DOCS):
        d = store.doc(i)
        assert sorted(d.acts) == LAYERS and torch.equal(d.acts[3], docs[i].acts[3])
        np.testing.assert_array_equal(d.tokens, docs[i].tokens)
    last_ND = store.pooled(1, "last")
    mean_ND = store.pooled(1, "mean")
    assert last_ND.shape == mean_ND.shape == (N_DOCS, D) and last_ND.dtype == torch.float32
    assert torch.equal(last_ND, torch.stack([d.acts[1][-1] for d in docs]))
    assert torch.allclose(mean_ND, torch.stack([d.acts[1].mean(0) for d in docs]), atol=1e-5)
    with pytest.raises(InputError):
        store.pooled(1, "max")


def test_reader_errors(tmp_path, docs):
    with pytest.raises(StoreError, match="no activation store at .*ao capture"):
        ActivationStore(tmp_path / "nowhere")
    store = ActivationStore(build(tmp_path / "s", docs))
    with pytest.raises(StoreError, match=r"has no layer 5 \(it has \[1, 3\]\): recapture with --layers"):
        store.check_layer(5)
    with pytest.raises(StoreError):
        store.doc_acts(0, 5)
    store.check_layer(3)
    store.check_model("abc123", "tiny-llama")
    with pytest.raises(StoreError, match="was made with model tiny-llama, not other-model: use another --out"):
        store.check_model("zzz", "other-model")
    with pytest.raises(StoreError, match="tiny-llama"):
        store.check_model("zzz", "tiny-llama")
    with pytest.raises(InputError, match="out of range"):
        store.doc(N_DOCS)


def test_writer_input_checks(tmp_path, docs):
    with writer(tmp_path / "s") as w:
        with pytest.raises(InputError, match="must start at document 3"):
            w.write_shard(1, 2, docs[3:6])
        with pytest.raises(InputError, match="1 to 3 documents"):
            w.write_shard(0, 0, docs[:4])
        bad = DocActs(docs[0].tokens, docs[0].positions, {1: docs[0].acts[1]})
        with pytest.raises(InputError, match="layers"):
            w.write_shard(0, 0, [bad])
        bad = DocActs(docs[0].tokens, docs[0].positions, {1: docs[0].acts[1], 3: torch.zeros(1, D)})
        with pytest.raises(InputError, match="expected"):
            w.write_shard(0, 0, [bad])
        assert not list((tmp_path / "s").glob("shard-*"))
    with pytest.raises(InputError):
        writer(tmp_path / "t", dtype="int8")


# ---------------------------------------------------------------------------------------------- lock


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_blocks_second_writer(tmp_path, docs):
    path = tmp_path / "s"
    w = writer(path)
    assert (path / ".lock").read_text().strip() == str(os.getpid())
    with pytest.raises(StoreError, match=rf"is being written by process {os.getpid()}: wait for it, or delete .*\.lock"):
        writer(path, resume=True)
    w.close()
    assert not (path / ".lock").exists()
    with writer(path, resume=True) as w2:
        write_all(w2, docs)
    assert not (path / ".lock").exists()


def test_stale_lock_taken_over(tmp_path, docs, caplog):
    path = tmp_path / "s"
    path.mkdir()
    pid = dead_pid()
    (path / ".lock").write_text(f"{pid}\n")
    with caplog.at_level(logging.WARNING, logger="hooks.store"):
        with writer(path) as w:
            assert (path / ".lock").read_text().strip() == str(os.getpid())
            write_all(w, docs)
    assert any("stale lock" in r.getMessage() for r in caplog.records)
    assert ActivationStore(path).n_docs == N_DOCS


# ---------------------------------------------------------------------------------------------- resume


def test_existing_store_needs_resume(tmp_path, docs):
    path = build(tmp_path / "s", docs)
    with pytest.raises(StoreError, match="pass --resume to continue it, or pick another --out"):
        writer(path)


def test_resume_skips_finalized_and_is_bitwise_identical(tmp_path, docs):
    reference = snapshot(build(tmp_path / "ref", docs))
    path = tmp_path / "s"
    w = writer(path)
    w.write_shard(0, 0, docs[0:3])
    assert w.next_doc == 3 and w.pending_shards(N_DOCS) == [(1, 3, 6), (2, 6, 7)]
    # simulate a crash: shard 1 half written, shard 2 renamed but not yet in the manifest, lock left behind
    (path / "shard-00001.h5.tmp").write_bytes(b"half a shard")
    w.write_shard(2, 6, docs[6:7])
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["shards"] = manifest["shards"][:1]
    (path / "manifest.json").write_text(json.dumps(manifest))
    (path / ".lock").write_text(f"{dead_pid()}\n")
    w._lock = None  # the crashed process is gone, its lock stays
    mtime0 = (path / "shard-00000.h5").stat().st_mtime_ns

    with writer(path, resume=True) as w2:
        assert not (path / "shard-00001.h5.tmp").exists()
        assert not (path / "shard-00002.h5").exists()  # not in the manifest: removed, rewritten below
        assert w2.next_doc == 3
        assert w2.pending_shards(N_DOCS) == [(1, 3, 6), (2, 6, 7)]
        write_all(w2, docs)
        assert w2.next_doc == N_DOCS and w2.pending_shards(N_DOCS) == []
    assert (path / "shard-00000.h5").stat().st_mtime_ns == mtime0  # finalized shard kept, not rewritten
    assert snapshot(path) == reference


def test_resume_rewrites_shard_with_bad_checksum(tmp_path, docs):
    path = build(tmp_path / "s", docs)
    reference = snapshot(path)
    raw = bytearray((path / "shard-00001.h5").read_bytes())
    raw[-20] ^= 0xFF
    (path / "shard-00001.h5").write_bytes(bytes(raw))
    with writer(path, resume=True) as w:
        assert w.pending_shards(N_DOCS) == [(1, 3, 6)]
        write_all(w, docs)
    assert snapshot(path) == reference


def test_resume_with_other_model_or_settings_raises(tmp_path, docs):
    path = tmp_path / "s"
    with writer(path) as w:
        w.write_shard(0, 0, docs[:3])
    with pytest.raises(StoreError, match=r"was made with model tiny-llama, not other-model: use another --out"):
        writer(path, resume=True, model_spec="other-model", weights_hash="zzz")
    with pytest.raises(StoreError, match=r"weights hash"):
        writer(path, resume=True, weights_hash="zzz")
    with pytest.raises(StoreError, match=r"layers \[1, 3\], not \[1, 2\]"):
        writer(path, resume=True, layers=[1, 2])
    with pytest.raises(StoreError, match="dtype"):
        writer(path, resume=True, dtype="float16")
    with pytest.raises(StoreError, match="capture options"):
        writer(path, resume=True, capture_options={"positions": "last"})
    with pytest.raises(StoreError, match="docs_per_shard"):
        writer(path, resume=True, docs_per_shard=4)
    assert not (path / ".lock").exists()  # failed opens release the lock
    assert (path / "shard-00000.h5").exists()  # and delete nothing


def test_a_v1_store_reads_and_a_writer_of_no_texts_continues_it_as_v2(tmp_path, docs):
    """Format v1 (no ``texts``, no ``tokens_sha256``) reads; a writer that records no texts (an oracle's example
    cache) resumes it, and the manifest becomes v2; the shards, whose layout v2 kept, are untouched."""
    path = tmp_path / "s"
    with writer(path) as w:
        w.write_shard(0, 0, docs[:3])
    m = json.loads((path / "manifest.json").read_text())
    m["format_version"] = 1
    del m["texts"]
    (path / "manifest.json").write_text(json.dumps(m))
    assert ActivationStore(path).info.format_version == 1 and ActivationStore(path).verify() == []
    shard0 = sha(path / "shard-00000.h5")
    with writer(path, resume=True) as w:
        assert w.pending_shards(N_DOCS) == [(1, 3, 6), (2, 6, 7)]
        write_all(w, docs)
    assert sha(path / "shard-00000.h5") == shard0
    store = ActivationStore(path)
    assert store.info.format_version == STORE_FORMAT_VERSION and store.verify() == [] and store.n_docs == N_DOCS


def test_resume_with_other_texts_names_both_sources(tmp_path, docs):
    from hooks.store_manifest import TextsRecord

    a = TextsRecord("a.txt", N_DOCS, "1" * 64, 64, 0, 0)
    path = tmp_path / "s"
    with writer(path, texts=a) as w:
        w.write_shard(0, 0, docs[:3], tokens_sha256="2" * 64)
    before = snapshot(path)
    with pytest.raises(StoreError, match=r"was captured from a\.txt \(7 docs, sha256 111111111111\.\.\.\), not from "
                                         r"b\.txt \(30 docs, sha256 333333333333\.\.\.\): resume with the texts it "
                                         r"was made from \(--texts a\.txt\), or choose another --out for b\.txt"):
        writer(path, resume=True, texts=TextsRecord("b.txt", 30, "3" * 64, 64, 0, 0))
    with pytest.raises(StoreError, match=r"not from the texts given in Python"):
        writer(path, resume=True, texts=TextsRecord(None, N_DOCS, "3" * 64, 64, 0, 0))
    assert snapshot(path) == before
    with writer(path, resume=True) as w:   # told nothing of the texts: keeps the record
        assert w.header["texts"]["source"] == "a.txt"
        with pytest.raises(StoreError, match="tokenize differently now"):
            w.check_kept_tokens([[1, 2]] * N_DOCS)
    assert ActivationStore(path).info.texts == a


def test_exception_in_write_shard_leaves_no_file(tmp_path, docs, monkeypatch):
    path = tmp_path / "s"
    with writer(path) as w:
        import hooks.store_writer as store_mod

        def boom(*a, **k):
            raise RuntimeError("disk full")

        monkeypatch.setattr(store_mod, "fsync_file", boom)
        with pytest.raises(RuntimeError, match="disk full"):
            w.write_shard(0, 0, docs[:3])
        assert not list(path.glob("shard-*"))
        assert json.loads((path / "manifest.json").read_text())["shards"] == []


# ---------------------------------------------------------------------------------------------- determinism


def test_rewriting_a_shard_gives_identical_bytes(tmp_path, docs):
    a = build(tmp_path / "a", docs, dtype="bfloat16")
    first = snapshot(a)
    os.utime(a / "shard-00000.h5", (0, 0))
    import time

    time.sleep(1.1)  # any timestamp in the file would now differ
    b = build(tmp_path / "b", docs, dtype="bfloat16")
    assert snapshot(b) == first
    with writer(a, resume=True, dtype="bfloat16") as w:
        w.write_shard(0, 0, docs[:3])  # rewrite in place
    assert snapshot(a) == first


# ---------------------------------------------------------------------------------------------- verify


def test_verify_reports_damaged_shards_by_name(tmp_path, docs):
    path = build(tmp_path / "s", docs)
    f1, f2 = path / "shard-00001.h5", path / "shard-00002.h5"
    with h5py.File(f1, "r") as f:  # a byte inside the activation data, not the metadata
        data_at = f["acts/1"].id.get_chunk_info(0).byte_offset + 5
    raw = bytearray(f1.read_bytes())
    raw[data_at] ^= 0x01  # one flipped bit
    f1.write_bytes(bytes(raw))
    f2.write_bytes(f2.read_bytes()[:200])  # truncated
    store = ActivationStore(path)
    problems = store.verify()
    assert any("shard-00001.h5" in p and "checksum mismatch" in p for p in problems)
    assert any("shard-00002.h5" in p and "checksum mismatch" in p for p in problems)
    assert any("shard-00002.h5" in p and "truncated or unreadable" in p for p in problems)
    assert not any("shard-00000.h5" in p for p in problems)
    assert torch.equal(store.doc_acts(0, 1), docs[0].acts[1])  # the good shard still reads
    assert store.doc(4).n_tokens == docs[4].n_tokens  # a flipped data bit still reads
    with pytest.raises(StoreError, match="shard-00002.h5 .*unreadable"):
        store.doc(6)
    assert torch.equal(store.doc_acts(1, 3), docs[1].acts[3])


def test_verify_reports_missing_shard_and_bad_offsets(tmp_path, docs):
    path = build(tmp_path / "s", docs)
    (path / "shard-00002.h5").unlink()
    with h5py.File(path / "shard-00001.h5", "r+") as f:
        f["doc_offsets"][1] = 99
    problems = ActivationStore(path).verify()
    assert any("shard-00002.h5" in p and "missing" in p for p in problems)
    assert any("shard-00001.h5" in p and "doc_offsets inconsistent" in p for p in problems)
    with h5py.File(path / "shard-00000.h5", "r+") as f:
        del f["acts/3"]
        f["acts"].create_dataset("3", data=np.zeros((2, D), np.float64))
    problems = ActivationStore(path).verify()
    assert any("shard-00000.h5" in p and "/acts/3" in p for p in problems)


# ---------------------------------------------------------------------------------------------- data parallel


def test_data_parallel_two_ranks_merge_equals_single_writer(tmp_path, docs):
    single = snapshot(build(tmp_path / "single", docs))
    path = tmp_path / "dp"
    w0 = writer(path, rank=0, world_size=2)
    w1 = writer(path, rank=1, world_size=2)  # both ranks hold their own lock at once
    assert (path / ".lock-rank0").exists() and (path / ".lock-rank1").exists()
    assert w0.pending_shards(N_DOCS) == [(0, 0, 3), (2, 6, 7)]
    assert w1.pending_shards(N_DOCS) == [(1, 3, 6)]
    with pytest.raises(InputError, match="belongs to rank 1"):
        w0.write_shard(1, 3, docs[3:6])
    # interleaved, as two processes would
    w0.write_shard(0, 0, docs[0:3])
    w1.write_shard(1, 3, docs[3:6])
    w0.write_shard(2, 6, docs[6:7])
    assert w0.next_doc == N_DOCS and w1.next_doc == 9
    w0.close()
    w1.close()
    assert not (path / "manifest.json").exists()
    merge_manifests(path)  # rank 0, after the barrier
    merged = snapshot(path)
    for name in ("manifest.json", "shard-00000.h5", "shard-00001.h5", "shard-00002.h5"):
        assert merged[name] == single[name]
    store = ActivationStore(path)
    assert store.verify() == []
    for i, doc in enumerate(docs):
        assert torch.equal(store.doc_acts(i, 3), doc.acts[3])


def test_data_parallel_resume_one_rank(tmp_path, docs):
    path = tmp_path / "dp"
    with writer(path, rank=0, world_size=2) as w0:
        w0.write_shard(0, 0, docs[0:3])
    with writer(path, rank=1, world_size=2) as w1:
        w1.write_shard(1, 3, docs[3:6])
    with writer(path, rank=1, world_size=2, resume=True) as w1:
        assert w1.pending_shards(N_DOCS) == []  # rank 1's folder state does not need rank 0's
    with pytest.raises(StoreError, match="--resume"):
        writer(path, rank=0, world_size=2)
    with writer(path, rank=0, world_size=2, resume=True) as w0:
        assert w0.pending_shards(N_DOCS) == [(2, 6, 7)]
        w0.write_shard(2, 6, docs[6:7])
    merge_manifests(path, world_size=2)
    store = ActivationStore(path)
    assert store.n_docs == N_DOCS and store.verify() == []
