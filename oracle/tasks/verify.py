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

Concepts never name one of the unseen sets (:func:`oracle.tasks.unseen_sets.names_unseen_concept`), and no
source of ``classification/engels`` is read.

Example:
    >>> exs = build_verify(tok, 30, n=4, seed=0)                                  # doctest: +SKIP
    >>> exs[0].question, exs[0].answer                                             # doctest: +SKIP
    ("Answer with 'Yes' or 'No' only. Is this city in France?", 'Yes')
"""
from __future__ import annotations

import json
import logging
import random
from functools import lru_cache
from typing import Callable, Optional

from hooks.errors import InputError

from .base import (NO, YES, OracleExample, PathLike, allocate, balanced_bools, balanced_layers, check_n, check_split,
                   data_file, make_rng, resolve_data_dir, split_of, tokenize_text)
from .classification import YES_NO_PREFIX
from .reading import sample_item, wikitext_paragraphs
from .topics import content_words
from .unseen_sets import names_unseen_concept

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
        d = json.loads(data_file(root, f"classification/relations/{rel}.json").read_text(encoding="utf-8"))
        pairs = [(s["subject"].strip(), s["object"].strip()) for s in d["samples"]
                 if not names_unseen_concept(s["subject"] + " " + s["object"])]
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
    rows = []
    for variant in ("base", "fantasy", "shuffled"):
        for line in data_file(root, f"personaqa/{variant}/personas.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                rows.append(json.loads(line))
    return tuple(r for r in rows if split_of(r.get("name", ""), 0.2, salt="verify-persona") == split
                 and all(isinstance(r.get(k), str) and r[k].strip() for k in PERSONA_QUESTIONS))


def persona_text(p: dict) -> str:
    """One sentence about a persona, every attribute named.

    Example:
        >>> persona_text({"name": "Ana", "country": "Chile", "favorite_food": "Pastel", "favorite_drink": "Tea",
        ...               "favorite_music_genre": "Jazz", "favorite_sport": "Tennis", "favorite_boardgame": "Go"})
        'Ana is from Chile, loves Pastel and Tea, listens to Jazz, plays Tennis and enjoys Go.'
    """
    return (f"{p['name']} is from {p['country']}, loves {p['favorite_food']} and {p['favorite_drink']}, listens to "
            f"{p['favorite_music_genre']}, plays {p['favorite_sport']} and enjoys {p['favorite_boardgame']}.")


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


def build_verify(
    tokenizer,
    n_layers: int,
    n: int,
    seed: int,
    data_dir: Optional[PathLike] = None,
    split: str = "train",
    *,
    kinds: Optional[dict[str, float]] = None,
) -> list[OracleExample]:
    """``n`` verification examples over ``kinds`` (weights; default :data:`KIND_WEIGHTS`), Yes/No balanced
    within each kind except ``nothing`` (always No)."""
    n, split = check_n(n), check_split(split)
    weights = dict(KIND_WEIGHTS if kinds is None else kinds)
    bad = sorted(set(weights) - set(_SAMPLERS))
    if bad:
        raise InputError(f"unknown verification kind(s) {bad}: use {', '.join(_SAMPLERS)}")
    root = str(resolve_data_dir(data_dir))
    out: list[OracleExample] = []
    for kind, count in (allocate(n, weights) if n else {}).items():
        rng = make_rng(seed, f"{FAMILY}:{kind}:{split}")
        for want_yes in balanced_bools(rng, count):
            ids, positions, question, is_yes, dataset = _SAMPLERS[kind](rng, tokenizer, want_yes, split, root)
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
