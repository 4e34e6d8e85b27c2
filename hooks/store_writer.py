"""The store's one writer: shards written atomically under a lock, resumable, data parallel by shard index
(the folder layout is described in :mod:`hooks.store`, the format in docs/design.md)."""
from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from hooks.errors import InputError, StoreError
from hooks.store_format import (DTYPES, HEADER_FIELDS, MANIFEST, NP_DTYPES, RANK_MANIFEST_RE, RESUME_FIELDS, SHARD_RE,
                                SHARD_FORMAT_VERSION, STORE_FORMAT_VERSION, ClosesOnExit, DocActs, PathLike, fsync_file,
                                h5_create, h5_group, normalize_json, owned_by_rank, pid_alive, read_pid, sha256_file,
                                shard_name, to_storage)
from hooks.store_manifest import Manifest, TextsRecord, check_same_texts, check_same_tokens, read_manifest
from hooks.atomic import fsync_dir, write_json_atomic

log = logging.getLogger(__name__)


class StoreWriter(ClosesOnExit):
    """Writes an activation store shard by shard, resumably, one writer per folder (per rank).

    Example:
        >>> with StoreWriter(tmp / "store", model_spec="tiny", weights_hash="h", tokenizer_name="byte",
        ...                  d_model=8, layers=[1], docs_per_shard=2) as w:     # doctest: +SKIP
        ...     for k, start, stop in w.pending_shards(n_docs=5):
        ...         w.write_shard(k, start, [capture(i) for i in range(start, stop)])

    With ``world_size > 1`` every rank writes the shards ``k % world_size == rank`` and its own
    ``manifest-rank{rank}.json``; after a barrier, rank 0 calls :func:`merge_manifests`.

    ``texts`` records what the store is captured from; resuming a store with other texts is refused, naming the
    file it was made from and the one given now (a resuming writer given no ``texts`` keeps the store's record). ``write_shard(..., tokens_sha256=...)`` records a digest of the
    shard's documents' token ids, checked on resume by :meth:`check_kept_tokens`.
    """

    def __init__(self, path: PathLike, *, model_spec: str, weights_hash: str, tokenizer_name: str, d_model: int,
                 layers: list[int], dtype: str = "float32", capture_options: Optional[dict] = None,
                 docs_per_shard: int = 256, resume: bool = False, chunk_rows: int = 1024,
                 rank: int = 0, world_size: int = 1, texts: Optional[TextsRecord] = None) -> None:
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
            "capture_options": normalize_json(capture_options or {}), "docs_per_shard": int(docs_per_shard),
            "texts": texts.to_json() if texts is not None else None,
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

    def write_shard(self, shard_index: int, doc_start: int, docs: list[DocActs],
                    tokens_sha256: Optional[str] = None) -> None:
        """Write documents ``doc_start ..`` as shard ``shard_index``: ``.h5.tmp``, fsync, rename, manifest.
        ``tokens_sha256``: :func:`~hooks.store_manifest.tokens_digest` of the documents' full token ids, recorded in
        the manifest entry.

        Example:
            >>> writer.write_shard(0, 0, [DocActs(tokens_T, positions_T, {3: acts_TD})])   # doctest: +SKIP
        """
        dps = self.docs_per_shard
        if shard_index < 0 or doc_start != shard_index * dps:
            raise InputError(f"shard {shard_index} must start at document {shard_index * dps}, not {doc_start}")
        if not 1 <= len(docs) <= dps:
            raise InputError(f"a shard holds 1 to {dps} documents, got {len(docs)}")
        if not owned_by_rank(shard_index, self.rank, self.world_size):
            raise InputError(f"shard {shard_index} belongs to rank {shard_index % self.world_size}, "
                             f"not rank {self.rank}: write only the shards pending_shards() lists")
        if self._lock is None:
            raise StoreError(f"the writer of store {self.path} is closed: open a new StoreWriter with resume=True")
        n_rows_per_doc = [self._check_doc(doc_start + j, doc) for j, doc in enumerate(docs)]
        final = self.path / shard_name(shard_index)
        tmp = final.with_name(final.name + ".tmp")
        try:
            self._write_h5(tmp, doc_start, docs, n_rows_per_doc)
            fsync_file(tmp)
            sha = sha256_file(tmp)
            os.replace(tmp, final)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            self._raise_if_disk_full(e, final.name)
            raise
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.path)
        self.shards[shard_index] = {
            "file": final.name, "shard_index": shard_index, "doc_start": doc_start,
            "doc_stop": doc_start + len(docs), "n_tokens": int(sum(n_rows_per_doc)), "sha256": sha,
            **({"tokens_sha256": tokens_sha256} if tokens_sha256 is not None else {}),
        }
        self._write_manifest()
        log.debug("wrote %s (%d docs, %d rows)", final, len(docs), sum(n_rows_per_doc))

    def check_kept_tokens(self, docs_tokens: Sequence[Sequence[int]]) -> None:
        """Refuse to continue when a kept shard's documents tokenize differently now (``docs_tokens``: every
        document's full token ids): the same texts through another tokenizer would mix two tokenizations.

        Example:
            >>> writer.check_kept_tokens(docs_tokens)   # doctest: +SKIP
        """
        check_same_tokens(self.path, [entry for _, entry in sorted(self.shards.items())], docs_tokens)

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
                pid = read_pid(lock)
                if pid is not None and pid_alive(pid):
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
            pid = read_pid(self.path / name)
            if pid is not None and pid != os.getpid() and pid_alive(pid):
                self._release_lock()
                raise StoreError(f"store {self.path} is being written by process {pid}: "
                                 f"wait for it, or delete {self.path / name} if that process is dead")

    def _release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None and read_pid(lock) == os.getpid():
            lock.unlink(missing_ok=True)

    def _mine(self, name: str) -> bool:
        """Is ``name`` a shard file (final or tmp) of a shard this rank owns?"""
        m = SHARD_RE.match(name)
        return bool(m) and owned_by_rank(int(m.group(1)), self.rank, self.world_size)

    def _existing(self) -> bool:
        names = {p.name for p in self.path.iterdir()}
        if MANIFEST in names or self.manifest_path.name in names or any(self._mine(n) for n in names):
            return True
        # single process: any other rank's leftovers also make this an existing store
        return self.world_size == 1 and any(RANK_MANIFEST_RE.match(n) for n in names)

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
            manifest = read_manifest(source)
            self._check_header(manifest, source)
            for entry in manifest.shards:   # an entry that does not parse is no finalized shard: rewritten
                known.setdefault(entry.shard_index, entry.to_json())
        kept, removed = 0, 0
        for p in sorted(self.path.iterdir()):
            if p.name.endswith(".json.tmp") and (p.name == MANIFEST + ".tmp" or p.name == self.manifest_path.name + ".tmp"):
                p.unlink(missing_ok=True)
                continue
            if not self._mine(p.name):
                continue
            k = int(SHARD_RE.match(p.name).group(1))
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
            elif sha256_file(p) != entry.get("sha256"):
                log.warning("resume: removing %s, whose sha256 does not match the manifest; it will be rewritten", p)
                p.unlink(missing_ok=True)
                removed += 1
            else:
                self.shards[k] = dict(entry)
                kept += 1
        log.info("resuming store %s: %d finalized shards kept, %d files removed, next document %d",
                 self.path, kept, removed, self.next_doc)
        if self.world_size == 1:  # one process owns everything now: per-rank manifests are superseded
            for p in self.path.glob("manifest-rank*.json"):
                p.unlink(missing_ok=True)

    def _check_header(self, parsed: Manifest, source: Path) -> None:
        manifest = parsed.header()
        if manifest["format_version"] == 1 and self.header["texts"] is None:
            # a v1 store has the v2 layout and records no texts: a writer of no texts (an oracle's example cache)
            # continues it, and the manifest becomes v2
            manifest["format_version"] = self.header["format_version"]
        for field, what in RESUME_FIELDS.items():
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
        self._check_texts(parsed.texts)

    def _check_texts(self, old: Optional[TextsRecord]) -> None:
        new = self.header["texts"]
        if new is None:   # a writer told nothing of the texts (a library caller) keeps the store's record
            self.header["texts"] = old.to_json() if old is not None else None
            return
        check_same_texts(self.path, old, TextsRecord(**new))

    def _manifest(self) -> dict:
        return _build_manifest(self.header, self.shards.values())

    def _write_manifest(self) -> None:
        try:
            write_json_atomic(self.manifest_path, self._manifest())
        except OSError as e:
            self._raise_if_disk_full(e, self.manifest_path.name)
            raise

    def _raise_if_disk_full(self, e: OSError, name: str) -> None:
        """A full disk is the user's to fix, not a bug: one line, and the store stays valid for --resume (the
        shard being written is dropped; the manifest still lists only whole shards)."""
        # h5py reports a full disk as an OSError whose text carries errno 28
        if e.errno == errno.ENOSPC or "No space left" in str(e) or "errno = 28" in str(e):
            raise StoreError(f"no space left on the device writing {name} in {self.path}: free some space, then "
                             f"rerun with --resume ({len(self.shards)} shards are kept)") from None

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
        f = h5_create(tmp)
        try:
            f.attrs["format_version"] = np.int64(SHARD_FORMAT_VERSION)
            f.attrs["model_spec"] = self.header["model_spec"]
            f.attrs["layers"] = np.asarray(self.layers, dtype=np.int64)
            f.attrs["doc_start"] = np.int64(doc_start)
            f.attrs["doc_stop"] = np.int64(doc_start + len(docs))
            f.create_dataset("tokens", data=tokens_T, track_times=False)
            f.create_dataset("doc_offsets", data=offsets_N1, track_times=False)
            f.create_dataset("positions", data=positions_T, track_times=False)
            acts = h5_group(f, "acts")
            for layer in self.layers:
                ds = acts.create_dataset(str(layer), shape=(n_tokens, d_model), dtype=NP_DTYPES[dtype],
                                         chunks=(chunk, d_model) if chunk else None, track_times=False)
                if dtype == "bfloat16":
                    ds.attrs["dtype"] = "bfloat16"
                # Fill whole chunks from a chunk-sized buffer: no full-shard copy in memory.
                buf_RD = np.empty((max(chunk, 1), d_model), dtype=NP_DTYPES[dtype])
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
        sources = sorted((p for p in folder.glob("manifest-rank*.json") if RANK_MANIFEST_RE.match(p.name)),
                         key=lambda p: int(RANK_MANIFEST_RE.match(p.name).group(1)))
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
        parsed = read_manifest(source)
        this_header = parsed.header()
        if header is None:
            header = this_header
        elif this_header != header:
            diff = [k for k in HEADER_FIELDS if this_header[k] != header[k]]
            raise StoreError(f"{source.name} in store {folder} disagrees with {sources[0].name} on "
                             f"{', '.join(diff)}: the ranks captured different things; recapture into another --out")
        for parsed_entry in parsed.shards:
            k, entry = parsed_entry.shard_index, parsed_entry.to_json()
            if k in entries and entries[k] != entry:
                raise StoreError(f"{entry['file']} of store {folder} is listed differently by two ranks: "
                                 "rerun the capture with --resume")
            entries[k] = entry
    merged = _build_manifest(header, entries.values())
    dps, n_docs = merged["docs_per_shard"], merged["n_docs"]
    gaps = [shard_name(k) for k in range(-(-n_docs // dps)) if k not in entries]
    if gaps:
        log.warning("store %s is missing shards %s: rerun the capture with --resume", folder, ", ".join(gaps))
    write_json_atomic(folder / MANIFEST, merged)
