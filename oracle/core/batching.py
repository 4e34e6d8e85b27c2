"""Turn (vectors, layer, question[, answer]) items into one padded oracle batch, and read target
activations for examples (on the fly, or from an HDF5 store captured once)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from hooks.dtypes import pad_token_id
from hooks.capture import capture_batch, pad_batch, position_ids_from_mask
from hooks.errors import InputError
from hooks.models import LoadedModel, active_adapter

from oracle.core.prompt import DEFAULT_CHAT_STYLE, build_prompt

IGNORE = -100


@dataclass
class OracleBatch:
    """A left-padded oracle batch with its injection slots.

    ``rows_N``/``positions_N`` say where each of the N vectors in ``vectors_ND`` goes.
    """

    tokens_BL: torch.Tensor
    mask_BL: torch.Tensor
    labels_BL: Optional[torch.Tensor]
    rows_N: torch.Tensor
    positions_N: torch.Tensor
    vectors_ND: torch.Tensor

    @property
    def position_ids_BL(self) -> torch.Tensor:
        return position_ids_from_mask(self.mask_BL)

    def to(self, device) -> "OracleBatch":
        return OracleBatch(self.tokens_BL.to(device), self.mask_BL.to(device),
                           None if self.labels_BL is None else self.labels_BL.to(device),
                           self.rows_N.to(device), self.positions_N.to(device), self.vectors_ND.to(device))


def answer_ids(tokenizer, answer: str) -> list[int]:
    """Token ids of the assistant's answer plus the end-of-turn token."""
    eot = tokenizer.eos_token_id
    return tokenizer.encode(answer, add_special_tokens=False) + ([eot] if eot is not None else [])


def make_oracle_batch(
    tokenizer,
    vectors: Sequence[torch.Tensor],
    layers: Sequence[int],
    questions: Sequence[str],
    answers: Optional[Sequence[str]] = None,
    placeholder: str = " ?",
    max_length: Optional[int] = None,
    side: str = "left",
    chat_style: str = DEFAULT_CHAT_STYLE,
) -> OracleBatch:
    """Build prompts (one per item, K = len(vectors[i])), pad them, and list the injection slots.

    ``side="left"`` for generation; training uses ``"right"`` (no fully-masked rows at the start of a
    sequence, whose NaN attention outputs would poison the backward pass).

    With ``answers``, the answer tokens (and end-of-turn) are appended and become the only labels.
    ``chat_style``: how the prompt goes into the chat template (``oracle.core.prompt.CHAT_STYLES``).

    Example:
        >>> b = make_oracle_batch(tok, [torch.randn(2, 576)], [15], ["What is it?"], ["A cat"])  # doctest: +SKIP
        >>> b.vectors_ND.shape                                                                  # doctest: +SKIP
        torch.Size([2, 576])
    """
    if not (len(vectors) == len(layers) == len(questions)) or (answers is not None and len(answers) != len(vectors)):
        raise InputError("vectors, layers, questions (and answers) must have one entry per item")
    seqs, label_seqs, slots = [], [], []
    for i, v in enumerate(vectors):
        if v.dim() != 2 or v.shape[0] < 1:
            raise InputError(f"item {i}: activations must be (K, d_model) with K >= 1, got {tuple(v.shape)}")
        prompt = build_prompt(tokenizer, int(layers[i]), int(v.shape[0]), questions[i], placeholder,
                              chat_style=chat_style)
        ids = list(prompt.input_ids)
        labels = [IGNORE] * len(ids)
        if answers is not None:
            a = answer_ids(tokenizer, answers[i])
            ids += a
            labels += a
        if max_length is not None and len(ids) > max_length:
            raise InputError(f"item {i}: the oracle prompt is {len(ids)} tokens, over the {max_length}-token limit: "
                             f"shorten the question or inject fewer positions")
        seqs.append(ids)
        label_seqs.append(labels)
        slots.append(prompt.placeholder_positions)
    pad_id = pad_token_id(tokenizer)
    tokens_BL, mask_BL = pad_batch(seqs, pad_id, side=side)
    width = tokens_BL.shape[1]
    labels_BL = None
    if answers is not None:
        labels_BL = torch.full_like(tokens_BL, IGNORE)
        for i, lab in enumerate(label_seqs):
            start = width - len(lab) if side == "left" else 0
            labels_BL[i, start:start + len(lab)] = torch.as_tensor(lab)
    rows, positions = [], []
    for i, (seq, pos) in enumerate(zip(seqs, slots)):
        offset = width - len(seq) if side == "left" else 0
        rows += [i] * len(pos)
        positions += [p + offset for p in pos]
    vectors_ND = torch.cat([v.float() for v in vectors], dim=0)
    return OracleBatch(tokens_BL, mask_BL, labels_BL, torch.as_tensor(rows), torch.as_tensor(positions), vectors_ND)


@torch.no_grad()
def capture_contexts(lm: LoadedModel, contexts: Sequence[Sequence[int]], layers: Sequence[int],
                     adapter: Optional[str] = None) -> dict[int, torch.Tensor]:
    """One right-padded forward of the contexts with only ``adapter`` active: ``{L: acts_BLD}`` on CPU, fp32."""
    pad_id = pad_token_id(lm.tokenizer)
    tokens_BL, mask_BL = pad_batch(contexts, pad_id, side="right", device=lm.device)
    with active_adapter(lm.model, adapter):
        acts = capture_batch(lm.model, tokens_BL, mask_BL, sorted(set(int(x) for x in layers)))
    return {L: a.float().cpu() for L, a in acts.items()}


@torch.no_grad()
def target_vectors(
    lm: LoadedModel,
    contexts: Sequence[Sequence[int]],
    positions: Sequence[Sequence[int]],
    layers: Sequence[int],
    adapter: Optional[str] = None,
    diff: bool = False,
) -> list[torch.Tensor]:
    """Target activations ``(K_i, D)`` of each context at its positions and layer, with only ``adapter``
    active (``None``: the base model). ``diff=True`` returns (adapter minus base) activations.

    ``positions`` are token indices already resolved inside each context (``hooks.positions.Positions.select``,
    or a task's own choice); they are not checked again here.

    Example:
        >>> vs = target_vectors(lm, [[1, 2, 3]], [[2]], [15])   # doctest: +SKIP
        >>> vs[0].shape                                         # doctest: +SKIP
        torch.Size([1, 576])
    """
    for i, ctx in enumerate(contexts):
        if not ctx:
            raise InputError(f"context {i} is empty")
    device = lm.device
    pad_id = pad_token_id(lm.tokenizer)
    tokens_BL, mask_BL = pad_batch(contexts, pad_id, side="right", device=device)
    uniq = sorted(set(int(x) for x in layers))

    def run(name: Optional[str]) -> dict[int, torch.Tensor]:
        with active_adapter(lm.model, name):
            return capture_batch(lm.model, tokens_BL, mask_BL, uniq)

    acts = run(adapter)
    if diff:
        base = run(None)
        acts = {L: acts[L] - base[L] for L in acts}
    return [acts[int(L)][i, torch.as_tensor(list(pos), device=device)].float() for i, (pos, L) in
            enumerate(zip(positions, layers))]
