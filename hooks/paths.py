"""Where the shared public data lives (never copied into the repo): the one resolver every command uses.

Order: an explicit folder (``--data-dir``), ``$AO_DATA_DIR``, ``../shared/data`` beside the repository, then the
user's data folder (the platform's user cache, where ``ao data fetch`` puts the files).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from hooks.errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV_DIR = "AO_DATA_DIR"
FETCH_HINT = "run `ao data fetch` to download the public data (or pass --data-dir / set AO_DATA_DIR)"


#: the folder of the checkpoints the repository ships (oracles and model organisms)
SHIPPED = "checkpoints"


def shipped_path(path: Union[str, Path]) -> Path:
    """The one rule for a checkpoint path a user names: as given (relative to the working directory); a relative
    path that is not there and names a shipped checkpoint (``checkpoints/...``) is the repository's copy, so
    ``ao demo`` and the default ``--oracle`` work from any folder.

    Example:
        >>> shipped_path("checkpoints/oracle-smollm2-135m").resolve() == REPO_ROOT / "checkpoints/oracle-smollm2-135m"
        True
        >>> shipped_path("runs/my-oracle")
        PosixPath('runs/my-oracle')
    """
    p = Path(path).expanduser()
    if not p.exists() and not p.is_absolute() and p.parts[:1] == (SHIPPED,) and (REPO_ROOT / p).exists():
        return REPO_ROOT / p
    return p


def repo_data_dir() -> Path:
    """``../shared/data`` beside the repository (the workspace's copy)."""
    return REPO_ROOT.parent / "shared" / "data"


def user_data_dir() -> Path:
    """The user's data folder: ``$AO_CACHE_DIR/data`` when set (the model cache's root too), else
    ``<user cache>/activation-oracles/data`` (``~/.cache/activation-oracles/data`` on Linux)."""
    root = os.environ.get("AO_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "data"
    from platformdirs import user_cache_path

    return user_cache_path("activation-oracles", appauthor=False) / "data"


def fetch_dir(explicit: Optional[Union[str, Path]] = None) -> Path:
    """Where ``ao data fetch`` writes: ``explicit``, else ``$AO_DATA_DIR``, else :func:`user_data_dir` (never the
    workspace's ``../shared/data``). The folder need not exist yet."""
    return Path(explicit or os.environ.get(ENV_DIR) or user_data_dir()).expanduser()


def data_dir(explicit: Optional[Union[str, Path]] = None) -> Path:
    """The data folder: ``explicit``, else ``$AO_DATA_DIR``, else ``../shared/data`` beside the repo, else the
    user's data folder. A folder named by the first two must exist; an InputError names ``ao data fetch``.

    Example:
        >>> data_dir().name
        'data'
    """
    named = explicit or os.environ.get(ENV_DIR)
    if named:
        path = Path(named).expanduser()
        if not path.is_dir():
            how = "--data-dir" if explicit else ENV_DIR
            raise InputError(f"no data folder at {path} (from {how}): run `ao data fetch --data-dir {path}` to "
                             f"download the public data there, or point {how} at a shared/data folder")
        return path
    for path in (repo_data_dir(), user_data_dir()):
        if path.is_dir():
            return path
    raise InputError(f"no data folder (looked at {repo_data_dir()} and {user_data_dir()}): {FETCH_HINT}")
