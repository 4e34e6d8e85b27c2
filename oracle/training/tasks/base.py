"""The training/eval example type of the oracle and the helpers every task builder shares.

An :class:`OracleExample` says: run the target model over ``context_ids``, read the residual stream
of block ``layer`` at ``positions``, inject those K vectors into the oracle prompt, and train (or
score) the oracle to answer ``question`` with ``answer``.
"""
from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Protocol

from hooks.atomic import atomic_write_text
from hooks.errors import InputError
from hooks.layers import source_layers
from oracle.core.yes_no import YES_NO_PREFIX   # noqa: F401  (re-exported: the task builders ask yes/no this way)
from oracle.data.files import PathLike

log = logging.getLogger(__name__)


class TaskBuilder(Protocol):
    """What every task family's ``build_<family>`` function is: ``n`` examples for ``split`` ("train" or
    "eval"), reproducible from ``seed``, reading data from ``data_dir``; family-specific options are keyword
    arguments. :data:`oracle.training.tasks.mix.BUILDERS` maps each family to its builder (its keys are the
    families, :data:`oracle.training.tasks.mix.FAMILIES`)."""

    def __call__(self, tokenizer: Any, n_layers: int, n: int, seed: int, data_dir: Optional["PathLike"] = None,
                 split: str = "train", **options: Any) -> list["OracleExample"]: ...


MAX_POSITIONS = 50
#: the fixed read of a text's end, spelled in the positions grammar (hooks.positions): its last MAX_POSITIONS tokens
#: (every token of a shorter text). Tasks name their fixed reads in that grammar (``last``, this); the modes they
#: draw at random (``near_end``, ``window``, ``user_turn``, ``mixed``) are words the grammar does not use.
LAST_MAX = f"last:{MAX_POSITIONS}"
#: the name a mode had when seeds were first drawn from it (kept in the seed, so every drawn item stays the same)
SEED_NAMES = {LAST_MAX: "full"}
YES, NO = "Yes", "No"


@dataclass
class OracleExample:
    """One oracle training or evaluation example.

    Example:
        >>> ex = OracleExample("classification", [504, 2365, 30], [2], 15, "Is this true?", "Yes", "gmt/cities")
        >>> len(ex.positions), ex.answer
        (1, 'Yes')
    """

    family: str                 # one of oracle.training.tasks.mix.FAMILIES
    context_ids: list[int]      # target-model input token ids (chat-formatted where the source is a chat)
    positions: list[int]        # indices into context_ids whose activations are injected (K = 1..50)
    layer: int                  # source layer (0-based block index) to read activations from
    question: str
    answer: str
    dataset: str = ""           # e.g. "gmt/cities", "sst2", "wikitext2_valid", "latentqa/system"
    meta: dict = field(default_factory=dict)   # e.g. {"label": 1} for classification, {"split": "train"}

    def to_dict(self) -> dict:
        """Plain-JSON dict of the example."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "OracleExample":
        """Inverse of :meth:`to_dict`; raises InputError on a malformed record."""
        try:
            return cls(family=str(d["family"]), context_ids=[int(i) for i in d["context_ids"]],
                       positions=[int(p) for p in d["positions"]], layer=int(d["layer"]),
                       question=str(d["question"]), answer=str(d["answer"]), dataset=str(d.get("dataset", "")),
                       meta=dict(d.get("meta") or {}))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"malformed oracle example record ({type(e).__name__}: {e}): "
                             f"expected the OracleExample fields") from None


def balanced_layers(rng: random.Random, n: int, n_layers: int) -> list[int]:
    """``n`` source layers, one third at each depth of :func:`source_layers`, in random order.

    Example:
        >>> sorted(set(balanced_layers(random.Random(0), 6, 30)))
        [7, 15, 22]
    """
    depths = source_layers(n_layers)
    start = rng.randrange(len(depths))
    out = [depths[(start + i) % len(depths)] for i in range(n)]
    rng.shuffle(out)
    return out


def check_n(n: int) -> int:
    """Validate an example count."""
    if int(n) < 0:
        raise InputError(f"the number of examples must be >= 0, got {n}")
    return int(n)


def save_examples(examples: Iterable[OracleExample], path: PathLike) -> Path:
    """Write examples as JSON Lines (one plain-JSON object per line), atomically.

    Example:
        >>> import tempfile, os
        >>> p = save_examples([OracleExample("classification", [1, 2], [1], 0, "Q?", "Yes")],
        ...                   os.path.join(tempfile.mkdtemp(), "ex.jsonl"))
        >>> load_examples(p)[0].answer
        'Yes'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(ex.to_dict(), ensure_ascii=False) for ex in examples]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    log.info("saved %d oracle examples to %s", len(lines), path)
    return path


def load_examples(path: PathLike) -> list[OracleExample]:
    """Read examples written by :func:`save_examples` (plain JSON only, never pickle)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no example file at {path}: build one with save_examples(...) first")
    out = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{lineno} is not valid JSON ({e.msg}): the file is corrupt") from None
            out.append(OracleExample.from_dict(record))
    return out


def allocate(n: int, weights: dict[str, float]) -> dict[str, int]:
    """Split ``n`` into integer counts proportional to ``weights`` (largest remainder).

    Example:
        >>> allocate(10, {"a": 0.4, "b": 0.4, "c": 0.2})
        {'a': 4, 'b': 4, 'c': 2}
    """
    if any(w < 0 for w in weights.values()):
        raise InputError(f"weights must be >= 0, got {weights}")
    total = sum(weights.values())
    if total <= 0:
        raise InputError(f"weights must have a positive sum, got {weights}")
    raw = {k: n * w / total for k, w in weights.items()}
    counts = {k: int(v) for k, v in raw.items()}
    rest = n - sum(counts.values())
    for k in sorted(raw, key=lambda k: (-(raw[k] - counts[k]), list(raw).index(k)))[:rest]:
        counts[k] += 1
    return counts


def balanced_bools(rng: random.Random, n: int) -> list[bool]:
    """``n`` booleans, half True (the odd one random), shuffled: balanced Yes/No answers."""
    out = [i % 2 == 0 for i in range(n)]
    if n % 2 and rng.random() < 0.5:
        out[-1] = False
    rng.shuffle(out)
    return out
