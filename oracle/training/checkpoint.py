"""Resumable training state (safetensors only): the adapter, the optimizer's moments, the step, the log and
the run's settings, written atomically; the settings are compared when a run resumes."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch

from hooks.atomic import atomic_write_text
from hooks.errors import CheckpointError
from hooks.models import LoadedModel

from oracle.training.config import TrainConfig

if TYPE_CHECKING:
    from oracle.core.card import OracleCard

TRAIN_STATE = "train_state"

#: settings a resumed run may change: they steer bookkeeping, not what is learned
RESUME_FREE_FIELDS = frozenset({"out", "steps", "time_budget_s", "eval_every", "eval_examples", "save_every",
                                "device", "data_dir", "store_dir", "calibration_n"})


def check_resume_settings(config: TrainConfig, out: Path) -> None:
    """Refuse to resume a run whose saved settings differ from ``config``, naming the fields that differ."""
    state = out / TRAIN_STATE / "state.json"
    if not state.exists():
        return
    saved = json.loads(state.read_text()).get("config")
    if saved is None:  # saved before settings were recorded
        return
    now = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    diff = [f"{k}: {saved[k]!r} -> {now[k]!r}" for k in sorted(now)
            if k not in RESUME_FREE_FIELDS and k in saved and saved[k] != now[k]]
    if diff:
        raise CheckpointError(f"{out} holds a run started with other settings ({'; '.join(diff)}): rerun with the "
                              f"same settings, or delete {out / TRAIN_STATE} to start over")


def save_train_state(lm: LoadedModel, optimizer: torch.optim.Optimizer, step: int, out: Path, log_rows: list,
                     adapter: str = "oracle", config: Optional[dict] = None) -> None:
    """Adapter + optimizer moments + step (+ the run's settings), atomically (a tmp folder, then a rename)."""
    from safetensors.torch import save_file

    final = out / TRAIN_STATE
    tmp = out / (TRAIN_STATE + ".tmp")
    if tmp.exists():
        remove_tree(tmp)
    tmp.mkdir(parents=True)
    lm.model.save_pretrained(str(tmp / "adapter"), selected_adapters=[adapter], safe_serialization=True)
    tensors = {}
    names = {id(p): n for n, p in lm.model.named_parameters() if p.requires_grad}
    for p, st in optimizer.state.items():
        n = names[id(p)]
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{n}::{k}"] = v.detach().cpu().contiguous()
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    state = {"step": step, "log": log_rows}
    if config is not None:
        state["config"] = json.loads(json.dumps(config, default=str))
    (tmp / "state.json").write_text(json.dumps(state))
    if final.exists():
        old = out / (TRAIN_STATE + ".old")
        final.rename(old)
        tmp.rename(final)
        remove_tree(old)
    else:
        tmp.rename(final)


def load_train_state(lm: LoadedModel, optimizer: torch.optim.Optimizer, out: Path,
                     adapter: str = "oracle") -> tuple[int, list]:
    """Restore what :func:`save_train_state` wrote; returns (step, log rows)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = out / TRAIN_STATE
    adapter_file = folder / "adapter" / adapter / "adapter_model.safetensors"
    if not adapter_file.exists():
        adapter_file = folder / "adapter" / "adapter_model.safetensors"
    if not adapter_file.exists():
        raise CheckpointError(f"{folder} has no adapter_model.safetensors: delete it to start over")
    set_peft_model_state_dict(lm.model, load_file(str(adapter_file)), adapter_name=adapter)
    moments = load_file(str(folder / "optimizer.safetensors"))
    params = {n: p for n, p in lm.model.named_parameters() if p.requires_grad}
    for key, v in moments.items():
        n, k = key.rsplit("::", 1)
        if n not in params:
            raise CheckpointError(f"optimizer state names {n}, which the model lacks: delete {folder} to start over")
        optimizer.state[params[n]][k] = v.to(params[n].device)
    state = json.loads((folder / "state.json").read_text())
    return int(state["step"]), list(state.get("log", []))


def start_from_oracle(lm: LoadedModel, config: TrainConfig, out: Path) -> dict:
    """Attach ``config.init_from``'s adapter as the trainable "oracle" adapter and copy its input scaling into
    ``out``; refuse an oracle whose base, injection or LoRA shape differs from ``config``. Returns the init
    oracle's training summary (kept in the new card, so the total training time stays on record)."""
    import shutil

    from hooks.models import attach_adapter

    from oracle.core.scaling import STATS_FILE

    folder = Path(config.init_from)
    card = check_init_from(lm, config, out)
    if config.input_scaling != "none" and not (out / STATS_FILE).exists():
        shutil.copyfile(folder / STATS_FILE, out / STATS_FILE)
    attach_adapter(lm, folder, name="oracle", trainable=True)
    return {"init_from": str(folder), "init_training": card.training}


def check_init_from(lm: LoadedModel, config: TrainConfig, out: Path) -> "OracleCard":
    """Refuse, in one line, a ``config.init_from`` oracle that cannot be continued here (another base, injection or
    LoRA shape, no input scaling); returns its card. Reads only: :func:`train_oracle` calls it before it writes."""
    from hooks.models import check_adapter_folder

    from oracle.core.card import read_card
    from oracle.core.scaling import STATS_FILE

    folder = Path(config.init_from)
    adapter_cfg = check_adapter_folder(folder)
    card = read_card(folder)
    wanted = {"base_weights_hash": lm.weights_hash, "injection_layer": config.injection_layer, "coef": config.coef,
              "placeholder": config.placeholder, "input_scaling": config.input_scaling}
    have = {k: getattr(card, k) for k in wanted}
    wanted["lora_r"], have["lora_r"] = config.lora_r, adapter_cfg.get("r")
    wanted["lora_alpha"], have["lora_alpha"] = config.lora_alpha, adapter_cfg.get("lora_alpha")
    diff = [f"{k}: {have[k]!r} there, {wanted[k]!r} here" for k in wanted if have[k] != wanted[k]]
    if diff:
        raise CheckpointError(f"--init-from {folder} was trained with other settings ({'; '.join(diff)}): "
                              f"pass the same settings or train from scratch")
    if config.input_scaling != "none" and not (out / STATS_FILE).exists() and not (folder / STATS_FILE).is_file():
        raise CheckpointError(f"--init-from {folder} has no {STATS_FILE}: it cannot be continued")
    return card


def remove_tree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)


def promote_adapter(out: Path) -> None:
    """Move the saved adapter files to the checkpoint root (PEFT nests non-default adapter names)."""
    tmp = out / "_adapter_tmp"
    src = tmp / "oracle" if (tmp / "oracle").is_dir() else tmp
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        os.replace(src / name, out / name)
    remove_tree(tmp)


def write_log_jsonl(path: Path, rows: list) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
