"""Text and chat tokenisation helpers shared by the task builders, the audits and the evaluations."""
from __future__ import annotations

from typing import Optional, Sequence

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
