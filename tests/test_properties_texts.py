"""Property-based tests of the text readers (``hooks.texts``): arbitrary bytes in a ``.txt`` or ``.jsonl`` file, and
arbitrary JSON values on a line, give checked documents or one ``InputError`` line, never another exception; a
``{"text": s}`` record reads back as ``s``. Each defect found is kept as an ``@example``.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")

from hypothesis import example, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from hooks.errors import InputError  # noqa: E402
from hooks.texts import load_texts, read_documents  # noqa: E402

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
records = st.one_of(
    json_values,
    st.builds(lambda t: {"text": t}, json_values),
    st.builds(lambda m: {"messages": m}, json_values),
    st.builds(lambda r, c: {"messages": [{"role": r, "content": c}]}, json_values, json_values),
)


def _read(data: bytes, suffix: str) -> list[str]:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"docs{suffix}"
        p.write_bytes(data)
        return load_texts(p)


def _check(texts: list[str]) -> None:
    assert texts and all(isinstance(t, str) and t.strip() for t in texts)
    for t in texts:
        t.encode("utf-8")                 # every document is text a tokenizer can take
        assert not t.startswith("\ufeff")


def _one_line(e: Exception) -> None:
    assert str(e) and "\n" not in str(e), str(e)


@given(data=st.binary(max_size=200), suffix=st.sampled_from([".txt", ".jsonl"]))
@example(data=b"\xef\xbb\xbfhello\n", suffix=".txt")                           # the BOM stayed in document 0
@example(data=b"\xef\xbb\xbf{\"text\": \"hello\"}\n", suffix=".jsonl")          # ... and broke the first JSON line
@example(data=b"[" * 100_000, suffix=".jsonl")                                   # RecursionError from json
@example(data=b"1" * 5000, suffix=".jsonl")                                      # ValueError: int of 5000 digits
@example(data=b"\"\\ud800\"", suffix=".jsonl")                                   # a lone surrogate
@example(data=b"\xed\xa0\x80\n", suffix=".txt")                                  # an encoded surrogate: not UTF-8
def test_any_bytes_give_documents_or_an_input_error(data, suffix):
    try:
        texts = _read(data, suffix)
    except InputError as e:
        _one_line(e)
        return
    _check(texts)


@given(lines=st.lists(records, min_size=1, max_size=4), ascii_only=st.booleans())
@example(lines=[{"text": None}], ascii_only=True)                  # was captured as the string "None"
@example(lines=[{"text": 42}], ascii_only=True)                    # ... and "42"
@example(lines=[{"text": "a\u2028b"}], ascii_only=False)           # str.splitlines cut this record in two
@example(lines=[{"text": "a\x1cb"}], ascii_only=False)
@example(lines=[{"messages": [{"role": "user", "content": "Hi"}]}], ascii_only=True)   # a chat needs the template
def test_any_json_line_gives_documents_or_an_input_error(lines, ascii_only):
    data = "\n".join(json.dumps(rec, ensure_ascii=ascii_only) for rec in lines).encode("utf-8", "surrogatepass")
    try:
        texts = _read(data, ".jsonl")
    except InputError as e:
        _one_line(e)
        return
    _check(texts)
    assert texts == [rec if isinstance(rec, str) else rec["text"] for rec in lines]


@given(texts=st.lists(st.text(min_size=1, max_size=30).filter(lambda t: t.strip()), min_size=1, max_size=5))
@example(texts=["caf\u00e9", "\u2028x"])
def test_text_records_round_trip(texts):
    """What a ``{"text": ...}`` line holds is the document, character for character."""
    data = "\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in texts).encode("utf-8", "surrogatepass")
    try:
        got = _read(data, ".jsonl")
    except InputError as e:       # a lone surrogate drawn by st.text
        assert "lone surrogate" in str(e)
        return
    assert got == texts


@given(messages=st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]),
                                                 "content": st.text(max_size=20)}), min_size=1, max_size=3))
def test_chats_parse_without_a_tokenizer(messages):
    """A chat record parses with no tokenizer (rendering waits for the model's chat template)."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "chats.jsonl"
        p.write_text(json.dumps({"messages": messages}) + "\n", encoding="utf-8")
        try:
            doc = read_documents(p).documents[0]
        except InputError as e:
            assert "lone surrogate" in str(e)
            return
    assert doc.is_chat and list(doc.messages) == messages
