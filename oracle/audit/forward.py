"""Batched forwards the audit methods share: next-token log-probabilities, short greedy
generation, residual capture and the logit lens. Every helper takes the adapter to run with
(``"target"``: the audited fine-tune; ``None``: the base model)."""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from hooks.dtypes import pad_token_id
from hooks.capture import pad_batch, position_ids_from_mask
from hooks.errors import InputError
from hooks.models import LoadedModel, active_adapter

from oracle.core.batching import target_vectors
from oracle.data.chat import format_chat, tokenize_text


def chat_ids(tokenizer, user: str, prefill: str = "") -> list[int]:
    """Token ids of one user turn in the chat template, ready for the reply (plus an assistant prefill).

    Example:
        >>> from hooks.testing import ByteTokenizer
        >>> ByteTokenizer().decode(chat_ids(ByteTokenizer(), "Hi", prefill=" The"))
        'user: Hi\\nassistant: The'
    """
    return tokenize_text(tokenizer, format_chat(tokenizer, [{"role": "user", "content": user}],
                                                add_generation_prompt=True) + prefill)


def length_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices in batches of similar length (less padding); every index exactly once.

    Example:
        >>> list(length_batches([5, 1, 4, 2], 2))
        [[1, 3], [2, 0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    for s in range(0, len(order), batch_size):
        yield order[s:s + batch_size]


def _batched_logits(lm: LoadedModel, seqs: Sequence[Sequence[int]], adapter: str | None, batch_size: int,
                    ends: Sequence[Sequence[int]] | None) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Yield ``(indices, logits (b, M, V))``: the logits after token ``ends[i][j]`` of each sequence
    (default: its last token), left-padded batches of similar length."""
    if not seqs or any(len(s) == 0 for s in seqs):
        raise InputError("the audit needs non-empty token sequences")
    ends = [[len(s) - 1] for s in seqs] if ends is None else ends
    for idx in length_batches([len(s) for s in seqs], batch_size):
        tokens_BL, mask_BL = pad_batch([seqs[i] for i in idx], pad_token_id(lm.tokenizer), side="left", device=lm.device)
        width = tokens_BL.shape[1]
        at_BM = torch.as_tensor([[width - len(seqs[i]) + int(e) for e in ends[i]] for i in idx], device=lm.device)
        with active_adapter(lm.model, adapter):
            logits_BLV = lm.model(input_ids=tokens_BL, attention_mask=mask_BL,
                                  position_ids=position_ids_from_mask(mask_BL), use_cache=False).logits
        rows_BM = torch.arange(len(idx), device=lm.device)[:, None].expand_as(at_BM)
        yield idx, logits_BLV[rows_BM, at_BM].float()


@torch.no_grad()
def next_token_logprobs(lm: LoadedModel, seqs: Sequence[Sequence[int]], adapter: str | None,
                        batch_size: int = 16) -> torch.Tensor:
    """Log-softmax ``(N, V)`` (CPU, fp32) of the token after each sequence.

    Example:
        >>> from hooks.testing import tiny_loaded
        >>> next_token_logprobs(tiny_loaded("llama"), [[5, 6], [7]], None).shape
        torch.Size([2, 256])
    """
    out: list[torch.Tensor | None] = [None] * len(seqs)
    for idx, logits_BMV in _batched_logits(lm, seqs, adapter, batch_size, None):
        for row, i in enumerate(idx):
            out[i] = logits_BMV[row, 0].log_softmax(-1).cpu()
    return torch.stack(out)  # type: ignore[arg-type]


@torch.no_grad()
def mean_next_token_probs(lm: LoadedModel, seqs: Sequence[Sequence[int]], adapter: str | None, batch_size: int = 16,
                          ends: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
    """Next-token distributions averaged over the sequences: ``(M, V)`` for M read-out points per
    sequence (``ends[i]``: token indices; default the last token, M = 1). Memory does not grow with N.

    Example:
        >>> from hooks.testing import tiny_loaded
        >>> p = mean_next_token_probs(tiny_loaded("llama"), [[5, 6, 7], [8, 9]], None, ends=[[0, 2], [0, 1]])
        >>> tuple(p.shape), [round(float(x), 4) for x in p.sum(-1)]
        ((2, 256), [1.0, 1.0])
    """
    total: torch.Tensor | None = None
    for _, logits_BMV in _batched_logits(lm, seqs, adapter, batch_size, ends):
        part = logits_BMV.softmax(-1).sum(0).cpu()
        total = part if total is None else total + part
    assert total is not None
    return total / len(seqs)


@torch.no_grad()
def generate_text(lm: LoadedModel, seqs: Sequence[Sequence[int]], adapter: str | None, max_new_tokens: int = 16,
                  batch_size: int = 16) -> list[str]:
    """Greedy continuations (decoded, special tokens dropped) of each sequence."""
    tok = lm.tokenizer
    out: list[str] = [""] * len(seqs)
    for idx in length_batches([len(s) for s in seqs], batch_size):
        tokens_BL, mask_BL = pad_batch([seqs[i] for i in idx], pad_token_id(lm.tokenizer), side="left", device=lm.device)
        with active_adapter(lm.model, adapter):
            gen = lm.model.generate(input_ids=tokens_BL, attention_mask=mask_BL, max_new_tokens=max_new_tokens,
                                    do_sample=False, pad_token_id=pad_token_id(lm.tokenizer), eos_token_id=tok.eos_token_id)
        for row, i in enumerate(idx):
            out[i] = tok.decode(gen[row, tokens_BL.shape[1]:], skip_special_tokens=True).strip()
    return out


def residuals(lm: LoadedModel, seqs: Sequence[Sequence[int]], positions: Sequence[Sequence[int]], layer: int,
              adapter: str | None, batch_size: int = 16) -> list[torch.Tensor]:
    """Residual stream ``(K_i, D)`` (CPU, fp32) after block ``layer`` at each sequence's positions."""
    out: list[torch.Tensor | None] = [None] * len(seqs)
    for idx in length_batches([len(s) for s in seqs], batch_size):
        got = target_vectors(lm, [seqs[i] for i in idx], [positions[i] for i in idx], [layer] * len(idx), adapter=adapter)
        for i, v in zip(idx, got):
            out[i] = v.float().cpu()
    return out  # type: ignore[return-value]
