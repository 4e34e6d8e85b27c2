"""One capture job: texts -> tokenized documents -> length-sorted batches -> HDF5 store (resumable,
data-parallel under ``accelerate launch``)."""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from .capture import BACKENDS, capture_documents, default_workers
from .positions import parse_positions
from .dtypes import pad_token_id
from .progress import progress_bar
from .errors import InputError, StoreError
from .layers import resolve_layers
from .models import LoadedModel, load_model, parse_dtype
from .store import DTYPES, MANIFEST, ActivationStore, DocActs, StoreWriter, is_store_file, merge_manifests
from .texts import check_texts

log = logging.getLogger(__name__)


@dataclass
class CaptureConfig:
    """Everything a capture needs; drives ``ao capture`` and is saved in the store's manifest.

    Example:
        >>> cfg = CaptureConfig(out="runs/store", layers="25%,50%,75%", positions="last:4")
        >>> cfg.positions
        'last:4'
    """

    out: str
    model: str = "smollm2-135m"
    adapter: Optional[str] = None
    layers: str = "25%,50%,75%"
    positions: str = "all"
    max_length: int = 512
    batch_size: int = 16
    max_batch_tokens: int = 4096
    padding_side: str = "right"
    store_dtype: str = "float32"
    model_dtype: str = "float32"
    backend: str = "torch"
    docs_per_shard: int = 256
    device: str = "cpu"
    resume: bool = False
    add_special_tokens: bool = True
    workers: int = 0                     # batches run at once; 0: auto (CPU + torch backend: one per torch thread)
    force: bool = False                  # write into a folder that holds other files (never checked on resume)

    def __post_init__(self) -> None:
        self.positions = parse_positions(self.positions)
        if self.padding_side not in ("left", "right"):
            raise InputError(f"--padding-side must be left or right, not {self.padding_side!r}")
        if self.store_dtype not in DTYPES:
            raise InputError(f"--dtype {self.store_dtype!r} is not one of {', '.join(DTYPES)}")
        parse_dtype(self.model_dtype)
        if self.backend not in BACKENDS:
            raise InputError(f"--backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.workers < 0 or (self.workers > 1 and self.backend != "torch"):
            raise InputError(f"--workers {self.workers}: use 0 (auto) or 1, or more only with --backend torch")
        for name in ("max_length", "batch_size", "max_batch_tokens", "docs_per_shard"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1")

    def store_options(self) -> dict:
        """The options that shape the stored data (checked when resuming)."""
        return {"positions": self.positions, "max_length": self.max_length, "padding_side": self.padding_side,
                "add_special_tokens": self.add_special_tokens, "adapter": self.adapter, "backend": self.backend,
                "model_dtype": self.model_dtype}


@dataclass
class CaptureResult:
    """What a capture did (for the CLI summary and benchmarks)."""

    out: Path
    n_docs: int
    n_tokens_forward: int
    n_rows_stored: int
    layers: list[int]
    seconds: float
    skipped_docs: int = 0
    rank: int = 0
    world_size: int = 1
    workers: int = 1

    @property
    def tokens_per_s(self) -> float:
        return self.n_tokens_forward / max(self.seconds, 1e-9)


def tokenize_texts(lm: LoadedModel, texts: Sequence[str], max_length: int, add_special_tokens: bool = True) -> list[list[int]]:
    """Token ids of each text, truncated to ``max_length``."""
    check_texts(list(texts))
    tok = lm.tokenizer
    out = []
    for t in texts:
        ids = tok(t, add_special_tokens=add_special_tokens)["input_ids"]
        out.append(list(ids[:max_length]))
    return out


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def check_out_folder(out: Path, force: bool = False) -> None:
    """Refuse a folder that holds other files and no store (shards written among them could hardly be told
    apart), unless ``force``."""
    if force or not out.is_dir():
        return
    names = [p.name for p in out.iterdir()]
    if names and not any(is_store_file(n) for n in names):
        raise StoreError(f"{out} holds other files ({', '.join(sorted(names)[:3])}{', ...' if len(names) > 3 else ''}) "
                         "and no store: choose a new or empty folder for --out, or pass --force to write among them")


def run_capture(
    config: CaptureConfig,
    texts: Sequence[str],
    lm: Optional[LoadedModel] = None,
    progress: bool = False,
) -> CaptureResult:
    """Capture ``texts`` into the store at ``config.out``; resumes when ``config.resume``.

    Under ``accelerate launch`` (``WORLD_SIZE`` > 1) each process writes its own shards and rank 0
    merges the manifests at the end.

    Example:
        >>> run_capture(CaptureConfig(out="runs/s", layers="50%"), ["Hello world."])   # doctest: +SKIP
    """
    texts = list(texts)
    check_texts(texts)
    rank, world = _dist_info()
    check_out_folder(Path(config.out), config.force)
    if lm is None:
        lm = load_model(config.model, adapter=config.adapter, dtype=config.model_dtype, device=config.device)
    layers = resolve_layers(config.layers, lm.n_layers)
    out = Path(config.out)
    if world == 1 and (out / MANIFEST).exists() and not config.resume:
        raise StoreError(f"{out} already holds a store: pass --resume to continue it, or choose another --out")
    if config.resume and (out / MANIFEST).exists():
        ActivationStore(out).check_model(lm.weights_hash, config.model)
    docs_tokens = tokenize_texts(lm, texts, config.max_length, config.add_special_tokens)
    pad_id = pad_token_id(lm.tokenizer)
    writer_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[config.store_dtype]
    workers = config.workers or default_workers(lm.device, config.backend)
    started = time.perf_counter()
    n_fwd = n_rows = 0
    with StoreWriter(out, model_spec=config.model, weights_hash=lm.weights_hash,
                     tokenizer_name=lm.tokenizer_name, d_model=lm.d_model,
                     layers=layers, dtype=config.store_dtype, capture_options=config.store_options(),
                     docs_per_shard=config.docs_per_shard, resume=config.resume, rank=rank, world_size=world) as writer:
        pending = writer.pending_shards(len(docs_tokens))
        todo_docs = sum(stop - start for _, start, stop in pending)
        skipped = len(docs_tokens) - todo_docs if world == 1 else 0
        bar = _progress(todo_docs, sum(len(docs_tokens[i]) for _, a, b in pending for i in range(a, b)), progress,
                        skipped)
        try:   # the bar ends its line even when a shard fails, so an error message starts on a line of its own
            for shard_index, start, stop in pending:
                def on_batch(nd: int, nt: int) -> None:
                    bar.update(nd, nt)

                caps = capture_documents(
                    lm.model, docs_tokens[start:stop], layers, pad_id, positions=config.positions,
                    padding_side=config.padding_side, max_batch=config.batch_size, max_tokens=config.max_batch_tokens,
                    backend=config.backend, tokenizer=lm.tokenizer, out_dtype=writer_dtype,
                    on_batch=on_batch, workers=workers,
                )
                writer.write_shard(shard_index, start,
                                   [DocActs(c.tokens.numpy(), c.positions.numpy(), c.acts) for c in caps])
                n_fwd += sum(len(d) for d in docs_tokens[start:stop])
                n_rows += sum(len(c.tokens) for c in caps)
        finally:
            bar.close()
    if world > 1:
        _barrier(config.device)
        if rank == 0:
            merge_manifests(out, world_size=world)
        _barrier(config.device)
    return CaptureResult(out=out, n_docs=len(docs_tokens), n_tokens_forward=n_fwd, n_rows_stored=n_rows,
                         layers=layers, seconds=time.perf_counter() - started, skipped_docs=skipped,
                         rank=rank, world_size=world, workers=workers)


def _barrier(device: str = "cpu") -> None:
    """Wait for every rank (``accelerate launch`` / ``torchrun`` sets WORLD_SIZE, RANK, MASTER_ADDR...).

    A CPU capture synchronises over gloo (``PartialState(cpu=True)``); without it accelerate picks
    no backend on a machine without GPUs and the barrier would silently do nothing.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        return
    from accelerate import PartialState

    on_cpu = str(device).startswith("cpu") or not torch.cuda.is_available()
    state = PartialState(cpu=on_cpu)
    if state.num_processes < 2:
        raise StoreError("WORLD_SIZE > 1 but no process group could be set up: launch with "
                         "`accelerate launch --multi_gpu --num_processes N` or `torchrun --nproc_per_node N`")
    state.wait_for_everyone()


class _progress:
    """tqdm bar over documents with tokens/s in the postfix (a no-op when disabled)."""

    def __init__(self, n_docs: int, n_tokens: int, enabled: bool, skipped: int = 0) -> None:
        self.tokens = 0
        self.t0 = time.perf_counter()
        desc = "capture" + (f" (resumed, {skipped} docs done)" if skipped else "")
        self.bar = progress_bar(n_docs, desc, enabled, unit="doc")

    def update(self, n_docs: int, n_tokens: int) -> None:
        self.tokens += n_tokens
        if self.bar is not None:
            self.bar.update(n_docs)
            rate = self.tokens / max(time.perf_counter() - self.t0, 1e-9)
            self.bar.set_postfix_str(f"{rate:,.0f} tok/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def config_from_dict(d: dict) -> CaptureConfig:
    """Rebuild a config from JSON, ignoring unknown keys."""
    names = {f.name for f in dataclasses.fields(CaptureConfig)}
    return CaptureConfig(**{k: v for k, v in d.items() if k in names})
