"""Train an oracle: LoRA on a copy of the base model, reading target activations injected at the
placeholder tokens of the oracle prompt. Resumable, logged, evaluated on held-out data as it goes."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import torch

from hooks.atomic import save_figure
from hooks.errors import CheckpointError, InputError
from hooks.progress import progress_bar
from hooks.adapter_base import record_portable_base
from hooks.models import LoadedModel, adapters_disabled, load_model
from hooks.store import ActivationStore, DocActs, StoreWriter

from oracle.core.batching import capture_contexts, make_oracle_batch, target_vectors
from oracle.core.card import OracleCard, write_card
from oracle.core.scaling import STATS_FILE, InputScaler
from hooks.layers import source_layers
from oracle.training.tasks.base import OracleExample, load_examples, save_examples
from oracle.training.checkpoint import (TRAIN_STATE, check_init_from, check_resume_settings, load_train_state, promote_adapter,
                               remove_tree, save_train_state, start_from_oracle, write_log_jsonl)
from oracle.training.config import TrainConfig, use_bf16

if TYPE_CHECKING:
    from oracle.core.api import Oracle

log = logging.getLogger(__name__)


def build_examples(config: TrainConfig, lm: LoadedModel, split: str = "train", n: Optional[int] = None,
                   seed: Optional[int] = None) -> list[OracleExample]:
    """The training mix (or its eval split) for ``config``."""
    from oracle.training.tasks.mix import build_training_mix

    from oracle.training.tasks.onpolicy import default_onpolicy_prompts, generate_onpolicy_chats, load_onpolicy_chats

    chats = None
    if config.onpolicy_chats:
        chats = load_onpolicy_chats(config.onpolicy_chats)
    elif config.onpolicy > 0 and config.mix.get("context_prediction", 0) > 0:   # only that family reads them
        cache = config.store_path.parent / f"onpolicy-{Path(config.model).name}.json"
        prompts = default_onpolicy_prompts(config.data_dir, n=config.onpolicy, seed=config.seed)
        chats = generate_onpolicy_chats(lm, prompts, cache, batch_size=64 if lm.device.type == "cuda" else 16)
    return build_training_mix(lm.tokenizer, lm.n_layers, n or config.n_examples, seed if seed is not None else config.seed,
                              data_dir=config.data_dir, weights=dict(config.mix), onpolicy_chats=chats, split=split,
                              options={"classification": {"open_frac": config.open_class_frac,
                                                          "negated_frac": config.negated_question_frac},
                                       **({"reading": {"skills": dict(config.skills)}} if config.skills else {}),
                                       **({"verify": {"kinds": dict(config.verify_kinds)}} if config.verify_kinds else {})})


def capture_example_store(lm: LoadedModel, examples: Sequence[OracleExample], path: Path, batch_size: int = 32,
                          progress: bool = False) -> ActivationStore:
    """Capture, once, each example's positions at the three source layers into an HDF5 store (resumable).

    Document ``i`` of the store is example ``i``; its rows are the example's positions.
    """
    layers = sorted({ex.layer for ex in examples} | set(source_layers(lm.n_layers)))
    opts = {"kind": "oracle-examples", "n_examples": len(examples),
            "examples_hash": _examples_hash(examples)}
    resume = (path / "manifest.json").exists()
    with StoreWriter(path, model_spec=lm.spec, weights_hash=lm.weights_hash, tokenizer_name=lm.spec,
                     d_model=lm.d_model, layers=layers, dtype="bfloat16", capture_options=opts, docs_per_shard=512,
                     resume=resume) as writer:
        pending = writer.pending_shards(len(examples))
        bar = progress_bar(sum(b - a for _, a, b in pending), "capture targets", progress)
        for shard, start, stop in pending:
            docs = []
            for s in range(start, stop, batch_size):
                chunk = examples[s:min(stop, s + batch_size)]
                acts = capture_contexts(lm, [e.context_ids for e in chunk], layers)
                for j, ex in enumerate(chunk):
                    pos = torch.as_tensor(ex.positions)
                    docs.append(DocActs(tokens=_np([ex.context_ids[p] for p in ex.positions]),
                                        positions=_np(ex.positions), acts={L: acts[L][j, pos] for L in layers}))
                if bar:
                    bar.update(len(chunk))
            writer.write_shard(shard, start, docs)
        if bar:
            bar.close()
    return ActivationStore(path)


def _np(x):
    import numpy as np

    return np.asarray(x, dtype=np.int32)


def _examples_hash(examples: Sequence[OracleExample]) -> str:
    import hashlib

    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.context_ids, ex.positions, ex.layer], separators=(",", ":")).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------


def length_grouped_order(lengths: Sequence[int], batch_size: int, seed: int) -> list[list[int]]:
    """Shuffle, then sort by length inside mega-batches of 32 batches, then shuffle the batches:
    little padding, still random.

    Example:
        >>> sum(len(b) for b in length_grouped_order([5, 1, 9, 3, 4], 2, seed=0))
        5
    """
    rng = random.Random(seed)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    mega = batch_size * 32
    batches = []
    for s in range(0, len(idx), mega):
        chunk = sorted(idx[s:s + mega], key=lambda i: lengths[i])
        batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


class _LoraModel:
    """Helpers to attach a fresh trainable LoRA adapter named "oracle"."""

    @staticmethod
    def attach(lm: LoadedModel, config: TrainConfig) -> None:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules="all-linear", task_type="CAUSAL_LM")
        lm.model = get_peft_model(lm.model, lora, adapter_name="oracle")
        lm.adapters["oracle"] = "(training)"


def _lr_at(step: int, config: TrainConfig) -> float:
    total = config.total_steps
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def oracle_loss(lm: LoadedModel, batch, config: TrainConfig, bf16: bool) -> torch.Tensor:
    """Cross-entropy of the answers with the activations injected: the mean over examples of each answer's mean
    token loss (``config.loss_per="example"``), or the mean over all answer tokens of the batch (``"token"``).
    Per example is the default: every example weighs the same, whatever its answer's length; with a token mean a
    Yes/No answer (two tokens with end-of-turn) weighs a fifth of a ten-token context-prediction answer."""
    from hooks.inject import inject_at

    device = lm.device
    batch = batch.to(device)
    ctx = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with ctx, inject_at(lm.model, config.injection_layer, batch.rows_N, batch.positions_N, batch.vectors_ND, config.coef):
        out = lm.model(input_ids=batch.tokens_BL, attention_mask=batch.mask_BL, position_ids=batch.position_ids_BL,
                       use_cache=False)
    logits = out.logits[:, :-1].float()
    labels_BL = batch.labels_BL[:, 1:]
    if config.loss_per == "token":
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels_BL.reshape(-1),
                                                 ignore_index=-100)
    tok_loss_BL = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels_BL, ignore_index=-100,
                                                    reduction="none")
    n_B = (labels_BL != -100).sum(1)
    keep_B = n_B > 0
    return (tok_loss_BL.sum(1)[keep_B] / n_B[keep_B]).mean()


def _vectors_for(lm: LoadedModel, store: Optional[ActivationStore], idx: Sequence[int],
                 examples: Sequence[OracleExample]) -> list[torch.Tensor]:
    exs = [examples[i] for i in idx]
    if store is not None:
        return [store.doc_acts(i, ex.layer) for i, ex in zip(idx, exs)]
    with adapters_disabled(lm.model):
        vecs = target_vectors(lm, [e.context_ids for e in exs], [e.positions for e in exs], [e.layer for e in exs])
        diffs = [j for j, e in enumerate(exs) if is_difference(e)]
        if diffs:   # a difference example: minus the same text read without the context (the context_diff family)
            minus = target_vectors(lm, [exs[j].meta["minus_ids"] for j in diffs],
                                   [exs[j].meta["minus_positions"] for j in diffs], [exs[j].layer for j in diffs])
            for j, m in zip(diffs, minus):
                d = vecs[j] - m
                vecs[j] = d.mean(0, keepdim=True) if exs[j].meta.get("pool") == "mean" else d
    return vecs


def is_difference(example: OracleExample) -> bool:
    """Whether the example's vectors are a difference of two reads (``meta["minus_ids"]``), scaled as one."""
    return "minus_ids" in example.meta


def fit_input_scaler(lm: LoadedModel, examples: Sequence[OracleExample], store: Optional[ActivationStore],
                     n: int, batch_size: int = 32) -> InputScaler:
    """Per-layer statistics of the target activations of the first ``n`` examples (every position they read;
    difference examples are not activations and are left out)."""
    idx = [i for i in range(len(examples)) if not is_difference(examples[i])][:n]
    by_layer: dict[int, list[torch.Tensor]] = {}
    for s in range(0, len(idx), batch_size):
        chunk = idx[s:s + batch_size]
        for i, v in zip(chunk, _vectors_for(lm, store, chunk, examples)):
            by_layer.setdefault(int(examples[i].layer), []).append(v)
    return InputScaler.fit(by_layer)


def make_batch(lm: LoadedModel, config: TrainConfig, examples, idx, store, scaler: Optional[InputScaler] = None):
    vecs = _vectors_for(lm, store, idx, examples)
    exs = [examples[i] for i in idx]
    if scaler is not None:
        vecs = [scaler(v, e.layer, diff=is_difference(e)) for v, e in zip(vecs, exs)]
    return make_oracle_batch(lm.tokenizer, vecs, [e.layer for e in exs], [e.question for e in exs],
                             [e.answer for e in exs], config.placeholder, side="right")


# ---------------------------------------------------------------------------------------------


def train_oracle(
    config: TrainConfig,
    lm: Optional[LoadedModel] = None,
    examples: Optional[list[OracleExample]] = None,
    eval_fn: Optional[Callable[["Oracle"], dict]] = None,
    progress: bool = False,
    stop_after: Optional[int] = None,
    on_finish: Optional[Callable[[list, Path], Any]] = None,
) -> dict:
    """Run (or resume) a training job; writes the adapter, ``oracle.json``, ``train_log.jsonl`` and
    ``loss.png`` into ``config.out``. ``stop_after`` ends early after that many steps of this call
    (tests use it to simulate a crash). The in-training checks are the caller's: ``eval_fn`` gets an
    :class:`Oracle` over the adapter being trained, and ``on_finish`` the log rows and the output folder once
    the adapter is saved (e.g. to plot the checks). Returns the summary dict written into the card.
    """
    from oracle.core.api import Oracle

    torch.manual_seed(config.seed)
    started = time.perf_counter()
    out = Path(config.out)
    check_resume_settings(config, out)
    if lm is None:
        lm = load_model(config.model, device=config.device)
    if config.init_from:   # bad input is refused before anything is written (no empty --out, no example list)
        check_init_from(lm, config, out)
    ex_file, built = config.examples_path, False
    if examples is None:   # read or built before --out is made, so a bad list leaves no empty folder
        if ex_file.exists():
            examples = load_examples(ex_file)
            log.info("reusing the %d examples in %s", len(examples), ex_file)
        else:
            examples, built = build_examples(config, lm), True
    if not examples:
        raise InputError("no training examples: check --data-dir")
    out.mkdir(parents=True, exist_ok=True)
    if built:
        save_examples(examples, ex_file)
    d_model = lm.d_model
    store = None
    if config.activations == "store":
        store = capture_example_store(lm, examples, config.store_path, progress=progress)
        if store.n_docs != len(examples):
            raise CheckpointError(f"activation store {config.store_path} does not match the examples: delete it")
    init_summary = start_from_oracle(lm, config, out) if config.init_from else {}
    scaler = None
    if config.input_scaling == "standardize":
        if (out / STATS_FILE).exists():  # a resumed run keeps the statistics it trained with
            scaler = InputScaler.load(out)
        else:
            scaler = fit_input_scaler(lm, examples, store, config.scaling_examples)
            scaler.save(out)
            log.info("input scaling measured on %d examples, layers %s", min(config.scaling_examples, len(examples)),
                     scaler.layers)
    if not config.init_from:
        _LoraModel.attach(lm, config)
    lm.model.train()
    params = [p for p in lm.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    step, log_rows = 0, []
    if (out / TRAIN_STATE).exists():
        step, log_rows = load_train_state(lm, optimizer, out)
        log.info("resumed at step %d", step)
    device = lm.device
    bf16 = use_bf16(config, device)
    card = OracleCard(base_model=config.model, base_weights_hash=lm.weights_hash, d_model=d_model,
                      source_layers=source_layers(lm.n_layers), injection_layer=config.injection_layer,
                      placeholder=config.placeholder, coef=config.coef, input_scaling=config.input_scaling,
                      train_config=dataclasses.asdict(config))
    if eval_fn is not None and step == 0:  # step 0: the untrained oracle (a fresh LoRA is the identity), or --init-from
        lm.model.eval()
        log_rows.append({"step": 0, "eval": eval_fn(Oracle(lm, card, trained=True, scaler=scaler))})
        lm.model.train()
        log.info("step 0 eval %s", log_rows[-1]["eval"])
    lengths = [len(e.question) // 3 + len(e.positions) + len(e.answer) // 3 for e in examples]
    order: list[list[int]] = []
    epoch = 0
    while len(order) < config.total_steps:
        order += length_grouped_order(lengths, config.batch_size, config.seed + epoch)
        epoch += 1
    bar = progress_bar(config.total_steps, "train", progress)
    if bar:
        bar.update(step)
    log_path = out / "train_log.jsonl"
    t_last, n_last, done_here, n_skipped = time.perf_counter(), 0, 0, 0
    loop_start = time.perf_counter()
    while step < config.total_steps:
        if config.time_budget_s and done_here == 20:
            rate = 20 / max(time.perf_counter() - loop_start, 1e-9)
            fit = step + int((config.time_budget_s - (time.perf_counter() - loop_start)) * rate)
            if fit < config.total_steps:
                log.warning("time budget %.0fs: cutting the run from %d to %d steps (%.2f steps/s)",
                            config.time_budget_s, config.total_steps, fit, rate)
                config.steps = max(step + 1, fit)
                if bar:
                    bar.total = config.total_steps
        idx = order[step]
        with interrupt_after_step() as stop:
            loss, skipped = _train_step(lm, config, optimizer, params, examples, idx, store, scaler, bf16, step)
        n_skipped += skipped
        step += 1
        done_here += 1
        n_last += len(idx)
        row = {"step": step, "loss": round(float(loss.detach()), 5), "lr": optimizer.param_groups[0]["lr"]}
        if skipped:
            row["skipped"] = True
        if step % 10 == 0 or step == config.total_steps:
            now = time.perf_counter()
            row["examples_per_s"] = round(n_last / max(now - t_last, 1e-9), 2)
            t_last, n_last = now, 0
        if eval_fn is not None and (step % config.eval_every == 0 or step == config.total_steps):
            lm.model.eval()
            row["eval"] = eval_fn(Oracle(lm, card, trained=True, scaler=scaler))
            lm.model.train()
            log.info("step %d eval %s", step, row["eval"])
        log_rows.append(row)
        if bar:
            bar.update(1)
            bar.set_postfix_str(f"loss {float(loss.detach()):.3f}" + (f" {row['examples_per_s']:.1f} ex/s" if "examples_per_s" in row else ""))
        if step % config.save_every == 0 or step == config.total_steps:
            save_train_state(lm, optimizer, step, out, log_rows, config=dataclasses.asdict(config))
            write_log_jsonl(log_path, log_rows)
        if stop.requested:   # Ctrl-C: the step it interrupted has finished; save it, then stop
            save_train_state(lm, optimizer, step, out, log_rows, config=dataclasses.asdict(config))
            write_log_jsonl(log_path, log_rows)
            if bar:
                bar.close()
            log.warning("interrupted: saved at step %d of %d", step, config.total_steps)
            raise KeyboardInterrupt
        if stop_after is not None and done_here >= stop_after and step < config.total_steps:
            save_train_state(lm, optimizer, step, out, log_rows, config=dataclasses.asdict(config))
            write_log_jsonl(log_path, log_rows)
            if bar:
                bar.close()
            return {"stopped_at": step}
    if bar:
        bar.close()
    lm.model.eval()
    lm.model.save_pretrained(str(out / "_adapter_tmp"), selected_adapters=["oracle"], safe_serialization=True)
    promote_adapter(out)
    record_portable_base(out, config.model)
    write_log_jsonl(log_path, log_rows)
    plot_loss(log_rows, out / "loss.png")
    if on_finish is not None:
        on_finish(log_rows, out)
    from oracle.training.tasks.mix import summarize

    summary = {
        "steps": step, "examples": len(examples), "examples_seen": step * config.batch_size, "wall_time_s": round(time.perf_counter() - started, 1),
        "data": summarize(examples), "final_loss": log_rows[-1].get("loss") if log_rows else None,
        "hardware": _hardware(device), "bf16": bf16, "skipped_steps": n_skipped,
        "last_eval": next((r["eval"] for r in reversed(log_rows) if "eval" in r), None), **init_summary,
    }
    card.train_config, card.training = dataclasses.asdict(config), summary
    write_card(out, card)
    remove_tree(out / TRAIN_STATE)
    return summary


class interrupt_after_step:
    """Within the block, a first Ctrl-C (SIGINT) only sets ``requested``, so the step finishes whole and can be
    saved; a second one interrupts at once. Outside the main thread it changes nothing.

    Example:
        >>> with interrupt_after_step() as stop:
        ...     pass
        >>> stop.requested
        False
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "interrupt_after_step":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _train_step(lm: LoadedModel, config: TrainConfig, optimizer, params, examples, idx, store, scaler, bf16: bool,
                step: int) -> tuple[torch.Tensor, bool]:
    """One optimizer step (seeded by the step number, so a resumed run repeats it exactly); a non-finite loss or
    gradient skips the update instead of turning every weight into NaN. Returns (loss, skipped)."""
    torch.manual_seed(config.seed * 1_000_003 + step)
    batch = make_batch(lm, config, examples, idx, store, scaler)
    for g in optimizer.param_groups:
        g["lr"] = _lr_at(step, config)
    loss = oracle_loss(lm, batch, config, bf16)
    optimizer.zero_grad(set_to_none=True)
    skipped = not torch.isfinite(loss)
    if not skipped:
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        skipped = not torch.isfinite(grad_norm)
    if skipped:
        optimizer.zero_grad(set_to_none=True)
        log.warning("step %d: non-finite loss or gradient, update skipped", step + 1)
    else:
        optimizer.step()
    return loss, skipped


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


def plot_loss(rows: list, path: Path) -> None:
    """PNG loss curve (raw and smoothed), with eval accuracy on a second axis when logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = rows
    rows = [r for r in rows if "loss" in r]
    if not rows:
        return
    steps = [r["step"] for r in rows]
    loss = [r["loss"] for r in rows]
    k = max(1, len(loss) // 50)
    smooth = [sum(loss[max(0, i - k):i + 1]) / len(loss[max(0, i - k):i + 1]) for i in range(len(loss))]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, loss, alpha=0.3, label="loss")
    ax.plot(steps, smooth, label=f"loss (mean of {k + 1})")
    ax.set_xlabel("step")
    ax.set_ylabel("answer cross-entropy")
    series = {"heldout_accuracy": ("held-out accuracy", "o-", "tab:green"),
              "heldout_auroc": ("held-out AUROC", "o--", "tab:olive"),
              "indist_accuracy": ("in-distribution accuracy", "s-", "tab:purple"),
              "indist_auroc": ("in-distribution AUROC", "s--", "tab:red"),
              "reading_mean": ("reading suite, mean accuracy", "D-", "tab:blue")}
    ax2 = None
    for key, (label, style, color) in series.items():
        pts = [(r["step"], r["eval"][key]) for r in evals if isinstance(r.get("eval"), dict) and key in r["eval"]]
        if pts:
            ax2 = ax2 or ax.twinx()
            ax2.plot([s for s, _ in pts], [v for _, v in pts], style, color=color, label=label)
    if ax2 is not None:
        ax2.axhline(0.5, color="grey", lw=0.6)
        ax2.set_ylabel("accuracy, AUROC")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="upper right", fontsize=7)
    ax.legend(loc="upper left")
    ax.set_title("oracle training")
    fig.tight_layout()
    save_figure(fig, path)
