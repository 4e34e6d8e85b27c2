"""Benchmark residual capture on one CPU process: plain forward, nnsight, TransformerLens, ``ao capture``.

All methods run in this one process on the same documents (wikitext-2 validation paragraphs,
truncated to ``--max-length`` tokens) with the same batch size, fp32, and capture the same
three layers (25/50/75% depth). Each method is warmed up once, then timed ``--repeats`` times;
the table shows the median. Tokens/s counts real (non-padding) tokens only.

    python scripts/bench_capture.py                  # 96 docs, 128 tokens max, batch 16, 3 repeats
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
    _bridge_for, capture_documents, length_sorted_batches, pad_batch, position_ids_from_mask,
)
from hooks.capture_job import CaptureConfig, run_capture, tokenize_texts  # noqa: E402
from hooks.layers import decoder_layers, resolve_layers  # noqa: E402
from hooks.models import load_model  # noqa: E402
from hooks.paths import data_dir  # noqa: E402


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
    ap.add_argument("--docs", type=int, default=96)
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
        capture_documents(model, toks, layers, pad_id, max_batch=args.batch_size, max_tokens=1 << 30)

    tmp_root = Path(tempfile.mkdtemp(prefix="bench-capture-"))

    def ao_capture(order: str) -> None:
        out = tmp_root / "store"
        shutil.rmtree(out, ignore_errors=True)
        cfg = CaptureConfig(out=str(out), model=args.model, layers=args.layers, max_length=args.max_length,
                            batch_size=args.batch_size, max_batch_tokens=1 << 30)
        run_capture(cfg, texts, lm=lm)

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
    times: dict[str, list[float]] = {key: [] for key, *_ in methods}
    for key, _, order, fn in methods:
        fn(order)
    for _ in range(args.repeats):
        for key, _, order, fn in methods:
            t0 = time.perf_counter()
            fn(order)
            times[key].append(time.perf_counter() - t0)
    shutil.rmtree(tmp_root, ignore_errors=True)

    med = {key: statistics.median(v) for key, v in times.items()}
    tps = {key: n_real / t for key, t in med.items()}
    ref_nn = tps.get("nnsight")
    ref_nn_sorted = tps.get("nnsight_sorted")
    lines = []
    lines.append(f"model {args.model} ({lm.n_layers} layers, d_model {lm.d_model}), fp32, CPU "
                 f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
                 f"{os.cpu_count()} cores), torch {torch.__version__}")
    lines.append(f"{len(texts)} wikitext-2 docs, {n_real} real tokens (max length {args.max_length}), batch "
                 f"{args.batch_size}, layers {layers}; padded tokens: input order {n_padded['input']}, "
                 f"length-sorted {n_padded['sorted']}; median of {args.repeats} after 1 warm-up")
    lines.append("")
    header = "| method | batches | tokens/s | vs nnsight (input order) | vs nnsight (same batches) |"
    lines.append(header)
    lines.append("|---|---|---:|---:|---:|")
    for key, label, order, _ in methods:
        same = ref_nn if order == "input" else ref_nn_sorted
        r1 = f"{tps[key] / ref_nn:.2f}x" if ref_nn else "-"
        r2 = f"{tps[key] / same:.2f}x" if same else "-"
        lines.append(f"| {label} | {'input order' if order == 'input' else 'length-sorted'} | {tps[key]:,.0f} | {r1} | {r2} |")
    if "ao" in tps and "nowrite" in tps:
        io = (med["ao"] - med["nowrite"]) / med["nowrite"] * 100
        lines.append("")
        lines.append(f"I/O cost of ao capture (HDF5 write, sha256, fsync, manifest) vs the same capture with no writes: {io:+.1f}%")
    if "ao" in tps and ref_nn:
        lines.append(f"ao capture vs nnsight (input order): {tps['ao'] / ref_nn:.2f}x (target >= 1.2x)")
    if "ao" in tps and ref_nn_sorted:
        lines.append(f"ao capture vs nnsight on the same length-sorted batches: {tps['ao'] / ref_nn_sorted:.2f}x")
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
