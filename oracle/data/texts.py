"""The plain-text sources and their word helpers: WikiText-2 documents, articles and sections (``wikitext2_valid``
is the train side, ``wikitext2_test`` the eval side), Tiny Shakespeare passages (hash-split 90/10), a token window
of a document, and the content words of a text.

Example:
    >>> name, docs = text_documents("wikitext2", "eval")
    >>> name, len(docs) > 100
    ('wikitext2_test', True)
    >>> sorted(content_words("The lobster lives in the Atlantic."))
    ['atlantic', 'lives', 'lobster']
"""
from __future__ import annotations

import random
import re
from functools import lru_cache
from pathlib import Path
from typing import Optional

from hooks.errors import InputError

from oracle.data.chat import decode, tokenize_text
from oracle.data.files import PathLike, data_file, resolve_data_dir
from oracle.data.splits import check_split, split_of

TEXT_SOURCES = ("wikitext2", "tinyshakespeare")

_WIKI_FIXES = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" , ", ", "), (" . ", ". "), (" ; ", "; "),
               (" : ", ": "), (" 's ", "'s "), (" n't ", "n't "), ("( ", "("), (" )", ")"), (" 't ", "'t "))
_SKIP_HEADINGS = {"references", "notes", "external links", "see also", "bibliography", "sources", "footnotes",
                  "further reading", "citations"}
_STOPWORDS = set("""about above after again against also although among another because been before being below
between both cannot could does doing down during each either enough even ever every first from further have having
here hers herself himself however into itself just many might more most much must neither never none only other
ought ours ourselves over same shall should since some such than that their theirs them themselves then there these
they thine this those though through thou thee thus thy under until upon very were what when where which while whom
whose will with within without would your yours yourself yourselves unto hath doth shalt wilt""".split())


def wikitext_name(split: str) -> str:
    """The WikiText-2 file of a split: ``wikitext2_valid`` trains, ``wikitext2_test`` evaluates (any other split).

    Example:
        >>> wikitext_name("train"), wikitext_name("eval")
        ('wikitext2_valid', 'wikitext2_test')
    """
    return "wikitext2_valid" if split == "train" else "wikitext2_test"


def detok_wikitext(line: str) -> str:
    """Undo the commonest WikiText-2 tokenization artefacts.

    Example:
        >>> detok_wikitext(" It weighs 0 @.@ 7 kg ( 2 lb ) , roughly . ")
        'It weighs 0.7 kg (2 lb), roughly.'
    """
    text = f" {line.strip()} "
    for a, b in _WIKI_FIXES:
        text = text.replace(a, b)
    text = text.strip()
    return re.sub(r" ([.,;:])$", r"\1", text)


@lru_cache(maxsize=8)
def _wikitext_docs(path: str) -> tuple[str, ...]:
    docs = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        s = line.strip()
        if not s or s.startswith("="):
            continue
        if len(s.split()) >= 30:
            docs.append(detok_wikitext(s))
    return tuple(docs)


@lru_cache(maxsize=4)
def _shakespeare_docs(path: str, min_chars: int = 300) -> tuple[str, ...]:
    blocks = [b.strip() for b in Path(path).read_text(encoding="utf-8").split("\n\n") if b.strip()]
    docs, cur = [], []
    for b in blocks:
        cur.append(b)
        if sum(len(c) for c in cur) >= min_chars:
            docs.append("\n\n".join(cur))
            cur = []
    if cur:
        docs.append("\n\n".join(cur))
    return tuple(docs)


def text_documents(source: str, split: str, data_dir: Optional[PathLike] = None) -> tuple[str, list[str]]:
    """``(dataset name, documents)`` of a plain-text source for a split.

    ``wikitext2``: train reads ``wikitext2_valid.txt``, eval reads ``wikitext2_test.txt`` (never trained on).
    ``tinyshakespeare``: passages of about 300 characters, hash-split 90/10 into train/eval.

    Example:
        >>> name, docs = text_documents("wikitext2", "eval")
        >>> name
        'wikitext2_test'
    """
    check_split(split)
    if source == "wikitext2":
        name = wikitext_name(split)
        return name, list(_wikitext_docs(str(data_file(data_dir, f"text/{name}.txt"))))
    if source == "tinyshakespeare":
        docs = _shakespeare_docs(str(data_file(data_dir, "text/tinyshakespeare.txt")))
        return "tinyshakespeare", [d for d in docs if split_of(d, salt="shakespeare") == split]
    raise InputError(f"unknown text source {source!r}: use wikitext2 or tinyshakespeare")


def plain_documents(split: str, data_dir: Optional[PathLike] = None) -> tuple[tuple[str, str], ...]:
    """``(dataset name, document)`` of every plain-text source (:data:`TEXT_SOURCES`) of a split.

    Example:
        >>> sorted({name for name, _ in plain_documents("eval")})
        ['tinyshakespeare', 'wikitext2_test']
    """
    return _plain_documents(str(resolve_data_dir(data_dir)), split)


@lru_cache(maxsize=4)
def _plain_documents(root: str, split: str) -> tuple[tuple[str, str], ...]:
    docs: list[tuple[str, str]] = []
    for source in TEXT_SOURCES:
        name, texts = text_documents(source, split, root)
        docs += [(name, t) for t in texts]
    return tuple(docs)


@lru_cache(maxsize=4)
def wikitext_sections(path: str) -> tuple[tuple[str, str, str], ...]:
    """``(article title, section heading or "", paragraph)`` of every paragraph of 30+ words in a WikiText file.

    Example:
        >>> title, heading, para = wikitext_sections(str(data_file(None, "text/wikitext2_test.txt")))[0]
        >>> len(para.split()) >= 30
        True
    """
    out, title, section = [], "", ""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        s = line.strip()
        m = re.fullmatch(r"((?:= )+)(.+?)(?: =)+", s)   # " = Title = ", " = = Section = = ", ...
        if m:
            name, level = detok_wikitext(m.group(2)), m.group(1).count("=")
            if level == 1:
                title, section = name, ""
            elif level == 2:
                section = "" if name.lower() in _SKIP_HEADINGS else name
            continue
        if title and len(s.split()) >= 30:
            out.append((title, section, detok_wikitext(s)))
    return tuple(out)


@lru_cache(maxsize=4)
def wikitext_paragraphs(root: str, split: str) -> tuple[tuple[str, str], ...]:
    """(article title, paragraph) of one split, titles with ``<unk>`` left out: wikitext2_valid trains,
    wikitext2_test evaluates.

    Example:
        >>> title, para = wikitext_paragraphs(str(resolve_data_dir()), "eval")[0]
        >>> "<unk>" in title
        False
    """
    return tuple((t, p) for t, _, p in wikitext_sections(str(data_file(root, f"text/{wikitext_name(split)}.txt")))
                 if "<unk>" not in t)


def content_words(text: str) -> set[str]:
    """Lower-cased alphabetic words of 5+ letters that are not stopwords.

    Example:
        >>> sorted(content_words("The European lobster lives in the Atlantic, about 60 cm long."))
        ['atlantic', 'european', 'lives', 'lobster']
    """
    return {w for w in re.findall(r"[A-Za-z]+", text.lower()) if len(w) >= 5 and w not in _STOPWORDS}


def text_window(rng: random.Random, tokenizer, doc: str, length: int) -> list[int]:
    """A token window of ``doc`` of at most ``length`` tokens, starting at a word boundary.

    Example:
        >>> from hooks.testing import ByteTokenizer
        >>> len(text_window(random.Random(0), ByteTokenizer(), "one two three four five", 8)) <= 8
        True
    """
    ids = tokenize_text(tokenizer, doc)
    if len(ids) <= length:
        return ids
    start = rng.randrange(0, len(ids) - length + 1)
    for j in range(start, min(start + 12, len(ids) - 1)):
        if decode(tokenizer, ids[j : j + 1])[:1] in (" ", "\n"):
            start = j
            break
    return ids[start : start + length]
