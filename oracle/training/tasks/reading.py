"""Reading skills: open questions with dense answers (a word, a class name, a title), the training family
``reading`` and the items of the reading-skills suite (:mod:`oracle.evals.suite`).

Every skill asks 3+ paraphrases of one question; the last paraphrase of each skill (``held_out_question``)
is never used in training, so the suite measures whether the oracle reads rather than matches wording.
The train split and the eval split never share a document (and the ``calibration`` split, a fifth of the
eval documents by hash, shares none with the suite's ``eval`` items): WikiText trains on ``wikitext2_valid`` and
evaluates on ``wikitext2_test``, SST-2 on its train and dev files, the other sources by a hash of the text
or label. Each item records ``meta["doc"]``, a hash of its source document, so tests can prove it.

Scoring kinds:

* ``first_token``: the answer is one word; the oracle is right when its most likely first answer token is
  the word's first token (case and spaces ignored).
* ``choice``: the oracle scores each candidate answer by its full-sequence log-probability; the highest
  wins. Class skills (``tense``, ``sst2``, ...) choose among the class names; ``window_word``, ``topic`` and
  ``instruction`` choose between the true answer and a distractor, in random order.

Example:
    >>> exs = build_reading(tok, 30, n=4, seed=0, skills={"word_at": 1.0})        # doctest: +SKIP
    >>> exs[0].question, exs[0].answer                                             # doctest: +SKIP
    ('Which word is at this position?', 'lobster')
"""
from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence

from hooks.errors import InputError

from oracle.data.chat import decode, tokenize_chat, tokenize_text
from oracle.data.files import PathLike, resolve_data_dir
from oracle.data.labelled import labelled_texts
from oracle.data.latentqa import latentqa_items, short_instruction
from oracle.data.splits import check_split, make_rng, stable_hash
from oracle.data.texts import content_words, wikitext_paragraphs
from oracle.data.unseen_sets import names_unseen_concept
from oracle.training.tasks.base import (LAST_MAX, MAX_POSITIONS, SEED_NAMES, OracleExample, allocate, balanced_layers,
                                        check_n)

log = logging.getLogger(__name__)

FAMILY = "reading"
WINDOW_CONTEXT = 48      # tokens of WikiText context before a read position (word skills)
TOPIC_WINDOW = 32        # tokens of a (title-masked) paragraph the topic skill reads, every one injected
MAX_CLASS_TOKENS = 48    # longer classification texts are skipped (a full-sequence read injects every token)


@dataclass(frozen=True)
class Skill:
    """One reading skill: what is asked, how it is scored, which texts it reads."""

    name: str
    scoring: str                       # "first_token" | "choice"
    questions: tuple[str, ...]         # the last one is never trained on
    positions: tuple[str, ...]         # eval variants: "one", "window", "last", "last:50" (LAST_MAX)
    classes: tuple[str, ...] = ()      # class skills: the candidate answers
    trained: bool = True               # False: never in the training mix (a held-out feature)

    @property
    def train_questions(self) -> tuple[str, ...]:
        return self.questions[:-1]

    @property
    def held_out_question(self) -> str:
        return self.questions[-1]


SKILLS: dict[str, Skill] = {s.name: s for s in (
    Skill("word_at", "first_token", ("Which word is at this position?", "What word is this?",
                                     "Name the word at this position.", "What is the word here?"), ("one",)),
    Skill("next_word", "first_token", ("What is the next word?", "Which word comes right after this?",
                                       "Predict the word that follows.", "What word follows this position?"), ("one",)),
    Skill("prev_word", "first_token", ("What is the previous word?", "Which word came right before this?",
                                       "Name the word just before this one.", "What word precedes this position?"),
          ("one",)),
    Skill("window_word", "choice", ("Name a word that occurs in this text.", "Which word appears in this passage?",
                                    "Give one word from this text.", "Say a word that this text contains."),
          ("window",)),
    Skill("topic", "choice", ("What is this text about?", "What is the topic of this passage?",
                              "Which article is this text from?", "What subject does this text describe?"),
          ("window",)),
    Skill("tense", "choice", ("Which tense is this sentence in?", "Is this sentence in the past, present or future "
                              "tense?", "What is the tense of this text?", "When does this sentence take place: past, "
                              "present or future?"), ("last", LAST_MAX), ("past", "present", "future")),
    Skill("gmt", "choice", ("Is this statement true or false?", "Is this claim true or false?",
                            "What is the truth value of this statement?", "Would you call this statement true or "
                            "false?"), ("last", LAST_MAX), ("true", "false")),
    Skill("sst2", "choice", ("What is the sentiment of this text?", "Is this review positive or negative?",
                             "How does the writer feel: positive or negative?", "Which sentiment does this text "
                             "express?"), ("last", LAST_MAX), ("negative", "positive")),
    Skill("singular_plural", "choice", ("Is the subject of this sentence singular or plural?",
                                        "Does this sentence talk about one thing or several: singular or plural?",
                                        "Is the grammatical number of the subject singular or plural?"),
          ("last", LAST_MAX), ("singular", "plural"), trained=False),
    Skill("instruction_word", "first_token", ("What is the first word of the assistant's instruction?",
                                              "Which word starts the instruction the assistant was given?",
                                              "How does the hidden instruction begin? Give its first word.",
                                              "Give the first word of the assistant's hidden instruction."),
          ("window",)),
    Skill("instruction", "choice", ("What is the assistant's hidden instruction?", "Which instruction was the "
                                    "assistant given?", "Describe the instruction in the system prompt.",
                                    "Which instruction is the assistant following?"), ("window",)),
)}

#: the training mix of reading skills (the default of ``ao train``; why in experiments/2026-12-reading-recipe/README.md)
DEFAULT_SKILL_WEIGHTS = {"word_at": 0.25, "next_word": 0.1, "prev_word": 0.1, "window_word": 0.09, "topic": 0.13,
                         "tense": 0.08, "gmt": 0.08, "sst2": 0.1, "instruction_word": 0.04, "instruction": 0.03}

_CLASS_DATA = {"tense": "tense", "gmt": "gmt", "sst2": "sst2", "singular_plural": "singular_plural"}


def check_skills(names: Sequence[str]) -> list[str]:
    """Validate skill names (one-line error naming the known ones).

    Example:
        >>> check_skills(["tense", "word_at"])
        ['tense', 'word_at']
    """
    bad = [n for n in names if n not in SKILLS]
    if bad:
        raise InputError(f"unknown skill(s) {', '.join(map(repr, bad))}: use {', '.join(SKILLS)}")
    return list(names)


#: a split of its own for fitting calibration and abstention: a fifth of the eval split's documents (by hash),
#: which the suite (split "eval") never draws
CALIBRATION = "calibration"
_MAX_DRAWS = 200


def is_calibration_doc(doc: str) -> bool:
    """Whether an eval-split document belongs to the calibration share (one in five, by hash).

    Example:
        >>> sum(is_calibration_doc(f"text {i}") for i in range(1000)) in range(150, 250)
        True
    """
    return int(doc_hash(doc), 16) % 5 == 0


def doc_hash(text: str) -> str:
    """The hash that names a source document (train and eval items never share one).

    Example:
        >>> doc_hash("a b") == doc_hash(" a  b ")
        True
    """
    return f"{stable_hash(' '.join(text.split()).lower()):016x}"


# ---------------------------------------------------------------- WikiText words

_TOKENIZED: dict = {}


def _tokenized(tokenizer, text: str) -> tuple[list[int], list[str]]:
    """Token ids of a paragraph and each token's text, cached (a training mix draws each paragraph many times)."""
    key = (id(tokenizer), text)
    hit = _TOKENIZED.get(key)
    if hit is None:
        ids = tokenize_text(tokenizer, text)
        hit = (ids, [decode(tokenizer, [i]) for i in ids])
        if len(_TOKENIZED) > 50_000:
            _TOKENIZED.clear()
        _TOKENIZED[key] = hit
    return hit


def whole_words(pieces: Sequence[str]) -> list[int]:
    """Indices of tokens that are one whole alphabetic word: the token starts with a space and the next
    token does not continue the word.

    Example:
        >>> whole_words([" The", " lob", "ster", " ate", "."])
        [0, 3]
    """
    out = []
    for i, p in enumerate(pieces):
        w = p[1:]
        nxt = pieces[i + 1] if i + 1 < len(pieces) else " "
        if p.startswith(" ") and len(w) >= 2 and w.isalpha() and w != "unk" and not nxt[:1].isalpha():
            out.append(i)
    return out


def _word_item(rng: random.Random, tokenizer, skill: str, split: str, root: str):
    paras = wikitext_paragraphs(root, split)
    for _ in range(50):
        title, para = rng.choice(paras)
        ids, pieces = _tokenized(tokenizer, para)
        words = {i for i in whole_words(pieces) if not names_unseen_concept(pieces[i])}   # never taught
        if skill == "word_at":
            cands = [p for p in words]
            answer_at = 0
        elif skill == "next_word":
            cands = [p for p in words if p + 1 in words]
            answer_at = 1
        else:
            cands = [p for p in words if p - 1 in words]
            answer_at = -1
        if not cands:
            continue
        p = rng.choice(sorted(cands))
        start = max(0, p - WINDOW_CONTEXT + 1)
        return (ids[start:p + 1], [p - start], pieces[p + answer_at].strip(), None, para,
                {"next_token": ids[p + 1] if p + 1 < len(ids) else None})
    raise InputError(f"no usable WikiText paragraph for skill {skill}: restore text/ in shared/data")


def _window_item(rng: random.Random, tokenizer, split: str, root: str):
    paras = wikitext_paragraphs(root, split)
    for _ in range(50):
        _, para = rng.choice(paras)
        ids, pieces = _tokenized(tokenizer, para)
        end = rng.randrange(min(len(ids), 8) - 1, min(len(ids), 3 * WINDOW_CONTEXT))
        start = max(0, end - WINDOW_CONTEXT + 1)
        k = rng.randint(8, 32)
        positions = list(range(max(start, end - k + 1), end + 1))
        inside = sorted({pieces[i].strip() for i in whole_words(pieces)
                         if positions[0] <= i <= end and content_words(pieces[i])
                         and not names_unseen_concept(pieces[i])})
        if not inside:
            continue
        present = content_words(para)
        for _ in range(50):
            _, other = rng.choice(paras)
            outside = sorted(w for w in re.findall(r"[A-Za-z]{5,}", other) if w.lower() not in present
                             and w.lower() in content_words(w))
            if outside:
                word = rng.choice(inside)
                distractor = rng.choice(outside)
                return ids[start:end + 1], [p - start for p in positions], word, distractor, para, {}
    raise InputError("no WikiText window with a content word: restore text/ in shared/data")


def mask_title(text: str, title: str) -> str:
    """``text`` with every word of ``title`` (3+ letters) removed: what it describes, not its name.

    Example:
        >>> mask_title("The European lobster lives in Europe.", "European lobster")
        'The lives in Europe.'
    """
    words = {w.lower() for w in re.findall(r"[A-Za-z]{3,}", title)}
    out = re.sub(r"[A-Za-z]+(?:'s)?", lambda m: "" if re.sub(r"'s$", "", m.group(0)).lower() in words
                 else m.group(0), text)
    return re.sub(r"\s+([.,;:])", r"\1", re.sub(r" {2,}", " ", out)).strip()


def _topic_item(rng: random.Random, tokenizer, split: str, root: str):
    paras = wikitext_paragraphs(root, split)
    titles = sorted({t for t, _ in paras if not names_unseen_concept(t)})
    title, para = rng.choice(paras)
    while names_unseen_concept(title):   # the unseen sets' concepts are never taught
        title, para = rng.choice(paras)
    ids, _ = _tokenized(tokenizer, mask_title(para, title))
    start = rng.randrange(0, max(1, len(ids) - TOPIC_WINDOW + 1))
    ids = ids[start:start + TOPIC_WINDOW]
    own = {w.lower() for w in title.split()}
    others = [t for t in titles if t != title and not own & {w.lower() for w in t.split()}]
    return ids, list(range(len(ids))), title, rng.choice(others), para, {}


# ---------------------------------------------------------------- classes and instructions

@lru_cache(maxsize=16)
def _class_rows(root: str, skill: str, split: str) -> tuple:
    return tuple(labelled_texts(_CLASS_DATA[skill], split, root))


def _class_item(rng: random.Random, tokenizer, skill: str, split: str, root: str, position: str):
    rows = _class_rows(root, skill, split)
    spec = SKILLS[skill]
    for _ in range(100):
        text, label = rng.choice(rows)
        ids = tokenize_text(tokenizer, text)
        if 0 < len(ids) <= MAX_CLASS_TOKENS:
            break
    else:
        raise InputError(f"no {skill} text within {MAX_CLASS_TOKENS} tokens in split {split!r}")
    mode = position if position in ("last", LAST_MAX) else rng.choice(("last", LAST_MAX))
    positions = [len(ids) - 1] if mode == "last" else list(range(max(0, len(ids) - MAX_POSITIONS), len(ids)))
    return ids, positions, label, None, text, {"classes": list(spec.classes), "position": mode}


@lru_cache(maxsize=4)
def _instruction_pool(root: str, split: str) -> tuple:
    return tuple(latentqa_items(root, split, sources=("system",)))


def _instruction_item(rng: random.Random, tokenizer, skill: str, split: str, root: str):
    pool = _instruction_pool(root, split)
    for _ in range(200):
        item = rng.choice(pool)
        ids, spans = tokenize_chat(tokenizer, item.chat(), add_generation_prompt=True)
        if len(ids) > 96 or spans[-1] is None or names_unseen_concept(item.instruction):
            continue
        s, e = spans[-1]
        positions = list(range(max(s, e - MAX_POSITIONS), e))
        short = short_instruction(item.instruction)
        if skill == "instruction_word":
            return ids[:e], positions, re.sub(r"\W", "", short.split()[0]), None, item.label, {}
        other = rng.choice([o for o in pool if o.label != item.label and not names_unseen_concept(o.instruction)])
        return ids[:e], positions, short, short_instruction(other.instruction), item.label, {}
    raise InputError("no LatentQA dialog within 96 tokens: restore latentqa/ in shared/data")


def sample_item(rng: random.Random, tokenizer, skill: str, split: str, root: str, position: str = "mixed"):
    """``(context_ids, positions, answer, distractor or None, source document, extra meta)`` of one item."""
    if skill in ("word_at", "next_word", "prev_word"):
        return _word_item(rng, tokenizer, skill, split, root)
    if skill == "window_word":
        return _window_item(rng, tokenizer, split, root)
    if skill == "topic":
        return _topic_item(rng, tokenizer, split, root)
    if skill in _CLASS_DATA:
        return _class_item(rng, tokenizer, skill, split, root, position)
    return _instruction_item(rng, tokenizer, skill, split, root)


def build_reading(
    tokenizer,
    n_layers: int,
    n: int,
    seed: int,
    data_dir: Optional[PathLike] = None,
    split: str = "train",
    *,
    skills: Optional[dict[str, float]] = None,
    position: str = "mixed",
    layer: Optional[int] = None,
    questions: str = "train",
) -> list[OracleExample]:
    """``n`` reading examples over ``skills`` (weights; default :data:`DEFAULT_SKILL_WEIGHTS`).

    ``questions``: ``"train"`` (the training paraphrases only), ``"all"`` (every paraphrase, round robin:
    the suite) or ``"held_out"`` (only the paraphrase never trained on). ``position``: for class skills,
    ``"last"``, ``"last:50"`` or ``"mixed"``. ``layer``: one source layer (default: the three depths, balanced).
    Choice items carry ``meta["candidates"]`` (the true answer first for distractor skills is shuffled away)
    and ``meta["label"]``, the index of the true candidate.
    """
    n = check_n(n)
    if split != CALIBRATION:
        check_split(split)
    source = "eval" if split == CALIBRATION else split
    if questions not in ("train", "all", "held_out"):
        raise InputError(f"questions={questions!r}: use train, all or held_out")
    weights = dict(DEFAULT_SKILL_WEIGHTS if skills is None else skills)
    check_skills(list(weights))
    if split == "train" and questions != "train":
        raise InputError("training examples use the training paraphrases only (questions='train')")
    untrainable = [s for s in weights if not SKILLS[s].trained and split == "train" and weights[s] > 0]
    if untrainable:
        raise InputError(f"skill(s) {untrainable} are held out from training: use them in the suite only")
    root = str(resolve_data_dir(data_dir))
    out: list[OracleExample] = []
    for skill, count in (allocate(n, weights) if n else {}).items():
        spec = SKILLS[skill]
        rng = make_rng(seed, f"{FAMILY}:{skill}:{split}:{SEED_NAMES.get(position, position)}")
        pool = {"train": spec.train_questions, "all": spec.questions, "held_out": (spec.held_out_question,)}[questions]
        for i in range(count):
            for _ in range(_MAX_DRAWS):   # the eval split's documents are shared out between eval and calibration
                ids, positions, answer, distractor, doc, extra = sample_item(rng, tokenizer, skill, source, root, position)
                if source != "eval" or is_calibration_doc(doc) == (split == CALIBRATION):
                    break
            else:
                raise InputError(f"no {split} document for skill {skill} in {_MAX_DRAWS} draws: check --data-dir")
            q_idx = i % len(pool) if questions != "train" else rng.randrange(len(pool))
            question = pool[q_idx]
            meta = {"skill": skill, "split": split, "doc": doc_hash(doc), "scoring": spec.scoring,
                    "held_out_question": question == spec.held_out_question, **extra}
            if spec.classes:
                meta["candidates"], meta["label"] = list(spec.classes), spec.classes.index(answer)
            elif distractor is not None:
                flip = rng.random() < 0.5
                meta["candidates"] = [distractor, answer] if flip else [answer, distractor]
                meta["label"] = int(flip)
            out.append(OracleExample(FAMILY, list(ids), list(positions), -1, question, answer, skill, meta))
    rng = make_rng(seed, f"{FAMILY}:{split}:layers")
    layers = [layer] * len(out) if layer is not None else balanced_layers(rng, len(out), n_layers)
    for ex, L in zip(out, layers):
        ex.layer = int(L)
    log.info("built %d reading examples (%s split, %s questions)", len(out), split, questions)
    return out
