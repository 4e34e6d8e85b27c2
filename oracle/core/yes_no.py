"""The one yes/no scorer: P(yes) / (P(yes) + P(no)) of the oracle's first answer token, each side summed over
its spellings ("Yes", " yes", "YES", ...), read with the real vectors and with control vectors from neutral
texts, and its sensitivity (how much the answer depends on the vectors). Used by
:meth:`oracle.Oracle.yes_probability`, the unseen-questions suite (:mod:`oracle.evals.unseen`) and the audits.

Why against the control: a question's wording alone pushes the answer toward "Yes" or "No" (an oracle
asked "Is this about China?" may say "No" to everything). ``against_control`` is the log-odds of yes with
the real vectors minus its mean with the control vectors: what the activations add to the question's prior,
comparable across questions.

Example:
    >>> from hooks.testing import ByteTokenizer
    >>> lp = torch.full((1, 259), -30.0); lp[0, ord("Y") + 3] = 0.0
    >>> yes_share(lp, ByteTokenizer()).tolist()      # "Y" is not the whole word: no single token
    [0.5]
    >>> check_yes_no_question("Is this text about China?")
    'Is this text about China?'
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from hooks.errors import InputError
from hooks.positions import LAST

from oracle.core.confidence import N_CONTROLS, ReadsActivations, control_vectors, js_bits
from oracle.core.published import AO_CHAT_STYLE

YES_WORDS = ("Yes", " Yes", "yes", " yes", "YES", " YES")
NO_WORDS = ("No", " No", "no", " no", "NO", " NO")
#: how a yes/no question starts (after an optional "Answer with 'Yes' or 'No' only." instruction)
_AUXILIARIES = ("is", "are", "was", "were", "am", "do", "does", "did", "can", "could", "will", "would", "shall",
                "should", "has", "have", "had", "may", "might", "must")


#: the answer-format instruction every yes/no training question starts with (``oracle.training.tasks``)
YES_NO_PREFIX = "Answer with 'Yes' or 'No' only. "
_INSTRUCTION = re.compile(r"^answer with '?yes'? or '?no'?( only)?\.\s*", flags=re.I)
_YES_NO_CLAUSE = re.compile(r"(?:^|[,;:]\s*|[.!]\s+)(?:%s)\b" % "|".join(_AUXILIARIES), flags=re.I)


def token_ids(tokenizer, words: Sequence[str]) -> list[int]:
    """Ids of the words that are a single token (the others are skipped).

    Example:
        >>> from hooks.testing import ByteTokenizer
        >>> token_ids(ByteTokenizer(), ["a", "ab", "a"]) == [ord("a") + 3]
        True
    """
    ids: list[int] = []
    for w in words:
        t = tokenizer.encode(w, add_special_tokens=False)
        if len(t) == 1 and t[0] not in ids:
            ids.append(int(t[0]))
    return ids


def yes_no_ids(tokenizer) -> tuple[list[int], list[int]]:
    """The single-token spellings of yes and of no; a tokenizer with none of one side cannot score yes/no."""
    yes, no = token_ids(tokenizer, YES_WORDS), token_ids(tokenizer, NO_WORDS)
    if not yes or not no:
        raise InputError("this tokenizer has no single-token 'Yes' or 'No': yes/no scoring needs one of each; ask "
                         "with --choices 'yes|no' instead")
    return yes, no


def yes_share(logprobs_NV: torch.Tensor, tokenizer) -> torch.Tensor:
    """P(yes) / (P(yes) + P(no)) per row, each side summed over its spellings (0.5 where a tokenizer has no
    single-token yes or no)."""
    try:
        yes, no = yes_no_ids(tokenizer)
    except InputError:
        return torch.full((logprobs_NV.shape[0],), 0.5)
    p = logprobs_NV.float().exp()
    py, pn = p[:, yes].sum(-1), p[:, no].sum(-1)
    return py / (py + pn).clamp_min(1e-30)


def check_yes_no_question(question: str) -> str:
    """``question`` if it can be answered yes or no ("Is ...?", "Does ...?"), else a one-line error.

    Example:
        >>> check_yes_no_question("What is this text about?")
        Traceback (most recent call last):
        ...
        hooks.errors.InputError: 'What is this text about?' is not a yes/no question (it starts with 'What'): ask 'Is it ...?' or 'Does it ...?', or give choices
    """
    body = _INSTRUCTION.sub("", question.strip())
    first = (body.split() or [""])[0]
    # a clause that opens with an auxiliary: "Is it ...?", "Based on the text, is it ...?"; "...? Answer Yes or No." passes
    if not _YES_NO_CLAUSE.search(body) or "?" not in body:
        raise InputError(f"{question!r} is not a yes/no question (it starts with {first!r}): ask 'Is it ...?' or "
                         f"'Does it ...?', or give choices")
    return question


def yes_no_instruction(card: Any) -> str:
    """The instruction the oracle of ``card`` was taught yes/no questions with: :data:`YES_NO_PREFIX` for this
    project's oracles (every task builder starts its yes/no questions with it), none for the published Activation
    Oracles (``chat_style`` "published"), which were taught their own questions and are asked as written."""
    return "" if card.chat_style == AO_CHAT_STYLE else YES_NO_PREFIX


def as_taught(question: str, instruction: str = YES_NO_PREFIX) -> str:
    """``question`` in the form the oracle was taught yes/no in: after ``instruction`` (added once; none for a
    published oracle, :func:`yes_no_instruction`). Why: an oracle asked in another form than it was taught often
    answers with another word first, which leaves P(yes) / (P(yes) + P(no)) to the question's wording.

    Example:
        >>> as_taught("Is this about China?")
        "Answer with 'Yes' or 'No' only. Is this about China?"
        >>> as_taught(as_taught("Is this about China?")) == as_taught("Is this about China?")
        True
        >>> as_taught("Is this about China?", instruction="")
        'Is this about China?'
    """
    q = question.strip()
    return q if not instruction or _INSTRUCTION.match(q) else instruction + q


def taught_queries(oracle: ReadsActivations, queries: Sequence[Any]) -> list[Any]:
    """The queries with their questions :func:`as_taught` for ``oracle`` (each checked to be a yes/no question)."""
    instruction = yes_no_instruction(oracle.card)
    return [dataclasses.replace(q, question=as_taught(check_yes_no_question(q.question), instruction))
            for q in queries]


@dataclass(frozen=True)
class YesNo:
    """One yes/no answer: P(yes) with the real vectors, the same with control vectors (the question's prior),
    the log-odds difference of the two, and the sensitivity (Jensen-Shannon bits between the two answers)."""

    p_yes: float
    p_yes_control: float
    against_control: float
    sensitivity: float


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def resolved_queries(oracle: ReadsActivations, queries: Sequence[Any], diff: bool = False) -> list[Any]:
    """The queries with their vectors read once (texts captured), so the real and the control passes share them."""
    vecs, layers = oracle.query_vectors(queries, diff)
    return [dataclasses.replace(q, source=v, layer=L, positions=LAST) for q, v, L in zip(queries, vecs, layers)]


def control_first_token_logprobs(oracle: ReadsActivations, queries: Sequence[Any], diff: bool = False,
                                 n_controls: int = N_CONTROLS, batch_size: int = 32) -> list[torch.Tensor]:
    """Per control, ``(N, vocab)`` first-token log-probabilities of the (resolved) queries asked about control
    vectors. Queries with the same question, layer and vector count get the same control input, so each such
    group costs one forward, not one per query."""
    keys = [(q.question, int(q.layer), len(q.source)) for q in queries]
    unique = list(dict.fromkeys(keys))
    first = {k: keys.index(k) for k in unique}
    rows = [unique.index(k) for k in keys]
    out = []
    for c in range(n_controls):
        asked = [dataclasses.replace(queries[first[k]], source=control_vectors(oracle, k[1], k[2], diff, n_controls)[c])
                 for k in unique]
        out.append(oracle.first_token_logprobs(asked, diff=diff, batch_size=batch_size)[rows])
    return out


def yes_no_scores(oracle: ReadsActivations, queries: Sequence[Any], diff: bool = False,
                  n_controls: int = N_CONTROLS, batch_size: int = 32) -> list[YesNo]:
    """Score each yes/no query against ``n_controls`` control vectors (:class:`YesNo` per query)."""
    tok = oracle.lm.tokenizer   # type: ignore[attr-defined]
    yes_no_ids(tok)
    real = resolved_queries(oracle, taught_queries(oracle, queries), diff)
    p_real = yes_share(oracle.first_token_logprobs(real, diff=diff, batch_size=batch_size), tok)
    p_ctrl = [yes_share(lp, tok) for lp in control_first_token_logprobs(oracle, real, diff, n_controls, batch_size)]
    out = []
    for i, p in enumerate(p_real.tolist()):
        ctrl = [float(c[i]) for c in p_ctrl]
        sens = sum(float(js_bits(torch.tensor([[p, 1 - p]]), torch.tensor([[c, 1 - c]]))[0]) for c in ctrl) / len(ctrl)
        prior = sum(ctrl) / len(ctrl)
        out.append(YesNo(p, prior, _logit(p) - sum(_logit(c) for c in ctrl) / len(ctrl), sens))
    return out
