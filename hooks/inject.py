"""Inject activation vectors into a model's residual stream (the oracle's input channel).

At the output of one decoder block, at given (row, position) slots, on the prefill pass only:
``h <- h + ||h|| * v / ||v|| * coef``. During cached generation the later forwards see one new
token each and are never touched.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

from hooks.capture import block_output
from hooks.errors import InputError
from hooks.layers import decoder_layers


def norm_matched_add(h_ND: torch.Tensor, v_ND: torch.Tensor, coef: float = 1.0) -> torch.Tensor:
    """``h + ||h|| * v/||v|| * coef`` row by row (computed in fp32, returned in ``h``'s dtype).

    Example:
        >>> h = torch.tensor([[3.0, 4.0]]); v = torch.tensor([[0.0, 2.0]])
        >>> norm_matched_add(h, v).tolist()
        [[3.0, 9.0]]
    """
    h32, v32 = h_ND.float(), v_ND.float()
    unit = v32 / v32.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return (h32 + h32.norm(dim=-1, keepdim=True) * unit * coef).to(h_ND.dtype)


@contextlib.contextmanager
def inject_at(
    model: nn.Module,
    layer: int,
    rows: Sequence[int] | torch.Tensor,
    positions: Sequence[int] | torch.Tensor,
    vectors_ND: torch.Tensor,
    coef: float = 1.0,
) -> Iterator[dict]:
    """Inside the block, the next forward(s) that contain the slots get ``vectors_ND`` added at
    ``(rows[i], positions[i])`` of block ``layer``'s output; a one-token cached step never does.

    Yields a dict whose ``"calls"`` counts injections (tests use it).

    Example:
        >>> from hooks.testing import tiny_model
        >>> m = tiny_model("llama"); ids = torch.tensor([[5, 6, 7]])
        >>> with inject_at(m, 1, [0], [1], torch.randn(1, 64)) as info:
        ...     _ = m(ids)
        >>> info["calls"]
        1
    """
    rows_t = torch.as_tensor(rows, dtype=torch.long).flatten()
    pos_t = torch.as_tensor(positions, dtype=torch.long).flatten()
    if rows_t.numel() != pos_t.numel() or vectors_ND.dim() != 2 or vectors_ND.shape[0] != pos_t.numel():
        raise InputError(
            f"injection needs one vector per slot: {pos_t.numel()} positions, {rows_t.numel()} rows, "
            f"vectors of shape {tuple(vectors_ND.shape)}"
        )
    block = decoder_layers(model)[layer]
    info = {"calls": 0}
    max_pos = int(pos_t.max()) if pos_t.numel() else -1

    def hook(_module, _inputs, output):
        h_BLD = block_output(output)
        # Prefill only: a cached generation step has one position and never holds the slots.
        if pos_t.numel() == 0 or h_BLD.shape[1] <= max_pos:
            return output
        if vectors_ND.shape[-1] != h_BLD.shape[-1]:
            raise InputError(f"vectors have width {vectors_ND.shape[-1]} but the model's residual is {h_BLD.shape[-1]}")
        r, p = rows_t.to(h_BLD.device), pos_t.to(h_BLD.device)
        new_BLD = h_BLD.clone()
        new_BLD[r, p] = norm_matched_add(h_BLD[r, p], vectors_ND.to(h_BLD.device), coef)
        info["calls"] += 1
        if isinstance(output, (tuple, list)):
            return (new_BLD, *output[1:])
        return new_BLD

    handle = block.register_forward_hook(hook)
    try:
        yield info
    finally:
        handle.remove()
