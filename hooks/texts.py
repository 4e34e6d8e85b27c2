"""Read documents to capture from .txt (one per non-empty line) or .jsonl ("text" or chat "messages")."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Union

from .errors import InputError


def load_texts(path: Union[str, Path], tokenizer=None) -> list[str]:
    """Documents from a text file: ``.txt`` gives one document per non-empty line; ``.jsonl`` gives one per
    record, from its ``"text"`` field or, for ``"messages"`` records, the chat rendered with ``tokenizer``.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "t.txt"); _ = open(p, "w").write("a\\n\\nb\\n")
        >>> load_texts(p)
        ['a', 'b']
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"no text file at {p}: pass a .txt or .jsonl file with --texts")
    if p.suffix.lower() not in (".txt", ".jsonl"):
        raise InputError(f"{p.name} is neither .txt nor .jsonl: write one document per line (.txt) or per record (.jsonl)")
    try:
        raw = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{p.name} is not UTF-8 (byte {e.start}: {e.reason}): re-save it as UTF-8, "
                         f"e.g. iconv -f latin1 -t utf-8") from None
    if p.suffix.lower() == ".txt":
        texts = [line for line in raw.splitlines() if line.strip()]
    else:
        texts = []
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{p.name} line {n} is not JSON ({e.msg}): write one JSON object per line") from None
            texts.append(_record_text(rec, p.name, n, tokenizer))
    if not texts:
        raise InputError(f"{p} has no documents: it is empty")
    check_texts(texts)
    return texts


def _record_text(rec, name: str, n: int, tokenizer) -> str:
    if isinstance(rec, str):
        return rec
    if isinstance(rec, dict) and "text" in rec:
        return str(rec["text"])
    if isinstance(rec, dict) and "messages" in rec:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise InputError(f"{name} line {n} is a chat but the tokenizer has no chat template: give a 'text' field")
        return tokenizer.apply_chat_template(rec["messages"], tokenize=False)
    raise InputError(f"{name} line {n} has neither 'text' nor 'messages': write {{\"text\": ...}} per line")


def check_texts(texts: list[str]) -> None:
    """Refuse an empty list or an empty/blank document, naming its index."""
    if not texts:
        raise InputError("no texts given: pass at least one document")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"text {i} is a {type(t).__name__}, not a string")
        if not t.strip():
            raise InputError(f"text {i} is empty: remove empty strings from the texts")
