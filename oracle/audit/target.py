"""Checks on what an audit is pointed at, before and after the (slow) model load.

The audit reads only the target's adapter files (``adapter_config.json``,
``adapter_model.safetensors``); it never opens ``organism.json`` (the ground truth, for scoring).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from hooks.errors import CheckpointError
from hooks.adapter_base import embedded_name, is_local_path
from hooks.models import check_adapter_folder

from oracle.core.published import check_named_base
from oracle.core.reference import OracleRef

log = logging.getLogger(__name__)


def embedded_identity(name: str | None) -> str | None:
    """The embedded model a spec or an adapter's ``base_model_name_or_path`` refers to, if any
    (:func:`hooks.adapter_base.embedded_name`).

    Example:
        >>> embedded_identity("/root/.cache/activation-oracles/smollm2-135m-552b29bb0acfca72")
        'smollm2-135m'
        >>> embedded_identity("HuggingFaceTB/SmolLM2-135M-Instruct"), embedded_identity("gpt2")
        ('smollm2-135m', None)
    """
    return embedded_name(name)


def check_target_adapter(path: str | Path, base: str) -> dict:
    """Validate the target adapter folder and that it was made for ``base``; return its config.

    Fails with a one-line CheckpointError when the folder is not a safetensors PEFT adapter, or its
    ``base_model_name_or_path`` names another embedded model, or (for an embedded ``base``) a
    Hugging Face id of some other model. A path from another machine is only logged: the shape
    check when the adapter is attached catches a real mismatch.

    Example:
        >>> check_target_adapter("checkpoints/oracle-smollm2-135m", "gemma3-270m")   # doctest: +SKIP
        Traceback (most recent call last):
        hooks.errors.CheckpointError: target adapter checkpoints/oracle-smollm2-135m was trained on smollm2-135m, ...
    """
    cfg = check_adapter_folder(path)
    named = str(cfg.get("base_model_name_or_path") or "").strip()
    if not named:
        return cfg
    want = embedded_identity(base)
    got = embedded_identity(named)
    if got is not None and want is not None and got != want:
        raise CheckpointError(f"target adapter {path} was trained on {got}, not {base}: audit it with --base {got}")
    if got is None and want is not None and not is_local_path(named):
        raise CheckpointError(f"target adapter {path} was trained on {named}, not {base}: audit it with --base {named}")
    if got is None and want is None and named != str(base) and not is_local_path(named):
        log.warning("target adapter %s names base model %s, auditing it on %s", path, named, base)
    return cfg


def check_oracle_base(ref: OracleRef, base: str) -> None:
    """Fail early, before the model load, when the oracle was made for another model than ``base``: its card
    (read once, in ``ref``) names another embedded model, or, for a bare PEFT oracle adapter (no card: derived
    when it loads), its ``adapter_config.json`` names another base. The card's weights hash is checked when the
    oracle loads (``Oracle.load``).

    Example:
        >>> from oracle.core.reference import parse_oracle_ref
        >>> check_oracle_base(parse_oracle_ref("checkpoints/oracle-smollm2-135m"), "gemma3-270m")
        Traceback (most recent call last):
        ...
        hooks.errors.CheckpointError: oracle checkpoints/oracle-smollm2-135m was trained on smollm2-135m, not gemma3-270m: use an oracle for gemma3-270m
    """
    if ref.card is None:
        check_named_base(ref.path, base)
        return
    want, got = embedded_identity(base), embedded_identity(ref.card.base_model)
    if want is not None and got is not None and want != got:
        raise CheckpointError(f"oracle {ref.path} was trained on {ref.card.base_model}, not {base}: use an oracle for "
                              f"{base}")


def adapter_summary(path: str | Path, cfg: dict) -> dict:
    """What the report says about the target adapter: path, sha256 of its weights, LoRA shape."""
    weights = Path(path) / "adapter_model.safetensors"
    h = hashlib.sha256()
    with weights.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"path": str(path), "adapter_sha256": h.hexdigest(), "peft_type": cfg.get("peft_type"),
            "r": cfg.get("r"), "lora_alpha": cfg.get("lora_alpha"), "target_modules": cfg.get("target_modules"),
            "base_model_name_or_path": cfg.get("base_model_name_or_path")}
