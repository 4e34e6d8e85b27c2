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
from hooks.models import LoadedModel, check_adapter_folder

from ..card import OracleCard, has_card, read_card
from ..published import check_named_base

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


def check_oracle_card(path: str | Path, base: str) -> OracleCard | None:
    """Read the oracle card before the model load and fail early when it names another embedded model.

    A bare PEFT oracle adapter (no ``oracle.json``, e.g. a published Activation Oracle) gives ``None``:
    its card is derived when it loads; here the base model its ``adapter_config.json`` names must
    not be another model than ``base``.
    """
    if not has_card(path):
        check_named_base(path, base)
        return None
    card = read_card(Path(path))
    want, got = embedded_identity(base), embedded_identity(card.base_model)
    if want is not None and got is not None and want != got:
        raise CheckpointError(f"oracle {path} was trained on {card.base_model}, not {base}: use an oracle for {base}")
    return card


def check_oracle_weights(path: str | Path, card: OracleCard, lm: LoadedModel) -> None:
    """The oracle card's base-weights hash must match the loaded base model."""
    if card.base_weights_hash != lm.weights_hash:
        raise CheckpointError(
            f"oracle {path} was trained on another base model (weights hash {card.base_weights_hash[:12]}..., "
            f"{lm.spec} has {lm.weights_hash[:12]}...): use an oracle trained on {lm.spec}"
        )


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
