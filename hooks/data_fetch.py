"""Download the public data into a folder with ``pooch``: each missing or altered file of the chosen groups comes
from its pinned upstream URL into a temporary file beside it, is checked against its registered sha256, and only
then takes its name (so a failure never leaves a partial file, and a rerun resumes with the files still missing).
Files shipped in the package are copied the same way. See :mod:`hooks.data_registry`.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from hooks.atomic import atomic_write
from hooks.data_registry import PACKAGE, SHIPPED_DIR, DataFile, Registry, is_intact, load_registry
from hooks.errors import DataError
from hooks.progress import progress_bar

log = logging.getLogger(__name__)

ENV_URL = "AO_DATA_URL"     # replaces https://raw.githubusercontent.com (a mirror with the same layout, or a test server)
DEFAULT_TIMEOUT_S = 30.0


@dataclass
class FetchReport:
    """What :func:`fetch` did: files downloaded or copied now, and files that were already intact."""

    folder: Path
    fetched: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    bytes_fetched: int = 0


def base_url(explicit: Optional[str] = None) -> Optional[str]:
    """The base URL override: ``explicit``, else ``$AO_DATA_URL``, else None (the registry's own)."""
    return explicit or os.environ.get(ENV_URL) or None


def _reason(e: BaseException) -> str:
    """One short phrase for a download failure."""
    import requests

    if isinstance(e, requests.HTTPError) and e.response is not None:
        return f"HTTP {e.response.status_code} {e.response.reason or ''}".strip()
    if isinstance(e, requests.Timeout):
        return "the server did not answer in time"
    text = str(e)
    if isinstance(e, requests.exceptions.ChunkedEncodingError) or "IncompleteRead" in text:
        return "the connection broke mid-file"
    if isinstance(e, requests.ConnectionError):
        return "connection refused" if "refused" in text.lower() else "the server could not be reached"
    if isinstance(e, ValueError) and "hash" in str(e).lower():
        return "its sha256 differs from the registry's (the server holds another version)"
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return first[:200]


def _copy_shipped(folder: Path, f: DataFile) -> None:
    src = SHIPPED_DIR / f.path
    atomic_write(folder / f.path, lambda tmp: shutil.copyfile(src, tmp))
    if not is_intact(folder, f):
        (folder / f.path).unlink()
        raise DataError(f"the shipped copy of {f.path} differs from the registry: reinstall the package")


def fetch(folder: Path, groups: Sequence[str] = (), url: Optional[str] = None, retries: int = 2,
          timeout_s: float = DEFAULT_TIMEOUT_S, progress: bool = False,
          registry: Optional[Registry] = None) -> FetchReport:
    """Bring ``folder`` up to the registry for ``groups`` (every file when empty): download what is missing or
    altered, verified by sha256. ``url`` replaces the upstream host (``$AO_DATA_URL``); ``retries`` more tries per
    file. A file that can't be fetched raises :class:`DataError` naming it; the files fetched before it stay."""
    import pooch

    reg = registry or load_registry()
    folder = Path(folder).expanduser()
    files = reg.select(groups)
    report = FetchReport(folder)
    todo = []
    for f in files:
        if is_intact(folder, f):
            report.present.append(f.path)
        else:
            todo.append(f)
    todo.sort(key=lambda f: f.source == PACKAGE)   # downloads first: a server that is down leaves nothing behind
    if not todo:
        log.info("all %d files already in %s", len(files), folder)
        return report
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the data folder {folder}: {e.strerror or e}: pass --data-dir a writable "
                        f"folder") from None
    pooch.get_logger().setLevel(logging.WARNING)   # we log per file ourselves
    override = base_url(url)
    remote = [f for f in todo if f.source != PACKAGE]
    store = pooch.create(path=folder, base_url="", retry_if_failed=max(0, int(retries)),
                         registry={f.path: f"sha256:{f.sha256}" for f in remote},
                         urls={f.path: f.url(override) for f in remote})
    downloader = pooch.HTTPDownloader(progressbar=False, timeout=timeout_s)
    bar = progress_bar(sum(f.size for f in todo), "ao data fetch", enabled=progress, unit="B")
    if bar:
        bar.unit_scale = True
    try:
        for f in todo:
            try:
                if f.source == PACKAGE:
                    _copy_shipped(folder, f)
                else:
                    log.info("fetching %s from %s", f.path, f.url(override))
                    store.fetch(f.path, downloader=downloader)
            except DataError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure is one line naming the file
                where = "the package" if f.source == PACKAGE else f.url(override)
                raise DataError(f"could not fetch {f.path} from {where}: {_reason(e)} ({len(report.fetched)} of "
                                f"{len(todo)} missing files fetched into {folder}; rerun `ao data fetch` to "
                                f"resume)") from None
            report.fetched.append(f.path)
            report.bytes_fetched += f.size
            if bar:
                bar.update(f.size)
    finally:
        if bar:
            bar.close()
    log.info("fetched %d files into %s (%d already there)", len(report.fetched), folder, len(report.present))
    return report
