"""The base model an adapter names (``base_model_name_or_path``), made portable.

An adapter saved by PEFT records the name or path its base model was loaded from. A path into this
project's model cache (``~/.cache/activation-oracles/smollm2-135m-<hash>``) or any other machine-local
folder means nothing on another machine; adapters record the embedded model's spec (``smollm2-135m``) or a
Hugging Face id instead, and a path from elsewhere is resolved to the embedded model it names, or refused
with a hint to pass the base model explicitly.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Optional, Union

import torch

from hooks.errors import ModelLoadError
from hooks.models import EMBEDDED, LoadedModel, check_adapter_folder, is_gguf, load_model


_CACHE_DIR_RE = re.compile(r"^(?P<name>.+)-[0-9a-f]{16}$")


def embedded_name(name: Optional[str]) -> Optional[str]:
    """The embedded model a spec or an adapter's ``base_model_name_or_path`` refers to, if any.

    Recognises the embedded names, the model cache folders (``<name>-<16 hex>``, from any machine),
    the embedded packages and GGUF files, and Hugging Face ids of the same models.

    Example:
        >>> embedded_name("/home/someone/.cache/activation-oracles/smollm2-135m-552b29bb0acfca72")
        'smollm2-135m'
        >>> embedded_name("HuggingFaceTB/SmolLM2-135M-Instruct"), embedded_name("Qwen/Qwen3-8B")
        ('smollm2-135m', None)
    """
    if not name:
        return None
    s = str(name).strip()
    if s in EMBEDDED:
        return s
    leaf = Path(s.rstrip("/\\")).name
    m = _CACHE_DIR_RE.match(leaf)
    if m and m.group("name") in EMBEDDED:
        return m.group("name")
    for emb, (package, filename, _) in EMBEDDED.items():
        if leaf == package or (filename and leaf.lower() == filename.lower()):
            return emb
    low = s.lower()
    if "smollm2" in low and "135m" in low:
        return "smollm2-135m"
    if "gemma" in low and "270m" in low:
        return "gemma3-270m"
    return None


def is_local_path(name: str) -> bool:
    """Whether a model name is a filesystem path (absolute, home- or dot-relative, or existing)
    rather than a Hugging Face id (``org/name``).

    Example:
        >>> is_local_path("/srv/models/Qwen3-8B"), is_local_path("~/m"), is_local_path("Qwen/Qwen3-8B")
        (True, True, False)
    """
    s = str(name).strip()
    return s.startswith(("/", ".", "~")) or "\\" in s or s.count("/") > 1 or Path(os.path.expanduser(s)).exists()


def portable_base_name(spec: str) -> str:
    """What an adapter should record as ``base_model_name_or_path`` for a model loaded from ``spec``:
    the embedded model's spec for an embedded model or one of its cache folders, else ``spec``.

    Example:
        >>> portable_base_name("/root/.cache/activation-oracles/smollm2-135m-552b29bb0acfca72")
        'smollm2-135m'
        >>> portable_base_name("Qwen/Qwen3-8B")
        'Qwen/Qwen3-8B'
    """
    emb = embedded_name(spec)
    if emb is not None and (spec in EMBEDDED or is_local_path(spec)):
        return emb
    return str(spec)


def record_portable_base(folder: Union[str, Path], spec: str) -> str:
    """Rewrite the adapter's ``base_model_name_or_path`` to :func:`portable_base_name` of ``spec``
    (atomically); returns the name written. For code that saves adapters with PEFT, which records
    the folder the base model was loaded from.

    Example:
        >>> record_portable_base("runs/my-oracle", "smollm2-135m")   # doctest: +SKIP
        'smollm2-135m'
    """
    cfg_path = Path(folder) / "adapter_config.json"
    cfg = check_adapter_folder(folder)
    cfg["base_model_name_or_path"] = portable_base_name(spec)
    tmp = cfg_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, cfg_path)
    return cfg["base_model_name_or_path"]


def same_base(a: str, b: str) -> Optional[bool]:
    """Whether two model names denote the same base model: ``True``/``False`` when that can be told
    from the names (embedded models, Hugging Face ids), ``None`` when it cannot (a local folder).

    Example:
        >>> same_base("smollm2-135m", "/x/.cache/activation-oracles/smollm2-135m-0123456789abcdef")
        True
        >>> same_base("Qwen/Qwen3-8B", "qwen/qwen3-8b"), same_base("Qwen/Qwen3-8B", "google/gemma-2-9b-it")
        (True, False)
        >>> same_base("Qwen/Qwen3-8B", "/srv/models/qwen3") is None
        True
    """
    ea, eb = embedded_name(a), embedded_name(b)
    if ea is not None or eb is not None:
        if ea is not None and eb is not None:
            return ea == eb
        other = b if ea is not None else a
        return None if is_local_path(other) else False
    if is_local_path(a) or is_local_path(b):
        return None
    return str(a).strip().rstrip("/").lower() == str(b).strip().rstrip("/").lower()


def resolve_adapter_base(folder: Union[str, Path], base: Optional[str] = None) -> str:
    """The model spec to load under an adapter: ``base`` when given, else what its
    ``adapter_config.json`` names (an embedded model's cache folder from any machine maps to the
    embedded model). A missing name or a local path absent here raises a one-line ModelLoadError.

    Example:
        >>> resolve_adapter_base("checkpoints/organisms/taboo-moon")   # doctest: +SKIP
        'smollm2-135m'
    """
    if base:
        return str(base)
    named = str(check_adapter_folder(folder).get("base_model_name_or_path") or "").strip()
    if not named:
        raise ModelLoadError(f"{folder}/adapter_config.json names no base model: pass the base model with --base")
    emb = embedded_name(named)
    if emb is not None and (named in EMBEDDED or is_local_path(named)):
        return emb
    if is_local_path(named) and not Path(os.path.expanduser(named)).exists():
        raise ModelLoadError(
            f"the base model of {folder} is {named!r}, a path that is not on this machine: pass the base model with "
            f"--base (an embedded name, a local folder, a .gguf file or a Hugging Face id)"
        )
    return named


def load_adapter_base(folder: Union[str, Path], base: Optional[str] = None, dtype: Union[str, torch.dtype] = "float32",
                      device: str = "cpu") -> LoadedModel:
    """Load the base model an adapter folder was made for (see :func:`resolve_adapter_base`); a named
    base that cannot be loaded here fails with one line that says to pass ``--base``.

    Example:
        >>> load_adapter_base("checkpoints/organisms/taboo-moon").spec   # doctest: +SKIP
        'smollm2-135m'
    """
    spec = resolve_adapter_base(folder, base)
    try:
        return load_model(spec, dtype=dtype, device=device)
    except ModelLoadError as e:
        if base:
            raise
        emb = embedded_name(spec)
        hint = f"--base {emb} (the embedded copy)" if emb else "--base (a local folder, a .gguf file or an embedded name)"
        raise ModelLoadError(
            f"the base model {spec!r} named by {folder}/adapter_config.json cannot be loaded here "
            f"({str(e).splitlines()[0][:160]}): pass it with {hint}"
        ) from None


def model_skeleton(spec: str, trust_remote_code: bool = False) -> LoadedModel:
    """A model's structure without its weights (parameters on the ``meta`` device) and its tokenizer:
    depth, width and :attr:`LoadedModel.weights_hash` of a large model without loading it. Embedded
    and GGUF models are small and load for real.

    Example:
        >>> sk = model_skeleton("Qwen/Qwen3-8B")      # doctest: +SKIP
        >>> sk.n_layers, sk.d_model                   # doctest: +SKIP
        (36, 4096)
    """
    path = Path(os.path.expanduser(str(spec)))
    if spec in EMBEDDED or is_gguf(path):
        return load_model(spec)
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = str(path) if path.is_dir() else str(spec)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"unknown model {spec!r} ({first[:200]}): use an embedded name, a local folder, a .gguf "
                             f"path, or a Hugging Face id reachable from this machine") from None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=model.eval(), tokenizer=tokenizer, spec=str(spec))
