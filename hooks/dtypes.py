"""The one dtype map: names and aliases (``bf16``, ``fp32`` ...) to torch dtypes.

Example:
    >>> parse_dtype("bf16"), parse_dtype(torch.float16)
    (torch.bfloat16, torch.float16)
"""
from __future__ import annotations

from typing import Union

import torch

from hooks.errors import ModelLoadError

TORCH_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float16": torch.float16, "fp16": torch.float16}


def parse_dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
    """``"bf16"``/``"bfloat16"``/``torch.bfloat16`` ... to a torch dtype (one-line error for anything else)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return TORCH_DTYPES[str(dtype).lower()]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {dtype!r}: use one of float32, bfloat16, float16") from None


def pad_token_id(tokenizer) -> int:
    """The tokenizer's padding id, or 0 when it has none (padded positions are masked out anyway)."""
    pad = getattr(tokenizer, "pad_token_id", None)
    return int(pad) if pad is not None else 0
