"""Tiny random-init models built from configs, for tests and doctests (no download, no network)."""
from __future__ import annotations

from functools import lru_cache

import torch

from hooks.models import LoadedModel

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "gpt2", "gpt_neox", "phi3")


def tiny_config(family: str, n_layers: int = 2, d_model: int = 64, vocab: int = 256):
    """A small config of the given architecture family."""
    from transformers import AutoConfig

    common = dict(vocab_size=vocab, hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=n_layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0)
    if family == "gpt2":
        return AutoConfig.for_model("gpt2", bos_token_id=1, eos_token_id=2, vocab_size=vocab, n_embd=d_model, n_layer=n_layers, n_head=4, n_positions=256)
    if family == "gpt_neox":
        return AutoConfig.for_model("gpt_neox", vocab_size=vocab, hidden_size=d_model, intermediate_size=2 * d_model,
                                    num_hidden_layers=n_layers, num_attention_heads=4, max_position_embeddings=256)
    if family in ("gemma2", "gemma3"):
        model_type = "gemma3_text" if family == "gemma3" else "gemma2"
        return AutoConfig.for_model(model_type, head_dim=16, **common)
    if family == "qwen3":
        return AutoConfig.for_model("qwen3", head_dim=16, **common)
    if family == "phi3":
        return AutoConfig.for_model(family, bos_token_id=1, eos_token_id=2, **common)
    return AutoConfig.for_model(family, **common)


@lru_cache(maxsize=None)
def tiny_model(family: str = "llama", n_layers: int = 2, seed: int = 0):
    """A random-init causal LM of ``family`` in eval mode (cached per arguments)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, n_layers), attn_implementation="eager")
    return model.eval().requires_grad_(False)


class ByteTokenizer:
    """Stand-in tokenizer for tiny models: one id per byte (offset 3), pad 0, bos 1, eos 2."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2
    pad_token, eos_token, bos_token = "<pad>", "</s>", "<s>"
    padding_side = "right"
    chat_template = None
    name_or_path = "byte-tokenizer"

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [b % 250 + 3 for b in text.encode()]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return bytes(max(0, int(i) - 3) for i in ids if int(i) >= 3).decode(errors="replace")

    def __call__(self, texts, add_special_tokens: bool = True, **_):
        if isinstance(texts, str):
            return {"input_ids": self.encode(texts)}
        return {"input_ids": [self.encode(t) for t in texts]}


def tiny_loaded(family: str = "llama", n_layers: int = 2, seed: int = 0) -> LoadedModel:
    """A ``LoadedModel`` around :func:`tiny_model` with a byte tokenizer."""
    return LoadedModel(model=tiny_model(family, n_layers, seed), tokenizer=ByteTokenizer(), spec=f"tiny-{family}")
