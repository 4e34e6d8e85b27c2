"""Where the shared public data lives (never copied into the repo)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from .errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir(explicit: Optional[Union[str, Path]] = None) -> Path:
    """The shared data folder: ``explicit``, else ``$AO_DATA_DIR``, else ``../shared/data`` beside the repo.

    Example:
        >>> data_dir().name
        'data'
    """
    candidate = explicit or os.environ.get("AO_DATA_DIR") or REPO_ROOT.parent / "shared" / "data"
    path = Path(candidate).expanduser()
    if not path.is_dir():
        raise InputError(f"no data folder at {path}: pass --data-dir or set AO_DATA_DIR to the shared/data folder")
    return path
