"""Where the shared data lives and how a file of it is opened: a missing file is an error that names the
`ao data fetch` command that gets it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from hooks.data_registry import load_registry
from hooks.errors import InputError
from hooks.paths import data_dir as _data_dir
from hooks.paths import fetch_dir

PathLike = Union[str, Path]


def resolve_data_dir(data_dir: Optional[PathLike] = None) -> Path:
    """The shared data folder: the one resolver, :func:`hooks.paths.data_dir` (this name is kept for the task
    builders)."""
    return _data_dir(data_dir)


def data_file(data_dir: Optional[PathLike], relative: str) -> Path:
    """``data_dir / relative``, or an InputError naming the missing file.

    Example:
        >>> data_file(None, "text/tinyshakespeare.txt").name
        'tinyshakespeare.txt'
    """
    root = resolve_data_dir(data_dir)
    path = root / relative
    if not path.exists():
        fetch = f"ao data fetch {load_registry().group_of(relative)}"
        if root != fetch_dir():   # where a bare `ao data fetch` would not write
            fetch += f" --data-dir {root}"
        raise InputError(f"missing data file {path}: run `{fetch}` (or point --data-dir / AO_DATA_DIR at a complete "
                         f"shared/data folder)")
    return path


def read_lines(path: PathLike) -> list[str]:
    """The non-empty lines of a text file, stripped.

    Example:
        >>> read_lines(data_file(None, "taboo/taboo_words.txt"))[:2]
        ['blue', 'book']
    """
    return [s.strip() for s in Path(path).read_text(encoding="utf-8").splitlines() if s.strip()]
