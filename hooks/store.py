"""The HDF5 activation store, format v1 (see docs/design.md, "HDF5 activation store, format v1").

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

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import h5py
import numpy as np
import torch

from .errors import InputError, StoreError

log = logging.getLogger(__name__)

STORE_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DTYPES = ("float32", "float16", "bfloat16")
_NP_DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16), "bfloat16": np.dtype(np.uint16)}
_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.h5(\.tmp)?$")
_RANK_MANIFEST_RE = re.compile(r"^manifest-rank(\d+)\.json$")
# Manifest fields that must match when a capture is resumed (field -> what the user calls it).
def is_store_file(name: str) -> bool:
    """Whether a file name is one a store writes (manifests, shards, locks)."""
    return (name == MANIFEST or name.startswith(".lock") or bool(_SHARD_RE.match(name))
            or bool(_RANK_MANIFEST_RE.match(name)))


_RESUME_FIELDS = {
    "format_version": "format version", "model_spec": "model", "weights_hash": "model weights (hash)",
    "tokenizer": "tokenizer", "d_model": "d_model", "layers": "layers", "dtype": "dtype",
    "capture_options": "capture options", "docs_per_shard": "docs_per_shard",
}
PathLike = Union[str, "os.PathLike[str]"]


def shard_name(shard_index: int) -> str:
    """File name of shard ``shard_index``.

    Example:
        >>> shard_name(3)
        'shard-00003.h5'
    """
    return f"shard-{shard_index:05d}.h5"


@dataclass
class DocActs:
    """The stored rows of one document.

    ``tokens`` and ``positions`` are int32 ``(T,)``; ``acts`` maps layer -> ``(T, d_model)``
    (any float dtype when writing; float32 torch tensors when read back).

    Example:
        >>> d = DocActs(tokens=np.array([5, 6], np.int32), positions=np.array([0, 1], np.int32),
        ...             acts={3: torch.zeros(2, 8)})
        >>> d.n_tokens
        2
    """

    tokens: np.ndarray
    positions: np.ndarray
    acts: dict[int, Any]

    @property
    def n_tokens(self) -> int:
        """Number of stored rows ``T``.

        Example:
            >>> DocActs(np.zeros(4, np.int32), np.arange(4, dtype=np.int32), {}).n_tokens
            4
        """
        return int(len(self.tokens))


# ----------------------------------------------------------------------------------------------
# small helpers: atomic files, hashing, dtype conversion, locks


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform that cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json_atomic(path: Path, obj: dict) -> None:
    """Write ``obj`` as JSON to ``path``: tmp file + fsync + os.replace + fsync of the folder."""
    tmp = path.with_name(path.name + ".tmp")
    text = json.dumps(obj, indent=1) + "\n"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _normalize_json(obj: Any) -> Any:
    """Round-trip through JSON so tuples/lists and int keys compare as they will once stored."""
    try:
        return json.loads(json.dumps(obj, sort_keys=True))
    except (TypeError, ValueError) as e:
        raise InputError(f"capture options must be JSON-serializable ({e}): pass plain numbers, strings and lists") from None


def to_storage(acts_TD: Any, dtype: str) -> np.ndarray:
    """Convert a ``(T, D)`` float tensor/array to the numpy array stored for ``dtype``.

    bfloat16 is rounded by torch and stored as its raw bits in uint16 (bitwise exact).

    Example:
        >>> to_storage(torch.ones(1, 2), "bfloat16")
        array([[16256, 16256]], dtype=uint16)
    """
    acts_TD = torch.as_tensor(acts_TD)
    if not (acts_TD.is_floating_point()):
        raise InputError(f"activations must be a float tensor, got {acts_TD.dtype}: pass the residuals as floats")
    acts_TD = acts_TD.detach().to("cpu", _TORCH_DTYPES[dtype]).contiguous()
    if dtype == "bfloat16":
        return acts_TD.view(torch.int16).numpy().view(np.uint16)
    return acts_TD.numpy()


def from_storage(raw_TD: np.ndarray, dtype: str) -> torch.Tensor:
    """Inverse of :func:`to_storage`: stored array -> float32 torch tensor.

    Example:
        >>> from_storage(to_storage(torch.tensor([[1.5]]), "bfloat16"), "bfloat16")
        tensor([[1.5000]])
    """
    raw_TD = np.ascontiguousarray(raw_TD)
    if dtype == "bfloat16":
        return torch.from_numpy(raw_TD.view(np.int16)).view(torch.bfloat16).float()
    return torch.from_numpy(raw_TD).float()


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _read_pid(lock: Path) -> Optional[int]:
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):
        return None


def _owned(shard_index: int, rank: int, world_size: int) -> bool:
    return shard_index % world_size == rank


def _h5_create(path: Path) -> h5py.File:
    """Create an HDF5 file with no timestamps and fixed format bounds, so equal content gives equal bytes."""
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_EARLIEST, h5py.h5f.LIBVER_V110)
    fid = h5py.h5f.create(os.fsencode(path), h5py.h5f.ACC_TRUNC, fapl=fapl, fcpl=fcpl)
    return h5py.File(fid)


def _h5_group(parent: h5py.Group, name: str) -> h5py.Group:
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    return h5py.Group(h5py.h5g.create(parent.id, name.encode(), gcpl=gcpl))


# ----------------------------------------------------------------------------------------------
# writer


class StoreWriter:
    """Writes an activation store shard by shard, resumably, one writer per folder (per rank).

    Example:
        >>> with StoreWriter(tmp / "store", model_spec="tiny", weights_hash="h", tokenizer_name="byte",
        ...                  d_model=8, layers=[1], docs_per_shard=2) as w:     # doctest: +SKIP
        ...     for k, start, stop in w.pending_shards(n_docs=5):
        ...         w.write_shard(k, start, [capture(i) for i in range(start, stop)])

    With ``world_size > 1`` every rank writes the shards ``k % world_size == rank`` and its own
    ``manifest-rank{rank}.json``; after a barrier, rank 0 calls :func:`merge_manifests`.
    """

    def __init__(self, path: PathLike, *, model_spec: str, weights_hash: str, tokenizer_name: str, d_model: int,
                 layers: list[int], dtype: str = "float32", capture_options: Optional[dict] = None,
                 docs_per_shard: int = 256, resume: bool = False, chunk_rows: int = 1024,
                 rank: int = 0, world_size: int = 1) -> None:
        if dtype not in DTYPES:
            raise InputError(f"unknown store dtype {dtype!r}: use one of {', '.join(DTYPES)}")
        if docs_per_shard < 1 or chunk_rows < 1 or d_model < 1:
            raise InputError("docs_per_shard, chunk_rows and d_model must be positive")
        if world_size < 1 or not 0 <= rank < world_size:
            raise InputError(f"rank {rank} is not in 0..{world_size - 1}: check the launcher's world size")
        layers = [int(layer) for layer in layers]
        if not layers or len(set(layers)) != len(layers):
            raise InputError(f"layers must be a non-empty list without repeats, got {layers}")
        self.path = Path(path)
        self.rank, self.world_size = rank, world_size
        self.chunk_rows = int(chunk_rows)
        self.header: dict[str, Any] = {
            "format_version": STORE_FORMAT_VERSION, "model_spec": str(model_spec), "weights_hash": str(weights_hash),
            "tokenizer": str(tokenizer_name), "d_model": int(d_model), "layers": layers, "dtype": dtype,
            "capture_options": _normalize_json(capture_options or {}), "docs_per_shard": int(docs_per_shard),
        }
        self.shards: dict[int, dict] = {}  # shard_index -> manifest entry, this rank's finalized shards
        self._lock: Optional[Path] = None
        self.path.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        try:
            self._open(resume)
        except BaseException:
            self._release_lock()
            raise

    # -- properties ------------------------------------------------------------------------

    @property
    def layers(self) -> list[int]:
        """Stored layers, in order.

        Example:
            >>> writer.layers   # doctest: +SKIP
            [3, 15]
        """
        return list(self.header["layers"])

    @property
    def dtype(self) -> str:
        """Storage dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"``.

        Example:
            >>> writer.dtype   # doctest: +SKIP
            'bfloat16'
        """
        return self.header["dtype"]

    @property
    def docs_per_shard(self) -> int:
        """Documents per shard (the last shard may hold fewer).

        Example:
            >>> writer.docs_per_shard   # doctest: +SKIP
            256
        """
        return self.header["docs_per_shard"]

    @property
    def manifest_path(self) -> Path:
        """The manifest this writer maintains: ``manifest.json``, or ``manifest-rank{r}.json`` when data-parallel.

        Example:
            >>> StoreWriter(p, ..., rank=1, world_size=2).manifest_path.name   # doctest: +SKIP
            'manifest-rank1.json'
        """
        return self.path / (MANIFEST if self.world_size == 1 else f"manifest-rank{self.rank}.json")

    @property
    def next_doc(self) -> int:
        """First document index not in a finalized shard of this rank's sequence of shards
        (``rank, rank + world_size, ...``): where this rank resumes.

        Example:
            >>> writer.next_doc   # after shards 0 and 1 of 256 docs each   # doctest: +SKIP
            512
        """
        dps = self.docs_per_shard
        k = self.rank
        while k in self.shards:
            entry = self.shards[k]
            if entry["doc_stop"] < (k + 1) * dps:  # a short (last) shard: the store ends inside it
                return entry["doc_stop"]
            k += self.world_size
        return k * dps

    # -- public ----------------------------------------------------------------------------

    def pending_shards(self, n_docs: int) -> list[tuple[int, int, int]]:
        """``(shard_index, doc_start, doc_stop)`` of the shards this rank still has to write for ``n_docs`` docs.

        A finalized shard whose document range differs (the corpus grew) is pending again.

        Example:
            >>> writer.pending_shards(600)   # docs_per_shard=256, shard 0 done   # doctest: +SKIP
            [(1, 256, 512), (2, 512, 600)]
        """
        dps = self.docs_per_shard
        out = []
        for k in range(self.rank, -(-int(n_docs) // dps), self.world_size):
            start, stop = k * dps, min((k + 1) * dps, int(n_docs))
            entry = self.shards.get(k)
            if entry is None or entry["doc_start"] != start or entry["doc_stop"] != stop:
                out.append((k, start, stop))
        return out

    def write_shard(self, shard_index: int, doc_start: int, docs: list[DocActs]) -> None:
        """Write documents ``doc_start ..`` as shard ``shard_index``: ``.h5.tmp``, fsync, rename, manifest.

        Example:
            >>> writer.write_shard(0, 0, [DocActs(tokens_T, positions_T, {3: acts_TD})])   # doctest: +SKIP
        """
        dps = self.docs_per_shard
        if shard_index < 0 or doc_start != shard_index * dps:
            raise InputError(f"shard {shard_index} must start at document {shard_index * dps}, not {doc_start}")
        if not 1 <= len(docs) <= dps:
            raise InputError(f"a shard holds 1 to {dps} documents, got {len(docs)}")
        if not _owned(shard_index, self.rank, self.world_size):
            raise InputError(f"shard {shard_index} belongs to rank {shard_index % self.world_size}, "
                             f"not rank {self.rank}: write only the shards pending_shards() lists")
        if self._lock is None:
            raise StoreError(f"the writer of store {self.path} is closed: open a new StoreWriter with resume=True")
        n_rows_per_doc = [self._check_doc(doc_start + j, doc) for j, doc in enumerate(docs)]
        final = self.path / shard_name(shard_index)
        tmp = final.with_name(final.name + ".tmp")
        try:
            self._write_h5(tmp, doc_start, docs, n_rows_per_doc)
            _fsync_file(tmp)
            sha = _sha256(tmp)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.path)
        self.shards[shard_index] = {
            "file": final.name, "shard_index": shard_index, "doc_start": doc_start,
            "doc_stop": doc_start + len(docs), "n_tokens": int(sum(n_rows_per_doc)), "sha256": sha,
        }
        self._write_manifest()
        log.debug("wrote %s (%d docs, %d rows)", final, len(docs), sum(n_rows_per_doc))

    def close(self) -> None:
        """Release the lock (idempotent). Also done by ``with StoreWriter(...) as w:``.

        Example:
            >>> writer.close()   # doctest: +SKIP
        """
        self._release_lock()

    def __del__(self) -> None:
        try:
            self._release_lock()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"StoreWriter({str(self.path)!r}, rank={self.rank}/{self.world_size}, "
                f"{len(self.shards)} shards, next_doc={self.next_doc})")

    # -- internals -------------------------------------------------------------------------

    def _lock_path(self) -> Path:
        return self.path / (".lock" if self.world_size == 1 else f".lock-rank{self.rank}")

    def _acquire_lock(self) -> None:
        lock = self._lock_path()
        for attempt in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid = _read_pid(lock)
                if pid is not None and _pid_alive(pid):
                    raise StoreError(f"store {self.path} is being written by process {pid}: "
                                     f"wait for it, or delete {lock} if that process is dead") from None
                if attempt:
                    raise StoreError(f"could not take the lock {lock} of store {self.path}: "
                                     "another writer took it at the same time; try again") from None
                log.warning("taking over the stale lock %s (process %s is gone)", lock, pid)
                lock.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()}\n")
                fh.flush()
                os.fsync(fh.fileno())
            self._lock = lock
            break
        # A single-process writer and data-parallel ranks must not write the same folder at once.
        others = [".lock"] if self.world_size > 1 else sorted(p.name for p in self.path.glob(".lock-rank*"))
        for name in others:
            pid = _read_pid(self.path / name)
            if pid is not None and pid != os.getpid() and _pid_alive(pid):
                self._release_lock()
                raise StoreError(f"store {self.path} is being written by process {pid}: "
                                 f"wait for it, or delete {self.path / name} if that process is dead")

    def _release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None and _read_pid(lock) == os.getpid():
            lock.unlink(missing_ok=True)

    def _mine(self, name: str) -> bool:
        """Is ``name`` a shard file (final or tmp) of a shard this rank owns?"""
        m = _SHARD_RE.match(name)
        return bool(m) and _owned(int(m.group(1)), self.rank, self.world_size)

    def _existing(self) -> bool:
        names = {p.name for p in self.path.iterdir()}
        if MANIFEST in names or self.manifest_path.name in names or any(self._mine(n) for n in names):
            return True
        # single process: any other rank's leftovers also make this an existing store
        return self.world_size == 1 and any(_RANK_MANIFEST_RE.match(n) for n in names)

    def _open(self, resume: bool) -> None:
        if self._existing():
            if not resume:
                raise StoreError(f"store {self.path} already exists: pass --resume to continue it, "
                                 "or pick another --out")
            self._resume()
        self._write_manifest()

    def _resume(self) -> None:
        known: dict[int, dict] = {}
        sources = [self.path / MANIFEST] + sorted(self.path.glob("manifest-rank*.json"))
        for source in sources:
            if not source.is_file():
                continue
            manifest = _load_json(source)
            self._check_header(manifest, source)
            for entry in manifest.get("shards", []):
                known.setdefault(int(entry["shard_index"]), entry)
        kept, removed = 0, 0
        for p in sorted(self.path.iterdir()):
            if p.name.endswith(".json.tmp") and (p.name == MANIFEST + ".tmp" or p.name == self.manifest_path.name + ".tmp"):
                p.unlink(missing_ok=True)
                continue
            if not self._mine(p.name):
                continue
            k = int(_SHARD_RE.match(p.name).group(1))
            entry = known.get(k)
            if p.name.endswith(".tmp"):
                log.info("resume: removing the unfinished shard %s", p)
                p.unlink(missing_ok=True)
                removed += 1
            elif entry is None or entry.get("file") != p.name:
                log.warning("resume: removing %s, which is not in the manifest (the capture stopped before "
                            "recording it); it will be rewritten", p)
                p.unlink(missing_ok=True)
                removed += 1
            elif _sha256(p) != entry.get("sha256"):
                log.warning("resume: removing %s, whose sha256 does not match the manifest; it will be rewritten", p)
                p.unlink(missing_ok=True)
                removed += 1
            else:
                self.shards[k] = {f: entry[f] for f in ("file", "shard_index", "doc_start", "doc_stop",
                                                         "n_tokens", "sha256")}
                kept += 1
        log.info("resuming store %s: %d finalized shards kept, %d files removed, next document %d",
                 self.path, kept, removed, self.next_doc)
        if self.world_size == 1:  # one process owns everything now: per-rank manifests are superseded
            for p in self.path.glob("manifest-rank*.json"):
                p.unlink(missing_ok=True)

    def _check_header(self, manifest: dict, source: Path) -> None:
        for field, what in _RESUME_FIELDS.items():
            old, new = manifest.get(field), self.header[field]
            if old != new:
                if field in ("model_spec", "weights_hash"):
                    what_old = manifest.get("model_spec")
                    what_new = self.header["model_spec"]
                    if what_old == what_new:
                        what_old, what_new = f"{what_old} (weights hash {old})", f"weights hash {new}"
                    raise StoreError(f"store {self.path} was made with model {what_old}, not {what_new}: "
                                     "use another --out")
                raise StoreError(f"store {self.path} was made with {what} {old}, not {new}: use another --out, "
                                 f"or resume with the same settings ({source.name})")

    def _manifest(self) -> dict:
        return _build_manifest(self.header, self.shards.values())

    def _write_manifest(self) -> None:
        _write_json_atomic(self.manifest_path, self._manifest())

    def _check_doc(self, doc_index: int, doc: DocActs) -> int:
        tokens = np.asarray(doc.tokens)
        positions = np.asarray(doc.positions)
        if tokens.ndim != 1 or positions.shape != tokens.shape:
            raise InputError(f"document {doc_index}: tokens and positions must both be (T,), "
                             f"got {tokens.shape} and {positions.shape}")
        n_rows = int(tokens.shape[0])
        if sorted(int(layer) for layer in doc.acts) != sorted(self.layers):
            raise InputError(f"document {doc_index} has activations for layers {sorted(doc.acts)}, "
                             f"the store holds {self.layers}: capture exactly those layers")
        d_model = self.header["d_model"]
        for layer, acts_TD in doc.acts.items():
            if tuple(acts_TD.shape) != (n_rows, d_model):
                raise InputError(f"document {doc_index}, layer {layer}: activations are {tuple(acts_TD.shape)}, "
                                 f"expected ({n_rows}, {d_model})")
        return n_rows

    def _write_h5(self, tmp: Path, doc_start: int, docs: list[DocActs], n_rows_per_doc: list[int]) -> None:
        n_tokens = int(sum(n_rows_per_doc))
        d_model, dtype = self.header["d_model"], self.dtype
        offsets_N1 = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum(n_rows_per_doc, out=offsets_N1[1:])
        tokens_T = np.concatenate([np.asarray(d.tokens).reshape(-1) for d in docs]).astype(np.int32, copy=False)
        positions_T = np.concatenate([np.asarray(d.positions).reshape(-1) for d in docs]).astype(np.int32, copy=False)
        chunk = min(self.chunk_rows, n_tokens)
        f = _h5_create(tmp)
        try:
            f.attrs["format_version"] = np.int64(STORE_FORMAT_VERSION)
            f.attrs["model_spec"] = self.header["model_spec"]
            f.attrs["layers"] = np.asarray(self.layers, dtype=np.int64)
            f.attrs["doc_start"] = np.int64(doc_start)
            f.attrs["doc_stop"] = np.int64(doc_start + len(docs))
            f.create_dataset("tokens", data=tokens_T, track_times=False)
            f.create_dataset("doc_offsets", data=offsets_N1, track_times=False)
            f.create_dataset("positions", data=positions_T, track_times=False)
            acts = _h5_group(f, "acts")
            for layer in self.layers:
                ds = acts.create_dataset(str(layer), shape=(n_tokens, d_model), dtype=_NP_DTYPES[dtype],
                                         chunks=(chunk, d_model) if chunk else None, track_times=False)
                if dtype == "bfloat16":
                    ds.attrs["dtype"] = "bfloat16"
                # Fill whole chunks from a chunk-sized buffer: no full-shard copy in memory.
                buf_RD = np.empty((max(chunk, 1), d_model), dtype=_NP_DTYPES[dtype])
                filled, written = 0, 0
                for doc in docs:
                    rows_TD = to_storage(doc.acts[layer], dtype)
                    i = 0
                    while i < len(rows_TD):
                        take = min(len(rows_TD) - i, chunk - filled)
                        buf_RD[filled:filled + take] = rows_TD[i:i + take]
                        filled, i = filled + take, i + take
                        if filled == chunk:
                            ds[written:written + chunk] = buf_RD
                            written, filled = written + chunk, 0
                if filled:
                    ds[written:written + filled] = buf_RD[:filled]
        finally:
            f.close()


def _build_manifest(header: dict, entries: Any) -> dict:
    shards = sorted(entries, key=lambda e: e["shard_index"])
    manifest = dict(header)
    manifest["n_docs"] = max((e["doc_stop"] for e in shards), default=0)
    manifest["n_tokens"] = int(sum(e["n_tokens"] for e in shards))
    manifest["shards"] = [dict(e) for e in shards]
    return manifest


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise StoreError(f"the manifest {path} is unreadable ({e}): restore it, or recapture into another --out") from None


def merge_manifests(path: PathLike, world_size: Optional[int] = None) -> None:
    """Merge the per-rank manifests ``manifest-rank{r}.json`` of a data-parallel capture into ``manifest.json``.

    Call it on rank 0 only, **after a barrier** (``accelerator.wait_for_everyone()``), so every
    rank has finished its last shard. ``world_size`` limits the merge to ranks ``0..world_size-1``
    (default: every rank manifest found). Raises ``StoreError`` when the ranks disagree.

    Example:
        >>> accelerator.wait_for_everyone()                    # doctest: +SKIP
        >>> if accelerator.is_main_process: merge_manifests(out)   # doctest: +SKIP
    """
    folder = Path(path)
    if world_size is None:
        sources = sorted((p for p in folder.glob("manifest-rank*.json") if _RANK_MANIFEST_RE.match(p.name)),
                         key=lambda p: int(_RANK_MANIFEST_RE.match(p.name).group(1)))
    else:
        sources = [folder / f"manifest-rank{r}.json" for r in range(world_size)]
        missing = [p.name for p in sources if not p.is_file()]
        if missing:
            raise StoreError(f"store {folder} lacks {', '.join(missing)}: a rank did not open its writer; "
                             "rerun the capture with --resume")
    if not sources:
        raise StoreError(f"no manifest-rank*.json in {folder}: run the data-parallel capture first")
    header: Optional[dict] = None
    entries: dict[int, dict] = {}
    for source in sources:
        manifest = _load_json(source)
        this_header = {k: manifest.get(k) for k in _RESUME_FIELDS}
        if header is None:
            header = this_header
        elif this_header != header:
            diff = [k for k in _RESUME_FIELDS if this_header[k] != header[k]]
            raise StoreError(f"{source.name} in store {folder} disagrees with {sources[0].name} on "
                             f"{', '.join(diff)}: the ranks captured different things; recapture into another --out")
        for entry in manifest.get("shards", []):
            k = int(entry["shard_index"])
            if k in entries and entries[k] != entry:
                raise StoreError(f"{entry['file']} of store {folder} is listed differently by two ranks: "
                                 "rerun the capture with --resume")
            entries[k] = entry
    merged = _build_manifest(header, entries.values())
    dps, n_docs = merged["docs_per_shard"], merged["n_docs"]
    gaps = [shard_name(k) for k in range(-(-n_docs // dps)) if k not in entries]
    if gaps:
        log.warning("store %s is missing shards %s: rerun the capture with --resume", folder, ", ".join(gaps))
    _write_json_atomic(folder / MANIFEST, merged)


# ----------------------------------------------------------------------------------------------
# reader


class ActivationStore:
    """Read an activation store: per document, per layer, batched, or pooled.

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
        self.manifest: dict = _load_json(manifest_path)
        version = self.manifest.get("format_version")
        if version != STORE_FORMAT_VERSION:
            raise StoreError(f"store {self.path} has format version {version}, this code reads version "
                             f"{STORE_FORMAT_VERSION}: recapture it, or use a matching version of the package")
        m = self.manifest
        self.layers: list[int] = [int(layer) for layer in m["layers"]]
        self.d_model: int = int(m["d_model"])
        self.n_docs: int = int(m["n_docs"])
        self.n_tokens: int = int(m["n_tokens"])
        self.dtype: str = m["dtype"]
        self.model_spec: str = m["model_spec"]
        self.weights_hash: str = m["weights_hash"]
        self.docs_per_shard: int = int(m["docs_per_shard"])
        self._shards: dict[int, dict] = {int(e["shard_index"]): e for e in m.get("shards", [])}
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
        return self._read_docs(k, [i], [(start, stop)], start, stop, self.layers)[0][1]

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

    def iter_docs(self, layer: Optional[int] = None, batch_docs: int = 64) -> Iterator[list[tuple[int, DocActs]]]:
        """Yield lists of up to ``batch_docs`` ``(doc_index, DocActs)`` in document order, reading
        shard by shard and batch by batch (memory bounded by one batch). ``layer`` limits
        ``acts`` to that layer.

        Example:
            >>> for batch in store.iter_docs(layer=15, batch_docs=32):   # doctest: +SKIP
            ...     for i, d in batch: use(i, d.acts[15])
        """
        if layer is not None:
            self.check_layer(layer)
        layers = self.layers if layer is None else [int(layer)]
        batch_docs = max(1, int(batch_docs))
        for k in self._ordered_shards():
            offsets_N1 = self._shard_offsets(k)
            doc_start = int(self._shards[k]["doc_start"])
            n = len(offsets_N1) - 1
            for a in range(0, n, batch_docs):
                b = min(n, a + batch_docs)
                ranges = [(int(offsets_N1[j]), int(offsets_N1[j + 1])) for j in range(a, b)]
                yield self._read_docs(k, list(range(doc_start + a, doc_start + b)), ranges,
                                      int(offsets_N1[a]), int(offsets_N1[b]), layers)

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
        problems: list[str] = []
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
        sha = _sha256(path)
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
            ds = check(f"acts/{layer}", (n_tokens, self.d_model), _NP_DTYPES[self.dtype])
            if ds is not None and self.dtype == "bfloat16" and ds.attrs.get("dtype") != "bfloat16":
                problems.append(f"{name}: /acts/{layer} lacks the attribute dtype='bfloat16'")
        attrs = f.attrs
        for key, want in (("doc_start", entry["doc_start"]), ("doc_stop", entry["doc_stop"]),
                          ("format_version", STORE_FORMAT_VERSION)):
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

    def _read_docs(self, k: int, doc_ids: list[int], ranges: list[tuple[int, int]], r0: int, r1: int,
                   layers: list[int]) -> list[tuple[int, DocActs]]:
        """Read rows ``r0:r1`` of shard ``k`` once and split them into documents."""
        def read(f: h5py.File) -> tuple:
            return (f["tokens"][r0:r1], f["positions"][r0:r1], {layer: f["acts"][str(layer)][r0:r1] for layer in layers})

        tokens_R, positions_R, raw = self._read(k, read)
        acts_RD = {layer: from_storage(raw_RD, self.dtype) for layer, raw_RD in raw.items()}
        out = []
        for i, (a, b) in zip(doc_ids, ranges):
            out.append((i, DocActs(tokens=tokens_R[a - r0:b - r0], positions=positions_R[a - r0:b - r0],
                                   acts={layer: t[a - r0:b - r0] for layer, t in acts_RD.items()})))
        return out

    def close(self) -> None:
        """Close the open shard files (the store stays usable; files reopen on demand).

        Example:
            >>> store.close()   # doctest: +SKIP
        """
        for k in list(self._files):
            self._close_shard(k)

    def __enter__(self) -> "ActivationStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"ActivationStore({str(self.path)!r}, model={self.model_spec}, layers={self.layers}, "
                f"n_docs={self.n_docs}, n_tokens={self.n_tokens}, dtype={self.dtype})")
