"""Topic and mention questions over plain text: "Is this text about {x}?", "Does this text mention {x}?",
and their negations ("Is this text not about {x}?"), for hundreds of open-vocabulary concepts.

Why: the held-out sets ask whether a text is about a concept the oracle never trained on (politics, an
occupation), half of them negated. The classification groups teach four fixed concepts; this family teaches
the general skill of comparing what the activations carry with whatever the question names.

Concepts come from the text itself, so every answer can be checked:
- *article*: a WikiText-2 paragraph; the concept is its article's title ("Is this text about Homarus
  gammarus?") or its section heading ("... about early life?"); a negative names another article or heading;
- *mention*: a window of WikiText-2 or Tiny Shakespeare; the concept is a content word inside the read
  window; a negative names a content word of another document that the window does not contain.

A share of the article examples (``open_frac``) asks "What is this text about?", answered with the title.
Splits: WikiText-2 valid trains, test evaluates (as context prediction); Shakespeare is hash-split.
"""
from __future__ import annotations

import logging
import random
from typing import Optional

from hooks.errors import InputError

from oracle.data.chat import decode
from oracle.data.files import PathLike, data_file, resolve_data_dir
from oracle.data.splits import check_share, check_split, make_rng
from oracle.data.texts import content_words, plain_documents, text_window, wikitext_name, wikitext_sections
from oracle.data.unseen_sets import names_unseen_concept
from oracle.training.tasks.base import (MAX_POSITIONS, NO, OracleExample, YES, YES_NO_PREFIX, balanced_bools,
                                        balanced_layers, check_n)

log = logging.getLogger(__name__)

FAMILY = "topic"

ABOUT_QUESTIONS = ("Is this text about {}?", "Is {} the subject of this passage?", "Would you say this is about {}?",
                   "Does this passage deal with {}?")
ABOUT_NEGATED = ("Is this text not about {}?", "Is this passage about a topic other than {}?",
                 "Would you say {} is not the subject here?", "Does this passage have nothing to do with {}?")
MENTION_QUESTIONS = ("Does this text mention {}?", "Is the word '{}' in this text?", "Does '{}' appear here?")
MENTION_NEGATED = ("Does this text leave out the word '{}'?", "Is '{}' missing from this text?",
                   "Does this text not mention {}?")
OPEN_QUESTION = "What is this text about? Answer with a few words."


def _article_sampler(root: str, split: str):
    name = wikitext_name(split)
    paras = [p for p in wikitext_sections(str(data_file(root, f"text/{name}.txt"))) if "<unk>" not in p[0]]
    titles = sorted({t for t, _, _ in paras})
    headings = sorted({h for _, h, _ in paras if h and "<unk>" not in h})
    if len(titles) < 2:
        raise InputError(f"text/{name}.txt has fewer than two articles: restore it from shared/data")

    def sample(rng: random.Random, want_yes: bool, negated: bool, tokenizer, max_tokens: int):
        title, heading, para = rng.choice(paras)
        while names_unseen_concept(title + " " + heading):   # the unseen sets' concepts are never taught
            title, heading, para = rng.choice(paras)
        use_heading = bool(heading) and "<unk>" not in heading and len(headings) > 1 and rng.random() < 0.3
        true = heading if use_heading else title
        pool = headings if use_heading else titles
        concept = true if want_yes != negated else rng.choice([c for c in pool if c != true
                                                               and not names_unseen_concept(c)])
        concept = concept.lower() if use_heading else concept
        q = rng.choice(ABOUT_NEGATED if negated else ABOUT_QUESTIONS).format(concept)
        ids = text_window(rng, tokenizer, para, max_tokens)
        return ids, q, {"dataset": name, "kind": "article", "concept": concept, "title": title}
    return sample


def _mention_sampler(root: str, split: str):
    docs = plain_documents(split, root)
    vocab = sorted(w for w in set().union(*(content_words(t) for _, t in docs)) if not names_unseen_concept(w))

    def sample(rng: random.Random, want_yes: bool, negated: bool, tokenizer, max_tokens: int):
        for _ in range(20):
            name, doc = rng.choice(docs)
            ids = text_window(rng, tokenizer, doc, max_tokens)
            present = {w for w in content_words(decode(tokenizer, ids).replace("<unk>", " "))
                       if not names_unseen_concept(w)}
            if present:
                break
        else:
            raise InputError("the text sources have no windows with content words")
        if want_yes != negated:
            word = rng.choice(sorted(present))
        else:
            word = rng.choice(vocab)
            while word in present:
                word = rng.choice(vocab)
        q = rng.choice(MENTION_NEGATED if negated else MENTION_QUESTIONS).format(word)
        return ids, q, {"dataset": name, "kind": "mention", "concept": word}
    return sample


def build_topics(
    tokenizer,
    n_layers: int,
    n: int,
    seed: int,
    data_dir: Optional[PathLike] = None,
    split: str = "train",
    *,
    max_context_tokens: int = MAX_POSITIONS,
    mention_frac: float = 0.5,
    negated_frac: float = 0.5,
    open_frac: float = 0.2,
    last_token_frac: float = 0.25,
) -> list[OracleExample]:
    """``n`` topic/mention examples, Yes/No balanced. The context is a window of at most
    ``max_context_tokens`` (<= 50) tokens and the oracle reads all of it, except for ``last_token_frac`` of
    the article questions, which read only its last token (as the held-out "last" evaluation does).
    ``negated_frac`` of the yes/no questions are negated; ``open_frac`` of the article examples ask
    :data:`OPEN_QUESTION` instead, answered with the title.

    Example:
        >>> exs = build_topics(tok, 30, n=4, seed=0)                                  # doctest: +SKIP
        >>> exs[0].question                                                          # doctest: +SKIP
        "Answer with 'Yes' or 'No' only. Does this text mention harbour?"
    """
    n, split = check_n(n), check_split(split)
    for name, v in (("mention_frac", mention_frac), ("negated_frac", negated_frac), ("open_frac", open_frac),
                    ("last_token_frac", last_token_frac)):
        check_share(name, v)
    if not 1 <= max_context_tokens <= MAX_POSITIONS:
        raise InputError(f"max_context_tokens {max_context_tokens} must be 1..{MAX_POSITIONS}: the oracle reads "
                         f"the whole window")
    root = str(resolve_data_dir(data_dir))
    rng = make_rng(seed, f"{FAMILY}:{split}")
    article, mention = _article_sampler(root, split), _mention_sampler(root, split)
    out: list[OracleExample] = []
    for want_yes in balanced_bools(rng, n):
        is_mention = rng.random() < mention_frac
        is_open = not is_mention and rng.random() < open_frac
        negated = not is_open and rng.random() < negated_frac
        ids, question, meta = (mention if is_mention else article)(rng, want_yes, negated, tokenizer,
                                                                   max_context_tokens)
        last_only = not is_mention and rng.random() < last_token_frac
        positions = [len(ids) - 1] if last_only else list(range(len(ids)))
        if is_open:
            question, answer = OPEN_QUESTION, meta["title"]
        else:
            question, answer = YES_NO_PREFIX + question, YES if want_yes else NO
        out.append(OracleExample(family=FAMILY, context_ids=ids, positions=positions, layer=-1, question=question,
                                 answer=answer, dataset=meta.pop("dataset"),
                                 meta={**meta, "split": split, "negated": negated, "open": is_open}))
    for ex, layer in zip(out, balanced_layers(rng, len(out), n_layers)):
        ex.layer = layer
    log.info("built %d topic examples (%s split)", len(out), split)
    return out
