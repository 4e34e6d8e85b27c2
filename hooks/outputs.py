"""Output paths: the one check every command that writes runs before any work, and the guard that leaves no
folder behind when a run is refused after making one.

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> check_output_path(root / "run")                     # a new folder: fine
    PosixPath('...run')
    >>> (root / "f").write_text("x") and None
    >>> check_output_path(root / "f")                       # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    hooks.errors.InputError: ... is a file ...
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator, Union

from hooks.errors import AOError, InputError

PathLike = Union[str, Path]
#: virtual file systems nothing is ever written into
_SYSTEM_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_path(path: PathLike, *, is_file: bool = False, flag: str = "--out") -> Path:
    """``path`` as a :class:`Path` when a command may write there, else an :class:`InputError` in one line:
    an existing file where a folder goes (or a folder where a file goes), a path below a file, a system folder,
    or a place this user cannot write."""
    p = Path(path).expanduser()
    if str(path).strip() == "":
        raise InputError(f"{flag} is empty: name a {'file' if is_file else 'folder'} to write")
    absolute = p.absolute()
    system = next((r for r in _SYSTEM_ROOTS if absolute == r or r in absolute.parents), None)
    if system is not None:
        raise InputError(f"{flag} {p} lies in the system folder {system}: choose a folder of your own")
    if p.exists():
        if is_file and p.is_dir():
            raise InputError(f"{flag} {p} is a folder: name a file to write")
        if not is_file and not p.is_dir():
            raise InputError(f"{flag} {p} is a file: choose a folder (a new or empty one) for {flag}")
    anchor = _nearest_existing(absolute if not p.exists() else absolute.parent)
    if not anchor.is_dir():
        raise InputError(f"{flag} {p} lies below the file {anchor}: choose a path whose parents are folders")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {p}: cannot write in {anchor} (permission denied): choose a writable place")
    return p


@contextlib.contextmanager
def removed_on_failure(folder: PathLike) -> Iterator[Path]:
    """Remove ``folder`` again when the block refuses the run (an :class:`AOError`) and the folder did not exist
    before it, so a refusal leaves nothing that blocks the corrected rerun. Other failures and Ctrl-C keep the
    folder: it may hold checkpoints to resume from. An existing folder is left as it was."""
    p = Path(folder)
    existed = p.exists()
    try:
        yield p
    except AOError:
        if not existed and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        raise
