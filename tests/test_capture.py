"""Capture correctness: layer discovery, layer specs, hooks vs ``output_hidden_states``, padding, backends.

Convention under test (docs/design.md): layer ``L`` is the output of decoder block ``L``, which is
Hugging Face ``hidden_states[L + 1]`` and TransformerLens ``blocks.L.hook_resid_post``. One
exception is Hugging Face's own: its *last* entry ``hidden_states[n_layers]`` has the final norm
applied, so for the last block the test checks ``final_norm(captured) == hidden_states[-1]``.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from hooks.positions import select_positions
from hooks.capture import (
    capture_batch, capture_documents, length_sorted_batches, pad_batch, position_ids_from_mask,
)
from hooks.capture_job import CaptureConfig
from hooks.errors import InputError, LayerError
from hooks.layers import decoder_layers, n_layers, resolve_layer, resolve_layers, unwrap
from hooks.testing import FAMILIES, tiny_config, tiny_model

TOL = 1e-5  # max abs difference allowed, fp32

# Where each family keeps its block list and its final norm (after unwrapping PEFT).
BLOCKS_AT = {"gpt2": "transformer.h", "gpt_neox": "gpt_neox.layers"}
NORM_AT = {"gpt2": "transformer.ln_f", "gpt_neox": "gpt_neox.final_layer_norm"}
N_LAYERS = 3


def _get(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = getattr(module, part)
    return module


def final_norm(model: nn.Module, family: str) -> nn.Module:
    return _get(unwrap(model), NORM_AT.get(family, "model.norm"))


def random_docs(n_docs: int = 5, seed: int = 0, lengths=(7, 3, 12, 1, 5)) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 250, (lengths[i % len(lengths)],), generator=g).tolist() for i in range(n_docs)]


def fresh_tiny(family: str, seed: int = 0) -> nn.Module:
    """A tiny model that is not the cached ``tiny_model`` (safe to wrap with PEFT)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(family, N_LAYERS), attn_implementation="eager").eval()


@torch.inference_mode()
def hidden_states_alone(model: nn.Module, doc: list[int]) -> tuple:
    """``output_hidden_states`` of one document run alone, unpadded."""
    return model(input_ids=torch.tensor([doc]), output_hidden_states=True, use_cache=False).hidden_states


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item() if a.numel() else 0.0


# ---------------------------------------------------------------------------------------------- layer discovery


@pytest.mark.parametrize("family", FAMILIES)
def test_decoder_layers_every_family(family):
    model = tiny_model(family, N_LAYERS)
    blocks = decoder_layers(model)
    assert blocks is _get(model, BLOCKS_AT.get(family, "model.layers"))
    assert len(blocks) == n_layers(model) == N_LAYERS


@pytest.mark.parametrize("family", FAMILIES)
def test_decoder_layers_peft_wrapped(family):
    """LoRA on every linear layer: the blocks are found through the PEFT wrapper, hooks see the
    adapted residuals, and ``adapters_disabled`` gives back the base model's."""
    from peft import LoraConfig, get_peft_model

    from hooks.models import adapters_disabled

    base_ref = fresh_tiny(family)
    peft_model = get_peft_model(fresh_tiny(family), LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    peft_model.eval()
    blocks = decoder_layers(peft_model)
    assert blocks is decoder_layers(peft_model.get_base_model())
    assert len(blocks) == N_LAYERS
    assert unwrap(peft_model) is peft_model.get_base_model()
    tokens_BL, mask_BL = pad_batch(random_docs(3), pad_id=0)
    real = mask_BL.bool()
    adapted = capture_batch(peft_model, tokens_BL, mask_BL, [0, 1])
    with adapters_disabled(peft_model):
        plain = capture_batch(peft_model, tokens_BL, mask_BL, [0, 1])
    expected = capture_batch(base_ref, tokens_BL, mask_BL, [0, 1])
    assert max_diff(plain[1][real], expected[1][real]) <= TOL
    assert max_diff(adapted[1][real], expected[1][real]) > 1e-3  # the adapter really acts


def test_decoder_layers_error_names_the_fix():
    with pytest.raises(LayerError, match="could not find the decoder blocks"):
        decoder_layers(nn.Sequential(nn.Linear(2, 2)))


# ---------------------------------------------------------------------------------------------- layer specs


@pytest.mark.parametrize("spec, expected", [
    (0, 0), (29, 29), (-1, 29), (-30, 0), ("12", 12), ("-2", 28), (" 7 ", 7),
    ("0%", 0), ("25%", 7), ("50%", 15), ("75%", 22), ("99.9%", 29),
    ("blocks.12.hook_resid_post", 12), ("blocks.-1.hook_resid_post", 29),
])
def test_resolve_layer(spec, expected):
    assert resolve_layer(spec, 30) == expected


@pytest.mark.parametrize("spec", [30, -31, "30", "100%", "150%", "-5%", "blocks.30.hook_resid_post"])
def test_resolve_layer_out_of_range(spec):
    with pytest.raises(LayerError, match="out of range|outside"):
        resolve_layer(spec, 30)


@pytest.mark.parametrize("spec", ["abc", "x%", "blocks.3.hook_attn_out", 1.5, True, None])
def test_resolve_layer_bad_spec(spec):
    with pytest.raises(LayerError):
        resolve_layer(spec, 30)


def test_resolve_layers_lists():
    assert resolve_layers("25%,50%,75%", 30) == [7, 15, 22]
    assert resolve_layers(["blocks.3.hook_resid_post", 3, -27, "10%"], 30) == [3]
    assert resolve_layers(5, 30) == [5]
    with pytest.raises(LayerError, match="no layers"):
        resolve_layers("", 30)
    with pytest.raises(LayerError, match="out of range"):
        resolve_layers("1,2,31", 30)


# ---------------------------------------------------------------------------------------------- helpers


def test_position_ids_and_padding_helpers():
    tokens, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, side="left")
    assert position_ids_from_mask(mask).tolist() == [[0, 1, 2], [0, 0, 0]]
    tokens, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, side="right")
    assert tokens.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert list(length_sorted_batches([3, 10, 4, 9, 1], max_batch=8, max_tokens=20)) == [[1, 3], [2, 0, 4]]
    with pytest.raises(InputError):
        pad_batch([[1]], 0, side="middle")
    with pytest.raises(InputError, match="no tokens"):
        capture_documents(tiny_model("llama"), [[5, 6], []], [0], pad_id=0)
    with pytest.raises(InputError, match="backend"):
        capture_batch(tiny_model("llama"), tokens, mask, [0], backend="jax")


# ---------------------------------------------------------------------------------------------- tiny models


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("family", FAMILIES)
def test_capture_equals_hidden_states_tiny(family, side):
    """Padded, length-sorted batches (two batches, padding in both) give each document's
    ``output_hidden_states[L + 1]`` computed alone and unpadded, at every layer, real tokens only."""
    model = tiny_model(family, N_LAYERS)
    docs = random_docs(5, seed=1)
    layers = list(range(N_LAYERS))
    caps = capture_documents(model, docs, layers, pad_id=0, padding_side=side, max_batch=3)
    norm = final_norm(model, family)
    for doc, cap in zip(docs, caps):
        assert cap.tokens.tolist() == doc and cap.positions.tolist() == list(range(len(doc)))
        hs = hidden_states_alone(model, doc)
        for L in layers[:-1]:
            assert max_diff(cap.acts[L], hs[L + 1][0]) <= TOL, (family, side, L)
        last = layers[-1]  # HF's last hidden state is normed: check the block output through the final norm
        with torch.inference_mode():
            assert max_diff(norm(cap.acts[last]), hs[last + 1][0]) <= TOL, (family, side, last)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3"])
def test_capture_positions_tiny(family):
    model = tiny_model(family, N_LAYERS)
    docs = random_docs(4, seed=2, lengths=(9, 2, 6, 4))
    full = capture_documents(model, docs, [1], pad_id=0)
    for spec in ("last", "last:3", "slice:1:4", "slice:-2:", "all"):
        caps = capture_documents(model, docs, [1], pad_id=0, positions=spec, padding_side="left")
        for doc, cap, ref in zip(docs, caps, full):
            keep = select_positions(len(doc), spec)
            assert cap.positions.tolist() == keep
            assert cap.tokens.tolist() == [doc[p] for p in keep]
            assert max_diff(cap.acts[1], ref.acts[1][keep]) <= TOL


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_three_backends_agree_tiny(family, hf_tokenizer):
    """torch hooks, nnsight and TransformerLens' TransformerBridge give the same residuals on real
    tokens (pad rows differ by design), under left and right padding; the bridge leaves the
    user's model untouched (same modules, same attention implementation)."""
    model = tiny_model(family, N_LAYERS)
    block_types = [type(b) for b in decoder_layers(model)]
    attn_impl = model.config._attn_implementation
    layers = [0, N_LAYERS - 1]
    for side in ("left", "right"):
        tokens_BL, mask_BL = pad_batch(random_docs(4, seed=3), pad_id=0, side=side)
        real = mask_BL.bool()
        ref = capture_batch(model, tokens_BL, mask_BL, layers, backend="torch")
        for backend in ("nnsight", "transformer_lens"):
            got = capture_batch(model, tokens_BL, mask_BL, layers, backend=backend, tokenizer=hf_tokenizer)
            assert sorted(got) == layers
            for L in layers:
                assert max_diff(got[L][real], ref[L][real]) <= TOL, (family, side, backend, L)
    assert [type(b) for b in decoder_layers(model)] == block_types
    assert model.config._attn_implementation == attn_impl
    assert not getattr(model.config, "architectures", None)  # the bridge named a copy's config, not ours
    again = capture_batch(model, tokens_BL, mask_BL, layers)
    assert all(torch.equal(again[L], ref[L]) for L in layers)


def test_transformer_lens_needs_a_real_tokenizer():
    from hooks.testing import ByteTokenizer

    tokens_BL, mask_BL = pad_batch([[5, 6]], pad_id=0)
    with pytest.raises(InputError, match="tokenizer"):
        capture_batch(tiny_model("llama", N_LAYERS, seed=5), tokens_BL, mask_BL, [0], backend="transformer_lens",
                      tokenizer=ByteTokenizer())


# ---------------------------------------------------------------------------------------------- embedded model


EMBEDDED_LAYERS = [7, 15, 22, 29]  # 25/50/75% and the last block


@pytest.fixture(scope="module")
def embedded_docs(embedded_lm, wikitext_lines) -> list[list[int]]:
    """Five wikitext paragraphs of different lengths (longest first, as ``capture_documents`` sorts them)."""
    tok = embedded_lm.tokenizer
    lengths = (40, 33, 26, 17, 5)
    docs = [tok(line)["input_ids"][:n] for line, n in zip(wikitext_lines[:5], lengths)]
    assert [len(d) for d in docs] == list(lengths)
    return docs


@torch.inference_mode()
def hf_hidden_states_batch(model, tokens_BL, mask_BL):
    return model(input_ids=tokens_BL, attention_mask=mask_BL, position_ids=position_ids_from_mask(mask_BL),
                 output_hidden_states=True, use_cache=False).hidden_states


@pytest.mark.slow
@pytest.mark.parametrize("side", ["left", "right"])
def test_capture_equals_hidden_states_embedded(embedded_lm, embedded_docs, side):
    """On SmolLM2-135M, the captured rows equal ``output_hidden_states[L + 1]`` of the same padded batch.

    Why the reference is the same padded batch: this model has massive activations (some residual
    dims reach ~1e4), so a padded batch and the same document run alone differ by fp32 rounding in
    the attention/matmul reduction order alone, up to ~1e-2 absolute on those dims. Against HF
    on the *same* batch (same attention mask, same ``position_ids_from_mask``) the result is
    bitwise, which is what proves the hooks, the early stop and the real-token selection. The
    padded-vs-unpadded check is done separately, relative to the largest activation (<= 1e-6).
    """
    model = embedded_lm.model
    pad_id = embedded_lm.tokenizer.pad_token_id
    tokens_BL, mask_BL = pad_batch(embedded_docs, pad_id, side=side)
    hs = hf_hidden_states_batch(model, tokens_BL, mask_BL)
    real = mask_BL.bool()

    acts = capture_batch(model, tokens_BL, mask_BL, EMBEDDED_LAYERS)
    for L in EMBEDDED_LAYERS[:-1]:
        assert max_diff(acts[L][real], hs[L + 1][real]) <= TOL, (side, L)
    with torch.inference_mode():
        assert max_diff(model.model.norm(acts[29])[real], hs[30][real]) <= TOL

    # the full path: length sorting (docs are already longest first: one batch, same rows), real tokens only
    caps = capture_documents(model, embedded_docs, EMBEDDED_LAYERS[:-1], pad_id, padding_side=side, max_batch=8)
    width = tokens_BL.shape[1]
    for row, (doc, cap) in enumerate(zip(embedded_docs, caps)):
        start = 0 if side == "right" else width - len(doc)
        assert cap.tokens.tolist() == doc
        for L in EMBEDDED_LAYERS[:-1]:
            assert max_diff(cap.acts[L], hs[L + 1][row, start:start + len(doc)]) <= TOL, (side, row, L)

    # padded vs each document alone: equal up to fp32 rounding, relative to the largest activation
    for doc, cap in zip(embedded_docs, caps):
        alone = hidden_states_alone(model, doc)
        for L in EMBEDDED_LAYERS[:-1]:
            ref = alone[L + 1][0]
            assert max_diff(cap.acts[L], ref) / ref.abs().max().item() <= 1e-6, (side, len(doc), L)


@pytest.mark.slow
def test_three_backends_agree_embedded(embedded_lm, embedded_docs):
    """torch and nnsight run the model as loaded (SDPA attention) and agree bitwise. TransformerLens'
    bridge recomputes attention itself in eager form, so it is compared with the torch backend on
    the same model switched to eager attention (<= 1e-5; bitwise in practice), and with the SDPA
    result relative to the largest activation (the two attention kernels round differently)."""
    model, tok = embedded_lm.model, embedded_lm.tokenizer
    layers = EMBEDDED_LAYERS[:-1]
    tokens_BL, mask_BL = pad_batch(embedded_docs[:4], tok.pad_token_id, side="left")
    real = mask_BL.bool()
    sdpa = capture_batch(model, tokens_BL, mask_BL, layers, backend="torch")
    nns = capture_batch(model, tokens_BL, mask_BL, layers, backend="nnsight")
    tl = capture_batch(model, tokens_BL, mask_BL, layers, backend="transformer_lens", tokenizer=tok)
    assert model.config._attn_implementation == "sdpa"  # the bridge did not switch our model to eager
    assert type(decoder_layers(model)[0]).__name__ == "LlamaDecoderLayer"
    prev = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        eager = capture_batch(model, tokens_BL, mask_BL, layers, backend="torch")
        eager_nns = capture_batch(model, tokens_BL, mask_BL, layers, backend="nnsight")
    finally:
        model.set_attn_implementation(prev)
    for L in layers:
        assert max_diff(nns[L][real], sdpa[L][real]) <= TOL, L
        assert max_diff(eager_nns[L][real], eager[L][real]) <= TOL, L
        assert max_diff(tl[L][real], eager[L][real]) <= TOL, L
        assert max_diff(tl[L][real], sdpa[L][real]) / sdpa[L][real].abs().max().item() <= 1e-6, L
    after = capture_batch(model, tokens_BL, mask_BL, layers)
    assert all(torch.equal(after[L], sdpa[L]) for L in layers)


def test_worker_threads_give_the_single_thread_result_and_leave_no_hooks():
    torch.manual_seed(0)
    model = tiny_model("llama")
    docs = [[int(t) for t in torch.randint(3, 200, (n,))] for n in (7, 3, 12, 5, 9, 1, 4)]
    threads = torch.get_num_threads()
    one = capture_documents(model, docs, [0, 1], pad_id=0, max_batch=2, workers=1)
    many = capture_documents(model, docs, [0, 1], pad_id=0, max_batch=2, workers=3)
    for a, b in zip(one, many):
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.positions, b.positions)
        for L in (0, 1):
            assert torch.allclose(a.acts[L], b.acts[L], atol=1e-6, rtol=0)
    assert all(not blk._forward_hooks for blk in decoder_layers(model))
    assert torch.get_num_threads() == threads   # the split between workers is undone


def test_worker_threads_need_the_torch_backend():
    with pytest.raises(InputError, match="workers"):
        capture_documents(tiny_model("llama"), [[5, 6]], [0], pad_id=0, backend="nnsight", workers=2)
    with pytest.raises(InputError, match="workers"):
        CaptureConfig(out="x", backend="nnsight", workers=2)


def test_unwrap_survives_a_deleted_active_adapter():
    """``run_audit(config, lm=lm)`` on a model that carried an oracle's adapter deletes that (active) adapter
    first; the base model must still be found (was a KeyError in PEFT's ``get_base_model``)."""
    from peft import LoraConfig, get_peft_model

    from hooks.layers import unwrap
    from hooks.testing import tiny_model

    model = get_peft_model(tiny_model("llama"), LoraConfig(r=2, target_modules=["q_proj"]), adapter_name="oracle")
    model.delete_adapter("oracle")
    assert unwrap(model).__class__.__name__ == "LlamaForCausalLM"
