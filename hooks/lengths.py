"""Document lengths: where a capture cuts its documents (``--max-length``, never past the model's context) and
the report of what the cut dropped, so no text is cut, or read past the model's positions, without a word.

Example:
    >>> kept, cut = cut_to_length([[1, 2, 3], [4]], max_length=2, context=None)
    >>> kept, (cut.max_tokens, cut.n_docs, cut.n_tokens)
    ([[1, 2], [4]], (2, 1, 1))
    >>> report_cut(cut)      # logs: 1 of 2 documents are longer than --max-length 2 tokens and were cut there: ...
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

from torch import nn

from hooks.layers import unwrap

log = logging.getLogger(__name__)

#: config fields that give a model's context (positions it was built for), in order of preference
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")


def model_context(model: nn.Module) -> Optional[int]:
    """The number of positions ``model`` was built for (``max_position_embeddings`` or its like), or ``None``.

    Example:
        >>> from hooks.testing import tiny_model
        >>> model_context(tiny_model("llama")), model_context(tiny_model("gpt2"))
        (256, 256)
    """
    cfg = getattr(unwrap(model), "config", None)
    if cfg is not None and hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config()
    for key in _CONTEXT_KEYS:
        value = getattr(cfg, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


@dataclass(frozen=True)
class Cut:
    """What cutting documents at ``max_tokens`` dropped (:func:`report_cut` logs it)."""

    max_tokens: int          # min(--max-length, the model's context)
    n_docs: int              # documents longer than that
    n_tokens: int            # tokens dropped from them
    max_length: int = 0      # --max-length as given
    n_total: int = 0         # documents in all
    longest: int = 0         # tokens of the longest document

    @property
    def by_context(self) -> bool:
        """The model's context, not ``--max-length``, set the cut."""
        return self.max_tokens < self.max_length


def cut_to_length(docs_tokens: Sequence[Sequence[int]], max_length: int,
                  context: Optional[int] = None) -> tuple[list[list[int]], Cut]:
    """Each document's token ids cut at ``min(max_length, context)``, and what the cut dropped (nothing is logged
    here: call :func:`report_cut` once the job is sure to run, so a refusal stays one line)."""
    limit = max_length if context is None else min(max_length, context)
    kept = [list(ids[:limit]) for ids in docs_tokens]
    long_docs = [len(ids) for ids in docs_tokens if len(ids) > limit]
    return kept, Cut(max_tokens=limit, n_docs=len(long_docs), n_tokens=sum(n - limit for n in long_docs),
                     max_length=max_length, n_total=len(docs_tokens), longest=max(map(len, docs_tokens), default=0))


def report_cut(cut: Cut) -> None:
    """One warning when documents were cut: how many, how many tokens dropped, and whether the model's context
    (which it cannot read past) or ``--max-length`` set the cut."""
    if not cut.n_docs:
        return
    if cut.by_context:
        why = (f"longer than the model's context of {cut.max_tokens:,} positions (--max-length {cut.max_length:,} "
               "is past it) and were cut there, since the model reads no further")
        fix = "split the long texts to keep the rest"
    else:
        why = f"longer than --max-length {cut.max_tokens:,} tokens and were cut there"
        fix = "raise --max-length, or split the long texts, to keep the rest"
    log.warning("%d of %d documents are %s: %s tokens dropped (longest: %s tokens; recorded in the manifest); %s",
                cut.n_docs, cut.n_total, why, f"{cut.n_tokens:,}", f"{cut.longest:,}", fix)
