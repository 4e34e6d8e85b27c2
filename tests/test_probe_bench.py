"""The probe-vs-oracle benchmark (oracle/evals/probe_bench.py, ``ao probe-bench``) on tiny models and synthetic stores."""
from __future__ import annotations

import csv
import logging

import numpy as np
import pytest
import torch

from hooks.errors import InputError, StoreError
from hooks.store import MANIFEST, ActivationStore, DocActs, StoreWriter
from oracle.evals.probe_bench import (check_labels, label_counts, labels_to_match, prepare_dataset, probe_accuracy,
                          run_probe_bench)


def _synthetic_store(path, n_docs=12, d_model=8, layers=(1,), seed=0):
    """A store of ``n_docs`` random documents (3-5 rows each); class 1 documents are shifted along dim 0."""
    rng = np.random.default_rng(seed)
    docs, labels = [], []
    for i in range(n_docs):
        t = 3 + i % 3
        y = i % 2
        acts = rng.normal(size=(t, d_model)).astype(np.float32)
        acts[:, 0] += 4.0 * y
        docs.append(DocActs(np.arange(t, dtype=np.int32) + 3, np.arange(t, dtype=np.int32),
                            {layer: torch.from_numpy(acts) for layer in layers}))
        labels.append(y)
    with StoreWriter(path, model_spec="synthetic", weights_hash="h", tokenizer_name="byte", d_model=d_model,
                     layers=list(layers), docs_per_shard=64) as w:
        for k, start, stop in w.pending_shards(n_docs):
            w.write_shard(k, start, docs[start:stop])
    return ActivationStore(path), np.asarray(labels)


# ----------------------------------------------------------------------------- bad input: one clear line each

def test_store_without_layer_is_one_clear_line(tmp_path):
    store, y = _synthetic_store(tmp_path / "s")
    with pytest.raises(StoreError) as e:
        probe_accuracy(store, y, 5, "last", range(8), range(8, 12), n_boot=20)
    msg = str(e.value)
    assert "\n" not in msg and "no layer 5" in msg and "[1]" in msg


def test_label_count_mismatch_is_one_clear_line(tmp_path):
    store, y = _synthetic_store(tmp_path / "s")
    with pytest.raises(InputError) as e:
        probe_accuracy(store, y[:-2], 1, "last", range(8), range(8, 10), n_boot=20)
    msg = str(e.value)
    assert "\n" not in msg and "10 labels" in msg and "12 documents" in msg


def test_single_class_is_one_clear_line(tmp_path):
    store, _ = _synthetic_store(tmp_path / "s")
    with pytest.raises(InputError) as e:
        probe_accuracy(store, np.ones(12, dtype=int), 1, "last", range(8), range(8, 12), n_boot=20)
    assert "\n" not in str(e.value) and "single class" in str(e.value)
    with pytest.raises(InputError, match="single class"):
        prepare_dataset("all-yes", ["a", "b", "c", "d"], [1, 1, 1, 1], "Is it?")
    with pytest.raises(InputError, match="3 labels for 4 texts"):
        check_labels("short", ["a", "b", "c", "d"], [0, 1, 0])


def test_probe_on_synthetic_store_learns(tmp_path):
    store, y = _synthetic_store(tmp_path / "s", n_docs=40)
    r = probe_accuracy(store, y, 1, "mean", range(20), range(20, 40), n_boot=50, Cs=(1.0,))
    assert r["accuracy"] > 0.9 and r["ci_low"] <= r["accuracy"] <= r["ci_high"]


def test_cli_bad_input_exits_2(tmp_path, capsys):
    from oracle.cli.main import main

    rc = main(["probe-bench", "--datasets", "no_such_set", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: unknown benchmark dataset 'no_such_set'") and "\n" not in err
    assert main(["probe-bench", "--n", "2", "--out", str(tmp_path / "o")]) == 2


# ----------------------------------------------------------------------------- helpers

def test_split_is_balanced_and_disjoint():
    texts = [f"text {i}" for i in range(30)]
    labels = [1] * 10 + [0] * 20
    d = prepare_dataset("toy", texts, labels, "Is it?", n=200)
    assert d.n_train == 10 and len(d.test_idx) == 10            # 10 per class available: 5 test + 5 train each
    assert set(d.train_idx).isdisjoint(d.test_idx)
    assert d.labels[d.train_idx[:8]].sum() == 4                  # every even prefix is balanced
    assert d.labels[d.test_idx].sum() == 5
    assert d.question.startswith("Answer with 'Yes' or 'No' only. ")
    assert label_counts(100) == [8, 32, 100] and label_counts(600) == [8, 32, 128, 512, 600]


def test_labels_to_match():
    rows = [{"method": "probe", "n_labels": k, "accuracy": a} for k, a in ((8, 0.55), (8, 0.6), (32, 0.7), (64, 0.9))]
    assert labels_to_match(rows, 0.6) == 8
    assert labels_to_match(rows, 0.85) == 64
    assert labels_to_match(rows, 0.95) is None


# ----------------------------------------------------------------------------- end to end on a tiny model

def _toy(a, b, n=12):
    texts = [f"{a} {i} {a}" for i in range(n)] + [f"{b}! {i}" for i in range(n)]
    return texts, [1] * n + [0] * n, f"Is this about {a}?"


def test_bench_end_to_end_tiny_and_reuses_stores(tmp_path, caplog):
    from hooks.testing import tiny_loaded

    lm = tiny_loaded("llama", n_layers=4)
    datasets = {"apples": _toy("apple", "zebra"), "fam/cats": _toy("cat", "dog")}
    out = tmp_path / "bench"
    kw = dict(lm=lm, model="tiny-llama", datasets=datasets, n=24, n_boot=20, progress=False, Cs=(1.0,))
    with caplog.at_level(logging.WARNING, logger="oracle.evals.probe_bench"):
        res = run_probe_bench(out, oracle_path=tmp_path / "missing-oracle", **kw)
    assert "no oracle checkpoint" in caplog.text
    for stem in ("apples", "fam__cats"):
        for ext in ("csv", "md", "png"):
            assert (out / f"{stem}.{ext}").stat().st_size > 0
    rows = list(csv.DictReader(open(out / "apples.csv")))
    methods = {r["method"] for r in rows}
    assert methods == {"probe", "majority", "oracle_untrained"}
    probes = [r for r in rows if r["method"] == "probe"]
    assert {r["depth"] for r in probes} == {"25%", "50%", "75%"} and {r["pooling"] for r in probes} == {"last", "mean"}
    assert {int(r["n_labels"]) for r in probes} == {8, 12}
    assert all(0.0 <= float(r["ci_low"]) <= float(r["accuracy"]) <= float(r["ci_high"]) <= 1.0 for r in probes)
    summary = (out / "summary.md").read_text()
    assert "| apples |" in summary and "| fam/cats |" in summary and "trained oracle skipped" in summary
    assert "labels to match untrained" in summary

    manifests = {p: (p / MANIFEST).stat().st_mtime_ns for p in (out / "stores").iterdir() if p.is_dir()}
    assert len(manifests) == 2
    res2 = run_probe_bench(out, oracle_path=None, untrained=False, **kw)
    assert {p: (p / MANIFEST).stat().st_mtime_ns for p in manifests} == manifests   # stores reused, not rewritten
    acc1 = [r["accuracy"] for r in res.rows["apples"] if r["method"] == "probe"]
    acc2 = [r["accuracy"] for r in res2.rows["apples"] if r["method"] == "probe"]
    assert acc1 == acc2

    # a store made from other texts is refused, not overwritten
    other = {"apples": _toy("pear", "zebra")}
    with pytest.raises(StoreError, match="other texts"):
        run_probe_bench(out, oracle_path=None, untrained=False, **{**kw, "datasets": other})
