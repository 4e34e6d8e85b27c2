"""One capture job: texts -> tokenized documents -> length-sorted batches -> HDF5 store (resumable,
data-parallel under ``accelerate launch``).

Every check runs before anything is written: :func:`check_capture_target` (no model needed: the output path, the
folder, an existing store, the texts a resumed store was made from) and then, once the texts are tokenized, the
positions against every document. A refusal leaves no new folder behind.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from hooks.capture import BACKENDS, capture_documents, default_workers
from hooks.positions import Positions, PositionsSpec
from hooks.dtypes import pad_token_id
from hooks.progress import progress_bar
from hooks.errors import InputError, StoreError
from hooks.layers import resolve_layers
from hooks.lengths import Cut, cut_to_length, model_context, report_cut
from hooks.models import LoadedModel, load_model, parse_dtype
from hooks.outputs import check_output_path, removed_on_failure
from hooks.store import DTYPES, MANIFEST, ActivationStore, DocActs, StoreWriter, is_store_file, merge_manifests
from hooks.store_format import normalize_json
from hooks.store_manifest import TextsRecord, read_manifest, texts_digest, tokens_digest
from hooks.store_manifest import check_same_texts, check_same_tokens
from hooks.texts import check_texts

log = logging.getLogger(__name__)


@dataclass
class CaptureConfig:
    """Everything a capture needs; drives ``ao capture`` and is saved in the store's manifest.

    Example:
        >>> cfg = CaptureConfig(out="runs/store", layers="25%,50%,75%", positions="last:4")
        >>> str(cfg.positions), cfg.positions.select(6)
        ('last:4', [2, 3, 4, 5])
    """

    out: str
    model: str = "smollm2-135m"
    adapter: Optional[str] = None
    layers: str = "25%,50%,75%"
    positions: PositionsSpec = "all"     # parsed on construction into a hooks.positions.Positions
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
        self.positions = Positions.parse(self.positions)
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
        return {"positions": self.positions.spec, "max_length": self.max_length, "padding_side": self.padding_side,
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


def tokenize_documents(lm: LoadedModel, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[int]]:
    """Every token id of each text (nothing cut)."""
    check_texts(list(texts))
    tok = lm.tokenizer
    return [list(tok(t, add_special_tokens=add_special_tokens)["input_ids"]) for t in texts]


def tokenize_texts(lm: LoadedModel, texts: Sequence[str], max_length: int, add_special_tokens: bool = True) -> list[list[int]]:
    """Token ids of each text, cut at ``max_length`` and never past the model's context (a cut is logged)."""
    kept, cut = cut_to_length(tokenize_documents(lm, texts, add_special_tokens), max_length, model_context(lm.model))
    report_cut(cut)
    return kept


def check_positions(docs_tokens: Sequence[Sequence[int]], positions: Positions) -> None:
    """Refuse positions that fall outside, or select nothing of, any document (naming the first such text)."""
    for i, ids in enumerate(docs_tokens):
        try:
            positions.select(len(ids))
        except InputError as e:
            raise InputError(f"text {i}: {e}") from None


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def check_capture_target(config: CaptureConfig, texts: Optional[Sequence[str]] = None,
                         source: Optional[str] = None) -> Path:
    """Every check of a capture that needs no model, before any work: ``--out`` is a place a store can go (not a
    file, not below one, not a system folder, not among other files), holds no store unless resuming, and a
    resumed store was made from these ``texts`` (skipped when ``None``: chats are rendered only once the model's
    tokenizer is loaded, and the writer checks again). Returns ``--out`` as a path.

    Example:
        >>> check_capture_target(CaptureConfig(out="/proc/store"))    # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        hooks.errors.InputError: --out /proc/store lies in the system folder /proc: choose a folder of your own
    """
    out = check_output_path(config.out, flag="--out")
    check_out_folder(out, config.force)
    manifest = out / MANIFEST
    if _dist_info()[1] == 1 and manifest.exists() and not config.resume:
        raise StoreError(f"{out} already holds a store: pass --resume to continue it, or choose another --out")
    if texts is not None and config.resume and manifest.is_file():
        old = read_manifest(manifest)
        if old.format_version >= 2:
            check_same_texts(out, old.texts, _texts_record(texts, source, Cut(config.max_length, 0, 0)))
    return out


def _texts_record(texts: Sequence[str], source: Optional[str], cut: Cut) -> TextsRecord:
    return TextsRecord(source=source, n_docs=len(texts), sha256=texts_digest(texts), max_tokens=cut.max_tokens,
                       cut_docs=cut.n_docs, cut_tokens=cut.n_tokens)


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
    source: Optional[str] = None,
) -> CaptureResult:
    """Capture ``texts`` into the store at ``config.out``; resumes when ``config.resume``. ``source`` names the
    text file they came from (recorded in the manifest; a resume with other texts is refused, naming both).

    Under ``accelerate launch`` (``WORLD_SIZE`` > 1) each process writes its own shards and rank 0
    merges the manifests at the end.

    Example:
        >>> run_capture(CaptureConfig(out="runs/s", layers="50%"), ["Hello world."])   # doctest: +SKIP
    """
    texts = list(texts)
    check_texts(texts)
    rank, world = _dist_info()
    out = check_capture_target(config, texts, source)
    if lm is None:
        lm = load_model(config.model, adapter=config.adapter, dtype=config.model_dtype, device=config.device)
    layers = resolve_layers(config.layers, lm.n_layers)
    docs_tokens, cut = cut_to_length(tokenize_documents(lm, texts, config.add_special_tokens), config.max_length,
                                     model_context(lm.model))
    check_positions(docs_tokens, config.positions)   # every text, before anything is written
    if config.resume and (out / MANIFEST).exists():
        existing = ActivationStore(out)
        existing.check_model(lm.weights_hash, config.model)
        same_settings = (existing.info.tokenizer == lm.tokenizer_name
                         and existing.info.capture_options == normalize_json(config.store_options()))
        if same_settings:   # otherwise the writer names the setting that differs
            check_same_tokens(out, [e.to_json() for e in existing.info.shards], docs_tokens)
    pad_id = pad_token_id(lm.tokenizer)
    writer_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[config.store_dtype]
    workers = config.workers or default_workers(lm.device, config.backend)
    started = time.perf_counter()
    n_fwd = n_rows = 0
    # A refusal while opening leaves no new folder behind (one process only: ranks share the folder).
    with removed_on_failure(out) if world == 1 else contextlib.nullcontext():
        writer = StoreWriter(out, model_spec=config.model, weights_hash=lm.weights_hash,
                             tokenizer_name=lm.tokenizer_name, d_model=lm.d_model, layers=layers,
                             dtype=config.store_dtype, capture_options=config.store_options(),
                             docs_per_shard=config.docs_per_shard, resume=config.resume, rank=rank, world_size=world,
                             texts=_texts_record(texts, source, cut))
    with writer:
        report_cut(cut)   # once the job is sure to run: a refusal above stays one line
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
                                   [DocActs(c.tokens.numpy(), c.positions.numpy(), c.acts) for c in caps],
                                   tokens_sha256=tokens_digest(docs_tokens[start:stop]))
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
