"""System-prompt QA (LatentQA / SPQA): the target reads a hidden instruction plus a user turn; the
oracle answers questions about the instruction from the activations of the user turn.

The upstream LatentQA *training* QA pairs are missing (see the data README), so the questions are
built from what is there and can be graded exactly:

* ``topic`` (yes/no, balanced): "Is the assistant's hidden instruction about <topic>?" with the topic
  taken from the item's label slug (``persona-role-dreamweaver`` -> "dreamweaver") or, for No, from
  another instruction of the same split that shares no content word with it;
* ``kind`` (yes/no, balanced): persona vs goal;
* ``instruction`` (generative): the instruction's first sentence, lightly normalised;
* ``qa`` (generative): the upstream ``eval/qa.json`` pairs, where the label has them.

Sources: ``system``, ``stimulus`` and ``controls`` (the three demo controls, off by default), read by
:mod:`oracle.data.latentqa`, whose splits are label-disjoint (and disjoint in instruction text).
"""
from __future__ import annotations

import logging
import re
from typing import Optional, Sequence

from hooks.errors import InputError

from oracle.data.chat import tokenize_chat
from oracle.data.files import PathLike
from oracle.data.latentqa import LatentQAItem, latentqa_items, short_instruction
from oracle.data.splits import EVAL_FRACTION, check_split, make_rng
from oracle.training.tasks.base import (MAX_POSITIONS, NO, OracleExample, YES, YES_NO_PREFIX, allocate,
                                        balanced_bools, balanced_layers, check_n)

log = logging.getLogger(__name__)

FAMILY = "latentqa"

DEFAULT_SOURCES = {"system": 0.8, "stimulus": 0.2, "controls": 0.0}
DEFAULT_KINDS = {"topic": 0.4, "kind": 0.15, "instruction": 0.3, "qa": 0.15}
YES_NO_KINDS = ("topic", "kind")

TOPIC_QUESTIONS = (
    "Is the assistant's hidden instruction about {topic}?",
    "Does the system prompt have to do with {topic}?",
    "Was the assistant told something related to {topic}?",
)
PERSONA_QUESTIONS = (
    "Has the assistant been asked to adopt a persona?",
    "Is the assistant instructed to play a character or persona?",
)
GOAL_QUESTIONS = (
    "Has the assistant been given a goal for its replies rather than a persona?",
    "Is the assistant instructed to pursue a goal in its reply, not to play a persona?",
)
INSTRUCTION_QUESTIONS = (
    "What is the assistant's hidden instruction?",
    "What was the assistant told to do?",
    "Summarize the instruction the assistant was given.",
)

_STOP = {"with", "that", "from", "your", "their", "about", "into", "other", "this", "what", "when"}


def _content_words(topic: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", topic.lower()) if len(w) > 3 and w not in _STOP}


def _pick_distractor(rng, item: LatentQAItem, pool: Sequence[LatentQAItem]) -> Optional[LatentQAItem]:
    words = _content_words(item.topic)
    same_kind = rng.random() < 0.5
    for _ in range(50):
        other = rng.choice(pool)
        if other.label == item.label or (same_kind and other.kind != item.kind):
            continue
        if _content_words(other.topic) & words or not other.topic:
            continue
        return other
    return None


def build_latentqa(
    tokenizer,
    n_layers: int,
    n: int,
    seed: int,
    data_dir: Optional[PathLike] = None,
    split: str = "train",
    *,
    sources: Optional[dict[str, float]] = None,
    question_kinds: Optional[dict[str, float]] = None,
    max_context_tokens: int = 96,
    position: str = "mixed",
    eval_fraction: float = EVAL_FRACTION,
) -> list[OracleExample]:
    """``n`` system-prompt QA examples. ``position``: ``"user_turn"`` (the user turn's tokens, at most 50),
    ``"last"`` (the context's last token) or ``"mixed"`` (half each).

    Dialogs longer than ``max_context_tokens`` (default 96: the whole instruction must fit) are skipped.

    Example:
        >>> ex = build_latentqa(tok, 30, n=1, seed=0)[0]                     # doctest: +SKIP
        >>> ex.question, ex.answer                                           # doctest: +SKIP
        ("Answer with 'Yes' or 'No' only. Is the assistant's hidden instruction about dreamweaver?", 'Yes')
    """
    n, split = check_n(n), check_split(split)
    if position not in ("user_turn", "last", "mixed"):
        raise InputError(f"unknown position mode {position!r}: use user_turn, last or mixed")
    src_w = dict(DEFAULT_SOURCES if sources is None else sources)
    kind_w = dict(DEFAULT_KINDS if question_kinds is None else question_kinds)
    for name, given, known in (("source", src_w, DEFAULT_SOURCES), ("question kind", kind_w, DEFAULT_KINDS)):
        bad = set(given) - set(known)
        if bad:
            raise InputError(f"unknown latentqa {name}(s) {sorted(bad)}: use {', '.join(known)}")
    src_w = {k: v for k, v in src_w.items() if v > 0}
    rng = make_rng(seed, f"{FAMILY}:{split}")
    pools = {s: latentqa_items(data_dir, split, sources=(s,), eval_fraction=eval_fraction) for s in src_w}
    for s, pool in pools.items():
        if n and not pool:
            raise InputError(f"the latentqa source {s} has no items in split {split!r}")
    all_items = [i for pool in pools.values() for i in pool]
    with_qa = [i for i in all_items if i.qa]

    plan: list[tuple[str, bool]] = []
    for kind, count in (allocate(n, kind_w) if n else {}).items():
        if kind == "qa" and not with_qa:
            kind = "instruction"
        answers = balanced_bools(rng, count) if kind in YES_NO_KINDS else [True] * count
        plan += [(kind, a) for a in answers]
    rng.shuffle(plan)
    src_plan = [s for s, c in (allocate(n, src_w) if n else {}).items() for _ in range(c)]
    rng.shuffle(src_plan)

    out: list[OracleExample] = []
    skipped = 0
    for (kind, want_yes), source in zip(plan, src_plan):
        for attempt in range(200):
            item = rng.choice(with_qa if kind == "qa" else pools[source])
            if kind == "kind" and item.kind is None:
                continue
            ids, spans = tokenize_chat(tokenizer, item.chat(), add_generation_prompt=True)
            if len(ids) > max_context_tokens or spans[-1] is None:
                skipped += 1
                continue
            ex = _make_question(rng, item, kind, want_yes, all_items)
            if ex is None:
                continue
            question, answer, extra = ex
            mode = position if position != "mixed" else rng.choice(("user_turn", "last"))
            if mode == "user_turn":
                start, end = spans[-1]
                positions = list(range(max(start, end - MAX_POSITIONS), end))
            else:
                positions = [len(ids) - 1]
            out.append(OracleExample(
                family=FAMILY, context_ids=ids, positions=positions, layer=-1, question=question, answer=answer,
                dataset=item.dataset,
                meta={"split": split, "label": item.label, "kind": kind, "position": mode, **extra},
            ))
            break
        else:
            raise InputError(f"could not build a latentqa {kind} question within {max_context_tokens} tokens: "
                             f"raise max_context_tokens")
    for ex, layer in zip(out, balanced_layers(rng, len(out), n_layers)):
        ex.layer = layer
    if skipped:
        log.debug("latentqa: skipped %d dialogs longer than %d tokens", skipped, max_context_tokens)
    log.info("built %d latentqa examples (%s split)", len(out), split)
    return out


def _make_question(rng, item: LatentQAItem, kind: str, want_yes: bool,
                   pool: Sequence[LatentQAItem]) -> Optional[tuple[str, str, dict]]:
    if kind == "topic":
        about = item if want_yes else _pick_distractor(rng, item, pool)
        if about is None or not about.topic:
            return None
        q = YES_NO_PREFIX + rng.choice(TOPIC_QUESTIONS).format(topic=about.topic)
        return q, YES if want_yes else NO, {"topic": about.topic, "yes": int(want_yes)}
    if kind == "kind":
        is_persona = item.kind == "persona"
        ask_persona = is_persona if want_yes else not is_persona
        q = YES_NO_PREFIX + rng.choice(PERSONA_QUESTIONS if ask_persona else GOAL_QUESTIONS)
        return q, YES if want_yes else NO, {"instruction_kind": item.kind, "yes": int(want_yes)}
    if kind == "instruction":
        return rng.choice(INSTRUCTION_QUESTIONS), short_instruction(item.instruction), {}
    if kind == "qa":
        q, a = rng.choice(item.qa)
        return q, a, {}
    raise InputError(f"unknown latentqa question kind {kind!r}")
