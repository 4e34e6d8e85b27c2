"""Store format v2 (v1 still read): names, dtypes, the per-document record, and the file helpers (atomic JSON, fsync,
checksums, locks) shared by the writer and the reader. The folder layout is described in :mod:`hooks.store`."""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TypeVar, Union

import h5py
import numpy as np
import torch

from hooks.dtypes import parse_dtype
from hooks.errors import InputError, StoreError

STORE_FORMAT_VERSION = 2   # v2: the manifest records the texts (``texts``) and each shard's ``tokens_sha256``
SHARD_FORMAT_VERSION = 1   # the shard layout (stamped in each shard's attributes): unchanged since v1
MANIFEST = "manifest.json"
DTYPES = ("float32", "float16", "bfloat16")
NP_DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16), "bfloat16": np.dtype(np.uint16)}
TORCH_DTYPES = {name: parse_dtype(name) for name in DTYPES}
SHARD_RE = re.compile(r"^shard-(\d{5,})\.h5(\.tmp)?$")
RANK_MANIFEST_RE = re.compile(r"^manifest-rank(\d+)\.json$")


def is_store_file(name: str) -> bool:
    """Whether a file name is one a store writes (manifests, shards, locks)."""
    return (name == MANIFEST or name.startswith(".lock") or bool(SHARD_RE.match(name))
            or bool(RANK_MANIFEST_RE.match(name)))


# Manifest fields that must match when a capture is resumed (field -> what the user calls it).
RESUME_FIELDS = {
    "format_version": "format version", "model_spec": "model", "weights_hash": "model weights (hash)",
    "tokenizer": "tokenizer", "d_model": "d_model", "layers": "layers", "dtype": "dtype",
    "capture_options": "capture options", "docs_per_shard": "docs_per_shard",
}
# The manifest's header: the resume fields, and what the store was captured from (checked on resume on its own,
# naming both text files: see StoreWriter).
HEADER_FIELDS = (*RESUME_FIELDS, "texts")
PathLike = Union[str, "os.PathLike[str]"]


def shard_name(shard_index: int) -> str:
    """File name of shard ``shard_index``.

    Example:
        >>> shard_name(3)
        'shard-00003.h5'
    """
    return f"shard-{shard_index:05d}.h5"


_Self = TypeVar("_Self", bound="ClosesOnExit")


class ClosesOnExit:
    """A ``with`` block that calls ``close()`` on leaving: the store's reader and writer.

    Example:
        >>> class Shut(ClosesOnExit):
        ...     def close(self): print("closed")
        >>> with Shut():
        ...     pass
        closed
    """

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


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


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)




def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def normalize_json(obj: Any) -> Any:
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
    acts_TD = acts_TD.detach().to("cpu", TORCH_DTYPES[dtype]).contiguous()
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


def pid_alive(pid: int) -> bool:
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


def read_pid(lock: Path) -> Optional[int]:
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):
        return None


def owned_by_rank(shard_index: int, rank: int, world_size: int) -> bool:
    return shard_index % world_size == rank


def h5_create(path: Path) -> h5py.File:
    """Create an HDF5 file with no timestamps and fixed format bounds, so equal content gives equal bytes."""
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_EARLIEST, h5py.h5f.LIBVER_V110)
    fid = h5py.h5f.create(os.fsencode(path), h5py.h5f.ACC_TRUNC, fapl=fapl, fcpl=fcpl)
    return h5py.File(fid)


def h5_group(parent: h5py.Group, name: str) -> h5py.Group:
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    return h5py.Group(h5py.h5g.create(parent.id, name.encode(), gcpl=gcpl))

def load_json(path: Path) -> Any:
    """A manifest's JSON value (checked by :mod:`hooks.store_manifest`), or one StoreError line when it is
    unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise StoreError(f"the manifest {path} is unreadable ({e}): restore it, or recapture into another --out") from None
