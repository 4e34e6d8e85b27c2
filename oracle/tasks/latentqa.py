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

Sources: ``system`` (``train/system.json`` + ``eval/system.json``: system prompt + user turn),
``stimulus`` (``eval/stimulus.json``: the instruction as a user turn, the first sentence of the
model's reply, then the user turn) and ``controls`` (the three demo controls, off by default).

Splits are label-disjoint: a deterministic hash of the label puts about 10 % of the labels in
``split="eval"``; those labels, and their instruction texts, never appear in ``split="train"``.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence

from hooks.errors import InputError

from .base import (EVAL_FRACTION, MAX_POSITIONS, NO, YES, OracleExample, PathLike, allocate, balanced_bools,
                   balanced_layers, check_n, check_split, data_file, make_rng, resolve_data_dir, split_of,
                   tokenize_chat)

log = logging.getLogger(__name__)

FAMILY = "latentqa"
YES_NO_PREFIX = "Answer with 'Yes' or 'No' only. "

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


@dataclass(frozen=True)
class LatentQAItem:
    """One hidden instruction in one dialog, with what can be asked about it."""

    source: str                                # "system" | "stimulus" | "controls"
    label: str                                 # LatentQA label slug, e.g. "persona-role-dreamweaver"
    instruction: str                           # the full hidden instruction
    messages: tuple[tuple[str, str], ...]      # (role, content); the last one is the user turn read
    qa: tuple[tuple[str, str], ...] = ()       # upstream (question, answer) pairs, if any

    @property
    def dataset(self) -> str:
        return f"latentqa/{self.source}"

    @property
    def kind(self) -> Optional[str]:
        """``"persona"``, ``"goal"`` or None (controls)."""
        head = self.label.split("-", 1)[0]
        return head if head in ("persona", "goal") else None

    @property
    def topic(self) -> str:
        """A few words naming the instruction, from the label slug.

        Example:
            >>> LatentQAItem("system", "goal-stylistic-pun-lighthearted-tone", "", ()).topic
            'pun lighthearted tone'
        """
        parts = [p for p in self.label.split("-") if p]
        if self.kind is None:
            parts = parts[1:] if len(parts) > 1 else parts
            return " ".join(parts)
        return " ".join(parts[2:] if len(parts) >= 3 else parts[1:])

    def chat(self) -> list[dict]:
        return [{"role": r, "content": c} for r, c in self.messages]


def first_sentence(text: str, max_words: int = 40) -> str:
    """The first sentence of ``text``, cut at ``max_words`` words.

    Example:
        >>> first_sentence("Sure! I will do that. Then more.")
        'Sure!'
    """
    text = " ".join(text.split())
    sent = re.split(r"(?<=[.!?])\s+", text, maxsplit=1)[0]
    words = sent.split()
    return " ".join(words[:max_words]) + ("..." if len(words) > max_words else "")


_LEADS = (r"^please,?\s+", r"^i'd like you to\s+", r"^i would like you to\s+", r"^i want you to\s+",
          r"^could you (please )?", r"^can you (please )?")


def short_instruction(instruction: str) -> str:
    """The instruction's first sentence as an imperative, without the polite lead-in.

    Example:
        >>> short_instruction("Please adopt the persona of a dreamweaver. Be whimsical.")
        'Adopt the persona of a dreamweaver.'
        >>> short_instruction("In your next response, please try to use a pun.")
        'In your next response, try to use a pun.'
    """
    s = first_sentence(instruction)
    for pat in _LEADS:
        s = re.sub(pat, "", s, flags=re.IGNORECASE)
    s = re.sub(r",\s+please\s+", ", ", s)
    s = s.rstrip("?").rstrip()
    if s and s[-1] not in ".!":
        s += "."
    return s[:1].upper() + s[1:]


def _content_words(topic: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", topic.lower()) if len(w) > 3 and w not in _STOP}


@lru_cache(maxsize=4)
def _load_items(root: str) -> tuple[LatentQAItem, ...]:
    base = resolve_data_dir(root)

    def read(rel: str):
        path = data_file(base, f"latentqa/{rel}")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InputError(f"{path} is not valid JSON ({e.msg}): restore it from shared/data") from None

    qa = {k: tuple((str(q), str(a)) for q, a in v) for k, v in read("eval/qa.json").items()}
    items: list[LatentQAItem] = []
    for rel in ("train/system.json", "eval/system.json"):
        for x in read(rel):
            items.append(LatentQAItem("system", x["label"], x["system"],
                                      (("system", x["system"]), ("user", x["stimulus_user"])), qa.get(x["label"], ())))
    for x in read("eval/stimulus.json"):
        reply = first_sentence(x["control_model"], max_words=30)
        items.append(LatentQAItem("stimulus", x["label"], x["control_user"],
                                  (("user", x["control_user"]), ("assistant", reply), ("user", x["stimulus_user"])),
                                  qa.get(x["label"], ())))
    prompts = read("prompts/default.json")
    controls = sorted((base / "latentqa" / "controls").glob("*.json"))
    for path in controls:
        for instruction, pairs in json.loads(path.read_text(encoding="utf-8")).items():
            for p in prompts:
                items.append(LatentQAItem("controls", f"control-{path.stem.replace('_', '-')}", instruction,
                                          (("system", instruction), ("user", p)), tuple((q, a) for q, a in pairs)))
    return tuple(items)


def latentqa_items(data_dir: Optional[PathLike] = None, split: str = "train",
                   sources: Optional[Sequence[str]] = None, eval_fraction: float = EVAL_FRACTION) -> list[LatentQAItem]:
    """The LatentQA items of one split (label-disjoint, and disjoint in instruction text).

    Example:
        >>> train = {i.label for i in latentqa_items(split="train")}
        >>> evals = {i.label for i in latentqa_items(split="eval")}
        >>> train & evals
        set()
    """
    check_split(split)
    items = _load_items(str(resolve_data_dir(data_dir)))
    in_eval = {i.label: split_of(i.label, eval_fraction, salt="latentqa") == "eval" for i in items}
    eval_texts = {" ".join(i.instruction.split()).lower() for i in items if in_eval[i.label]}
    out = []
    for i in items:
        if sources is not None and i.source not in sources:
            continue
        if split == "eval" and in_eval[i.label]:
            out.append(i)
        elif split == "train" and not in_eval[i.label] and " ".join(i.instruction.split()).lower() not in eval_texts:
            out.append(i)
    return out


def latentqa_dialogs(data_dir: Optional[PathLike] = None, split: str = "train") -> list[tuple[str, str, list[dict]]]:
    """``(dataset, label, messages)`` of the LatentQA dialogs of a split (for context prediction).

    The three demo controls are left out.
    """
    return [(i.dataset, i.label, i.chat()) for i in latentqa_items(data_dir, split, sources=("system", "stimulus"))]


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
    """``n`` system-prompt QA examples. ``position``: ``"window"`` (the user turn's tokens, at most 50),
    ``"last"`` (the context's last token) or ``"mixed"`` (half each).

    Dialogs longer than ``max_context_tokens`` (default 96: the whole instruction must fit) are skipped.

    Example:
        >>> ex = build_latentqa(tok, 30, n=1, seed=0)[0]                     # doctest: +SKIP
        >>> ex.question, ex.answer                                           # doctest: +SKIP
        ("Answer with 'Yes' or 'No' only. Is the assistant's hidden instruction about dreamweaver?", 'Yes')
    """
    n, split = check_n(n), check_split(split)
    if position not in ("window", "last", "mixed"):
        raise InputError(f"unknown position mode {position!r}: use window, last or mixed")
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
            mode = position if position != "mixed" else rng.choice(("window", "last"))
            if mode == "window":
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
