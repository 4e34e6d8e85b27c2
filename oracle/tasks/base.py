"""The training/eval example type of the oracle and the helpers every task builder shares.

An :class:`OracleExample` says: run the target model over ``context_ids``, read the residual stream
of block ``layer`` at ``positions``, inject those K vectors into the oracle prompt, and train (or
score) the oracle to answer ``question`` with ``answer``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Protocol, Sequence, Union

from hooks.atomic import atomic_write_text
from hooks.data_registry import load_registry
from hooks.errors import InputError
from hooks.paths import data_dir as _data_dir
from hooks.paths import fetch_dir

log = logging.getLogger(__name__)

FAMILIES = ("context_prediction", "classification", "latentqa", "topic", "reading", "verify")


class TaskBuilder(Protocol):
    """What every task family's ``build_<family>`` function is: ``n`` examples for ``split`` ("train" or
    "eval"), reproducible from ``seed``, reading data from ``data_dir``; family-specific options are keyword
    arguments. :data:`oracle.tasks.mix.BUILDERS` maps each family in :data:`FAMILIES` to its builder."""

    def __call__(self, tokenizer: Any, n_layers: int, n: int, seed: int, data_dir: Optional["PathLike"] = None,
                 split: str = "train", **options: Any) -> list["OracleExample"]: ...
DEPTH_PERCENTS = (25, 50, 75)
MAX_POSITIONS = 50
SPLITS = ("train", "eval")
YES, NO = "Yes", "No"
EVAL_FRACTION = 0.1

PathLike = Union[str, Path]


@dataclass
class OracleExample:
    """One oracle training or evaluation example.

    Example:
        >>> ex = OracleExample("classification", [504, 2365, 30], [2], 15, "Is this true?", "Yes", "gmt/cities")
        >>> len(ex.positions), ex.answer
        (1, 'Yes')
    """

    family: str                 # one of FAMILIES
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


def source_layers(n_layers: int) -> list[int]:
    """The three source depths (25, 50, 75 % of the blocks) as 0-based block indices.

    Example:
        >>> source_layers(30)
        [7, 15, 22]
    """
    if int(n_layers) < 1:
        raise InputError(f"n_layers must be a positive number of decoder blocks, got {n_layers}")
    return [int(n_layers * p / 100) for p in DEPTH_PERCENTS]


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


def make_rng(seed: int, name: str) -> random.Random:
    """A ``random.Random`` seeded from ``(seed, name)``; stable across runs and Python processes."""
    return random.Random(f"{int(seed)}:{name}")


def stable_hash(key: str) -> int:
    """A 64-bit hash of ``key`` that does not depend on PYTHONHASHSEED."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


def split_of(key: str, eval_fraction: float = EVAL_FRACTION, salt: str = "ao-split") -> str:
    """Deterministic ``"train"``/``"eval"`` assignment of an item by a hash of ``key``.

    Example:
        >>> split_of("goal-vocabulary-contronym") in ("train", "eval")
        True
    """
    return "eval" if stable_hash(f"{salt}:{key}") % 1_000_000 < eval_fraction * 1_000_000 else "train"


def check_split(split: str) -> str:
    """Validate a split name."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}: use 'train' or 'eval'")
    return split


def check_share(name: str, value: float) -> float:
    """Validate a share of examples (0..1), naming the option in the error.

    Example:
        >>> check_share("open_frac", 0.5)
        0.5
    """
    if not 0.0 <= float(value) <= 1.0:   # NaN fails too
        raise InputError(f"{name} {value} is outside [0, 1]: give a share such as 0.6")
    return float(value)


def check_n(n: int) -> int:
    """Validate an example count."""
    if int(n) < 0:
        raise InputError(f"the number of examples must be >= 0, got {n}")
    return int(n)


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


def tokenize_text(tokenizer, text: str) -> list[int]:
    """Token ids of plain text, with no special tokens added."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def format_chat(tokenizer, messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
    """The chat as a string in the tokenizer's chat template (a plain ``role: text`` layout if it has none).

    Example:
        >>> from hooks.testing import ByteTokenizer
        >>> format_chat(ByteTokenizer(), [{"role": "user", "content": "Hi"}], add_generation_prompt=True)
        'user: Hi\\nassistant:'
    """
    if getattr(tokenizer, "chat_template", None) and hasattr(tokenizer, "apply_chat_template"):
        return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    return text + "assistant:" if add_generation_prompt else text


def _offsets(tokenizer, text: str) -> Optional[list[tuple[int, int]]]:
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc.get("offset_mapping") if hasattr(enc, "get") else None
    except (TypeError, ValueError, NotImplementedError):
        return None
    return [tuple(o) for o in offsets] if offsets else None


def tokenize_chat(tokenizer, messages: Sequence[dict], add_generation_prompt: bool = False,
                  ) -> tuple[list[int], list[Optional[tuple[int, int]]]]:
    """Token ids of a chat, and for each message the token range ``(start, end)`` of its content.

    A range is ``None`` when the content could not be located (e.g. a template rewrote it).

    Example:
        >>> from hooks.testing import ByteTokenizer
        >>> ids, spans = tokenize_chat(ByteTokenizer(), [{"role": "user", "content": "Hi"}])
        >>> spans
        [(6, 8)]
    """
    text = format_chat(tokenizer, messages, add_generation_prompt)
    ids = tokenize_text(tokenizer, text)
    char_spans: list[Optional[tuple[int, int]]] = []
    cursor = 0
    for m in messages:
        content = str(m["content"])
        at = text.find(content, cursor) if content else -1
        if at < 0:
            char_spans.append(None)
            continue
        char_spans.append((at, at + len(content)))
        cursor = at + len(content)
    offsets = _offsets(tokenizer, text)
    spans: list[Optional[tuple[int, int]]] = []
    for cs in char_spans:
        if cs is None:
            spans.append(None)
            continue
        if offsets is not None and len(offsets) == len(ids):
            toks = [i for i, (a, b) in enumerate(offsets) if b > cs[0] and a < cs[1] and b > a]
            spans.append((toks[0], toks[-1] + 1) if toks else None)
        else:  # prefix tokenization: exact when the template puts a token boundary at the content edges
            start = len(tokenize_text(tokenizer, text[: cs[0]]))
            end = len(tokenize_text(tokenizer, text[: cs[1]]))
            spans.append((start, end) if end > start else None)
    return ids, spans


def special_ids(tokenizer) -> set[int]:
    """Ids of the tokenizer's special tokens (never part of a context-prediction answer)."""
    ids = set(int(i) for i in (getattr(tokenizer, "all_special_ids", None) or []))
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            ids.add(value)
    return ids


def decode(tokenizer, ids: Sequence[int]) -> str:
    """Decoded text without special tokens."""
    return tokenizer.decode(list(ids), skip_special_tokens=True)


def check_example(ex: OracleExample, n_layers: Optional[int] = None) -> OracleExample:
    """Raise InputError unless ``ex`` is usable: known family, 1..50 positions inside the context, answer given.

    Example:
        >>> check_example(OracleExample("classification", [1, 2, 3], [2], 15, "Is it?", "No")).answer
        'No'
    """
    if ex.family not in FAMILIES:
        raise InputError(f"unknown task family {ex.family!r}: use one of {', '.join(FAMILIES)}")
    if not ex.context_ids:
        raise InputError(f"example from {ex.dataset or ex.family} has no context tokens")
    where = ex.dataset or ex.family
    if not 1 <= len(ex.positions) <= MAX_POSITIONS:
        raise InputError(f"example from {where} has {len(ex.positions)} positions: use 1..{MAX_POSITIONS}")
    if any(not 0 <= p < len(ex.context_ids) for p in ex.positions):
        raise InputError(f"example from {where} has a position outside its {len(ex.context_ids)}-token context")
    if n_layers is not None and not 0 <= ex.layer < n_layers:
        raise InputError(f"example from {where} reads layer {ex.layer}, but the model has {n_layers} blocks")
    if not ex.question.strip() or not ex.answer.strip():
        raise InputError(f"example from {ex.dataset or ex.family} has an empty question or answer")
    return ex


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
