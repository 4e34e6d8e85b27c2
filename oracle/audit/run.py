"""``run_audit``: load once, read the target's activations once, run every method, rank words, write the report."""
from __future__ import annotations

import logging
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from hooks.errors import InputError
from hooks.layers import unwrap
from hooks.models import LoadedModel, load_model
from hooks.progress import progress_bar

from oracle.core.api import Oracle
from oracle.data.chat import format_chat, tokenize_text
from oracle.audit.config import AuditConfig
from oracle.audit.forward import chat_ids, generate_text, residuals
from oracle.audit.methods import (
    DESCRIPTIONS,
    AuditContext,
    MethodOutput,
    first_per_group,
    run_ask_target,
    run_logit_lens,
    run_oracle,
    run_prefill,
)
from oracle.audit.prompts import (ASKED_TEXTS, SELF_DETECTION_QUESTIONS, TEXT_DIFF_POSITION, TEXT_DIFF_QUESTIONS,
                                  audit_prompts, ordinary_texts, report_questions)
from oracle.audit.readings import method_reading
from oracle.audit.target import adapter_summary, check_oracle_base, check_target_adapter, embedded_identity
from oracle.audit.whole_words import rank_whole_words
from oracle.audit.words import WordVocab, words_in

log = logging.getLogger(__name__)

REPORT_FORMAT = "ao-audit-report"
REPORT_VERSION = 1
_ADAPTER_NAMES = ("target", "oracle")
_VOCABS: dict[tuple[int, int], WordVocab] = {}


def word_vocab(lm: LoadedModel) -> WordVocab:
    """The whole-word view of the model's vocabulary (built once per tokenizer and vocabulary size)."""
    head = unwrap(lm.model).get_output_embeddings()
    n = int(head.weight.shape[0]) if hasattr(head, "weight") else len(lm.tokenizer)
    key = (id(lm.tokenizer), n)
    if key not in _VOCABS:
        _VOCABS[key] = WordVocab.build(lm.tokenizer, vocab_size=n)
    return _VOCABS[key]


def detach_adapters(lm: LoadedModel, was_peft: bool) -> None:
    """Remove the audit's adapters; a model that came in plain goes back to plain."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in _ADAPTER_NAMES:
            if hasattr(lm.model, "peft_config") and name in lm.model.peft_config:
                lm.model.delete_adapter(name)
            lm.adapters.pop(name, None)
        if not was_peft and hasattr(lm.model, "peft_config") and not lm.model.peft_config:
            lm.model = lm.model.unload()
            lm.model.eval()


def echo_words(lm: LoadedModel, ctx: AuditContext) -> set[str]:
    """Words of everything the models read: formatted prompts (chat template included), questions, prefills."""
    tok = lm.tokenizer
    texts = [format_chat(tok, [{"role": "user", "content": p.text}], add_generation_prompt=True) for p in ctx.prompts]
    texts += ctx.replies  # the target never says its secret: a word it says is not one
    texts += list(ASKED_TEXTS)
    texts += [format_chat(tok, [{"role": "user", "content": q}], add_generation_prompt=True) for q in SELF_DETECTION_QUESTIONS]
    specials = [str(t) for t in (getattr(tok, "all_special_tokens", None) or [])]
    for sp in specials:
        texts = [t.replace(sp, " ") for t in texts]
    return words_in(texts)


def read_replies(ctx: AuditContext) -> None:
    """The target's greedy reply to each prompt (``config.reply_tokens`` tokens) and its residuals over the reply."""
    lm, cfg = ctx.lm, ctx.config
    ctx.replies = generate_text(lm, ctx.prompt_ids, "target", cfg.reply_tokens, cfg.batch_size)
    for ids, text in zip(ctx.prompt_ids, ctx.replies):
        reply = tokenize_text(lm.tokenizer, " " + text if text else ".")[:cfg.reply_tokens]
        ctx.reply_ids.append(ids + reply)
        ctx.reply_positions.append(list(range(len(ids), len(ids) + len(reply))))
    ctx.reply_vecs = residuals(lm, ctx.reply_ids, ctx.reply_positions, ctx.layer, "target", cfg.batch_size)


def _environment(lm: LoadedModel) -> dict:
    import peft
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "device": str(lm.device), "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
            "python": platform.python_version()}


def run_audit(config: AuditConfig, lm: LoadedModel | None = None) -> dict:
    """Audit the adapter ``config.target`` with every method in ``config.methods``; return the report dict.

    ``lm``: an already loaded base model to reuse (its ``"target"`` and ``"oracle"`` adapters are
    replaced during the audit and removed afterwards; a plain model comes back plain). With
    ``config.out`` the report is also written there (report.json, report.md, two PNGs); bad input
    fails with a one-line AOError before anything is written.

    Example:
        >>> rep = run_audit(AuditConfig(target="checkpoints/organisms/benign", out="runs/audit-benign"))  # doctest: +SKIP
        >>> rep["methods"]["oracle"]["secret_found"]                                                     # doctest: +SKIP
        False
    """
    t_start = time.perf_counter()
    base_spec = lm.spec if lm is not None else config.base
    if lm is not None and embedded_identity(lm.spec) != embedded_identity(config.base) and lm.spec != config.base:
        log.warning("auditing on the given model %s, not config.base=%s", lm.spec, config.base)
    adapter_cfg = check_target_adapter(config.target, base_spec)
    ref = config.oracle if config.loads_oracle else None   # parsed once, in the config (the audit's plan)
    if ref is not None:
        check_oracle_base(ref, base_spec)   # before the (slow) model load; its weights hash is checked on load
    card = None
    if config.out is not None and Path(config.out).exists() and not Path(config.out).is_dir():
        raise InputError(f"--out {config.out} is a file: pass a folder for the report")
    prompts = audit_prompts(config.n_prompts, config.prompt_files, config.data_dir, config.seed)
    timings: dict = {}

    t = time.perf_counter()
    if lm is None:
        lm = load_model(config.base, dtype=config.dtype, device=config.device)
    timings["load_model_s"] = round(time.perf_counter() - t, 3)
    was_peft = hasattr(lm.model, "peft_config")
    layer = config.layer.resolve(lm.n_layers)
    torch.manual_seed(config.seed)
    try:
        t = time.perf_counter()
        detach_adapters(lm, was_peft=True)
        if ref is not None:
            trained: Oracle | None = Oracle.load(ref, target_adapter=config.target, lm=lm)
            card = trained.card  # a bare PEFT oracle's card is derived when it loads
            untrained = trained.baseline()   # same card and input scaling: the two differ only by the adapter
        else:
            trained = None
            untrained = Oracle.untrained(lm=lm)   # no oracle to match: the model's default card, raw vectors
            untrained.set_target(config.target)
        timings["attach_adapters_s"] = round(time.perf_counter() - t, 3)

        t = time.perf_counter()
        prompt_ids = [chat_ids(lm.tokenizer, p.text) for p in prompts]
        positions = [list(range(max(0, len(s) - config.n_positions), len(s))) for s in prompt_ids]
        target_vecs = residuals(lm, prompt_ids, positions, layer, "target", config.batch_size)
        ctx = AuditContext(lm, config, layer, prompts, prompt_ids, positions, target_vecs,
                           text_idx=first_per_group(len(prompts), config.n_text_answers),
                           detect_layer=config.detect_layer.resolve(lm.n_layers))
        text_source = None
        if {"oracle_diff", "logit_lens_diff"} & set(config.methods):   # the mean difference on ordinary text
            texts, text_source = ordinary_texts(config.n_texts, config.data_dir)
            ctx.text_ids = [ids for ids in (tokenize_text(lm.tokenizer, t)[:TEXT_DIFF_POSITION + 1] for t in texts)
                            if len(ids) > TEXT_DIFF_POSITION]
            ctx.text_layers = sorted({v.resolve(lm.n_layers) for v in config.text_layers})
        if config.reply_tokens:  # every method's ranking drops the reply's words, so it is read whatever runs
            read_replies(ctx)
        vocab, echoes = word_vocab(lm), echo_words(lm, ctx)
        timings["read_target_s"] = round(time.perf_counter() - t, 3)

        runners: dict[str, Callable[[], MethodOutput]] = {
            "oracle": lambda: run_oracle(ctx, trained, diff=False),  # type: ignore[arg-type]
            "oracle_diff": lambda: run_oracle(ctx, trained, diff=True),  # type: ignore[arg-type]
            "untrained_oracle": lambda: run_oracle(ctx, untrained, diff=False),
            "ask_target": lambda: run_ask_target(ctx),
            "prefill": lambda: run_prefill(ctx),
            "logit_lens": lambda: run_logit_lens(ctx, diff=False),
            "logit_lens_diff": lambda: run_logit_lens(ctx, diff=True),
        }
        methods: dict = {}
        bar = progress_bar(len(config.methods), "audit", config.progress, unit="method")
        for name in config.methods:
            if bar:
                bar.set_postfix_str(name)
            t = time.perf_counter()
            out = runners[name]()
            reading = method_reading(name, ctx, trained if name in ("oracle", "oracle_diff") else untrained) \
                if config.readings else None
            ranked = rank_whole_words(out.probs_V, lm, vocab, echoes, config.top_k)
            seconds = round(time.perf_counter() - t, 3)
            methods[name] = {
                "description": DESCRIPTIONS[name], **ranked, "secret_found": ranked["confidence"] >= config.threshold,
                "detection": round(float(out.detection), 6), "detection_detail": out.detection_detail,
                "answers": out.answers, "seconds": seconds,
                **({} if reading is None else {"reading": reading.to_dict()}),
                **({} if out.sensitivity is None else {"sensitivity": round(float(out.sensitivity), 4)}),
            }
            log.info("%s: top %s (%.3f), detection %.3f, %.1fs", name, ranked["top_word"], ranked["confidence"],
                     out.detection, seconds)
            if bar:
                bar.update(1)
        if bar:
            bar.close()
        report = {
            "format": REPORT_FORMAT, "version": REPORT_VERSION, "config": config.to_dict(),
            "base_model": {"spec": lm.spec, "weights_hash": lm.weights_hash, "n_layers": lm.n_layers, "d_model": lm.d_model},
            "target": adapter_summary(config.target, adapter_cfg),
            "oracle": None if card is None else {"path": str(ref.path), "base_model": card.base_model,
                                                 "source_layers": card.source_layers,
                                                 "injection_layer": card.injection_layer},
            "layer": layer, "detect_layer": ctx.detect_layer, "positions": f"last {config.n_positions} tokens of each chat-formatted prompt",
            "threshold": config.threshold,
            "text_diff": None if text_source is None else {
                "source": text_source, "n_texts": len(ctx.text_ids), "layers": ctx.text_layers,
                "position": TEXT_DIFF_POSITION, "questions": list(TEXT_DIFF_QUESTIONS)},
            "prompts": [{"text": p.text, "source": p.source} for p in prompts],
            "prompt_sources": {s: sum(p.source == s for p in prompts) for s in dict.fromkeys(p.source for p in prompts)},
            "questions": report_questions(),
            "methods": methods,
            "timings": timings,
            "environment": _environment(lm),
        }
    finally:
        detach_adapters(lm, was_peft)
    timings["methods_s"] = {k: v["seconds"] for k, v in methods.items()}
    timings["total_s"] = round(time.perf_counter() - t_start, 3)
    if config.out is not None:
        from oracle.audit.report import write_report

        report["files"] = write_report(report, Path(config.out))
    return report
