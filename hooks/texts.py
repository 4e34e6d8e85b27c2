"""Read documents to capture from .txt (one per non-empty line) or .jsonl ("text" or chat "messages").

A file is parsed once, at the edge, without a tokenizer: :func:`read_documents` checks every line (UTF-8, JSON,
field types) and gives :class:`Document` records; :func:`render` turns the chats among them into text with the
model's chat template once the model is loaded. :func:`load_texts` does both at once.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from hooks.errors import InputError

PathLike = Union[str, Path]
_BOM = "\ufeff"


@dataclass(frozen=True)
class Document:
    """One document of a text file: a text, or a chat (``messages``) to render with the model's chat template.

    Example:
        >>> Document(text="Hi.", line=1).is_chat
        False
    """

    text: Optional[str] = None
    messages: Optional[tuple[dict, ...]] = None
    line: int = 0       # 1-based line of the file it came from (0: not from a file)

    @property
    def is_chat(self) -> bool:
        return self.messages is not None


@dataclass(frozen=True)
class TextFile:
    """The documents of one text file, and its name (recorded in a store's manifest)."""

    name: str
    documents: tuple[Document, ...]

    @property
    def has_chats(self) -> bool:
        return any(d.is_chat for d in self.documents)

    def texts(self, tokenizer: Any = None) -> list[str]:
        """The documents as texts (chats rendered with ``tokenizer``'s chat template)."""
        return render(self, tokenizer)


def read_documents(path: PathLike) -> TextFile:
    """Parse and check a ``.txt`` (one document per non-empty line) or ``.jsonl`` file (one record per non-empty
    line: a JSON string, ``{"text": "..."}`` or ``{"messages": [{"role": ..., "content": ...}, ...]}``). A UTF-8
    byte-order mark is dropped; a bad line is one :class:`InputError` naming the file and the line.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "t.jsonl")
        >>> _ = open(p, "w").write('{"text": "a"}\\n{"messages": [{"role": "user", "content": "Hi"}]}\\n')
        >>> [d.is_chat for d in read_documents(p).documents]
        [False, True]
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"no text file at {p}: pass a .txt or .jsonl file with --texts")
    suffix = p.suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise InputError(f"{p.name} is neither .txt nor .jsonl: write one document per line (.txt) or per record (.jsonl)")
    try:
        raw = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{p.name} is not UTF-8 (byte {e.start}: {e.reason}): re-save it as UTF-8, "
                         f"e.g. iconv -f latin1 -t utf-8") from None
    except OSError as e:
        raise InputError(f"cannot read the text file {p} ({e.strerror or e}): check its permissions") from None
    if raw.startswith(_BOM):
        raw = raw[len(_BOM):]
    # Lines end at "\n" only ("\r\n" too): a JSON string may hold U+2028 or a form feed, which str.splitlines
    # would take for line ends.
    lines = [line[:-1] if line.endswith("\r") else line for line in raw.split("\n")]
    if suffix == ".txt":
        docs = [Document(text=line, line=n) for n, line in enumerate(lines, 1) if line.strip()]
    else:
        docs = [_record(line, p.name, n) for n, line in enumerate(lines, 1) if line.strip()]
    if not docs:
        raise InputError(f"{p} has no documents: it is empty")
    return TextFile(p.name, tuple(docs))


def render(texts: Union[TextFile, Sequence[Document]], tokenizer: Any = None) -> list[str]:
    """Texts of documents; chats are rendered with ``tokenizer.apply_chat_template``. The result is checked
    (:func:`check_texts`)."""
    name = texts.name if isinstance(texts, TextFile) else "the texts"
    docs = texts.documents if isinstance(texts, TextFile) else tuple(texts)
    out = []
    for d in docs:
        out.append(_render_chat(d, name, tokenizer) if d.is_chat else d.text)
    check_texts(out)
    return out


def load_texts(path: PathLike, tokenizer: Any = None) -> list[str]:
    """Documents from a text file: ``.txt`` gives one document per non-empty line; ``.jsonl`` gives one per
    record, from its ``"text"`` field or, for ``"messages"`` records, the chat rendered with ``tokenizer``.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "t.txt"); _ = open(p, "w").write("a\\n\\nb\\n")
        >>> load_texts(p)
        ['a', 'b']
    """
    return render(read_documents(path), tokenizer)


def check_texts(texts: Sequence[Any]) -> None:
    """Refuse an empty list or an empty/blank document, naming its index."""
    if not texts:
        raise InputError("no texts given: pass at least one document")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"text {i} is a {type(t).__name__}, not a string")
        if not t.strip():
            raise InputError(f"text {i} is empty: remove empty strings from the texts")
        _check_encodable(t, f"text {i}")


# ---------------------------------------------------------------------------------------------- internals


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def _check_encodable(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"{where} holds a lone surrogate ({text[e.start]!r}), which is no character: write the "
                         "character itself, or a valid \\u escape pair") from None


def _record(line: str, name: str, n: int) -> Document:
    where = f"{name} line {n}"
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"{where} is not JSON ({e.msg}): write one JSON object per line") from None
    except (ValueError, RecursionError) as e:   # an integer of too many digits, or nesting too deep to parse
        reason = "nested too deeply" if isinstance(e, RecursionError) else "a number too long to read"
        raise InputError(f"{where} is not readable JSON ({reason}): write one JSON object per line") from None
    if isinstance(rec, str):
        _check_encodable(rec, where)
        return Document(text=rec, line=n)
    if isinstance(rec, dict) and "text" in rec:
        text = rec["text"]
        if not isinstance(text, str):
            raise InputError(f"{where}: 'text' is {_kind(text)}, not a string: write {{\"text\": \"...\"}}")
        _check_encodable(text, where)
        return Document(text=text, line=n)
    if isinstance(rec, dict) and "messages" in rec:
        return Document(messages=_messages(rec["messages"], where), line=n)
    if isinstance(rec, dict):
        raise InputError(f"{where} has neither 'text' nor 'messages': write {{\"text\": ...}} per line")
    raise InputError(f"{where} is {_kind(rec)}, not an object: write {{\"text\": ...}} per line")


def _messages(value: Any, where: str) -> tuple[dict, ...]:
    fix = 'write [{"role": "user", "content": "..."}, ...]'
    if not isinstance(value, list) or not value:
        raise InputError(f"{where}: 'messages' is {_kind(value)}, not a non-empty list of messages: {fix}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise InputError(f"{where}: message {i} is {_kind(m)}, not an object: {fix}")
        for key in ("role", "content"):
            if key not in m:
                raise InputError(f"{where}: message {i} has no {key!r}: {fix}")
            if not isinstance(m[key], str):
                raise InputError(f"{where}: message {i}'s {key!r} is {_kind(m[key])}, not a string: {fix}")
            _check_encodable(m[key], where)
        if not m["role"].strip():
            raise InputError(f"{where}: message {i} has an empty 'role': {fix}")
        out.append(dict(m))
    return tuple(out)


def _render_chat(doc: Document, name: str, tokenizer: Any) -> str:
    where = f"{name} line {doc.line}" if doc.line else "a chat"
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise InputError(f"{where} is a chat but the tokenizer has no chat template: give a 'text' field")
    try:
        text = tokenizer.apply_chat_template(list(doc.messages or ()), tokenize=False)
    except Exception as e:  # noqa: BLE001 - the template is the model's code (jinja2 raises its own errors)
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise InputError(f"{where}: the model's chat template refused this chat ({first}): "
                         "fix the messages, or give a 'text' field") from None
    if not isinstance(text, str):
        raise InputError(f"{where}: the chat template gave {_kind(text)}, not a text: give a 'text' field")
    return text
