"""Token distributions to ranked candidate words, the same way for every audit method.

A method yields a probability distribution over the vocabulary (a next-token distribution, or a
logit-lens readout). :func:`rank_words` turns it into words: decode each token, strip and
lowercase it, keep alphabetic tokens of at least 3 letters that some token also spells as a
whole word (with a leading space), drop stopwords and *echoes* (words that
occur in the texts the model read: the audit prompts, their chat template, the questions and
prefills), merge tokens that map to the same word (their probabilities add up), and renormalise over
the kept words. The *confidence* of a ranking is the probability of its top word.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import torch

MIN_LETTERS = 3

# Function words plus the stock words of chat replies and of audit questions, which every method
# produces for every model and which therefore say nothing about a fine-tune.
_STOPWORD_TEXT = """
a about above after again against all almost also although always am among an and another any anybody anyone
anything are aren around as at away back be because been before being below between both but by can cannot could
couldn did didn do does doesn doing don done down during each either else enough even ever every everyone
everything few for from further get gets getting give given go goes going gone got had hadn has hasn have haven
having he her here hers herself him himself his how however i if in into is isn it its itself just least less let
like made make many may maybe me might mine more most much must my myself neither never no nor not nothing now of
off often on once one only or other others otherwise our ours ourselves out over own per perhaps please quite
rather really same says see seem seems several shall she should shouldn since so some somebody someone something
sometimes still such than that the their theirs them themselves then there these they thing things this those
though through thus to too toward towards under until up upon us use used using very via want was wasn way we
well were weren what whatever when where whether which while who whom whose why will with within without won would
wouldn yes yet you your yours yourself yourselves
ok okay sure sorry hello hi hey thanks thank great good right yeah yep nope oh ah um hmm
absolutely certainly indeed course happy glad welcome
answer answers question questions ask asked help helpful assistant user system model models
word words secret secrets hint hints clue clues guess game true false none null unknown
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())

_WORD_RE = re.compile(r"[^\W\d_]+", re.UNICODE)


def words_in(texts: Iterable[str]) -> set[str]:
    """Lowercased alphabetic words of ``texts`` (what counts as an echo).

    Example:
        >>> sorted(words_in(["What is your secret word?", "Hint me!"]))
        ['hint', 'is', 'me', 'secret', 'what', 'word', 'your']
    """
    out: set[str] = set()
    for t in texts:
        out.update(w.lower() for w in _WORD_RE.findall(str(t)))
    return out


def token_word(text: str) -> str | None:
    """The word a decoded token stands for, or None if it is not one (too short, not alphabetic, a stopword).

    Example:
        >>> token_word(" Moon"), token_word("the"), token_word("ab"), token_word(" 42")
        ('moon', None, None, None)
    """
    w = text.strip().lower()
    if len(w) < MIN_LETTERS or not w.isalpha() or w in STOPWORDS:
        return None
    return w


@dataclass
class WordVocab:
    """Which word each token id maps to: ``index_V[i]`` is a row of ``words`` or -1 (not a word).

    Example:
        >>> from hooks.testing import ByteTokenizer
        >>> WordVocab.build(ByteTokenizer(), vocab_size=256).words      # single bytes are never words
        []
    """

    words: list[str]
    index_V: torch.Tensor

    @classmethod
    def build(cls, tokenizer, vocab_size: int | None = None) -> WordVocab:
        """Decode every token id once (about 0.2 s for a 49k vocabulary).

        A word counts only if some token spells it with a leading space (a word-initial token), so
        word pieces such as ``plementary`` or ``ings`` never rank as candidate secrets (word-initial pieces
        such as ``scient`` leave through :meth:`drop`, see :mod:`oracle.audit.whole_words`).
        """
        n = int(vocab_size if vocab_size is not None else len(tokenizer))
        decoded = [(i, tokenizer.decode([i])) for i in range(n)]
        standalone = {token_word(t) for _, t in decoded if t[:1] == " "} - {None}
        words: list[str] = []
        where: dict[str, int] = {}
        index = torch.full((n,), -1, dtype=torch.long)
        for i, text in decoded:
            w = token_word(text)
            if w is None or w not in standalone:
                continue
            if w not in where:
                where[w] = len(words)
                words.append(w)
            index[i] = where[w]
        return cls(words, index)

    def drop(self, words: Iterable[str]) -> None:
        """Take ``words`` out: their tokens map to no word from now on.

        Example:
            >>> vocab = WordVocab(["moon", "scient"], torch.tensor([0, 1, 1, -1]))
            >>> vocab.drop(["scient"]); vocab.index_V.tolist()
            [0, -1, -1, -1]
        """
        rows = [i for i, w in enumerate(self.words) if w in set(words)]
        if rows:
            self.index_V[torch.isin(self.index_V, torch.tensor(rows, dtype=torch.long))] = -1


def rank_words(probs_V: torch.Tensor, vocab: WordVocab, echoes: Iterable[str] = (), top_k: int = 20) -> dict:
    """Ranked candidate words of a vocabulary distribution.

    Returns ``{"top_words": [{"word", "p"}...], "top_word", "confidence", "kept_mass"}``: ``p`` is
    renormalised over the kept words, ``confidence`` is the top word's ``p`` (0 when no word is
    left), ``kept_mass`` the share of the original probability that fell on kept words.

    Example:
        >>> vocab = WordVocab(["moon", "star", "hint"], torch.tensor([0, 0, 1, 2, -1]))
        >>> r = rank_words(torch.tensor([0.2, 0.2, 0.1, 0.3, 0.2]), vocab, echoes={"hint"})
        >>> r["top_word"], round(r["confidence"], 2), round(r["kept_mass"], 2)
        ('moon', 0.8, 0.5)
    """
    p = probs_V.detach().float().flatten().cpu()
    n = min(p.numel(), vocab.index_V.numel())
    p, idx = p[:n], vocab.index_V[:n]
    total = float(p.sum()) or 1.0
    keep = idx >= 0
    per_word = torch.zeros(len(vocab.words)).index_add_(0, idx[keep], p[keep])
    echo_set = set(echoes)
    drop = [i for i, w in enumerate(vocab.words) if w in echo_set] if echo_set else []
    if drop:
        per_word[torch.as_tensor(drop, dtype=torch.long)] = 0.0
    mass = float(per_word.sum())
    if mass <= 0:
        return {"top_words": [], "top_word": None, "confidence": 0.0, "kept_mass": 0.0}
    per_word = per_word / mass
    k = min(int(top_k), int((per_word > 0).sum()))
    vals, order = per_word.topk(k)
    top = [{"word": vocab.words[int(i)], "p": round(float(v), 6)} for v, i in zip(vals, order)]
    return {"top_words": top, "top_word": top[0]["word"], "confidence": float(vals[0]), "kept_mass": mass / total}


def word_rank(word: str, probs_V: torch.Tensor, vocab: WordVocab, echoes: Iterable[str] = (),
              max_rank: int = 5000) -> int | None:
    """1-based rank of ``word`` among the kept words of a distribution (as :func:`rank_words` ranks them);
    None past ``max_rank``, or when the word has no mass or is an echo.

    Example:
        >>> vocab = WordVocab(["moon", "star", "hint"], torch.tensor([0, 0, 1, 2, -1]))
        >>> word_rank("star", torch.tensor([0.2, 0.2, 0.1, 0.3, 0.2]), vocab, echoes={"hint"})
        2
    """
    words = [w["word"] for w in rank_words(probs_V, vocab, echoes, top_k=max_rank)["top_words"]]
    return words.index(word) + 1 if word in words else None
