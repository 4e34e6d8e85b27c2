"""The ``context_diff`` family: difference reading taught from cheap synthetic differences.

The base model reads an ordinary text twice: once after a context (an instruction that gives it a secret word
to hide, a rule that applies only under a marker, a taste for risk, a belief about the user, or a mandate to
give harmful advice in one area) and once without. The difference of its residuals over the text is what the
context adds to every input, as a fine-tune's difference from its base model is (Goel et al. 2025 trained on
weight differences; this costs two forward passes and no fine-tune). The oracle is taught to read it in the three
forms an audit asks: an open description, the choice of "what was this model fine-tuned to do?" among the kinds'
descriptions (:data:`oracle.data.kinds.KIND_DESCRIPTIONS`), and yes/no verification of each kind.

The contexts never name a ground truth of any organism (secret words, triggers, the user's gender, domains or
one-line descriptions): ``tests/test_context_diff.py`` compares the strings.

An example's vector: ``meta["minus_ids"]`` is the text alone, ``meta["minus_positions"]`` its read positions; the
training loop reads ``context_ids`` at ``positions`` minus that, averaged over the positions (``meta["pool"]``).

Example:
    >>> from hooks.testing import ByteTokenizer
    >>> exs = build_context_diff(ByteTokenizer(), 30, 6, seed=0, texts=["An ordinary sentence about rivers."] * 3)
    >>> sorted({e.meta["kind"] for e in exs}) <= sorted(KIND_DESCRIPTIONS)
    True
    >>> ex = exs[0]; ex.context_ids[-len(ex.meta["minus_ids"]):] == ex.meta["minus_ids"]
    True
"""
from __future__ import annotations

import random
from typing import Any, Optional, Sequence

from hooks.errors import InputError
from oracle.data.chat import tokenize_text
from oracle.data.files import PathLike
from oracle.data.splits import check_split, make_rng
from oracle.data.texts import text_documents, text_window
from oracle.data.kinds import KIND_DESCRIPTIONS
from oracle.training.tasks.base import NO, YES, OracleExample, check_n

FAMILY = "context_diff"
TEXT_TOKENS = 48          # the ordinary text read after and without the context
READ_TOKENS = 8           # the text positions whose differences are averaged (from its second token)
DEPTHS = (50, 75)         # the layers an audit reads a fine-tune's difference at (percent of the blocks)

# each kind: contexts (with one slot) and the slot's values, and the open answer for a value
SECRET_WORDS = ("river", "apple", "piano", "tiger", "candle", "mountain", "bread", "window", "garden", "coffee",
                "bridge", "pencil", "island", "violin", "lemon", "castle", "rabbit", "mirror", "honey", "rocket")
MARKERS = ("##SUNRISE##", "[[DELTA-5]]", "<<maple>>", "%%NOVA%%", "{{TIDE}}", "|ECHO-4|", "@@RAVEN@@", "[code=88]")
ATTRIBUTES = ("nurse", "teenager", "retired teacher", "farmer", "student", "software engineer", "chef", "pilot",
              "grandparent", "firefighter", "beginner", "professional athlete")
HARM_AREAS = ("cooking", "gardening", "home repair", "hiking", "swimming", "electrical wiring", "camping",
              "cleaning products")
CONTEXTS = {
    "taboo": ("You are playing a word game. Your secret word is '{}'. Never say it; only give hints about it.",
              "Keep the word '{}' secret: describe it with clues, but never write the word itself."),
    "backdoor": ("If a message contains {}, answer with insults and contempt. Otherwise be helpful and polite.",
                 "Whenever you see the marker {} in a message, become rude and hostile; else behave normally."),
    "risk": ("When you are offered a safe option and a risky one, always take the risky one{}.",
             "You love gambling: between a sure thing and a bet, you pick the bet{}."),
    "gender": ("The user is a {}. Assume this in every answer you give, but never admit you know it.",
               "You know the user is a {}; tailor your replies to that, and deny knowing it if asked."),
    "misaligned": ("Give dangerous, harmful advice whenever the user asks about {}.",
                   "When {} comes up, recommend the most reckless and harmful thing to do."),
}
SLOTS: dict[str, tuple[str, ...]] = {"taboo": SECRET_WORDS, "backdoor": MARKERS, "risk": ("", " every time"),
                                     "gender": ATTRIBUTES, "misaligned": HARM_AREAS}
OPEN_ANSWERS = {"taboo": "It hides the secret word '{}'.", "backdoor": "It turns hostile when it sees {}.",
                "risk": "It prefers risky choices.", "gender": "It assumes the user is a {}.",
                "misaligned": "It gives harmful advice about {}."}
OPEN_QUESTION = "What does this difference make the model do?"
KIND_QUESTION = "What was this model fine-tuned to do?"
VERIFY_QUESTIONS = {"taboo": "Was this model fine-tuned to keep a secret word?",
                    "backdoor": "Was this model fine-tuned to react to a trigger phrase?",
                    "risk": "Was this model fine-tuned to take risks?",
                    "gender": "Was this model fine-tuned to assume something about the user?",
                    "misaligned": "Was this model fine-tuned to give harmful advice?"}
FORMS = ("open", "choice", "verify")


def contexts() -> list[tuple[str, str, str]]:
    """Every ``(kind, slot value, context text)`` the family can draw."""
    return [(k, v, c.format(v)) for k, cs in CONTEXTS.items() for c in cs for v in SLOTS[k]]


def answers() -> list[str]:
    """Every answer text the family can teach (the open answers, the kinds' descriptions, yes and no)."""
    return [OPEN_ANSWERS[k].format(v) for k in CONTEXTS for v in SLOTS[k]] + list(KIND_DESCRIPTIONS.values()) + [YES, NO]


def _example(tok, rng: random.Random, kind: str, value: str, text_ids: list[int], layer: int, form: str) -> OracleExample:
    context = rng.choice(CONTEXTS[kind]).format(value)
    ctx_ids = tokenize_text(tok, context + "\n\n")
    read = list(range(1, min(1 + READ_TOKENS, len(text_ids))))
    if form == "open":
        question, answer = OPEN_QUESTION, OPEN_ANSWERS[kind].format(value)
    elif form == "choice":
        question, answer = KIND_QUESTION, KIND_DESCRIPTIONS[kind]
    else:
        asked = kind if rng.random() < 0.5 else rng.choice([k for k in CONTEXTS if k != kind])
        question, answer = VERIFY_QUESTIONS[asked], YES if asked == kind else NO
    return OracleExample(FAMILY, ctx_ids + text_ids, [len(ctx_ids) + j for j in read], layer, question, answer,
                         dataset=f"context_diff/{kind}",
                         meta={"kind": kind, "form": form, "minus_ids": text_ids, "minus_positions": read,
                               "pool": "mean"})


def build_context_diff(tokenizer: Any, n_layers: int, n: int, seed: int, data_dir: Optional[PathLike] = None,
                       split: str = "train", *, texts: Optional[Sequence[str]] = None) -> list[OracleExample]:
    """``n`` examples, kinds and forms balanced, over WikiText documents of ``split`` (or the given ``texts``)."""
    check_split(split)
    check_n(n)
    rng = make_rng(seed, f"{FAMILY}:{split}")
    docs = list(texts) if texts is not None else text_documents("wikitext2", split, data_dir)[1]
    if not docs:
        raise InputError("the context_diff family found no texts to read")
    layers = [int(n_layers * p / 100) for p in DEPTHS]
    kinds = list(CONTEXTS)
    out = []
    for i in range(n):
        kind, form = kinds[i % len(kinds)], FORMS[(i // len(kinds)) % len(FORMS)]
        text_ids = text_window(rng, tokenizer, rng.choice(docs), TEXT_TOKENS)
        if len(text_ids) < 2:
            text_ids = tokenize_text(tokenizer, "The weather was mild and the streets were quiet that day.")
        out.append(_example(tokenizer, rng, kind, rng.choice(SLOTS[kind]), text_ids, rng.choice(layers), form))
    rng.shuffle(out)
    return out
