"""Capture residual-stream activations: batched forwards with hooks on decoder-block outputs.

The forward stops right after the deepest requested block (the LM head is never computed).
Documents are sorted by length into batches so padding stays small, position ids are passed
explicitly so left and right padding give the same result, and only real tokens are kept.
"""
from __future__ import annotations

import copy
import itertools
import logging
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import nn

from hooks.errors import InputError
from hooks.layers import decoder_layers

log = logging.getLogger(__name__)

BACKENDS = ("torch", "nnsight", "transformer_lens")


class _StopForward(Exception):
    """Raised from the deepest hook to end the forward early."""


def block_output(output):
    """The hidden-state tensor of a decoder block's output (a tensor or a tuple starting with one)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def position_ids_from_mask(mask_BL: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left and right padding agree.

    Example:
        >>> position_ids_from_mask(torch.tensor([[0, 1, 1], [1, 1, 0]])).tolist()
        [[0, 0, 1], [0, 1, 1]]
    """
    return (mask_BL.long().cumsum(-1) - 1).clamp(min=0)


def pad_batch(
    seqs: Sequence[Sequence[int]], pad_id: int, side: str = "right", device: Optional[torch.device] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token-id lists into ``tokens_BL`` and ``mask_BL``.

    Example:
        >>> t, m = pad_batch([[5, 6, 7], [8]], pad_id=0, side="left")
        >>> t.tolist(), m.tolist()
        ([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
    """
    if side not in ("left", "right"):
        raise InputError(f"padding side must be 'left' or 'right', not {side!r}")
    width = max(len(s) for s in seqs)
    tokens_BL = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask_BL = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if side == "right":
            tokens_BL[i, : len(s)] = torch.as_tensor(list(s))
            mask_BL[i, : len(s)] = 1
        else:
            tokens_BL[i, width - len(s):] = torch.as_tensor(list(s))
            mask_BL[i, width - len(s):] = 1
    if device is not None:
        tokens_BL, mask_BL = tokens_BL.to(device), mask_BL.to(device)
    return tokens_BL, mask_BL


class HookedForward:
    """Forward hooks on the requested blocks that write into the calling thread's own dict, so
    several threads can run captures through one shared model at the same time.

    The hooks stay registered until ``close()`` (or the end of a ``with`` block), so a run of many
    batches registers them once; a forward of another thread that is not capturing passes through.

    Example:
        >>> from hooks.testing import tiny_model
        >>> t, m = pad_batch([[5, 6, 7]], pad_id=0)
        >>> with HookedForward(tiny_model("llama"), [1]) as fwd:
        ...     tuple(fwd(t, m)[1].shape)
        (1, 3, 64)
    """

    def __init__(self, model: nn.Module, layers: Sequence[int]) -> None:
        if not layers:
            raise InputError("no layers to capture")
        self.model = model
        self.deepest = max(layers)
        self._local = threading.local()
        blocks = decoder_layers(model)
        self._handles = [blocks[idx].register_forward_hook(self._hook(idx)) for idx in sorted(set(layers))]

    def _hook(self, idx: int) -> Callable:
        def hook(_module, _inputs, output):
            acts = getattr(self._local, "acts", None)
            if acts is None:   # a forward of a thread that is not capturing
                return None
            acts[idx] = block_output(output).detach()
            if idx == self.deepest:
                raise _StopForward
            return None

        return hook

    @torch.inference_mode()
    def __call__(self, tokens_BL: torch.Tensor, mask_BL: torch.Tensor) -> dict[int, torch.Tensor]:
        self._local.acts = acts = {}
        try:
            self.model(input_ids=tokens_BL, attention_mask=mask_BL, position_ids=position_ids_from_mask(mask_BL),
                       use_cache=False)
        except _StopForward:
            pass
        finally:
            self._local.acts = None
        return acts

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "HookedForward":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _forward_torch(model: nn.Module, tokens_BL, mask_BL, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    with HookedForward(model, layers) as fwd:
        return fwd(tokens_BL, mask_BL)


def _forward_nnsight(model: nn.Module, tokens_BL, mask_BL, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    wrapped = _nnsight_for(model)
    path = _module_path(model, decoder_layers(model))
    saved = {}
    with wrapped.trace(input_ids=tokens_BL, attention_mask=mask_BL, position_ids=position_ids_from_mask(mask_BL),
                       use_cache=False) as tracer:
        envoy_blocks = _get_envoy(wrapped, path)
        for idx in sorted(set(layers)):
            saved[idx] = envoy_blocks[idx].output.save()
        # nothing below the deepest block is needed: end the forward there
        tracer.stop()
    return {idx: block_output(v).detach() for idx, v in saved.items()}


_NNSIGHT_ATTR = "_ao_nnsight"


def _nnsight_for(model: nn.Module):
    """One ``nnsight.NNsight`` wrapper per model, kept on the model itself (outside ``_modules``,
    so it is no submodule and no state): nnsight installs its controllers on every module when it
    wraps, so wrapping once is cheaper and never stacks; the wrapper dies with the model."""
    from nnsight import NNsight

    wrapped = model.__dict__.get(_NNSIGHT_ATTR)
    if wrapped is None:
        wrapped = NNsight(model)
        model.__dict__[_NNSIGHT_ATTR] = wrapped
    return wrapped


def _module_path(model: nn.Module, target: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is target:
            return name
    raise InputError("decoder blocks not found inside the model")


def _get_envoy(wrapped, path: str):
    obj = wrapped
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _forward_transformer_lens(model: nn.Module, tokens_BL, mask_BL, layers: Sequence[int], tokenizer=None):
    bridge = _bridge_for(model, tokenizer)
    names = {f"blocks.{idx}.hook_resid_post" for idx in set(layers)}
    _, cache = bridge.run_with_cache(
        tokens_BL, attention_mask=mask_BL, position_ids=position_ids_from_mask(mask_BL),
        names_filter=lambda name: name in names, stop_at_layer=max(layers) + 1,
    )
    return {idx: cache[f"blocks.{idx}.hook_resid_post"].detach() for idx in sorted(set(layers))}


# model -> (adapter state, bridge). Weak keys: a bridge never outlives its model, and a new model
# that happens to reuse a dead one's id() never gets the dead one's bridge.
_BRIDGES: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _adapter_state(model: nn.Module) -> tuple:
    """Which PEFT adapters are active/disabled right now (``()`` for a plain model): a bridge is
    rebuilt when this changes, since it runs on a copy of the module tree."""
    if not hasattr(model, "peft_config"):
        return ()
    state = []
    for module in model.modules():
        if hasattr(module, "_disable_adapters") and hasattr(module, "active_adapters"):
            state.append((bool(module.disable_adapters), tuple(module.active_adapters)))
    return tuple(sorted(set(state)))


def _shared_copy(model: nn.Module) -> nn.Module:
    """A copy of the module tree that shares every parameter and buffer with ``model`` (no weight copy)."""
    memo: dict = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    wrapper = model.__dict__.get(_NNSIGHT_ATTR)
    if wrapper is not None:
        memo[id(wrapper)] = None  # the copy gets no nnsight wrapper of its own
    return copy.deepcopy(model, memo)


def _attn_impl(model: nn.Module) -> Optional[str]:
    return getattr(getattr(model, "config", None), "_attn_implementation", None)


def _bridge_for(model: nn.Module, tokenizer):
    """A TransformerLens ``TransformerBridge`` over ``model``'s weights, cached per model.

    ``TransformerBridge.boot_transformers(hf_model=...)`` rewires the model it is given (it swaps
    the decoder blocks and attention modules for its own bridge components, which compute
    attention eagerly) and switches it to eager attention. So the bridge is booted on a copy of
    the module tree that shares the weights, and the user's model is left exactly as it was
    (same modules, same attention implementation). The bridge needs a real Hugging Face
    tokenizer. Its attention is the eager computation, so it equals the torch backend bitwise
    on a model with eager attention, and to float rounding on an SDPA model.
    """
    from transformer_lens.model_bridge import TransformerBridge

    state = _adapter_state(model)
    cached = _BRIDGES.get(model)
    if cached is not None and cached[0] == state:
        return cached[1]
    if tokenizer is None or not callable(getattr(tokenizer, "save_pretrained", None)):
        raise InputError("the transformer_lens backend needs the model's Hugging Face tokenizer: "
                         "pass tokenizer=lm.tokenizer, or use backend='torch'")
    from hooks.layers import unwrap

    base = unwrap(model)
    prev_impl = _attn_impl(base)
    hf_copy = _shared_copy(base)
    config = hf_copy.config
    if not getattr(config, "architectures", None):  # models built from a config: name the class
        config.architectures = [type(base).__name__]
    name = getattr(config, "_name_or_path", "") or type(base).__name__
    try:
        bridge = TransformerBridge.boot_transformers(name, hf_model=hf_copy, tokenizer=tokenizer,
                                                     device=str(base.get_input_embeddings().weight.device))
    except (ValueError, NotImplementedError, KeyError) as e:
        raise InputError(f"TransformerLens has no bridge for {type(base).__name__} ({str(e).splitlines()[0][:160]}): "
                         "use --backend torch") from None
    finally:
        # the copy shares weights only; make sure nothing leaked onto the user's model
        if _attn_impl(base) != prev_impl and prev_impl is not None:
            if hasattr(base, "set_attn_implementation"):
                base.set_attn_implementation(prev_impl)
            else:
                base.config._attn_implementation = prev_impl
    _BRIDGES[model] = (state, bridge)
    return bridge


@torch.inference_mode()
def capture_batch(
    model: nn.Module,
    tokens_BL: torch.Tensor,
    mask_BL: torch.Tensor,
    layers: Sequence[int],
    backend: str = "torch",
    tokenizer=None,
) -> dict[int, torch.Tensor]:
    """Residual stream after each block in ``layers`` for one padded batch: ``{L: acts_BLD}``.

    Padding rows are included (mask them out with ``mask_BL``; they differ between backends).
    ``backend`` is ``"torch"`` (plain forward hooks, default), ``"nnsight"`` (a trace with
    ``.save()`` and ``stop()``; nnsight installs its pass-through controllers on the model's
    modules the first time) or ``"transformer_lens"`` (``TransformerBridge.run_with_cache`` on a
    weight-sharing copy of the module tree; needs the Hugging Face ``tokenizer``). On real tokens
    torch and nnsight agree bitwise; the bridge computes attention in eager form, so it agrees
    bitwise with a model using eager attention and to float rounding with SDPA.

    Layer ``L`` is the output of block ``L``; for the last block that is the residual *before*
    the final norm (Hugging Face's last ``hidden_states`` entry has the norm applied).

    Example:
        >>> from hooks.testing import tiny_model
        >>> t, m = pad_batch([[5, 6, 7], [8, 9]], pad_id=0)
        >>> acts = capture_batch(tiny_model("llama"), t, m, layers=[0, 1])
        >>> sorted(acts), tuple(acts[1].shape)
        ([0, 1], (2, 3, 64))
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown capture backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if not layers:
        raise InputError("no layers to capture")
    if backend == "torch":
        return _forward_torch(model, tokens_BL, mask_BL, layers)
    if backend == "nnsight":
        return _forward_nnsight(model, tokens_BL, mask_BL, layers)
    return _forward_transformer_lens(model, tokens_BL, mask_BL, layers, tokenizer)


# ---------------------------------------------------------------------------------------------
# Position selection


# One grammar for capture, ao ask and the Oracle API: hooks/positions.py.
from hooks.positions import Positions, PositionsSpec  # noqa: E402


# ---------------------------------------------------------------------------------------------
# Length-sorted batching


def length_sorted_batches(lengths: Sequence[int], max_batch: int, max_tokens: int) -> Iterator[list[int]]:
    """Group document indices by length (longest first) so padding stays small.

    A batch holds at most ``max_batch`` docs and at most ``max_tokens`` padded tokens.

    Example:
        >>> list(length_sorted_batches([3, 10, 4, 9], max_batch=2, max_tokens=100))
        [[1, 3], [2, 0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batch: list[int] = []
    for i in order:
        width = lengths[batch[0]] if batch else lengths[i]
        if batch and (len(batch) >= max_batch or width * (len(batch) + 1) > max_tokens):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


@dataclass
class DocCapture:
    """Activations of one document at the kept positions."""

    tokens: torch.Tensor                 # (T,) int, the kept token ids
    positions: torch.Tensor              # (T,) int, their positions in the document
    acts: dict[int, torch.Tensor]        # layer -> (T, D) on CPU


def default_workers(device: str | torch.device, backend: str = "torch") -> int:
    """Batches to run at once: on CPU with the torch backend, one per torch thread (at most 4).

    A small model's forward on a few CPU cores spends a good share of its time in short ops that
    each pay a thread-pool round trip; running batches side by side, each on one thread, keeps every
    core busy instead. On GPU, and for nnsight and TransformerLens (whose tracing is not thread-safe),
    one batch at a time.

    Example:
        >>> default_workers("cuda")
        1
    """
    if torch.device(device).type != "cpu" or backend != "torch":
        return 1
    return max(1, min(4, torch.get_num_threads()))


@contextmanager
def _threads_per_worker(workers: int) -> Iterator[None]:
    """Split torch's intra-op threads between ``workers`` concurrent batches (restored afterwards)."""
    if workers <= 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, before // workers))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def capture_documents(
    model: nn.Module,
    docs_tokens: Sequence[Sequence[int]],
    layers: Sequence[int],
    pad_id: int,
    positions: PositionsSpec = "all",
    padding_side: str = "right",
    max_batch: int = 16,
    max_tokens: int = 4096,
    backend: str = "torch",
    tokenizer=None,
    out_dtype: torch.dtype = torch.float32,
    on_batch: Optional[Callable[[int, int], None]] = None,
    workers: int = 1,
) -> list[DocCapture]:
    """Capture tokenized documents in length-sorted batches; returns one ``DocCapture`` per doc, in input order.

    ``on_batch(n_docs, n_tokens)`` is called after each batch (for progress bars). ``workers`` > 1
    runs that many batches at once in threads sharing the model (torch backend only; see
    ``default_workers``); each batch is computed exactly as it would be alone.

    Example:
        >>> from hooks.testing import tiny_model
        >>> caps = capture_documents(tiny_model("llama"), [[5, 6, 7], [8]], layers=[1], pad_id=0, positions="last")
        >>> [tuple(c.acts[1].shape) for c in caps]
        [(1, 64), (1, 64)]
    """
    if any(len(d) == 0 for d in docs_tokens):
        raise InputError("a document has no tokens: drop empty texts before capturing")
    if backend not in BACKENDS:
        raise InputError(f"unknown capture backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if workers < 1 or (workers > 1 and backend != "torch"):
        raise InputError(f"workers={workers}: use 1, or more only with the torch backend")
    positions = Positions.parse(positions)   # a parsed value (CaptureConfig's) passes as it is
    device = model.get_input_embeddings().weight.device
    out: list[Optional[DocCapture]] = [None] * len(docs_tokens)
    lengths = [len(d) for d in docs_tokens]
    hooked = HookedForward(model, layers) if backend == "torch" else None

    def run_batch(batch: list[int]) -> tuple[list[int], list[list[int]], dict[int, tuple], int]:
        tokens_BL, mask_BL = pad_batch([docs_tokens[i] for i in batch], pad_id, padding_side, device)
        if hooked is not None:
            acts = hooked(tokens_BL, mask_BL)
        else:
            acts = capture_batch(model, tokens_BL, mask_BL, layers, backend=backend, tokenizer=tokenizer)
        width = tokens_BL.shape[1]
        # One gather per layer per batch (not one per document): the kept rows of every document,
        # in batch order, then split into per-document views of that compact tensor. Small torch
        # ops each pay a thread-pool round trip, so per-document copies cost more than they move.
        keeps = [positions.select(lengths[i]) for i in batch]
        flat_idx = [row * width + (0 if padding_side == "right" else width - lengths[i]) + p
                    for row, (i, keep) in enumerate(zip(batch, keeps)) for p in keep]
        sizes = [len(k) for k in keeps]
        idx = torch.as_tensor(flat_idx, dtype=torch.long)
        split: dict[int, tuple] = {}
        for L, a_BLD in acts.items():
            kept_RD = a_BLD.reshape(-1, a_BLD.shape[-1]).index_select(0, idx.to(a_BLD.device))
            split[L] = torch.split(kept_RD.to("cpu", out_dtype), sizes)
        return batch, keeps, split, int(mask_BL.sum())

    batches = list(length_sorted_batches(lengths, max_batch, max_tokens))
    try:
        with _threads_per_worker(workers), ThreadPoolExecutor(max_workers=workers) as pool:
            results = pool.map(run_batch, batches) if workers > 1 else map(run_batch, batches)
            for batch, keeps, split, n_tokens in results:
                for j, (doc_idx, keep) in enumerate(zip(batch, keeps)):
                    doc = docs_tokens[doc_idx]
                    out[doc_idx] = DocCapture(
                        tokens=torch.as_tensor([doc[p] for p in keep], dtype=torch.int32),
                        positions=torch.as_tensor(keep, dtype=torch.int32),
                        acts={L: parts[j] for L, parts in split.items()},
                    )
                if on_batch is not None:
                    on_batch(len(batch), n_tokens)
    finally:
        if hooked is not None:
            hooked.close()
    return out  # type: ignore[return-value]
