"""The probe-vs-oracle benchmark: how many labels does a linear probe need to match the oracle?

For each dataset (balanced texts with 0/1 labels and one yes/no question whose answer is "Yes"
exactly when the label is 1):

1. take ``n`` balanced examples and split them, per class, into a fixed test half and a train pool;
2. capture every token of every text once into an HDF5 store ``OUT/stores/<name>`` at the 25/50/75 %
   depths (an existing complete store for the same texts and model is reused, an interrupted one is
   resumed);
3. fit logistic probes (:class:`probes.linear.LinearProbe`) on 8, 32, 128, 512 (those below the pool
   size) and all train labels, at each depth, on the last token and on the mean over tokens; report
   test accuracy with a bootstrap 95 % interval;
4. ask the oracle (trained, from ``--oracle``, and untrained: the bare base model with the same
   prompt and injection) the dataset's question about the last-token activation at the 50 % layer;
   it answers "Yes" when ``yes_probability >= 0.5``; report its test accuracy with an interval;
5. the majority-class baseline.

Outputs: ``OUT/<name>.csv``, ``OUT/<name>.md``, ``OUT/<name>.png`` per dataset (``/`` in names becomes
``__``) and ``OUT/summary.md``, which states how many labels the best probe (best depth, either
pooling) needs to reach the trained and the untrained oracle's accuracy, or "never".

Example:
    >>> run_probe_bench("runs/probe-bench", n=200)          # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from hooks.errors import InputError, StoreError
from hooks.outputs import check_output_path
from hooks.progress import progress_bar

from probes.linear import LinearProbe, ProbeConfig
from probes.metrics import accuracy, auroc, bootstrap_ci, majority_baseline

from oracle.evals.probe_bench_report import labels_to_match  # noqa: F401 - part of this module's API
from oracle.evals.probe_bench_report import DEPTHS, FIELDS, label_counts, safe_name, write_dataset_outputs, write_summary
from oracle.training.tasks.base import YES_NO_PREFIX

log = logging.getLogger(__name__)

POOLINGS = ("last", "mean")
TRAIN_FAMILIES = ("sst2", "gmt/cities")
DEFAULT_ORACLE = "checkpoints/oracle-smollm2-135m"
SIDECAR = "bench-texts.json"
MAX_CONTEXT_TOKENS = 128
#: Regularisation strengths searched for every benchmark probe (a short grid keeps the run fast).
BENCH_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)

DatasetSpec = tuple  # (texts, labels, question)
PathLike = Union[str, Path]


# ----------------------------------------------------------------------------- datasets

@dataclass
class BenchData:
    """One dataset after sampling: the texts in store order, 0/1 labels, the question, and the split."""

    name: str
    texts: list[str]
    labels: np.ndarray
    question: str
    train_idx: np.ndarray    # ordered so that every even-length prefix is class-balanced
    test_idx: np.ndarray

    @property
    def n_train(self) -> int:
        return int(len(self.train_idx))


def check_labels(name: str, texts: Sequence[str], labels: Any) -> np.ndarray:
    """Labels as a 0/1 int array, or an ``InputError`` naming the dataset and the problem.

    Example:
        >>> check_labels("d", ["a", "b"], [1, 0]).tolist()
        [1, 0]
    """
    y = np.asarray(labels)
    if y.ndim != 1:
        raise InputError(f"dataset {name}: labels must be 1-D (one per text), got shape {tuple(y.shape)}")
    if len(y) != len(texts):
        raise InputError(f"dataset {name}: got {len(y)} labels for {len(texts)} texts: pass exactly one label per text")
    if len(y) == 0:
        raise InputError(f"dataset {name} is empty: pass texts with 0/1 labels")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1, True, False}:
        raise InputError(f"dataset {name}: labels must be 0/1, got values {sorted(values, key=str)[:5]}")
    y = y.astype(np.int64)
    if len(values) < 2:
        raise InputError(f"dataset {name} has a single class (all {len(y)} labels are {int(y[0])}): "
                         f"a probe and its accuracy need examples of both classes")
    return y


def prepare_dataset(name: str, texts: Sequence[str], labels: Any, question: str, n: int = 200,
                    seed: int = 0) -> BenchData:
    """Balanced ``n`` examples (``n // 2`` per class at most), split per class into test (half) and train pool.

    Store order is train pool first (classes interleaved), then the test set.

    Example:
        >>> d = prepare_dataset("toy", [f"t{i}" for i in range(8)], [0, 1] * 4, "Is it?", n=8)
        >>> d.n_train, len(d.test_idx)
        (4, 4)
    """
    texts = [str(t) for t in texts]
    y = check_labels(name, texts, labels)
    if not isinstance(question, str) or not question.strip():
        raise InputError(f"dataset {name}: the question is empty: pass the yes/no question asked about each text")
    if any(not t.strip() for t in texts):
        raise InputError(f"dataset {name}: text {next(i for i, t in enumerate(texts) if not t.strip())} is empty")
    if isinstance(n, bool) or not isinstance(n, int) or n < 4:
        raise InputError(f"n must be an integer >= 4 (two train and two test examples), got {n!r}")
    rng = random.Random(f"{seed}:{name}")
    by_class = {c: [i for i in range(len(y)) if y[i] == c] for c in (0, 1)}
    per_class = min(n // 2, len(by_class[0]), len(by_class[1]))
    if per_class < 2:
        raise InputError(f"dataset {name} has {len(by_class[0])} texts of class 0 and {len(by_class[1])} of class 1: "
                         f"need at least 2 of each (one to train on, one to test)")
    n_test = per_class // 2
    train: dict[int, list[int]] = {}
    test: list[int] = []
    for c in (0, 1):
        idx = by_class[c][:]
        rng.shuffle(idx)
        idx = idx[:per_class]
        test += idx[:n_test]
        train[c] = idx[n_test:]
    order = [i for pair in zip(train[1], train[0]) for i in pair]   # balanced prefixes
    rng.shuffle(test)
    chosen = order + test
    q = question if question.startswith(YES_NO_PREFIX) else YES_NO_PREFIX + question
    return BenchData(name=name, texts=[texts[i] for i in chosen], labels=y[chosen], question=q,
                     train_idx=np.arange(len(order)), test_idx=np.arange(len(order), len(chosen)))


def default_dataset_names(data_dir: Optional[PathLike] = None, include_train_families: bool = False) -> list[str]:
    """The held-out sets (``singular_plural``, the ``engels`` files), plus a few training families when asked."""
    from oracle.data.labelled import heldout_dataset_names

    names = heldout_dataset_names(data_dir)
    return names + (list(TRAIN_FAMILIES) if include_train_families else [])


def load_dataset(name: str, data_dir: Optional[PathLike] = None, tokenizer: Any = None,
                 max_tokens: int = MAX_CONTEXT_TOKENS) -> DatasetSpec:
    """``(texts, labels, question)`` of a classification dataset: label 1 means the question's answer is "Yes".

    Held-out sets ask about their first class (e.g. "politics", "single"); ``sst2`` asks whether the
    review is positive; ``gmt/<file>`` whether the statement is true. Texts longer than
    ``max_tokens`` tokens (with ``tokenizer``) are dropped.
    """
    from oracle.data.files import resolve_data_dir
    from oracle.data.labelled import gmt_rows, heldout_dataset_names, sst2_rows
    from oracle.training.tasks.classification import class_questions, heldout_rows

    root = str(resolve_data_dir(data_dir))
    q = class_questions(root)
    if name in heldout_dataset_names(root):
        rows, questions, _ = heldout_rows(root, name)
        pairs = [(t, 1 if c == 0 else 0) for t, c in rows]
        question = questions[0][0]
    elif name == "sst2":
        pairs = [(t, 1 if lab == "positive" else 0) for t, lab in sst2_rows(root, "dev")]
        question = q["sst2"]["positive"][0]
    elif name.startswith("gmt/"):
        pairs = list(gmt_rows(root, name[4:]))
        question = q["geometry_of_truth"][0]
    else:
        raise InputError(f"unknown benchmark dataset {name!r}: use one of "
                         f"{', '.join(heldout_dataset_names(root) + list(TRAIN_FAMILIES))} or gmt/<file>")
    if tokenizer is not None:
        pairs = [(t, y) for t, y in pairs if 0 < len(tokenizer(t, add_special_tokens=True)["input_ids"]) <= max_tokens]
    return [t for t, _ in pairs], [y for _, y in pairs], question


# ----------------------------------------------------------------------------- stores

def _texts_hash(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def ensure_store(path: PathLike, texts: Sequence[str], lm: Any, layers: Sequence[int], model: str,
                 progress: bool = False, max_length: int = 512) -> "Any":
    """The store of ``texts`` at ``path``: reused when complete, resumed when interrupted, captured otherwise.

    A store made from other texts or another model, or without the needed layers, is refused
    (``StoreError``) rather than silently overwritten.
    """
    from hooks.capture_job import CaptureConfig, run_capture
    from hooks.models import adapters_disabled
    from hooks.store import MANIFEST, ActivationStore

    path = Path(path)
    digest = _texts_hash(texts)
    sidecar = path.with_name(f"{path.name}.{SIDECAR}")  # beside the store: capture refuses a folder with other files
    resume = False
    if (path / MANIFEST).is_file():
        store = ActivationStore(path)
        store.check_model(lm.weights_hash, model)
        recorded = json.loads(sidecar.read_text())["texts_sha256"] if sidecar.is_file() else None
        if recorded != digest or store.n_docs > len(texts):
            raise StoreError(f"store {path} holds other texts than this benchmark's ({store.n_docs} docs): "
                             f"delete the folder or choose another --out")
        missing = [x for x in layers if x not in store.layers]
        if missing:
            raise StoreError(f"store {path} has no layer {missing[0]} (it has {store.layers}): "
                             f"delete the folder to recapture it")
        if store.n_docs == len(texts):
            log.info("reusing store %s (%d docs)", path, store.n_docs)
            return store
        resume = True
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = sidecar.with_name(sidecar.name + ".tmp")
    tmp.write_text(json.dumps({"texts_sha256": digest, "n_docs": len(texts)}) + "\n")
    tmp.replace(sidecar)
    cfg = CaptureConfig(out=str(path), model=model, layers=",".join(str(x) for x in layers), positions="all",
                        max_length=max_length, resume=resume)
    with adapters_disabled(lm.model):
        run_capture(cfg, texts, lm=lm, progress=progress)
    return ActivationStore(path)


# ----------------------------------------------------------------------------- probes


def probe_accuracy(store: Any, labels: Any, layer: int, pooling: str, train_idx: Sequence[int],
                   test_idx: Sequence[int], n_boot: int = 1000, seed: int = 0,
                   features: Optional[Any] = None, Cs: Sequence[float] = BENCH_CS) -> dict:
    """Fit a logistic probe on ``train_idx`` documents of ``store`` and score it on ``test_idx``.

    Raises ``StoreError`` when the store lacks ``layer`` and ``InputError`` when the labels do not
    match the store's documents or hold one class.
    """
    store.check_layer(layer)
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != store.n_docs:
        raise InputError(f"got {y.size} labels for the {store.n_docs} documents of store {store.path}: "
                         f"pass exactly one label per stored document")
    check_labels(str(store.path), list(range(len(y))), y)
    X_ND = (features if features is not None else store.pooled(layer, pooling)).numpy()
    tr, te = np.asarray(train_idx), np.asarray(test_idx)
    probe = LinearProbe.fit(X_ND[tr], y[tr], ProbeConfig(kind="logistic", Cs=Cs, seed=seed),
                            metadata={"layer": int(layer), "pooling": pooling})
    pred = (probe.decision_function(X_ND[te]) > 0).astype(np.int64)
    truth = (y[te] == probe.classes[1]).astype(np.int64)
    acc, lo, hi = bootstrap_ci(accuracy, truth, pred, n_boot=n_boot, seed=seed)
    return {"accuracy": acc, "ci_low": lo, "ci_high": hi, "n_test": int(len(te)), "C": probe.info.get("C"),
            "auroc": _auroc(truth, probe.decision_function(X_ND[te]))}


# ----------------------------------------------------------------------------- oracle

def oracle_accuracy(oracle: Any, X_ND: Any, layer: int, question: str, y: Any, n_boot: int = 1000,
                    seed: int = 0, batch_size: int = 32) -> dict:
    """Zero-shot accuracy of ``oracle`` answering ``question`` about each activation row (Yes iff P(Yes) >= 0.5)."""
    from oracle.core.api import Query

    queries = [Query(X_ND[i], question, layer=int(layer)) for i in range(len(X_ND))]
    p = np.asarray(oracle.yes_probability_batch(queries, batch_size=batch_size), dtype=np.float64)
    pred = (p >= 0.5).astype(np.int64)
    acc, lo, hi = bootstrap_ci(accuracy, np.asarray(y, dtype=np.int64), pred, n_boot=n_boot, seed=seed)
    return {"accuracy": acc, "ci_low": lo, "ci_high": hi, "n_test": int(len(pred)),
            "auroc": _auroc(np.asarray(y, dtype=np.int64), p), "mean_p_yes": float(p.mean()), "frac_yes": float(pred.mean())}


def _auroc(y01: np.ndarray, scores: np.ndarray) -> Union[float, str]:
    """Threshold-free point AUROC ("" when the test set holds one class)."""
    return auroc(y01, scores) if 0 < int(np.sum(y01)) < len(y01) else ""


def _load_oracles(lm: Any, oracle_path: Optional[PathLike], untrained: bool) -> dict[str, Any]:
    """``{"oracle_trained": ..., "oracle_untrained": ...}``; a missing checkpoint is skipped with a warning."""
    from oracle.core.api import Oracle

    out: dict[str, Any] = {}
    if oracle_path is not None:
        if Path(oracle_path).is_dir():
            out["oracle_trained"] = Oracle.load(oracle_path, lm=lm)
        else:
            log.warning("no oracle checkpoint at %s: skipping the trained-oracle column", oracle_path)
    if untrained:
        out["oracle_untrained"] = Oracle.untrained(lm=lm)
    return out


# ----------------------------------------------------------------------------- the benchmark


@dataclass
class BenchResult:
    """Rows of every dataset, where the outputs went, and how long it took."""

    out: Path
    rows: dict[str, list[dict]] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def run_probe_bench(
    out: PathLike,
    model: str = "smollm2-135m",
    oracle_path: Optional[PathLike] = DEFAULT_ORACLE,
    datasets: Optional[Union[Sequence[str], Mapping[str, DatasetSpec]]] = None,
    n: int = 200,
    data_dir: Optional[PathLike] = None,
    include_train_families: bool = False,
    lm: Any = None,
    untrained: bool = True,
    seed: int = 0,
    n_boot: int = 1000,
    progress: bool = True,
    oracle_batch_size: int = 32,
    Cs: Sequence[float] = BENCH_CS,
) -> BenchResult:
    """Run the benchmark and write per-dataset CSV/Markdown/PNG files and ``summary.md`` under ``out``.

    ``datasets``: names (see :func:`default_dataset_names`), or a dict ``{name: (texts, labels,
    question)}`` with 0/1 labels (1: the answer to ``question`` is "Yes"). ``lm``: an already
    loaded model (else ``model`` is loaded once). ``oracle_path=None`` or a missing folder skips
    the trained-oracle column; ``untrained=False`` skips the untrained one. ``Cs``: the probes'
    regularisation grid (one value: no search).
    """
    from hooks.layers import resolve_layer

    started = time.perf_counter()
    if isinstance(n, bool) or not isinstance(n, int) or n < 4:
        raise InputError(f"--n must be an integer >= 4, got {n!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise InputError(f"--n-boot must be at least 1 bootstrap resample (1000 gives steady intervals), got {n_boot!r}")
    out = check_output_path(out)
    # resolve names (cheap checks first: bad names fail before the model loads)
    if datasets is None:
        names: list[str] = default_dataset_names(data_dir, include_train_families)
        specs: Optional[Mapping[str, DatasetSpec]] = None
    elif isinstance(datasets, Mapping):
        names, specs = list(datasets), datasets
    else:
        names, specs = list(datasets), None
        if include_train_families:
            names += [f for f in TRAIN_FAMILIES if f not in names]
        known = default_dataset_names(data_dir, True)
        for name in names:
            if name not in known and not name.startswith("gmt/"):
                raise InputError(f"unknown benchmark dataset {name!r}: use one of {', '.join(known)} or gmt/<file>")
    if not names:
        raise InputError("no datasets to benchmark: pass --datasets or check --data-dir")
    if specs is not None:   # validate injected data before loading anything
        for name in names:
            spec = specs[name]
            if not isinstance(spec, (tuple, list)) or len(spec) != 3:
                raise InputError(f"dataset {name}: pass (texts, labels, question)")
            prepare_dataset(name, spec[0], spec[1], spec[2], n=n, seed=seed)
    if lm is None:
        from hooks.models import load_model

        lm = load_model(model)
    layer_of = {d: resolve_layer(d, lm.n_layers) for d in DEPTHS}
    layers = sorted(set(layer_of.values()))
    mid = layer_of["50%"]
    result = BenchResult(out=out)

    bar = progress_bar(3 * len(names), "probe-bench", progress, unit="step")
    # 1. data and stores (all captures happen before any oracle adapter is attached)
    data: dict[str, BenchData] = {}
    stores: dict[str, Any] = {}
    for name in names:
        if bar:
            bar.set_postfix_str(f"{name}: capture")
        texts, labels, question = specs[name] if specs is not None else load_dataset(name, data_dir, lm.tokenizer)
        d = prepare_dataset(name, texts, labels, question, n=n, seed=seed)
        data[name] = d
        stores[name] = ensure_store(out / "stores" / safe_name(name), d.texts, lm, layers, model)
        if bar:
            bar.update(1)
    # 2. probes
    for name in names:
        if bar:
            bar.set_postfix_str(f"{name}: probes")
        d, store = data[name], stores[name]
        rows = result.rows.setdefault(name, [])
        rows.append({"dataset": name, "method": "majority", "depth": "", "layer": "", "pooling": "",
                     "n_labels": d.n_train, "accuracy": majority_baseline(d.labels[d.train_idx], d.labels[d.test_idx]),
                     "ci_low": "", "ci_high": "", "n_test": len(d.test_idx)})
        for depth in DEPTHS:
            layer = layer_of[depth]
            for pooling in POOLINGS:
                feats = store.pooled(layer, pooling)
                for k in label_counts(d.n_train):
                    r = probe_accuracy(store, d.labels, layer, pooling, d.train_idx[:k], d.test_idx,
                                       n_boot=n_boot, seed=seed, features=feats, Cs=Cs)
                    rows.append({"dataset": name, "method": "probe", "depth": depth, "layer": layer,
                                 "pooling": pooling, "n_labels": k, **{f: r[f] for f in FIELDS if f in r}})
        if bar:
            bar.update(1)
    # 3. oracles (one model: the trained adapter is attached to it, the untrained one runs with adapters off)
    oracles = _load_oracles(lm, oracle_path, untrained)
    if oracle_path is not None and "oracle_trained" not in oracles:
        result.notes.append(f"trained oracle skipped: no checkpoint at {oracle_path}")
    for name in names:
        if bar:
            bar.set_postfix_str(f"{name}: oracle")
        d, store = data[name], stores[name]
        X_ND = store.pooled(mid, "last")[d.test_idx]
        for method, oracle in oracles.items():
            r = oracle_accuracy(oracle, X_ND, mid, d.question, d.labels[d.test_idx], n_boot=n_boot, seed=seed,
                                batch_size=oracle_batch_size)
            result.rows[name].append({"dataset": name, "method": method, "depth": "50%", "layer": mid,
                                      "pooling": "last", "n_labels": 0, **{f: r[f] for f in FIELDS if f in r}})
        write_dataset_outputs(out, name, result.rows[name], d.question)
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    result.seconds = time.perf_counter() - started
    write_summary(out, result, data)
    return result
