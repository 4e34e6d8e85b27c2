"""Shared fixtures: the embedded model (loaded once per test session) and a tiny model folder.

Everything runs offline: the Hugging Face hub is switched off before anything imports it.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

try:  # property-based tests (tests/test_properties_*.py): one fixed, deterministic example budget for CI
    from hypothesis import settings

    settings.register_profile("ao", derandomize=True, database=None, max_examples=60, deadline=None,
                              print_blob=False)
    # a longer, random hunt for new defects (AO_HYPOTHESIS_PROFILE=ao-thorough); keep what it finds as @example
    settings.register_profile("ao-thorough", database=None, max_examples=2000, deadline=None)
    settings.load_profile(os.environ.get("AO_HYPOTHESIS_PROFILE", "ao"))
except ImportError:  # hypothesis is in the dev extra; without it the property tests are skipped
    pass

@pytest.fixture(scope="session")
def embedded_lm():
    """The embedded SmolLM2-135M (fp32, CPU), loaded once per session (from the model cache after the first run).

    Shared by many tests: don't attach adapters to it or change its settings without restoring them.
    """
    from hooks.models import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def hf_tokenizer(embedded_lm):
    """A real Hugging Face tokenizer (the embedded model's), for code that needs one with tiny models."""
    return embedded_lm.tokenizer


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, hf_tokenizer) -> Path:
    """A local model folder: a random-init 4-layer Llama (d_model 64) whose vocabulary matches the
    embedded tokenizer, saved with ``save_pretrained`` next to that tokenizer. Loads in well under a
    second, so CLI and multi-process tests use it where the model does not matter."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tok = hf_tokenizer
    cfg = AutoConfig.for_model(
        "llama", vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def wikitext_lines() -> list[str]:
    """Non-empty, non-heading paragraphs of wikitext-2 validation (the shared data folder)."""
    from hooks.paths import data_dir

    path = data_dir() / "text" / "wikitext2_valid.txt"
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        s = line.strip()
        if s and not s.startswith("="):
            lines.append(s)
    return lines
