"""Benchmark residual capture on one CPU process: plain forward, nnsight, TransformerLens, ``ao capture``.

All methods run in this one process on the same documents (wikitext-2 validation paragraphs,
truncated to ``--max-length`` tokens) with the same batch size, fp32, and capture the same
three layers (25/50/75% depth). Each method is warmed up once, then timed ``--repeats`` times;
the table shows the median. Tokens/s counts real (non-padding) tokens only.

    python scripts/bench_capture.py                  # 192 docs, 128 tokens max, batch 16, 3 repeats
    python scripts/bench_capture.py --docs 128 --repeats 5 --markdown docs/bench_capture.md

Methods:
  full forward         HF model, no hooks, logits computed (what a plain ``model(...)`` costs)
  nnsight              ``NNsight(model).trace(...)``, ``.save()`` of the 3 block outputs, ``tracer.stop()``
  TransformerLens      ``TransformerBridge.run_with_cache`` with a names filter on the 3 ``hook_resid_post``
  capture, no writes   ``hooks.capture.capture_documents`` (tokenize, sort, forward, keep real tokens)
  ao capture -> HDF5   ``hooks.capture_job.run_capture`` into a fresh store (what ``ao capture`` runs)

"input order" batches take the documents as they come, 16 at a time, padded to the longest
(what a plain nnsight / TransformerLens loop does); "length-sorted" batches group documents
of similar length (what ``ao capture`` does), so less compute goes to padding.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hooks.capture import (  # noqa: E402
    _bridge_for, capture_documents, default_workers, length_sorted_batches, pad_batch, position_ids_from_mask,
)
from hooks.capture_job import CaptureConfig, run_capture, tokenize_texts  # noqa: E402
from hooks.layers import decoder_layers, resolve_layers  # noqa: E402
from hooks.models import load_model  # noqa: E402
from hooks.paths import data_dir  # noqa: E402
from hooks.store import StoreWriter  # noqa: E402


def load_docs(n: int, min_chars: int = 1) -> list[str]:
    """The first ``n`` wikitext-2 validation paragraphs (headings and blank lines skipped)."""
    path = data_dir() / "text" / "wikitext2_valid.txt"
    docs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        s = line.strip()
        if len(s) >= min_chars and not s.startswith("="):
            docs.append(s)
        if len(docs) == n:
            break
    return docs


def batches_of(docs_tokens: list[list[int]], batch: int, order: str) -> list[list[int]]:
    if order == "input":
        return [list(range(i, min(i + batch, len(docs_tokens)))) for i in range(0, len(docs_tokens), batch)]
    return list(length_sorted_batches([len(d) for d in docs_tokens], batch, 1 << 30))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--docs", type=int, default=192)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--layers", default="25%,50%,75%")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--markdown", default=None, help="also write the table as markdown to this file")
    ap.add_argument("--only", default=None, help="comma-separated method keys to run (debugging)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    lm = load_model(args.model)
    model, tok = lm.model, lm.tokenizer
    layers = resolve_layers(args.layers, lm.n_layers)
    deepest = max(layers)
    texts = load_docs(args.docs)
    docs_tokens = tokenize_texts(lm, texts, args.max_length)
    n_real = sum(len(d) for d in docs_tokens)
    pad_id = tok.pad_token_id
    padded = {order: [pad_batch([docs_tokens[i] for i in b], pad_id, "right") for b in batches_of(docs_tokens, args.batch_size, order)]
              for order in ("input", "sorted")}
    n_padded = {order: sum(t.numel() for t, _ in bs) for order, bs in padded.items()}
    blocks_path = next(name for name, m in model.named_modules() if m is decoder_layers(model))

    # -- the methods ---------------------------------------------------------------------------
    @torch.inference_mode()
    def full_forward(order: str) -> None:
        for tokens_BL, mask_BL in padded[order]:
            model(input_ids=tokens_BL, attention_mask=mask_BL, position_ids=position_ids_from_mask(mask_BL),
                  use_cache=False).logits

    from nnsight import NNsight

    nn_model = NNsight(model)

    def envoy_blocks():
        obj = nn_model
        for part in blocks_path.split("."):
            obj = getattr(obj, part)
        return obj

    @torch.inference_mode()
    def nnsight_trace(order: str) -> None:
        for tokens_BL, mask_BL in padded[order]:
            saved = {}
            with nn_model.trace(input_ids=tokens_BL, attention_mask=mask_BL,
                                position_ids=position_ids_from_mask(mask_BL), use_cache=False) as tracer:
                blocks = envoy_blocks()
                for L in layers:
                    saved[L] = blocks[L].output.save()
                tracer.stop()
            real = mask_BL.bool()
            _ = {L: v[real] for L, v in saved.items()}  # keep real tokens, as any user would

    bridge = _bridge_for(model, tok)
    names = {f"blocks.{L}.hook_resid_post" for L in layers}

    @torch.inference_mode()
    def tl_cache(order: str) -> None:
        for tokens_BL, mask_BL in padded[order]:
            _, cache = bridge.run_with_cache(tokens_BL, attention_mask=mask_BL,
                                             position_ids=position_ids_from_mask(mask_BL),
                                             names_filter=lambda n: n in names, stop_at_layer=deepest + 1)
            real = mask_BL.bool()
            _ = {n: cache[n][real] for n in names}

    def capture_no_write(order: str) -> None:
        toks = tokenize_texts(lm, texts, args.max_length)
        capture_documents(model, toks, layers, pad_id, max_batch=args.batch_size, max_tokens=1 << 30,
                          workers=default_workers(lm.device))

    tmp_root = Path(tempfile.mkdtemp(prefix="bench-capture-"))
    io_seconds: list[float] = []  # time inside the store writer (open, shard writes, close) per ao run

    def timed(fn: Callable, acc: list) -> Callable:
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                acc[-1] += time.perf_counter() - t0
        return wrapper

    def ao_capture(order: str) -> None:
        out = tmp_root / "store"
        shutil.rmtree(out, ignore_errors=True)
        cfg = CaptureConfig(out=str(out), model=args.model, layers=args.layers, max_length=args.max_length,
                            batch_size=args.batch_size, max_batch_tokens=1 << 30)
        io_seconds.append(0.0)
        originals = {name: getattr(StoreWriter, name) for name in ("__init__", "write_shard", "close")}
        try:
            for name, fn in originals.items():
                setattr(StoreWriter, name, timed(fn, io_seconds))
            run_capture(cfg, texts, lm=lm)
        finally:
            for name, fn in originals.items():
                setattr(StoreWriter, name, fn)

    methods: list[tuple[str, str, str, Callable[[str], None]]] = [
        ("full", "full forward (logits, no hooks)", "input", full_forward),
        ("full_sorted", "full forward (logits, no hooks)", "sorted", full_forward),
        ("nnsight", "nnsight trace, .save() x3, stop", "input", nnsight_trace),
        ("nnsight_sorted", "nnsight trace, .save() x3, stop", "sorted", nnsight_trace),
        ("tl", "TransformerLens run_with_cache x3", "input", tl_cache),
        ("tl_sorted", "TransformerLens run_with_cache x3", "sorted", tl_cache),
        ("nowrite", "capture forward, no writes", "sorted", capture_no_write),
        ("ao", "ao capture -> HDF5 store", "sorted", ao_capture),
    ]
    if args.only:
        keep = set(args.only.split(","))
        methods = [m for m in methods if m[0] in keep]

    # warm up once (every method, a full pass), then repeat round-robin and take the median
    # Wall time is what a user waits for; CPU time (all threads of this process) is what the method
    # costs, and barely moves when other jobs share the cores, so both are reported.
    times: dict[str, list[float]] = {key: [] for key, *_ in methods}
    cpu_times: dict[str, list[float]] = {key: [] for key, *_ in methods}
    for key, _, order, fn in methods:
        fn(order)
    for _ in range(args.repeats):
        for key, _, order, fn in methods:
            c0, t0 = time.process_time(), time.perf_counter()
            fn(order)
            times[key].append(time.perf_counter() - t0)
            cpu_times[key].append(time.process_time() - c0)
    shutil.rmtree(tmp_root, ignore_errors=True)

    med = {key: statistics.median(v) for key, v in times.items()}
    med_cpu = {key: statistics.median(v) for key, v in cpu_times.items()}
    tps = {key: n_real / t for key, t in med.items()}
    tpc = {key: n_real / t for key, t in med_cpu.items()}

    def speedup(key: str, ref: str, cpu: bool = False) -> str:
        """Median over rounds of the per-round speed ratio: methods of one round ran back to back,
        so load from other jobs hits both sides of a ratio about equally."""
        src = cpu_times if cpu else times
        if ref not in src or key not in src:
            return "-"
        return f"{statistics.median(r / k for k, r in zip(src[key], src[ref])):.2f}x"

    lines = []
    lines.append(f"model {args.model} ({lm.n_layers} layers, d_model {lm.d_model}), fp32, CPU "
                 f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
                 f"{os.cpu_count()} cores), torch {torch.__version__}")
    lines.append(f"{len(texts)} wikitext-2 docs, {n_real} real tokens (max length {args.max_length}), batch "
                 f"{args.batch_size}, layers {layers}; padded tokens: input order {n_padded['input']}, "
                 f"length-sorted {n_padded['sorted']}; median of {args.repeats} rounds after 1 warm-up round")
    lines.append(f"ao capture and 'capture, no writes' run {default_workers(lm.device)} batches at once in threads "
                 "(one torch thread each, hooks/capture.py default_workers); the other methods run one batch at a "
                 "time on all torch threads")
    lines.append("")
    best = {key: n_real / min(v) for key, v in times.items()}
    lines.append("| method | batches | tokens/s (median) | tokens/s (best round) | vs nnsight, input order "
                 "| vs nnsight, same batches | tokens per CPU-second |")
    lines.append("|---|---|---:|---:|---:|---:|---:|")
    for key, label, order, _ in methods:
        same = "nnsight" if order == "input" else "nnsight_sorted"
        lines.append(f"| {label} | {'input order' if order == 'input' else 'length-sorted'} | {tps[key]:,.0f} "
                     f"| {best[key]:,.0f} | {speedup(key, 'nnsight')} | {speedup(key, same)} | {tpc[key]:,.0f} |")
    lines.append("")
    lines.append("Ratios are medians of per-round ratios (the methods of a round run back to back, so load from "
                 "other jobs hits both sides of a ratio alike); tokens/s are medians of the rounds' times.")
    lines.append("Seconds per round: " + "; ".join(
        f"{key} " + " ".join(f"{t:.1f}" for t in times[key]) for key, *_ in methods))
    if "ao" in tps and "nowrite" in tps:
        io = statistics.median((a - b) / b * 100 for a, b in zip(times["ao"], times["nowrite"]))
        lines.append(f"I/O cost of ao capture (HDF5 write, sha256, fsync, manifest) vs the same capture with no writes: "
                     f"{io:+.1f}% (median of per-round differences; target <= 5%)")
        timed_io = [t / (a - t) * 100 for t, a in zip(io_seconds[1:], times["ao"])]  # [0] is the warm-up
        lines.append(f"Time inside the store writer during ao capture, relative to the rest of the run: "
                     f"{statistics.median(timed_io):.1f}% (median; rounds: {' '.join(f'{x:.1f}' for x in timed_io)})")
    if "ao" in tps and "nnsight" in tps:
        lines.append(f"ao capture vs nnsight (input-order batches): {speedup('ao', 'nnsight')} (target >= 1.2x)")
    if "ao" in tps and "nnsight_sorted" in tps:
        lines.append(f"ao capture vs nnsight on the same length-sorted batches: {speedup('ao', 'nnsight_sorted')}")
    lines.append(f"load average at the end of the run: {os.getloadavg()[0]:.2f} (1 min; other jobs shared the cores "
                 "when it is above ~2)")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(
            "# Capture benchmark\n\nMeasured with `python scripts/bench_capture.py` "
            f"(`{' '.join(sys.argv[1:])}`).\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
