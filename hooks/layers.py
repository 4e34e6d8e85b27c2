"""Find the decoder blocks of any causal LM and turn user layer specs into indices.

Layer index ``L`` is the output of decoder block ``L`` (0-based), which is Hugging Face
``hidden_states[L + 1]`` and TransformerLens ``blocks.L.hook_resid_post``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Union

from torch import nn

from hooks.errors import InputError, LayerError

LayerSpec = Union[int, str]

# Attribute paths (relative to the model, after unwrapping PEFT) that hold the block list.
# One general search covers Llama, Mistral, Qwen2/3, Gemma 2/3, Phi-3 (model.layers),
# GPT-2 (transformer.h) and GPT-NeoX (gpt_neox.layers) without per-model files.
_BLOCK_LIST_NAMES = ("layers", "h", "blocks", "block", "decoder_layers")

_TL_NAME = re.compile(r"^blocks\.(-?\d+)\.hook_resid_post$")


def unwrap(model: nn.Module) -> nn.Module:
    """Strip PEFT / DDP wrappers and return the underlying Hugging Face model.

    Example:
        >>> from hooks.testing import tiny_model
        >>> unwrap(tiny_model("llama")).__class__.__name__
        'LlamaForCausalLM'
    """
    seen = 0
    while seen < 8:
        seen += 1
        if hasattr(model, "get_base_model") and callable(model.get_base_model):
            try:
                model = model.get_base_model()
            except KeyError:   # a PEFT model whose active adapter was deleted: the base is still there
                model = model.base_model.model
        elif hasattr(model, "module") and isinstance(getattr(model, "module"), nn.Module):
            model = model.module
        else:
            break
    return model


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ordered list of decoder blocks of ``model`` (PEFT-wrapped or not).

    The rule: the longest ``nn.ModuleList`` whose attribute name is one of the usual block-list
    names and whose length equals ``config.num_hidden_layers`` (or ``n_layer``) when the config
    says it. Raises ``LayerError`` when nothing fits.

    Example:
        >>> from hooks.testing import tiny_model
        >>> len(decoder_layers(tiny_model("gpt2")))
        2
    """
    base = unwrap(model)
    config = getattr(base, "config", None)
    text_config = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
    expected = None
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if text_config is not None and getattr(text_config, key, None):
            expected = int(getattr(text_config, key))
            break
    best: nn.ModuleList | None = None
    for name, module in base.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if leaf not in _BLOCK_LIST_NAMES:
            continue
        if expected is not None and len(module) != expected:
            continue
        if best is None or len(module) > len(best):
            best = module
    if best is None:
        raise LayerError(
            f"could not find the decoder blocks of {type(base).__name__}: no ModuleList named "
            f"{'/'.join(_BLOCK_LIST_NAMES)} with {expected} entries; pass a supported causal LM"
        )
    return best


def n_layers(model: nn.Module) -> int:
    """Number of decoder blocks.

    Example:
        >>> from hooks.testing import tiny_model
        >>> n_layers(tiny_model("qwen3"))
        2
    """
    return len(decoder_layers(model))


@dataclass(frozen=True)
class Layer:
    """A layer spec, parsed once (:meth:`parse`: its syntax); :meth:`resolve` turns it into a block index of a
    model of a given depth (the range check, which needs the model).

    Example:
        >>> layer = Layer.parse("50%")
        >>> layer.resolve(30), layer.resolve(18), str(layer), Layer.parse(layer) is layer
        (15, 9, '50%', True)
    """

    spec: LayerSpec                   # as the user gave it (what reports record)
    index: Optional[int] = None       # a block index (negative counts from the end); None for a percent
    percent: Optional[float] = None   # a percent of depth

    @classmethod
    def parse(cls, spec: Union[LayerSpec, "Layer"]) -> "Layer":
        """The one parse of a layer spec: an int (negative counts from the end), a numeric string, a percent of
        depth (``"50%"``) or a TransformerLens name (``"blocks.12.hook_resid_post"``); a parsed value comes back
        as it is. A malformed spec is a one-line LayerError.

        Example:
            >>> Layer.parse("blocks.3.hook_resid_post").index, Layer.parse(" 25% ").percent
            (3, 25.0)
        """
        if isinstance(spec, Layer):
            return spec
        raw = _Shown(spec)
        if isinstance(spec, str):
            s = spec.strip()
            m = _TL_NAME.fullmatch(s)
            if m:   # more than 18 digits is out of range of any model (and past what int() reads)
                return cls(spec, index=int(m.group(1)) if len(m.group(1)) <= 18 else _OUT_OF_RANGE)
            if s.endswith("%"):
                try:
                    pct = float(s[:-1])
                except ValueError:
                    raise LayerError(f"bad layer percent {raw!r}: write e.g. '50%'") from None
                if not 0 <= pct < 100:
                    raise LayerError(f"layer percent {raw!r} is outside [0%, 100%): use e.g. '25%,50%,75%'")
                return cls(spec, percent=pct)
            try:
                return cls(spec, index=int(s))
            except ValueError:
                raise LayerError(
                    f"bad layer {raw!r}: use an index (12, -1), a percent ('50%') or 'blocks.12.hook_resid_post'"
                ) from None
        if isinstance(spec, bool) or not isinstance(spec, int):
            raise LayerError(f"bad layer {raw!r}: use an int, a percent string or a TransformerLens name")
        return cls(spec, index=spec)

    def resolve(self, num_layers: int) -> int:
        """The 0-based block index in a model of ``num_layers`` blocks; out of range is a one-line LayerError."""
        idx = int(num_layers * self.percent / 100) if self.index is None else self.index
        if idx < 0:
            idx += num_layers
        if not 0 <= idx < num_layers:
            raise LayerError(f"layer {_Shown(self.spec)!r} is out of range: the model has {num_layers} layers "
                             f"(0..{num_layers - 1})")
        return idx

    def __str__(self) -> str:
        return str(self.spec).strip()


_OUT_OF_RANGE = 10 ** 18   # an index no model reaches


def resolve_layer(spec: Union[LayerSpec, Layer], num_layers: int) -> int:
    """One layer spec to a 0-based block index: :meth:`Layer.parse`, then :meth:`Layer.resolve` (a parsed value is
    not parsed again).

    Accepts an int (negative counts from the end), a numeric string, a percent of depth
    (``"50%"`` -> ``int(num_layers * 50 / 100)``) or a TransformerLens name
    (``"blocks.12.hook_resid_post"``).

    Example:
        >>> resolve_layer("50%", 30), resolve_layer(-1, 30), resolve_layer("blocks.3.hook_resid_post", 30)
        (15, 29, 3)
    """
    return Layer.parse(spec).resolve(num_layers)


class _Shown(str):
    """A layer spec as messages show it: its ``repr``, cut to a readable length."""

    def __new__(cls, spec: object) -> "_Shown":
        try:
            shown = repr(spec)
        except ValueError:   # an int of more digits than Python prints
            shown = "<a number of over 4300 digits>"
        return super().__new__(cls, shown)

    def __repr__(self) -> str:
        r = str(self)
        return r if len(r) <= 60 else r[:57] + "..."


def resolve_layers(specs: Union[LayerSpec, Iterable[LayerSpec]], num_layers: int) -> list[int]:
    """Several layer specs (a list, or a comma-separated string) to sorted unique indices.

    Example:
        >>> resolve_layers("25%,50%,75%", 30)
        [7, 15, 22]
    """
    if isinstance(specs, str):
        items: Sequence[LayerSpec] = [p for p in specs.split(",") if p.strip()]
    elif isinstance(specs, int):
        items = [specs]
    else:
        items = list(specs)
    if not items:
        raise LayerError("no layers given: pass e.g. --layers 25%,50%,75%")
    return sorted({resolve_layer(s, num_layers) for s in items})


DEPTH_PERCENTS = (25, 50, 75)


def source_layers(n_layers: int) -> list[int]:
    """The three source depths (25, 50, 75 % of the blocks) as 0-based block indices.

    Example:
        >>> source_layers(30)
        [7, 15, 22]
    """
    if int(n_layers) < 1:
        raise InputError(f"n_layers must be a positive number of decoder blocks, got {n_layers}")
    return [int(n_layers * p / 100) for p in DEPTH_PERCENTS]
