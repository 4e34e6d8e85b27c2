"""The logit lens: residual vectors read through the model's final norm and unembedding, as if the model stopped
at that layer (nostalgebraist 2020). Used by the reading suite's baseline and by the audits."""
from __future__ import annotations

import torch
from torch import nn

from hooks.errors import InputError
from hooks.layers import unwrap
from hooks.models import LoadedModel, active_adapter


def final_norm(model: nn.Module) -> nn.Module:
    """The norm applied to the last residual before the unembedding (Llama, Qwen, Gemma, GPT-2, NeoX, Phi-3).

    Example:
        >>> from hooks.testing import tiny_model
        >>> type(final_norm(tiny_model("llama"))).__name__
        'LlamaRMSNorm'
    """
    base = unwrap(model)
    for path in ("model.norm", "model.language_model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm",
                 "model.final_layernorm", "model.decoder.final_layer_norm"):
        obj = base
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.Module):
            return obj
    raise InputError(f"cannot find the final norm of {type(base).__name__}: the logit lens does not support it")



def norm_scale(norm: nn.Module) -> torch.Tensor:
    """The elementwise gain of a final norm (Gemma's RMSNorm multiplies by ``1 + weight``)."""
    w = getattr(norm, "weight", None)
    if w is None:
        raise InputError(f"the final norm {type(norm).__name__} has no weight: logit_lens_diff cannot use it")
    w = w.detach().float()
    return 1.0 + w if "gemma" in type(norm).__name__.lower() else w



@torch.no_grad()
def logit_lens(lm: LoadedModel, vecs_ND: torch.Tensor, adapter: str | None, diff: bool = False,
               batch_size: int = 256) -> torch.Tensor:
    """Log-softmax ``(N, V)`` of residual vectors read through the final norm and the unembedding.

    ``diff=True`` (difference vectors): scale by the norm's gain elementwise instead of normalising,
    since a difference of two residuals is not itself a residual.

    Example:
        >>> from hooks.testing import tiny_loaded
        >>> logit_lens(tiny_loaded("llama"), torch.randn(3, 64), None).shape
        torch.Size([3, 256])
    """
    norm = final_norm(lm.model)
    head = unwrap(lm.model).get_output_embeddings()
    out = []
    with active_adapter(lm.model, adapter):
        for s in range(0, vecs_ND.shape[0], batch_size):
            v = vecs_ND[s:s + batch_size].to(lm.device)
            w = head.weight if hasattr(head, "weight") else None
            dtype = w.dtype if w is not None else v.dtype
            if diff:
                h = v.float() * norm_scale(norm).to(v.device)
            else:
                h = norm(v.to(dtype))
            out.append(head(h.to(dtype)).float().log_softmax(-1).cpu())
    return torch.cat(out, dim=0)
