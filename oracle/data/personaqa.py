"""The PersonaQA profiles (``personaqa/<variant>/personas.jsonl``): a name and six attributes per person, and the
one sentence that states them.

Example:
    >>> p = personas(None)[0]
    >>> persona_text(p).startswith(p["name"] + " is from ")
    True
"""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Optional

from oracle.data.files import PathLike, data_file, resolve_data_dir

VARIANTS = ("base", "fantasy", "shuffled")
ATTRIBUTES = ("country", "favorite_food", "favorite_drink", "favorite_music_genre", "favorite_sport",
              "favorite_boardgame")


@lru_cache(maxsize=4)
def _personas(root: str) -> tuple[dict, ...]:
    rows = []
    for variant in VARIANTS:
        for line in data_file(root, f"personaqa/{variant}/personas.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                rows.append(json.loads(line))
    return tuple(rows)


def personas(data_dir: Optional[PathLike] = None) -> tuple[dict, ...]:
    """Every profile of the three variants (:data:`VARIANTS`), in file order; each a dict with ``name`` and the
    :data:`ATTRIBUTES`.

    Example:
        >>> sorted({p["variant"] for p in personas()})
        ['base', 'fantasy', 'shuffled']
    """
    return _personas(str(resolve_data_dir(data_dir)))


def persona_text(p: dict) -> str:
    """One sentence about a persona, every attribute named.

    Example:
        >>> persona_text({"name": "Ana", "country": "Chile", "favorite_food": "Pastel", "favorite_drink": "Tea",
        ...               "favorite_music_genre": "Jazz", "favorite_sport": "Tennis", "favorite_boardgame": "Go"})
        'Ana is from Chile, loves Pastel and Tea, listens to Jazz, plays Tennis and enjoys Go.'
    """
    return (f"{p['name']} is from {p['country']}, loves {p['favorite_food']} and {p['favorite_drink']}, listens to "
            f"{p['favorite_music_genre']}, plays {p['favorite_sport']} and enjoys {p['favorite_boardgame']}.")
