"""Context prediction: from the activations at one position or a window of 1-50 positions, name the
previous or next 1-20 tokens.

Sources: plain text (``text/wikitext2_valid.txt`` and ``text/tinyshakespeare.txt`` for training,
``text/wikitext2_test.txt`` only for the held-out eval split), LatentQA dialogs (chat formatted) and
on-policy chats written by the target model itself (see :mod:`oracle.training.tasks.onpolicy`).

Each example's ``context_ids`` end at the last read position: the predicted tokens are never part of
the context (later tokens cannot change a causal model's activations, and a short context is cheap).

Example:
    >>> exs = build_context_prediction(tok, 30, n=3, seed=0)          # doctest: +SKIP
    >>> exs[0].question, exs[0].answer                                   # doctest: +SKIP
    ('What are the next 4 tokens?', 'the European lobster')
"""
from __future__ import annotations

import logging
import random
from typing import Optional, Sequence

from hooks.errors import InputError

from oracle.data.chat import decode, special_ids, tokenize_chat
from oracle.data.files import PathLike
from oracle.data.latentqa import latentqa_dialogs
from oracle.data.splits import EVAL_FRACTION, check_split, make_rng, split_of
from oracle.data.texts import text_documents, text_window
from oracle.training.tasks.base import MAX_POSITIONS, OracleExample, allocate, balanced_layers, check_n

log = logging.getLogger(__name__)

ONPOLICY_DATASET = "onpolicy"

FAMILY = "context_prediction"

NEXT_QUESTIONS = (
    "What {is_are} the next {n}?",
    "Predict the {n} that come{s} right after this.",
    "Which {n} follow{s}?",
    "Continue the text: what {is_are} the next {n}?",
)
PREVIOUS_QUESTIONS = (
    "What {is_are} the previous {n}?",
    "Which {n} came right before this?",
    "What {n} preceded this?",
    "Recover the {n} just before this position.",
)

#: default mix of sources (``onpolicy`` needs ``chats=``; it is dropped when none are given)
DEFAULT_SOURCES = {"wikitext2": 0.35, "tinyshakespeare": 0.2, "latentqa": 0.15, "onpolicy": 0.3}


def context_question(direction: str, n_tokens: int, rng: random.Random) -> str:
    """A paraphrased question asking for ``n_tokens`` tokens in ``direction`` (``"next"``/``"previous"``).

    Example:
        >>> context_question("next", 1, random.Random(0))
        'Continue the text: what is the next token?'
        >>> context_question("previous", 3, random.Random(1))
        'Which 3 tokens came right before this?'
    """
    templates = NEXT_QUESTIONS if direction == "next" else PREVIOUS_QUESTIONS
    n = "token" if n_tokens == 1 else f"{n_tokens} tokens"
    if n_tokens == 1:
        fill = {"is_are": "is", "s": "s"}
    else:
        fill = {"is_are": "are", "s": ""}
    return rng.choice(templates).format(n=n, **fill)


# ---------------------------------------------------------------- the core sampler

def sample_context_example(
    rng: random.Random,
    tokenizer,
    ids: Sequence[int],
    *,
    dataset: str,
    allowed: Optional[Sequence[bool]] = None,
    max_context_tokens: int = 64,
    max_predict_tokens: int = 20,
    max_window: int = MAX_POSITIONS,
    single_position_prob: float = 0.5,
    meta: Optional[dict] = None,
    tries: int = 8,
) -> Optional[OracleExample]:
    """One context-prediction example from the token sequence ``ids`` (layer left at -1), or None.

    ``allowed[i]`` False forbids token ``i`` in an answer (template and special tokens of chats).
    The read positions are a window ``s..e`` with ``e < max_context_tokens``; the answer is
    ``ids[e+1 : e+1+m]`` (next) or ``ids[s-m : s]`` (previous); ``context_ids = ids[:e+1]``.
    """
    ids = list(ids)
    L = len(ids)
    banned = special_ids(tokenizer)
    ok = [(allowed is None or bool(allowed[i])) and ids[i] not in banned for i in range(L)]
    cap = min(L, max_context_tokens)
    for _ in range(tries):
        direction = rng.choice(("next", "previous"))
        m = rng.randint(1, max_predict_tokens)
        k = 1 if rng.random() < single_position_prob else rng.randint(2, max(2, min(max_window, MAX_POSITIONS)))
        for _shrink in range(6):
            if direction == "next":
                lo, hi = k - 1, min(L - 1 - m, cap - 1)
            else:
                lo, hi = m + k - 1, cap - 1
            if lo <= hi:
                break
            m, k = max(1, m // 2), max(1, k // 2)
        else:
            continue
        if lo > hi:
            continue
        e = rng.randint(lo, hi)
        s = e - k + 1
        span = range(e + 1, e + 1 + m) if direction == "next" else range(s - m, s)
        if not all(ok[i] for i in span):
            continue
        answer_ids = [ids[i] for i in span]
        answer = decode(tokenizer, answer_ids).strip()
        if not answer or "<unk>" in answer:   # WikiText's rare-word marker is not worth predicting
            continue
        return OracleExample(
            family=FAMILY, context_ids=ids[: e + 1], positions=list(range(s, e + 1)), layer=-1,
            question=context_question(direction, m, rng), answer=answer, dataset=dataset,
            meta={**(meta or {}), "direction": direction, "n_tokens": m, "answer_ids": answer_ids},
        )
    return None


def chat_allowed_mask(n_tokens: int, spans: Sequence[Optional[tuple[int, int]]]) -> list[bool]:
    """True at the tokens of message contents, False at template tokens.

    Example:
        >>> chat_allowed_mask(6, [(1, 3), None, (4, 5)])
        [False, True, True, False, True, False]
    """
    mask = [False] * n_tokens
    for sp in spans:
        if sp is not None:
            for i in range(sp[0], min(sp[1], n_tokens)):
                mask[i] = True
    return mask


def examples_from_chats(
    rng: random.Random,
    tokenizer,
    chats: Sequence[tuple[str, Sequence[dict], dict]],
    n: int,
    *,
    max_context_tokens: int = 64,
    max_predict_tokens: int = 20,
    max_window: int = MAX_POSITIONS,
    single_position_prob: float = 0.5,
) -> list[OracleExample]:
    """``n`` context-prediction examples from ``(dataset, messages, meta)`` chats, chosen at random (layer -1)."""
    if n and not chats:
        raise InputError("no chats to build context-prediction examples from: pass chats or drop that source")
    cache: dict[int, tuple[list[int], list[bool]]] = {}
    out: list[OracleExample] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 20 * n + 100:
            raise InputError(f"could only build {len(out)} of {n} context-prediction examples from {len(chats)} chats: "
                             f"the chats are too short or empty")
        i = rng.randrange(len(chats))
        dataset, messages, meta = chats[i]
        if i not in cache:
            ids, spans = tokenize_chat(tokenizer, messages, add_generation_prompt=False)
            cache[i] = (ids, chat_allowed_mask(len(ids), spans))
        ids, mask = cache[i]
        ex = sample_context_example(rng, tokenizer, ids, dataset=dataset, allowed=mask,
                                    max_context_tokens=max_context_tokens, max_predict_tokens=max_predict_tokens,
                                    max_window=max_window, single_position_prob=single_position_prob, meta=meta)
        if ex is not None:
            out.append(ex)
    return out


def _examples_from_text(rng, tokenizer, source, split, data_dir, n, **kw) -> list[OracleExample]:
    name, docs = text_documents(source, split, data_dir)
    if n and not docs:
        raise InputError(f"the text source {source} has no documents for split {split!r}")
    out: list[OracleExample] = []
    attempts = 0
    length = kw["max_context_tokens"] + kw["max_predict_tokens"]
    while len(out) < n:
        attempts += 1
        if attempts > 20 * n + 100:
            raise InputError(f"could only build {len(out)} of {n} examples from {name}: documents too short")
        ids = text_window(rng, tokenizer, rng.choice(docs), length)
        ex = sample_context_example(rng, tokenizer, ids, dataset=name, meta={"split": split}, **kw)
        if ex is not None:
            out.append(ex)
    return out


def build_context_prediction(
    tokenizer,
    n_layers: int,
    n: int,
    seed: int,
    data_dir: Optional[PathLike] = None,
    split: str = "train",
    *,
    sources: Optional[dict[str, float]] = None,
    chats: Optional[Sequence[Sequence[dict]]] = None,
    max_context_tokens: int = 64,
    max_predict_tokens: int = 20,
    max_window: int = MAX_POSITIONS,
    single_position_prob: float = 0.5,
) -> list[OracleExample]:
    """``n`` context-prediction examples mixed over ``sources`` (weights; see ``DEFAULT_SOURCES``).

    ``chats``: on-policy chats (lists of ``{"role", "content"}``) for the ``onpolicy`` source; they are
    hash-split by their first user turn like :func:`oracle.training.tasks.onpolicy.build_onpolicy_context_prediction`.

    Example:
        >>> exs = build_context_prediction(tok, 30, n=9, seed=0)             # doctest: +SKIP
        >>> sorted({e.layer for e in exs})                                     # doctest: +SKIP
        [7, 15, 22]
    """
    n, split = check_n(n), check_split(split)
    weights = dict(DEFAULT_SOURCES if sources is None else sources)
    unknown = set(weights) - set(DEFAULT_SOURCES)
    if unknown:
        raise InputError(f"unknown context-prediction source(s) {sorted(unknown)}: use {', '.join(DEFAULT_SOURCES)}")
    records = None
    if chats is None:
        if sources is not None and weights.get("onpolicy", 0) > 0:
            raise InputError("the onpolicy source needs chats=...: build them with generate_onpolicy_chats(...)")
        weights.pop("onpolicy", None)
    elif weights.get("onpolicy", 0) > 0:
        records = onpolicy_chat_records(chats, split)
        if not records and any(w > 0 for k, w in weights.items() if k != "onpolicy"):
            log.warning("none of the %d on-policy chats is in split %r; using the other sources", len(chats), split)
            weights.pop("onpolicy")
    if max_predict_tokens < 1 or max_context_tokens < 2:
        raise InputError("max_predict_tokens must be >= 1 and max_context_tokens >= 2")
    rng = make_rng(seed, f"{FAMILY}:{split}")
    kw = dict(max_context_tokens=max_context_tokens, max_predict_tokens=max_predict_tokens,
              max_window=max_window, single_position_prob=single_position_prob)
    counts = allocate(n, weights) if n else {k: 0 for k in weights}
    out: list[OracleExample] = []
    for source, count in counts.items():
        if count == 0:
            continue
        if source in ("wikitext2", "tinyshakespeare"):
            out += _examples_from_text(rng, tokenizer, source, split, data_dir, count, **kw)
        elif source == "latentqa":
            dialogs = [(ds, msgs, {"split": split, "label": label})
                       for ds, label, msgs in latentqa_dialogs(data_dir, split)]
            out += examples_from_chats(rng, tokenizer, dialogs, count, **kw)
        elif source == "onpolicy":
            out += examples_from_chats(rng, tokenizer, records or [], count, **kw)
    rng.shuffle(out)
    for ex, layer in zip(out, balanced_layers(rng, len(out), n_layers)):
        ex.layer = layer
    log.info("built %d context-prediction examples (%s split) from %s", len(out), split, counts)
    return out


def onpolicy_chat_records(chats: Sequence[Sequence[dict]], split: str = "train",
                          eval_fraction: float = EVAL_FRACTION) -> list[tuple[str, list[dict], dict]]:
    """``(dataset, messages, meta)`` of the chats in ``split`` (hash of the first user turn).

    Example:
        >>> chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
        >>> recs = onpolicy_chat_records([chat])
        >>> [r[0] for r in recs] in ([], ["onpolicy"])
        True
    """
    check_split(split)
    out = []
    for chat in chats:
        msgs = [{"role": str(m["role"]), "content": str(m["content"])} for m in chat]
        user = next((m["content"] for m in msgs if m["role"] == "user"), "")
        if not any(m["role"] == "assistant" and m["content"].strip() for m in msgs):
            continue
        if split_of(user, eval_fraction, salt="onpolicy") == split:
            out.append((ONPOLICY_DATASET, msgs, {"split": split}))
    return out
