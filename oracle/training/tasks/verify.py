"""Verification: yes/no questions "Is it X?" whose X comes from a large vocabulary, true half the time, with
hard negatives from the same family, so that the yes/no answer follows what the oracle's open reading sees.

Kinds (``KIND_WEIGHTS``):

- ``word``: one WikiText vector, "Is the word at this position 'X'?"; a negative is another whole word of the
  same paragraph (the word skill the oracle reads at 0.95, asked as a check);
- ``class``: a tense, sentiment or truth item of the reading skills, "Is this sentence in the past tense?",
  a negative names another class of the same skill;
- ``entity``: the vectors of a name alone (a city, a country, a food, a landmark, a person), a relation asked
  about it ("Is this city in France?", "Does this person play soccer?"), a negative names another object of
  the same relation (``classification/relations``, subjects split by hash);
- ``persona``: a one-sentence PersonaQA profile, "Is this person from Egypt?" / "Does this person like
  chess?", negatives from other personas;
- ``nothing``: a question of another kind asked about vectors that hold nothing of the kind (a WikiText
  window asked about a person's sport, a review asked about a city): the answer is "No".

Concepts never name one of the unseen sets (:func:`oracle.data.unseen_sets.names_unseen_concept`), and no
source of ``classification/engels`` is read.

Example:
    >>> exs = build_verify(tok, 30, n=4, seed=0)                                  # doctest: +SKIP
    >>> exs[0].question, exs[0].answer                                             # doctest: +SKIP
    ("Answer with 'Yes' or 'No' only. Is this city in France?", 'Yes')
"""
from __future__ import annotations

import logging
import random
from functools import lru_cache
from typing import Callable, Optional

from hooks.errors import InputError

from oracle.data.chat import decode, tokenize_text
from oracle.data.files import PathLike, resolve_data_dir
from oracle.data.labelled import relation_rows
from oracle.data.personaqa import persona_text, personas
from oracle.data.splits import check_split, make_rng, split_of
from oracle.data.texts import content_words, plain_documents, text_window, wikitext_paragraphs
from oracle.data.unseen_sets import names_unseen_concept
from oracle.training.tasks.base import (NO, OracleExample, YES, YES_NO_PREFIX, allocate, balanced_bools,
                                        balanced_layers, check_n)
from oracle.training.tasks.reading import sample_item
from oracle.training.tasks.topics import MENTION_QUESTIONS

log = logging.getLogger(__name__)

FAMILY = "verify"

KIND_WEIGHTS = {"word": 0.25, "class": 0.25, "entity": 0.25, "persona": 0.15, "nothing": 0.10}

WORD_QUESTIONS = ("Is the word at this position '{}'?", "Is this the word '{}'?")
CLASS_QUESTIONS = {
    "tense": ("Is this sentence in the {} tense?", "Does this sentence describe the {}?"),
    "sst2": ("Is the sentiment of this text {}?", "Is this review {}?"),
    "gmt": ("Is this statement {}?", "Would you call this claim {}?"),
}
#: relation file -> its yes/no questions about the subject (the object fills the braces)
RELATION_QUESTIONS = {
    "factual/city_in_country": ("Is this city in {}?", "Is this place in {}?"),
    "factual/country_capital_city": ("Is the capital of this country {}?",),
    "factual/country_currency": ("Is the currency of this country the {}?",),
    "factual/country_language": ("Do people in this country speak {}?",),
    "factual/food_from_country": ("Does this food come from {}?", "Is this dish from {}?"),
    "factual/landmark_in_country": ("Is this place in {}?", "Is this landmark in {}?"),
    "factual/person_plays_instrument": ("Does this person play the {}?",),
    "factual/person_plays_pro_sport": ("Does this person play {}?", "Is this person a {} player?"),
    "commonsense/object_superclass": ("Is this a kind of {}?",),
    "commonsense/fruit_outside_color": ("Are these {} on the outside?",),
    "commonsense/substance_phase": ("Is this a {} at room temperature?",),
}
PERSONA_QUESTIONS = {
    "country": ("Is this person from {}?",),
    "favorite_sport": ("Does this person like {}?", "Is {} this person's favourite sport?"),
    "favorite_food": ("Is {} this person's favourite food?",),
    "favorite_drink": ("Does this person like to drink {}?",),
    "favorite_music_genre": ("Does this person listen to {}?",),
    "favorite_boardgame": ("Does this person play {}?",),
}
_CLASS_NAMES = {"tense": ("past", "present", "future"), "sst2": ("negative", "positive"), "gmt": ("true", "false")}

Item = tuple[list[int], list[int], str, bool, str]   # context ids, positions, question, answer is yes, dataset


def _word_item(rng: random.Random, tok, want_yes: bool, split: str, root: str) -> Item:
    for _ in range(50):
        ids, positions, word, _, para, _ = sample_item(rng, tok, "word_at", split, root)
        others = sorted(w for w in content_words(para) if w != word.lower() and not names_unseen_concept(w))
        if others and not names_unseen_concept(word):
            shown = word.lower() if want_yes else rng.choice(others)   # one case for both: no giveaway
            return ids, positions, rng.choice(WORD_QUESTIONS).format(shown), want_yes, "wikitext/word"
    raise InputError("no WikiText paragraph with two content words: restore text/ in shared/data")


def _class_item(rng: random.Random, tok, want_yes: bool, split: str, root: str) -> Item:
    skill = rng.choice(sorted(CLASS_QUESTIONS))
    ids, positions, label, _, _, _ = sample_item(rng, tok, skill, split, root, "mixed")
    shown = label if want_yes else rng.choice([c for c in _CLASS_NAMES[skill] if c != label])
    return ids, positions, rng.choice(CLASS_QUESTIONS[skill]).format(shown), want_yes, f"class/{skill}"


@lru_cache(maxsize=4)
def _relations(root: str, split: str) -> tuple:
    """``(relation, subject, object, every object of the relation)`` with the subject on ``split`` by hash."""
    out = []
    for rel in RELATION_QUESTIONS:
        _, samples = relation_rows(root, rel)
        pairs = [(s.strip(), o.strip()) for s, o in samples if not names_unseen_concept(s + " " + o)]
        objects = tuple(sorted({o for _, o in pairs}))
        out += [(rel, s, o, objects) for s, o in pairs if split_of(s, 0.2, salt="verify-entity") == split]
    if not out:
        raise InputError(f"no relation subjects on the {split} side: restore classification/relations in shared/data")
    return tuple(out)


def _entity_item(rng: random.Random, tok, want_yes: bool, split: str, root: str) -> Item:
    rows = _relations(root, split)
    for _ in range(50):
        rel, subject, obj, objects = rng.choice(rows)
        wrong = [o for o in objects if o != obj]
        if want_yes or wrong:
            break
    ids = tokenize_text(tok, subject)
    shown = obj if want_yes else rng.choice(wrong)
    return ids, list(range(len(ids))), rng.choice(RELATION_QUESTIONS[rel]).format(shown), want_yes, f"relations/{rel}"


@lru_cache(maxsize=4)
def _personas(root: str, split: str) -> tuple[dict, ...]:
    return tuple(r for r in personas(root) if split_of(r.get("name", ""), 0.2, salt="verify-persona") == split
                 and all(isinstance(r.get(k), str) and r[k].strip() for k in PERSONA_QUESTIONS))


def _persona_item(rng: random.Random, tok, want_yes: bool, split: str, root: str) -> Item:
    rows = _personas(root, split)
    if len(rows) < 2:
        raise InputError("PersonaQA has fewer than two personas: restore personaqa/ in shared/data")
    p = rng.choice(rows)
    attr = rng.choice(sorted(PERSONA_QUESTIONS))
    wrong = sorted({r[attr] for r in rows} - {p[attr]})
    shown = p[attr] if want_yes or not wrong else rng.choice(wrong)
    ids = tokenize_text(tok, persona_text(p))
    return (ids, list(range(len(ids))), rng.choice(PERSONA_QUESTIONS[attr]).format(shown),
            want_yes or not wrong, "personaqa")


def _nothing_item(rng: random.Random, tok, want_yes: bool, split: str, root: str) -> Item:
    """An entity or persona question asked about a WikiText window or a class text: nothing of the kind is there."""
    ask = _entity_item if rng.random() < 0.6 else _persona_item
    _, _, question, _, _ = ask(rng, tok, True, split, root)
    if rng.random() < 0.5:
        ids, positions, _, _, _ = _class_item(rng, tok, True, split, root)
    else:
        _, para = rng.choice(wikitext_paragraphs(root, split))
        ids = tokenize_text(tok, para)[:32]
        positions = list(range(len(ids)))
    return ids, positions, question, False, "nothing"


_SAMPLERS: dict[str, Callable[..., Item]] = {"word": _word_item, "class": _class_item, "entity": _entity_item,
                                              "persona": _persona_item, "nothing": _nothing_item}

# Swapped pairs: two items A and B of one kind whose concepts X and Y differ, asked with one question template as
# four examples, A-X yes, A-Y no, B-X no, B-Y yes. Every concept is then as often "yes" as "no" and every context
# as often asked about its own concept as about another's, so neither the question's wording nor the vectors
# alone predicts the answer: only their comparison does.
Side = tuple[list[int], list[int]]                    # context ids, positions
Pair = tuple[Side, Side, str, str, str, str]          # A, B, question template, X, Y, dataset
_TRIES = 50


def _word_pair(rng: random.Random, tok, split: str, root: str) -> Pair:
    for _ in range(_TRIES):
        a_ids, a_pos, x, *_ = sample_item(rng, tok, "word_at", split, root)
        b_ids, b_pos, y, *_ = sample_item(rng, tok, "word_at", split, root)
        x, y = x.lower(), y.lower()
        if x != y and not names_unseen_concept(f"{x} {y}"):
            return (a_ids, a_pos), (b_ids, b_pos), rng.choice(WORD_QUESTIONS), x, y, "wikitext/word"
    raise InputError("no two different WikiText words found: restore text/ in shared/data")


def _class_pair(rng: random.Random, tok, split: str, root: str) -> Pair:
    skill = rng.choice(sorted(CLASS_QUESTIONS))
    a_ids, a_pos, x, *_ = sample_item(rng, tok, skill, split, root, "mixed")
    for _ in range(_TRIES):
        b_ids, b_pos, y, *_ = sample_item(rng, tok, skill, split, root, "mixed")
        if y != x:
            return (a_ids, a_pos), (b_ids, b_pos), rng.choice(CLASS_QUESTIONS[skill]), x, y, f"class/{skill}"
    raise InputError(f"the {skill} data holds one class only: restore classification/ in shared/data")


@lru_cache(maxsize=4)
def _relation_index(root: str, split: str) -> tuple[dict, set]:
    """Rows grouped by relation, and every (relation, subject, object) fact, to keep swapped pairs false."""
    by_rel: dict[str, list[tuple[str, str]]] = {}
    for rel, s, o, _ in _relations(root, split):
        by_rel.setdefault(rel, []).append((s, o))
    return by_rel, {(rel, s, o) for rel, rows in by_rel.items() for s, o in rows}


def _entity_pair(rng: random.Random, tok, split: str, root: str) -> Pair:
    by_rel, facts = _relation_index(root, split)
    for _ in range(_TRIES):
        rel = rng.choice(sorted(by_rel))
        (s1, x), (s2, y) = rng.choice(by_rel[rel]), rng.choice(by_rel[rel])
        if x != y and (rel, s1, y) not in facts and (rel, s2, x) not in facts:
            a, b = tokenize_text(tok, s1), tokenize_text(tok, s2)
            return ((a, list(range(len(a)))), (b, list(range(len(b)))), rng.choice(RELATION_QUESTIONS[rel]), x, y,
                    f"relations/{rel}")
    raise InputError("no two relation subjects with different objects: restore classification/relations")


def _persona_pair(rng: random.Random, tok, split: str, root: str) -> Pair:
    rows = _personas(root, split)
    for _ in range(_TRIES):
        attr = rng.choice(sorted(PERSONA_QUESTIONS))
        p, q = rng.choice(rows), rng.choice(rows)
        if p[attr] != q[attr]:
            a, b = tokenize_text(tok, persona_text(p)), tokenize_text(tok, persona_text(q))
            return ((a, list(range(len(a)))), (b, list(range(len(b)))), rng.choice(PERSONA_QUESTIONS[attr]),
                    p[attr], q[attr], "personaqa")
    raise InputError("PersonaQA has no two personas that differ: restore personaqa/ in shared/data")


def _mention_pair(rng: random.Random, tok, split: str, root: str) -> Pair:
    """Two text windows, X a content word only the first holds, Y one only the second holds."""
    docs = plain_documents(split, root)
    for _ in range(_TRIES):
        (name, doc_a), (_, doc_b) = rng.choice(docs), rng.choice(docs)
        a, b = text_window(rng, tok, doc_a, MENTION_TOKENS), text_window(rng, tok, doc_b, MENTION_TOKENS)
        words_a, words_b = (content_words(decode(tok, ids).replace("<unk>", " ")) for ids in (a, b))
        only_a = sorted(w for w in words_a - words_b if not names_unseen_concept(w))
        only_b = sorted(w for w in words_b - words_a if not names_unseen_concept(w))
        if only_a and only_b:
            return ((a, list(range(len(a)))), (b, list(range(len(b)))), rng.choice(MENTION_QUESTIONS),
                    rng.choice(only_a), rng.choice(only_b), f"mention/{name}")
    raise InputError("no two text windows with distinct content words: restore text/ in shared/data")


MENTION_TOKENS = 24
_PAIR_SAMPLERS: dict[str, Callable[..., Pair]] = {"word": _word_pair, "class": _class_pair, "entity": _entity_pair,
                                                  "persona": _persona_pair, "mention": _mention_pair}
SWAP_KIND_WEIGHTS = {"word": 0.2, "class": 0.2, "entity": 0.2, "persona": 0.15, "mention": 0.15, "nothing": 0.10}


def _swapped(pair: Pair) -> list[Item]:
    (a, b, template, x, y, dataset) = pair
    return [(*side, template.format(concept), answer, dataset)
            for side, concept, answer in ((a, x, True), (a, y, False), (b, x, False), (b, y, True))]


def build_verify(
    tokenizer,
    n_layers: int,
    n: int,
    seed: int,
    data_dir: Optional[PathLike] = None,
    split: str = "train",
    *,
    kinds: Optional[dict[str, float]] = None,
    swap: bool = False,
) -> list[OracleExample]:
    """``n`` verification examples over ``kinds`` (weights; default :data:`KIND_WEIGHTS`, or
    :data:`SWAP_KIND_WEIGHTS` with ``swap``), Yes/No balanced within each kind except ``nothing`` (always No).
    ``swap``: every kind but ``nothing`` comes as swapped pairs (four examples per pair, see ``_swapped``)."""
    n, split = check_n(n), check_split(split)
    weights = dict((SWAP_KIND_WEIGHTS if swap else KIND_WEIGHTS) if kinds is None else kinds)
    known = set(_SAMPLERS) | (set(_PAIR_SAMPLERS) if swap else set())
    bad = sorted(set(weights) - known)
    if bad:
        raise InputError(f"unknown verification kind(s) {bad}: use {', '.join(sorted(known))}")
    root = str(resolve_data_dir(data_dir))
    out: list[OracleExample] = []
    for kind, count in (allocate(n, weights) if n else {}).items():
        rng = make_rng(seed, f"{FAMILY}:{kind}:{split}")
        if swap and kind in _PAIR_SAMPLERS:
            items = [it for _ in range(-(-count // 4)) for it in _swapped(_PAIR_SAMPLERS[kind](rng, tokenizer, split, root))]
        else:
            items = [_SAMPLERS[kind](rng, tokenizer, want_yes, split, root) for want_yes in balanced_bools(rng, count)]
        for ids, positions, question, is_yes, dataset in items[:count]:
            if names_unseen_concept(question):
                raise InputError(f"verification question {question!r} names an unseen concept")  # filtered above
            out.append(OracleExample(FAMILY, list(ids), list(positions), -1, YES_NO_PREFIX + question,
                                     YES if is_yes else NO, dataset, {"kind": kind, "split": split}))
    rng = make_rng(seed, f"{FAMILY}:{split}:layers")
    rng.shuffle(out)
    for ex, layer in zip(out, balanced_layers(rng, len(out), n_layers)):
        ex.layer = int(layer)
    log.info("built %d verification examples (%s split)", len(out), split)
    return out
