"""Atomic file writes, the one place they are written: a temporary file in the same folder, fsync, then
``os.replace``, so a reader sees the old file or the new one, never half of one, and a crash leaves no
partial file under the final name.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
    >>> _ = write_json_atomic(p, {"x": 1})
    >>> p.read_text()
    '{\\n "x": 1\\n}\\n'
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Union

PathLike = Union[str, os.PathLike]


def fsync_dir(path: PathLike) -> None:
    """Flush a folder's entries (a rename inside it survives a power cut); a no-op where folders can't be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: PathLike, write: Callable[[str], None], durable: bool = False) -> Path:
    """Call ``write(tmp_path)`` to produce the file, then move it to ``path`` (``durable``: fsync the folder
    too). The temporary file is removed when ``write`` fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: PathLike, data: bytes, durable: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (fsync before the rename)."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, write, durable)


def atomic_write_text(path: PathLike, text: str, durable: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), durable)


def write_json_atomic(path: PathLike, obj: Any, indent: int = 1, durable: bool = True, **dumps: Any) -> Path:
    """Write ``obj`` as JSON (one trailing newline) atomically; by default the folder is fsynced too."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, **dumps) + "\n", durable)


def save_figure(fig: Any, path: PathLike, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically as PNG and close it."""
    import matplotlib.pyplot as plt

    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    finally:
        plt.close(fig)
