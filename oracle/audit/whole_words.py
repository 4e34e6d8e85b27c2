"""Which candidate words are whole words, as the base model itself reads them.

A tokenizer holds ``" scient"`` and ``" hom"`` beside ``" moon"``: all start a word, only the last usually ends
one. A word counts as whole when the base model, having read it after ``"I saw the"``, puts at least 0.6 of its
next-token probability on tokens that start a new word or a mark (a space, a line break, a comma, a full
stop...) rather than on a continuation such as ``ific`` or ``e``. Judging the whole 49k vocabulary would cost
many CPU-minutes, so words are judged lazily: :func:`rank_whole_words` judges only the words that reach a
ranking's top, drops the pieces from the vocabulary and ranks again. Verdicts are kept per model (by its
weights hash) in the user's cache, so each word is judged once.

Example:
    >>> judge_words(lm, ["moon", "scient"])                        # doctest: +SKIP
    {'moon': True, 'scient': False}
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Iterable, Sequence

import torch

from hooks.atomic import write_json_atomic
from hooks.models import LoadedModel, active_adapter

from oracle.audit.words import WordVocab, rank_words

log = logging.getLogger(__name__)

# An article before the word: a noun, adjective or verb after it is usually followed by a new word, a piece by its
# continuation; a prefix that announces one word would push even pieces towards a full stop.
PREFIX = "I saw the"
MIN_BOUNDARY_MASS = 0.6
_VERDICTS: dict[str, dict[str, bool]] = {}      # weights hash -> word -> whole?


def _rule() -> str:
    """The judging rule's fingerprint: verdicts made under another prefix or threshold are not reused."""
    return hashlib.sha256(f"{PREFIX}|{MIN_BOUNDARY_MASS}".encode()).hexdigest()[:8]


def _cache_path(lm: LoadedModel) -> Path:
    from platformdirs import user_cache_path

    name = f"{lm.weights_hash[:16]}-{_rule()}.json"
    return user_cache_path("activation-oracles", appauthor=False) / "whole_words" / name


def _verdicts(lm: LoadedModel) -> dict[str, bool]:
    key = f"{lm.weights_hash}-{_rule()}"
    if key not in _VERDICTS:
        path = _cache_path(lm)
        try:
            loaded = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except ValueError:   # a damaged cache is judged again, never trusted
            log.warning("ignoring the unreadable whole-word cache %s", path)
            loaded = {}
        _VERDICTS[key] = {str(w): bool(v) for w, v in loaded.items()} if isinstance(loaded, dict) else {}
    return _VERDICTS[key]


def boundary_token_ids(tokenizer, vocab_size: int) -> torch.Tensor:
    """Token ids whose text starts with something other than a letter (a new word, a mark, a line break)."""
    ids = [i for i in range(vocab_size) if (t := tokenizer.decode([i]))[:1] and not t[:1].isalpha()]
    return torch.tensor(ids, dtype=torch.long)


_BOUNDARY: dict[int, torch.Tensor] = {}


@torch.no_grad()
def boundary_mass(lm: LoadedModel, words: Sequence[str]) -> list[float]:
    """For each word, the base model's next-token probability on word boundaries after ``PREFIX + " " + word``."""
    tok = lm.tokenizer
    head = lm.model.get_output_embeddings()
    n = int(head.weight.shape[0])
    if id(tok) not in _BOUNDARY:
        _BOUNDARY[id(tok)] = boundary_token_ids(tok, n).to(lm.device)
    boundary = _BOUNDARY[id(tok)]
    prefix = tok(PREFIX, add_special_tokens=True)["input_ids"]
    seqs = [prefix + tok.encode(" " + w, add_special_tokens=False) for w in words]
    out = [0.0] * len(words)
    by_len: dict[int, list[int]] = {}
    for i, s in enumerate(seqs):
        by_len.setdefault(len(s), []).append(i)
    with active_adapter(lm.model, None):
        for idx in by_len.values():   # equal lengths: no padding, no mask
            ids = torch.tensor([seqs[i] for i in idx], device=lm.device)
            logits = lm.model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[:, -1].float()
            mass = logits.softmax(-1)[:, boundary].sum(-1).tolist()
            for i, m in zip(idx, mass):
                out[i] = float(m)
    return out


def judge_words(lm: LoadedModel, words: Iterable[str]) -> dict[str, bool]:
    """Whether each word is whole (see the module docstring); new verdicts are added to the user's cache."""
    known = _verdicts(lm)
    todo = sorted({w for w in words if w not in known})
    if todo:
        for w, m in zip(todo, boundary_mass(lm, todo)):
            known[w] = m >= MIN_BOUNDARY_MASS
        try:
            write_json_atomic(_cache_path(lm), known, indent=0, durable=False)
        except OSError as e:   # a read-only cache costs time, never the result
            log.warning("could not keep the whole-word verdicts (%s)", e)
    return {w: known[w] for w in words}


def rank_whole_words(probs_V: torch.Tensor, lm: LoadedModel, vocab: WordVocab, echoes: Iterable[str] = (),
                     top_k: int = 20) -> dict:
    """:func:`oracle.audit.words.rank_words` over whole words only: the words reaching the top are judged, the
    pieces among them leave a copy of ``vocab``, and the ranking is redone. The result depends on this
    distribution alone (not on what earlier rankings judged), so audits stay reproducible."""
    echoes = set(echoes)
    vocab = WordVocab(vocab.words, vocab.index_V.clone())
    while True:   # judged three deep, so that one or two rounds settle the top
        ranked = rank_words(probs_V, vocab, echoes, 3 * top_k)
        verdicts = judge_words(lm, [w["word"] for w in ranked["top_words"]])
        pieces = [w for w, whole in verdicts.items() if not whole]
        vocab.drop(pieces)
        if not pieces or all(verdicts[w["word"]] for w in ranked["top_words"][:top_k]):
            return rank_words(probs_V, vocab, echoes, top_k)
