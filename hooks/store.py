"""The HDF5 activation store, format v2; v1 stores still read (see docs/design.md, "HDF5 activation store").

Layout of a store folder::

    STORE/
      manifest.json             written atomically after every shard (tmp + fsync + rename + dir fsync)
      manifest-rank{r}.json     data-parallel capture only: each rank's own manifest, merged by rank 0
      shard-00000.h5            finalized shards; an unfinished shard is ``*.h5.tmp``, discarded on resume
      .lock                     held by the one writer (``.lock-rank{r}`` per rank when world_size > 1)

Shards are laid out by document index: shard ``k`` holds documents
``[k * docs_per_shard, min((k + 1) * docs_per_shard, n_docs))``. Nothing nondeterministic
(timestamps, pids, host names) goes into a shard or a manifest, so killing a capture and
resuming it gives a store bitwise identical to an uninterrupted run.

Data-parallel capture (e.g. under ``accelerate``): every rank opens
``StoreWriter(..., rank=r, world_size=W)`` on the same folder and writes the shards
``k`` with ``k % W == r`` (see :meth:`StoreWriter.pending_shards`); each rank keeps its own
``manifest-rank{r}.json``. When all ranks are done, the caller must **barrier**
(``accelerator.wait_for_everyone()``) and then rank 0 calls :func:`merge_manifests`, which
writes ``manifest.json``; readers only need ``manifest.json``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import h5py
import numpy as np
import torch

from hooks.errors import InputError, StoreError
from hooks.store_format import (DTYPES, MANIFEST, NP_DTYPES, SHARD_FORMAT_VERSION, STORE_FORMAT_VERSION, ClosesOnExit,
                                DocActs, PathLike, from_storage, is_store_file, load_json, sha256_file, shard_name,
                                to_storage)
from hooks.store_manifest import Manifest, parse_manifest
from hooks.store_writer import StoreWriter, merge_manifests

# the public face of the store: ``from hooks.store import ActivationStore, StoreWriter, DocActs, ...``
__all__ = ["ActivationStore", "StoreWriter", "DocActs", "merge_manifests", "is_store_file", "shard_name",
           "to_storage", "from_storage", "DTYPES", "MANIFEST", "STORE_FORMAT_VERSION"]


class ActivationStore(ClosesOnExit):
    """Read an activation store: per document, per layer, or pooled.

    Example:
        >>> store = ActivationStore("runs/acts")        # doctest: +SKIP
        >>> store.n_docs, store.layers, store.doc_acts(0, 15).shape   # doctest: +SKIP
        (1000, [15], torch.Size([37, 576]))
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise StoreError(f"no activation store at {self.path}: run `ao capture ... --out {self.path}` first")
        raw = load_json(manifest_path)
        #: the manifest, checked against the schema (``hooks.store_manifest``); ``manifest`` is its raw JSON
        self.info: Manifest = parse_manifest(raw, str(manifest_path))
        self.manifest: dict = raw
        m = self.info
        self.layers: list[int] = list(m.layers)
        self.d_model: int = m.d_model
        self.n_docs: int = m.n_docs
        self.n_tokens: int = m.n_tokens
        self.dtype: str = m.dtype
        self.model_spec: str = m.model_spec
        self.weights_hash: str = m.weights_hash
        self.docs_per_shard: int = m.docs_per_shard
        self._shards: dict[int, dict] = {e.shard_index: e.to_json() for e in m.shards}
        self._files: dict[int, h5py.File] = {}
        self._offsets: dict[int, np.ndarray] = {}

    # -- checks ----------------------------------------------------------------------------

    def check_layer(self, layer: int) -> None:
        """Raise ``StoreError`` unless ``layer`` is stored.

        Example:
            >>> store.check_layer(15)   # doctest: +SKIP
        """
        if int(layer) not in self.layers:
            raise StoreError(f"store {self.path} has no layer {layer} (it has {self.layers}): "
                             f"recapture with --layers {','.join(str(x) for x in sorted({*self.layers, int(layer)}))}")

    def check_model(self, weights_hash: str, model_spec: str) -> None:
        """Raise ``StoreError`` unless the store was made with these weights.

        Example:
            >>> store.check_model(loaded.weights_hash, loaded.spec)   # doctest: +SKIP
        """
        if weights_hash != self.weights_hash:
            if model_spec == self.model_spec:
                raise StoreError(f"store {self.path} was made with model {self.model_spec} whose weights hash "
                                 f"{self.weights_hash}, not {weights_hash}: use another --out")
            raise StoreError(f"store {self.path} was made with model {self.model_spec}, not {model_spec}: "
                             "use another --out")

    # -- access ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.n_docs

    def doc(self, i: int) -> DocActs:
        """Document ``i``: tokens, positions and float32 activations of every stored layer.

        Example:
            >>> store.doc(0).acts[15].shape   # doctest: +SKIP
            torch.Size([37, 576])
        """
        k, j = self._locate(i)
        start, stop = self._doc_rows(k, j)

        def read(f: h5py.File) -> tuple:
            return (f["tokens"][start:stop], f["positions"][start:stop],
                    {layer: f["acts"][str(layer)][start:stop] for layer in self.layers})

        tokens_T, positions_T, raw = self._read(k, read)
        return DocActs(tokens=tokens_T, positions=positions_T,
                       acts={layer: from_storage(raw_TD, self.dtype) for layer, raw_TD in raw.items()})

    def doc_acts(self, i: int, layer: int) -> torch.Tensor:
        """``(T, D)`` float32 activations of document ``i`` at ``layer``.

        Example:
            >>> store.doc_acts(0, 15).dtype   # doctest: +SKIP
            torch.float32
        """
        self.check_layer(layer)
        k, j = self._locate(i)
        start, stop = self._doc_rows(k, j)
        raw_TD = self._read(k, lambda f: f["acts"][str(int(layer))][start:stop])
        return from_storage(raw_TD, self.dtype)

    def pooled(self, layer: int, how: str = "last", block_rows: int = 8192) -> torch.Tensor:
        """``(n_docs, D)`` float32: per document, the last stored row (``"last"``) or the mean of its rows (``"mean"``).

        Example:
            >>> store.pooled(15, "mean").shape   # doctest: +SKIP
            torch.Size([1000, 576])
        """
        self.check_layer(layer)
        if how not in ("last", "mean"):
            raise InputError(f"unknown pooling {how!r}: use 'last' or 'mean'")
        out_ND = torch.zeros(self.n_docs, self.d_model, dtype=torch.float32)
        name = str(int(layer))
        for k in self._ordered_shards():
            offsets_N1 = self._shard_offsets(k)
            doc_start = int(self._shards[k]["doc_start"])
            counts_N = np.diff(offsets_N1)
            if (counts_N == 0).any():
                empty = doc_start + int(np.flatnonzero(counts_N == 0)[0])
                raise InputError(f"document {empty} of store {self.path} has no stored rows: "
                                 f"it cannot be pooled; drop empty texts before capture")
            n = len(counts_N)
            if how == "last":
                rows_N = offsets_N1[1:] - 1  # strictly increasing: no document is empty
                for a in range(0, n, block_rows):
                    idx = rows_N[a:a + block_rows]
                    raw_ND = self._read(k, lambda f: f["acts"][name][idx])
                    out_ND[doc_start + a:doc_start + a + len(idx)] = from_storage(raw_ND, self.dtype)
            else:
                sums_ND = torch.zeros(n, self.d_model, dtype=torch.float64)
                total = int(offsets_N1[-1])
                for r0 in range(0, total, block_rows):
                    r1 = min(total, r0 + block_rows)
                    acts_RD = from_storage(self._read(k, lambda f: f["acts"][name][r0:r1]), self.dtype)
                    doc_R = np.searchsorted(offsets_N1, np.arange(r0, r1), side="right") - 1
                    sums_ND.index_add_(0, torch.from_numpy(doc_R), acts_RD.double())
                means_ND = sums_ND / torch.from_numpy(counts_N).double().unsqueeze(1)
                out_ND[doc_start:doc_start + n] = means_ND.float()
        return out_ND

    # -- integrity -------------------------------------------------------------------------

    def verify(self) -> list[str]:
        """Check every shard against the manifest; one problem per string, each naming the file; ``[]`` if all good.

        Example:
            >>> store.verify()   # doctest: +SKIP
            ['shard-00001.h5: checksum mismatch (sha256 3fa1..., manifest says 9c0e...)']
        """
        problems: list[str] = [f"{MANIFEST}: {p}" for p in self.info.bad_entries]
        dps = self.docs_per_shard
        n_expected = -(-self.n_docs // dps)
        for k in range(n_expected):
            if k not in self._shards:
                problems.append(f"{shard_name(k)}: missing (documents {k * dps}..{min((k + 1) * dps, self.n_docs) - 1} "
                                "are in no shard of the manifest)")
        total = 0
        for k in sorted(self._shards):
            entry = self._shards[k]
            problems.extend(self._verify_shard(k, entry))
            total += int(entry.get("n_tokens", 0))
        if total != self.n_tokens:
            problems.append(f"{MANIFEST}: n_tokens {self.n_tokens} but the shards hold {total}")
        return problems

    def _verify_shard(self, k: int, entry: dict) -> list[str]:
        name = entry.get("file", shard_name(k))
        path = self.path / name
        dps = self.docs_per_shard
        start, stop = int(entry["doc_start"]), int(entry["doc_stop"])
        problems = []
        if name != shard_name(k) or start != k * dps or not start < stop <= start + dps:
            problems.append(f"{name}: manifest entry inconsistent (shard {k}, documents {start}..{stop})")
        if not path.is_file():
            return problems + [f"{name}: missing (listed in {MANIFEST}, no such file)"]
        sha = sha256_file(path)
        if sha != entry.get("sha256"):
            problems.append(f"{name}: checksum mismatch (sha256 {sha[:12]}..., manifest says "
                            f"{str(entry.get('sha256'))[:12]}...)")
        self._close_shard(k)
        try:
            with h5py.File(path, "r") as f:
                problems.extend(self._verify_contents(name, f, entry))
        except Exception as e:  # noqa: BLE001 - h5py raises OSError, KeyError, ValueError... on damage
            problems.append(f"{name}: truncated or unreadable ({type(e).__name__}: {e})")
        return problems

    def _verify_contents(self, name: str, f: h5py.File, entry: dict) -> list[str]:
        problems = []
        n_tokens, n_docs = int(entry["n_tokens"]), int(entry["doc_stop"]) - int(entry["doc_start"])

        def check(ds_name: str, shape: tuple, dtype: np.dtype) -> Optional[h5py.Dataset]:
            if ds_name not in f:
                problems.append(f"{name}: no dataset /{ds_name}")
                return None
            ds = f[ds_name]
            if ds.shape != shape or ds.dtype != dtype:
                problems.append(f"{name}: /{ds_name} is {ds.shape} {ds.dtype}, expected {shape} {dtype}")
                return None
            return ds

        check("tokens", (n_tokens,), np.dtype(np.int32))
        check("positions", (n_tokens,), np.dtype(np.int32))
        offsets = check("doc_offsets", (n_docs + 1,), np.dtype(np.int64))
        if offsets is not None:
            offsets_N1 = offsets[()]
            if offsets_N1[0] != 0 or offsets_N1[-1] != n_tokens or (np.diff(offsets_N1) < 0).any():
                problems.append(f"{name}: doc_offsets inconsistent (must rise from 0 to {n_tokens})")
        for layer in self.layers:
            ds = check(f"acts/{layer}", (n_tokens, self.d_model), NP_DTYPES[self.dtype])
            if ds is not None and self.dtype == "bfloat16" and ds.attrs.get("dtype") != "bfloat16":
                problems.append(f"{name}: /acts/{layer} lacks the attribute dtype='bfloat16'")
        attrs = f.attrs
        for key, want in (("doc_start", entry["doc_start"]), ("doc_stop", entry["doc_stop"]),
                          ("format_version", SHARD_FORMAT_VERSION)):
            if key not in attrs or int(attrs[key]) != int(want):
                problems.append(f"{name}: attribute {key} is {attrs.get(key)}, expected {want}")
        if "layers" not in attrs or [int(x) for x in np.atleast_1d(attrs["layers"])] != self.layers:
            problems.append(f"{name}: attribute layers is {attrs.get('layers')}, expected {self.layers}")
        return problems

    # -- internals -------------------------------------------------------------------------

    def _ordered_shards(self) -> list[int]:
        missing = [k for k in range(-(-self.n_docs // self.docs_per_shard)) if k not in self._shards]
        if missing:
            raise StoreError(f"store {self.path} is missing {', '.join(shard_name(k) for k in missing)}: "
                             "rerun the capture with --resume")
        return sorted(self._shards)

    def _locate(self, i: int) -> tuple[int, int]:
        i = int(i)
        if not 0 <= i < self.n_docs:
            raise InputError(f"document {i} is out of range: store {self.path} holds documents 0..{self.n_docs - 1}")
        k = i // self.docs_per_shard
        if k not in self._shards:
            raise StoreError(f"document {i} is in {shard_name(k)}, which is missing from store {self.path}: "
                             "rerun the capture with --resume")
        return k, i - int(self._shards[k]["doc_start"])

    def _file(self, k: int) -> h5py.File:
        f = self._files.get(k)
        if f is None:
            if len(self._files) >= 8:  # keep a few shards open, not all
                self._close_shard(next(iter(self._files)))
            f = h5py.File(self.path / self._shards[k]["file"], "r")
            self._files[k] = f
        return f

    def _close_shard(self, k: int) -> None:
        f = self._files.pop(k, None)
        if f is not None:
            f.close()
        self._offsets.pop(k, None)

    def _read(self, k: int, fn: Any) -> Any:
        """Run ``fn(h5file)`` on shard ``k``, turning damage into a ``StoreError`` that names the file."""
        try:
            return fn(self._file(k))
        except (OSError, KeyError, ValueError, RuntimeError) as e:
            self._close_shard(k)
            raise StoreError(f"{self._shards[k]['file']} of store {self.path} is unreadable ({e}): "
                             "check it with ActivationStore.verify(); rerun the capture with --resume to rewrite it") from None

    def _shard_offsets(self, k: int) -> np.ndarray:
        offsets_N1 = self._offsets.get(k)
        if offsets_N1 is None:
            offsets_N1 = np.asarray(self._read(k, lambda f: f["doc_offsets"][()]), dtype=np.int64)
            self._offsets[k] = offsets_N1
        return offsets_N1

    def _doc_rows(self, k: int, j: int) -> tuple[int, int]:
        offsets_N1 = self._shard_offsets(k)
        return int(offsets_N1[j]), int(offsets_N1[j + 1])

    def close(self) -> None:
        """Close the open shard files (the store stays usable; files reopen on demand).

        Example:
            >>> store.close()   # doctest: +SKIP
        """
        for k in list(self._files):
            self._close_shard(k)

    def __repr__(self) -> str:
        return (f"ActivationStore({str(self.path)!r}, model={self.model_spec}, layers={self.layers}, "
                f"n_docs={self.n_docs}, n_tokens={self.n_tokens}, dtype={self.dtype})")
