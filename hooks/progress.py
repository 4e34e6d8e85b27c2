"""The one progress-bar set-up: a tqdm bar on stderr that fits the terminal, or nothing.

Example:
    >>> progress_bar(10, "capture", enabled=False) is None
    True
"""
from __future__ import annotations

from typing import Any, Optional


def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "it", initial: int = 0) -> Optional[Any]:
    """A tqdm bar over ``total`` items (``initial`` of them already done, for a resumed job), or None when disabled
    or there is nothing to do (callers test ``if bar``)."""
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)
