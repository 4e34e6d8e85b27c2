"""The registry of the public data (``hooks/data_registry.json``): every file of the shared data folder with its
size, its sha256 and where it comes from (a file at a pinned commit of a public repository, or ``package``: shipped
in ``hooks/shipped_data/``), plus named groups of files. :func:`check_folder` compares a folder with it;
``hooks.data_fetch`` downloads what a folder lacks. Written by ``scripts/make_data_registry.py``.

Example:
    >>> reg = load_registry()
    >>> len(reg.files), reg.select(["reading"])[0].path
    (175, 'LICENSES.md')
    >>> reg.file("text/tinyshakespeare.txt").url()
    'https://raw.githubusercontent.com/karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/data/tinyshakespeare/input.txt'
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import quote

from hooks.errors import InputError

log = logging.getLogger(__name__)

REGISTRY_PATH = Path(__file__).resolve().parent / "data_registry.json"
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped_data"
PACKAGE = "package"


@dataclass(frozen=True)
class DataFile:
    """One file of the folder: ``path`` relative to it, and where an exact copy comes from."""

    path: str
    size: int
    sha256: str
    source: str                        # a key of the registry's sources, or "package"
    upstream: Optional[str] = None     # path inside the source repository at its pinned commit
    repo: Optional[str] = None
    commit: Optional[str] = None
    base_url: str = ""

    def url(self, base_url: Optional[str] = None) -> Optional[str]:
        """``{base_url}/{owner}/{repo}/{commit}/{upstream}`` (the raw.githubusercontent.com layout), or None for a
        file shipped in the package."""
        if self.source == PACKAGE:
            return None
        base = (base_url or self.base_url).rstrip("/")
        return f"{base}/{self.repo}/{self.commit}/{quote(self.upstream or '')}"


@dataclass(frozen=True)
class Registry:
    files: tuple[DataFile, ...]
    groups: dict = field(default_factory=dict)        # name -> {"help": str, "prefixes": [str, ...]}
    sources: dict = field(default_factory=dict)

    def file(self, path: str) -> DataFile:
        for f in self.files:
            if f.path == path:
                return f
        raise InputError(f"{path} is not a file of the data registry")

    def select(self, groups: Sequence[str] = ()) -> list[DataFile]:
        """The files of ``groups`` (every file when empty), in registry order; an unknown name is an InputError."""
        names = list(groups) or ["all"]
        bad = [g for g in names if g not in self.groups]
        if bad:
            raise InputError(f"unknown data group {', '.join(bad)}: use {', '.join(self.groups)}")
        prefixes = [p for g in names for p in self.groups[g]["prefixes"]]
        return [f for f in self.files if any(_under(f.path, p) for p in prefixes)]


    def group_of(self, path: str) -> str:
        """The smallest group holding ``path`` (``all`` when only it does), for hints such as
        ``ao data fetch reading``."""
        named = [(sum(1 for f in self.files if any(_under(f.path, p) for p in g["prefixes"])), name)
                 for name, g in self.groups.items() if name != "all"
                 and any(_under(path, p) for p in g["prefixes"])]
        return min(named)[1] if named else "all"


def _under(path: str, prefix: str) -> bool:
    return prefix == "" or path == prefix or (prefix.endswith("/") and path.startswith(prefix))


@lru_cache(maxsize=1)
def load_registry(path: Path = REGISTRY_PATH) -> Registry:
    """The registry shipped with the package."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    sources = raw["sources"]
    files = tuple(DataFile(path=f["path"], size=int(f["size"]), sha256=f["sha256"], source=f["source"],
                           upstream=f.get("upstream"), repo=sources.get(f["source"], {}).get("repo"),
                           commit=sources.get(f["source"], {}).get("commit"), base_url=raw["base_url"])
                  for f in raw["files"])
    return Registry(files=files, groups=raw["groups"], sources=sources)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_intact(folder: Path, f: DataFile) -> bool:
    """True when ``folder/f.path`` exists with the registered size and sha256."""
    p = Path(folder) / f.path
    return p.is_file() and p.stat().st_size == f.size and sha256_of(p) == f.sha256


@dataclass
class CheckResult:
    """What :func:`check_folder` found: files absent, and files present with other bytes."""

    folder: Path
    checked: int
    missing: list[str]
    altered: list[str]

    @property
    def ok(self) -> bool:
        return not self.missing and not self.altered


def check_folder(folder: Path, groups: Sequence[str] = (), registry: Optional[Registry] = None) -> CheckResult:
    """Compare ``folder`` with the registry (the files of ``groups``, or all): every file must be there with its
    registered sha256. Files the registry doesn't list are ignored."""
    reg = registry or load_registry()
    files = reg.select(groups)
    missing, altered = [], []
    for f in files:
        p = Path(folder) / f.path
        if not p.is_file():
            missing.append(f.path)
        elif not is_intact(folder, f):
            altered.append(f.path)
    log.info("checked %d files in %s: %d missing, %d altered", len(files), folder, len(missing), len(altered))
    return CheckResult(Path(folder), len(files), missing, altered)
