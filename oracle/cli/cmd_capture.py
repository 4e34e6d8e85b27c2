"""``ao capture`` and ``ao store info|verify``."""
from __future__ import annotations

import argparse
import json

from hooks.capture_job import CaptureConfig, check_capture_target, run_capture
from hooks.positions import GRAMMAR
from hooks.store import ActivationStore
from hooks.texts import read_documents


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("capture", help="capture residual activations into an HDF5 store")
    p.add_argument("--model", default="smollm2-135m", help="smollm2-135m (embedded), gemma3-270m, HF id, folder or .gguf")
    p.add_argument("--adapter", default=None, help="PEFT adapter folder (safetensors) applied to the model")
    p.add_argument("--texts", required=True, help=".txt (one document per non-empty line) or .jsonl ('text' or 'messages')")
    p.add_argument("--layers", default="25%,50%,75%", help="indices, negative indices, percents or blocks.N.hook_resid_post")
    p.add_argument("--out", required=True, help="store folder")
    p.add_argument("--positions", default="all", help=f"tokens to keep: {GRAMMAR} (default: all)")
    p.add_argument("--max-length", type=int, default=512,
                   help="cut documents at this many tokens (never past the model's context; a cut is reported)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-batch-tokens", type=int, default=4096)
    p.add_argument("--padding-side", default="right", choices=["left", "right"])
    p.add_argument("--dtype", dest="store_dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="storage dtype")
    p.add_argument("--model-dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--backend", default="torch", choices=["torch", "nnsight", "transformer_lens"])
    p.add_argument("--docs-per-shard", type=int, default=256)
    p.add_argument("--device", default="cpu", help="cpu, cuda, or auto (device_map='auto' for big models)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted capture")
    p.add_argument("--force", action="store_true", help="write into a folder that holds other files")
    p.add_argument("--workers", type=int, default=0,
                   help="batches run at once in threads sharing the model (0: auto, one per torch thread on CPU)")
    p.set_defaults(func=_capture, resume_hint="the finished shards are kept; rerun the same command with --resume "
                                               "to continue")

    s = sub.add_parser("store", help="inspect or verify an activation store")
    ssub = s.add_subparsers(dest="store_command", metavar="ACTION")
    info = ssub.add_parser("info", help="print the manifest summary")
    info.add_argument("path")
    info.set_defaults(func=_info)
    ver = ssub.add_parser("verify", help="check every shard's checksum and shapes")
    ver.add_argument("path")
    ver.set_defaults(func=_verify)


def _capture(args: argparse.Namespace) -> int:
    from hooks.layers import resolve_layers
    from hooks.models import load_model

    cfg = CaptureConfig(
        out=args.out, model=args.model, adapter=args.adapter, layers=args.layers, positions=args.positions,
        max_length=args.max_length, batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens,
        padding_side=args.padding_side, store_dtype=args.store_dtype, model_dtype=args.model_dtype,
        backend=args.backend, docs_per_shard=args.docs_per_shard, device=args.device, resume=args.resume,
        workers=args.workers, force=args.force,
    )
    # Every check that needs no model runs first, and nothing is written before the store opens:
    # bad input leaves no folder and no file behind.
    text_file = read_documents(args.texts)
    plain = None if text_file.has_chats else text_file.texts()   # chats need the model's chat template
    check_capture_target(cfg, plain, text_file.name)
    lm = load_model(cfg.model, adapter=cfg.adapter, dtype=cfg.model_dtype, device=cfg.device)
    resolve_layers(cfg.layers, lm.n_layers)
    texts = plain if plain is not None else text_file.texts(lm.tokenizer)
    res = run_capture(cfg, texts, lm=lm, progress=True, source=text_file.name)
    who = f"rank {res.rank}/{res.world_size}: " if res.world_size > 1 else ""
    done = f"{res.n_docs} docs" if res.world_size == 1 else f"its shards of {res.n_docs} docs"
    print(f"{who}captured {done} ({res.skipped_docs} already done), {res.n_tokens_forward:,} tokens forward, "
          f"{res.n_rows_stored:,} rows stored, layers {res.layers}, {res.seconds:.1f}s, {res.tokens_per_s:,.0f} tokens/s"
          f" ({res.workers} batch{'es' if res.workers > 1 else ''} at a time)")
    if res.rank == 0:
        store = ActivationStore(res.out)
        print(f"store {res.out}: {store.n_docs} docs, {store.n_tokens:,} rows, d_model {store.d_model}, "
              f"dtype {store.dtype}, {len(store.info.shards)} shards")
    return 0


def _info(args: argparse.Namespace) -> int:
    store = ActivationStore(args.path)
    m = store.info
    size = sum((store.path / s.file).stat().st_size for s in m.shards if (store.path / s.file).is_file())
    print(f"store      {store.path} (format v{m.format_version})")
    print(f"model      {m.model_spec} (weights {m.weights_hash[:12]}), tokenizer {m.tokenizer}")
    print(f"layers     {list(m.layers)}  d_model {m.d_model}  dtype {m.dtype}")
    print(f"documents  {store.n_docs}  rows {store.n_tokens:,}  shards {len(m.shards)}  size {size / 2**20:.1f} MiB")
    if m.texts is not None:
        t = m.texts
        print(f"texts      {t.describe()}, cut at {t.max_tokens:,} tokens: {t.cut_docs} "
              f"{'doc' if t.cut_docs == 1 else 'docs'} cut, {t.cut_tokens:,} tokens dropped")
    print(f"options    {json.dumps(m.capture_options, sort_keys=True)}")
    if m.bad_entries:
        print(f"damaged    {len(m.bad_entries)} shard entries of the manifest do not parse: run `ao store verify "
              f"{store.path}`")
    return 0


def _verify(args: argparse.Namespace) -> int:
    store = ActivationStore(args.path)
    problems = store.verify()
    if problems:
        for p in problems:
            print(f"BAD  {p}")
        print(f"{len(problems)} problem(s) in {store.path}; the other shards read fine")
        return 1
    print(f"OK   {len(store.info.shards)} shards, {store.n_docs} docs, {store.n_tokens:,} rows in {store.path}")
    return 0
