"""The store manifest's typed schema: ``manifest.json`` parsed once, field by field, into frozen records, so a
malformed manifest is one :class:`StoreError` line naming the field (never a ``KeyError`` or ``TypeError`` later),
and the digests that tie a store to the texts it was made from.

The header (model, layers, dtype, options, counts, ``texts``) must be well formed or the store is refused. A shard
entry with a missing or mistyped field does not refuse the whole store: it is kept aside in ``bad_entries`` for
``ActivationStore.verify`` to report, and its documents read as missing.

Example:
    >>> m = parse_manifest({"format_version": 2, "model_spec": "tiny", "weights_hash": "h", "tokenizer": "t",
    ...     "d_model": 8, "layers": [1], "dtype": "float32", "capture_options": {}, "docs_per_shard": 2,
    ...     "n_docs": 0, "n_tokens": 0, "shards": [{"shard_index": 0}], "texts": None}, "manifest.json")
    >>> m.n_docs, m.shards, m.bad_entries
    (0, (), ("shard entry 0: no field 'file'",))
    >>> parse_manifest([], "manifest.json")     # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    hooks.errors.StoreError: manifest.json is a list, not a JSON object: ...
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from hooks.errors import StoreError
from hooks.store_format import DTYPES, STORE_FORMAT_VERSION, load_json

#: manifest versions this code reads (it writes :data:`STORE_FORMAT_VERSION`); v1 has no ``texts`` and no
#: ``tokens_sha256`` per shard
READ_VERSIONS = (1, 2)
_FIX = "restore it, or recapture into another --out"


def texts_digest(texts: Sequence[str]) -> str:
    """sha256 of documents in order (each one's UTF-8 bytes, length-prefixed, so no two lists collide).

    Example:
        >>> texts_digest(["ab", "c"]) == texts_digest(["a", "bc"])
        False
    """
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def tokens_digest(docs_tokens: Sequence[Sequence[int]]) -> str:
    """sha256 of documents' token ids in order (each document length-prefixed).

    Example:
        >>> tokens_digest([[1, 2], [3]]) == tokens_digest([[1], [2, 3]])
        False
    """
    h = hashlib.sha256()
    for ids in docs_tokens:
        h.update(len(ids).to_bytes(8, "little"))
        h.update(b"".join(int(i).to_bytes(8, "little", signed=True) for i in ids))
    return h.hexdigest()


@dataclass(frozen=True)
class TextsRecord:
    """What a store was captured from (format v2): the text file's name, the documents' digest, and the cuts.

    Example:
        >>> TextsRecord("a.txt", 2, "0" * 64, 512, 0, 0).describe()
        'a.txt (2 docs, sha256 000000000000...)'
    """

    source: Optional[str]   # the text file's name; None for texts passed in Python
    n_docs: int
    sha256: str             # texts_digest of every document, in order
    max_tokens: int         # where documents were cut: min(--max-length, the model's context)
    cut_docs: int           # documents cut there
    cut_tokens: int         # tokens the cuts dropped

    def describe(self) -> str:
        docs = "1 doc" if self.n_docs == 1 else f"{self.n_docs} docs"
        return f"{self.source or 'the texts given in Python'} ({docs}, sha256 {self.sha256[:12]}...)"

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ShardEntry:
    """One finalized shard as the manifest lists it."""

    file: str
    shard_index: int
    doc_start: int
    doc_stop: int
    n_tokens: int
    sha256: str
    tokens_sha256: Optional[str] = None   # tokens_digest of its documents' full token ids (v2)

    def to_json(self) -> dict:
        d = asdict(self)
        if d["tokens_sha256"] is None:
            del d["tokens_sha256"]
        return d


@dataclass(frozen=True)
class Manifest:
    """A parsed ``manifest.json``."""

    format_version: int
    model_spec: str
    weights_hash: str
    tokenizer: str
    d_model: int
    layers: tuple[int, ...]
    dtype: str
    capture_options: dict
    docs_per_shard: int
    n_docs: int
    n_tokens: int
    shards: tuple[ShardEntry, ...]
    texts: Optional[TextsRecord] = None
    bad_entries: tuple[str, ...] = ()   # shard entries that do not parse, one problem each ("shard entry 2: ...")

    def header(self) -> dict:
        """The header fields as the writer writes them (JSON values), for comparing with a writer's own."""
        return {"format_version": self.format_version, "model_spec": self.model_spec,
                "weights_hash": self.weights_hash, "tokenizer": self.tokenizer, "d_model": self.d_model,
                "layers": list(self.layers), "dtype": self.dtype, "capture_options": self.capture_options,
                "docs_per_shard": self.docs_per_shard, "texts": self.texts.to_json() if self.texts else None}


class _Fields:
    """Typed access to one JSON object's fields, each failure a StoreError naming the field."""

    def __init__(self, obj: Any, where: str, what: str = "") -> None:
        if not isinstance(obj, dict):
            raise StoreError(f"{where}{what} is {_kind(obj)}, not a JSON object: {_FIX}")
        self.obj, self.where, self.what = obj, where, what

    def _get(self, name: str) -> Any:
        if name not in self.obj:
            raise StoreError(f"{self.where}{self.what}: no field {name!r}; {_FIX}")
        return self.obj[name]

    def _bad(self, name: str, value: Any, want: str) -> StoreError:
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        return StoreError(f"{self.where}{self.what}: field {name!r} is {shown}, not {want}; {_FIX}")

    def integer(self, name: str, minimum: int = 0) -> int:
        v = self._get(name)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise self._bad(name, v, f"an integer >= {minimum}")
        return v

    def text(self, name: str, optional: bool = False) -> Optional[str]:
        v = self._get(name) if not optional else self.obj.get(name)
        if v is None and optional:
            return None
        if not isinstance(v, str) or not v:
            raise self._bad(name, v, "a non-empty string")
        return v

    def layers(self, name: str) -> tuple[int, ...]:
        v = self._get(name)
        if (not isinstance(v, list) or not v or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in v)
                or len(set(v)) != len(v)):
            raise self._bad(name, v, "a non-empty list of distinct layer indices")
        return tuple(v)

    def mapping(self, name: str) -> dict:
        v = self._get(name)
        if not isinstance(v, dict):
            raise self._bad(name, v, "a JSON object")
        return v


def _kind(obj: Any) -> str:
    return {list: "a list", str: "a string", type(None): "null", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(obj), type(obj).__name__)


def parse_texts(obj: Any, where: str) -> Optional[TextsRecord]:
    """The ``texts`` field: ``None`` (a store of no text file, e.g. an oracle's example cache) or a record."""
    if obj is None:
        return None
    f = _Fields(obj, where, " field 'texts'")
    return TextsRecord(source=f.text("source", optional=True), n_docs=f.integer("n_docs", 1), sha256=f.text("sha256"),
                       max_tokens=f.integer("max_tokens", 1), cut_docs=f.integer("cut_docs"), cut_tokens=f.integer("cut_tokens"))


def parse_shard_entry(obj: Any, i: int, where: str = "") -> ShardEntry:
    """Shard entry ``i`` of a manifest (``where`` prefixes messages)."""
    f = _Fields(obj, where, f"shard entry {i}")
    entry = ShardEntry(file=f.text("file"), shard_index=f.integer("shard_index"), doc_start=f.integer("doc_start"),
                       doc_stop=f.integer("doc_stop", 1), n_tokens=f.integer("n_tokens"), sha256=f.text("sha256"),
                       tokens_sha256=f.text("tokens_sha256", optional=True))
    if entry.doc_stop <= entry.doc_start:
        raise StoreError(f"{where}shard entry {i} ({entry.file}): documents {entry.doc_start}..{entry.doc_stop} "
                         f"are no range; {_FIX}")
    return entry


def parse_manifest(obj: Any, where: str) -> Manifest:
    """Check a loaded manifest against the schema; ``where`` names it in messages (e.g. its path)."""
    f = _Fields(obj, where)
    version = f.integer("format_version")
    if version not in READ_VERSIONS:
        raise StoreError(f"{where} has format version {version}, this code reads versions "
                         f"{', '.join(map(str, READ_VERSIONS))}: recapture it, or use a matching version of the package")
    dtype = f.text("dtype")
    if dtype not in DTYPES:
        raise f._bad("dtype", dtype, f"one of {', '.join(DTYPES)}")
    raw_shards = f._get("shards")
    if not isinstance(raw_shards, list):
        raise f._bad("shards", raw_shards, "a list of shard entries")
    shards: dict[int, ShardEntry] = {}
    bad: list[str] = []
    for i, raw in enumerate(raw_shards):
        try:
            entry = parse_shard_entry(raw, i)
        except StoreError as e:
            bad.append(str(e).split(f"; {_FIX}")[0])
            continue
        if entry.shard_index in shards:
            bad.append(f"shard entry {i} ({entry.file}): shard {entry.shard_index} is listed twice")
            continue
        shards[entry.shard_index] = entry
    return Manifest(
        format_version=version, model_spec=f.text("model_spec"), weights_hash=f.text("weights_hash"),
        tokenizer=f.text("tokenizer"), d_model=f.integer("d_model", 1), layers=f.layers("layers"), dtype=dtype,
        capture_options=f.mapping("capture_options"), docs_per_shard=f.integer("docs_per_shard", 1),
        n_docs=f.integer("n_docs"), n_tokens=f.integer("n_tokens"),
        shards=tuple(shards[k] for k in sorted(shards)),
        texts=parse_texts(obj.get("texts"), where) if version >= 2 else None, bad_entries=tuple(bad))


def read_manifest(path: Path) -> Manifest:
    """Load and check ``path`` (a ``manifest.json`` or ``manifest-rank{r}.json``): one StoreError line when it
    is unreadable or malformed."""
    return parse_manifest(load_json(path), str(path))


__all__ = ["READ_VERSIONS", "STORE_FORMAT_VERSION", "Manifest", "ShardEntry", "TextsRecord", "parse_manifest",
           "read_manifest", "texts_digest", "tokens_digest"]


def check_same_texts(path: Path, old: Optional[TextsRecord], new: Optional[TextsRecord]) -> None:
    """Refuse to resume the store at ``path``, made from ``old`` texts, with ``new`` ones: that would mix two files
    in one store. Only the source, the count and the digest are compared (the cuts follow from them).

    Example:
        >>> check_same_texts(Path("S"), TextsRecord("a.txt", 2, "1" * 64, 512, 0, 0),
        ...                  TextsRecord("b.txt", 30, "2" * 64, 512, 0, 0))    # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        hooks.errors.StoreError: store S was captured from a.txt (2 docs, ...), not from b.txt (30 docs, ...): ...
    """
    if old is None and new is None:
        return
    if old is None or new is None:
        had = old.describe() if old is not None else "no text file"
        now = new.describe() if new is not None else "no text file"
        raise StoreError(f"store {path} was captured from {had}, not from {now}: resume it the way it was made, "
                         "or choose another --out")
    if old.sha256 != new.sha256:
        changed = " (the file changed since)" if old.source is not None and old.source == new.source else ""
        again = f" (--texts {old.source})" if old.source else ""
        raise StoreError(f"store {path} was captured from {old.describe()}, not from {new.describe()}{changed}: "
                         f"resume with the texts it was made from{again}, or choose another --out for "
                         f"{new.source or 'these texts'}")


def check_same_tokens(path: Path, entries: Sequence[dict], docs_tokens: Sequence[Sequence[int]]) -> None:
    """Refuse when a listed shard's documents (``entries``: manifest shard entries) tokenize differently now
    (``docs_tokens``: every document's token ids as they would be captured)."""
    for entry in entries:
        want = entry.get("tokens_sha256")
        if want is not None and want != tokens_digest(docs_tokens[entry["doc_start"]:entry["doc_stop"]]):
            raise StoreError(f"store {path}: documents {entry['doc_start']}..{entry['doc_stop'] - 1} "
                             f"({entry['file']}) tokenize differently now than when they were captured (another "
                             "tokenizer under the same name?): recapture into another --out")
