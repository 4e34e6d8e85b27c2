"""Train an oracle: LoRA on a copy of the base model, reading target activations injected at the
placeholder tokens of the oracle prompt. Resumable, logged, evaluated on held-out data as it goes."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from hooks.errors import CheckpointError, InputError
from hooks.models import LoadedModel, adapters_disabled, load_model, record_portable_base
from hooks.store import ActivationStore, DocActs, StoreWriter

from .batching import capture_contexts, make_oracle_batch, target_vectors
from .card import OracleCard, write_card
from .scaling import SCALINGS, STATS_FILE, InputScaler
from .tasks.base import FAMILIES, OracleExample, save_examples, load_examples, source_layers

log = logging.getLogger(__name__)

TRAIN_STATE = "train_state"


def _opt(default, help: str, kind: Optional[type] = None):
    """A config field with its ``--help`` text (and, for ``None`` defaults, the type its flag parses to)."""
    return field(default=default, metadata={"help": help, "kind": kind or type(default)})


@dataclass
class TrainConfig:
    """One oracle training job. Drives ``ao train`` and is saved in the checkpoint card.

    Example:
        >>> cfg = TrainConfig(out="runs/oracle", n_examples=64, steps=4)
        >>> cfg.total_steps
        4
    """

    out: str = _opt("checkpoints/oracle-smollm2-135m", "checkpoint folder (adapter, card, log, loss curve)")
    model: str = _opt("smollm2-135m", "base model: embedded name, Hugging Face id, local folder or .gguf path")
    n_examples: int = _opt(6000, "training examples built from the task mix")
    mix: dict = field(default_factory=lambda: {"reading": 1.0},
                      metadata={"help": 'task-family weights as JSON, e.g. {"reading":0.8,"context_prediction":0.2} '
                                        '(default: the reading skills only; why in docs/experiments/)'})
    skills: Optional[dict] = field(default=None, metadata={
        "help": 'reading-skill weights as JSON, e.g. {"word_at":1.0} (default: oracle.tasks.reading.'
                'DEFAULT_SKILL_WEIGHTS)'})
    open_class_frac: float = _opt(0.5, "share of classification examples asking the open question (\"Which tense is "
                                       "this sentence in?\", answered with the class name) instead of a yes/no one")
    negated_question_frac: float = _opt(0.25, "share of the yes/no classification questions that are negated (\"Is this "
                                              "review not positive?\"), as half the engels held-out questions are")
    steps: Optional[int] = _opt(None, "optimizer steps (default: one pass over the examples)", int)
    batch_size: int = _opt(16, "examples per optimizer step")
    lr: float = _opt(5e-4, "peak learning rate (linear warm-up, then cosine to 10%%)")
    warmup_steps: int = _opt(50, "linear warm-up steps")
    weight_decay: float = _opt(0.0, "AdamW weight decay")
    loss_per: str = _opt("example", "example: every example's answer weighs the same (a Yes/No as much as a 10-token "
                                    "continuation); token: the mean over all answer tokens of the batch")
    lora_r: int = _opt(16, "LoRA rank (all linear layers)")
    lora_alpha: int = _opt(32, "LoRA alpha")
    lora_dropout: float = _opt(0.0, "LoRA dropout")
    injection_layer: int = _opt(1, "oracle block whose output receives the activations")
    coef: float = _opt(1.0, "injection coefficient: h + coef * |h| * v/|v|")
    input_scaling: str = _opt("standardize", "standardize: z-score each dimension of the target activations "
                                             "(per-layer mean and std of the first --scaling-examples training "
                                             "examples, shipped beside the adapter) before injecting; none: inject "
                                             "them raw, as the published Activation Oracle checkpoints do")
    scaling_examples: int = _opt(1024, "training examples whose activations measure the input scaling")
    placeholder: str = _opt(" ?", "placeholder token of the oracle prompt (must be one token)")
    activations: str = _opt("store", "store (captured once into HDF5, resumable) or on_the_fly")
    store_dir: Optional[str] = _opt(None, "where the HDF5 activation cache goes (default: runs/acts-<out name>-<hash of the task mix>)", str)
    max_context_tokens: int = _opt(64, "longest source context, in tokens")
    eval_every: int = _opt(200, "steps between held-out checks")
    eval_examples: int = _opt(64, "examples per held-out check")
    save_every: int = _opt(200, "steps between resumable checkpoints")
    seed: int = _opt(0, "seed for the example mix and the adapter init")
    device: str = _opt("cpu", "cpu, cuda, cuda:N or mps")
    precision: str = _opt("auto", "auto (bf16 where the hardware supports it), bf16 or fp32")
    data_dir: Optional[str] = _opt(None, "shared data folder (default: $AO_DATA_DIR or ../shared/data)", str)
    examples_file: Optional[str] = _opt(None, "reuse a saved example list (JSONL) instead of building one", str)
    onpolicy_chats: Optional[str] = _opt(None, "JSON cache of chats written by the base model", str)
    onpolicy: int = _opt(512, "chats the base model writes (once, cached) when no cache is given")
    time_budget_s: Optional[float] = _opt(None, "fit the training into this many seconds (steps cut after a speed probe)",
                                          float)

    def __post_init__(self) -> None:
        if self.activations not in ("store", "on_the_fly"):
            raise InputError(f"--activations must be store or on_the_fly, not {self.activations!r}")
        if self.loss_per not in ("example", "token"):
            raise InputError(f"--loss-per must be example or token, not {self.loss_per!r}")
        if self.input_scaling not in SCALINGS:
            raise InputError(f"--input-scaling must be {' or '.join(SCALINGS)}, not {self.input_scaling!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise InputError(f"--precision must be auto, bf16 or fp32, not {self.precision!r}")
        for name in ("n_examples", "batch_size", "lora_r", "eval_every", "save_every", "max_context_tokens",
                     "scaling_examples"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1")
        if self.steps is not None and self.steps < 1:
            raise InputError("--steps must be at least 1")
        if not 0.0 <= self.open_class_frac <= 1.0:
            raise InputError(f"--open-class-frac {self.open_class_frac} must be a share between 0 and 1")
        if not 0.0 <= self.negated_question_frac <= 1.0:
            raise InputError(f"--negated-question-frac {self.negated_question_frac} must be a share between 0 and 1")
        if not 0 < self.lr < 1:
            raise InputError(f"--lr {self.lr} is not a sensible learning rate (try 5e-4)")
        bad = sorted(set(self.mix) - set(FAMILIES))
        if bad:
            raise InputError(f"--mix names unknown task famil(ies) {bad}: use {', '.join(FAMILIES)}")
        if any(not isinstance(w, (int, float)) or w < 0 for w in self.mix.values()) or sum(self.mix.values()) <= 0:
            raise InputError(f"--mix weights must be non-negative numbers with a positive sum, not {self.mix}")
        if self.skills is not None:
            from .tasks.reading import SKILLS, check_skills

            check_skills(list(self.skills))
            held = [k for k in self.skills if not SKILLS[k].trained]
            if held:
                raise InputError(f"--skills names {held}, held out from training: drop it")
            if any(not isinstance(w, (int, float)) or w < 0 for w in self.skills.values()) or \
                    sum(self.skills.values()) <= 0:
                raise InputError(f"--skills weights must be non-negative numbers with a positive sum, not {self.skills}")

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole run."""
        return self.steps if self.steps is not None else max(1, math.ceil(self.n_examples / self.batch_size))

    @property
    def examples_key(self) -> str:
        """A short hash of the fields that decide which examples are built: two runs share an example list or
        an activation cache only if they agree on all of them (a resumed run does).

        Example:
            >>> TrainConfig(out="a/oracle").examples_key == TrainConfig(out="b/oracle").examples_key
            True
            >>> TrainConfig(out="a/oracle").examples_key == TrainConfig(out="a/oracle", open_class_frac=0).examples_key
            False
        """
        fields = {k: getattr(self, k) for k in ("model", "n_examples", "mix", "open_class_frac", "negated_question_frac",
                                                *(("skills",) if self.skills else ()),
                                                "max_context_tokens", "seed", "onpolicy", "onpolicy_chats")}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]

    @property
    def store_path(self) -> Path:
        """Where target activations are cached (outside the checkpoint folder: it can be large); the default name
        carries :attr:`examples_key`, so a run with another task mix never reads this one's cache."""
        return Path(self.store_dir) if self.store_dir else Path("runs") / f"acts-{Path(self.out).name}-{self.examples_key}"

    @property
    def examples_path(self) -> Path:
        """The example list of the run: ``--examples-file``, else a JSONL beside the activation cache, named by
        :attr:`examples_key` (built once, reused when the run resumes)."""
        if self.examples_file:
            return Path(self.examples_file)
        return self.store_path.parent / f"examples-{Path(self.out).name}-{self.examples_key}.jsonl"


def use_bf16(config: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast where it pays: always on CUDA, on CPU only with native bf16 support."""
    if config.precision != "auto":
        return config.precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.backends.cpu.get_cpu_capability() in ("AVX512_BF16", "AMX")) or \
            "amx" in open("/proc/cpuinfo").read(200000)
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------


def build_examples(config: TrainConfig, lm: LoadedModel, split: str = "train", n: Optional[int] = None,
                   seed: Optional[int] = None) -> list[OracleExample]:
    """The training mix (or its eval split) for ``config``."""
    from .tasks.mix import build_training_mix

    from .tasks.onpolicy import default_onpolicy_prompts, generate_onpolicy_chats, load_onpolicy_chats

    chats = None
    if config.onpolicy_chats:
        chats = load_onpolicy_chats(config.onpolicy_chats)
    elif config.onpolicy > 0:
        cache = config.store_path.parent / f"onpolicy-{Path(config.model).name}.json"
        prompts = default_onpolicy_prompts(config.data_dir, n=config.onpolicy, seed=config.seed)
        chats = generate_onpolicy_chats(lm, prompts, cache, batch_size=64 if lm.device.type == "cuda" else 16)
    return build_training_mix(lm.tokenizer, lm.n_layers, n or config.n_examples, seed if seed is not None else config.seed,
                              data_dir=config.data_dir, weights=dict(config.mix), onpolicy_chats=chats, split=split,
                              options={"classification": {"open_frac": config.open_class_frac,
                                                          "negated_frac": config.negated_question_frac},
                                       **({"reading": {"skills": dict(config.skills)}} if config.skills else {})})


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
        bar = _bar(sum(b - a for _, a, b in pending), "capture targets", progress)
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


def _bar(total: int, desc: str, enabled: bool):
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, dynamic_ncols=True)


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
    Per example is the default: with a token mean a Yes/No answer (two tokens with end-of-turn) weighs a fifth of
    a typical context-prediction answer (about 10 tokens), so in a mixed batch the yes/no questions, the ones the
    held-out evaluation asks, got less of the gradient than their share of the examples (41 % vs 61 % in the
    session-7 CPU mix)."""
    from hooks.inject import inject_at

    device = lm.device
    batch = batch.to(device)
    ctx = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else _null()
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


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _vectors_for(lm: LoadedModel, store: Optional[ActivationStore], idx: Sequence[int],
                 examples: Sequence[OracleExample]) -> list[torch.Tensor]:
    exs = [examples[i] for i in idx]
    if store is not None:
        return [store.doc_acts(i, ex.layer) for i, ex in zip(idx, exs)]
    with adapters_disabled(lm.model):
        return target_vectors(lm, [e.context_ids for e in exs], [e.positions for e in exs], [e.layer for e in exs])


def fit_input_scaler(lm: LoadedModel, examples: Sequence[OracleExample], store: Optional[ActivationStore],
                     n: int, batch_size: int = 32) -> InputScaler:
    """Per-layer statistics of the target activations of the first ``n`` examples (every position they read)."""
    idx = list(range(min(n, len(examples))))
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
        vecs = [scaler(v, e.layer) for v, e in zip(vecs, exs)]
    return make_oracle_batch(lm.tokenizer, vecs, [e.layer for e in exs], [e.question for e in exs],
                             [e.answer for e in exs], config.placeholder, side="right")


# ---------------------------------------------------------------------------------------------
# Checkpointing (safetensors only)


#: settings a resumed run may change: they steer bookkeeping, not what is learned
RESUME_FREE_FIELDS = frozenset({"out", "steps", "time_budget_s", "eval_every", "eval_examples", "save_every",
                                "device", "data_dir", "store_dir"})


def check_resume_settings(config: "TrainConfig", out: Path) -> None:
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
        _rmtree(tmp)
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
        _rmtree(old)
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


def _rmtree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)


# ---------------------------------------------------------------------------------------------


def train_oracle(
    config: TrainConfig,
    lm: Optional[LoadedModel] = None,
    examples: Optional[list[OracleExample]] = None,
    eval_fn: Optional[Callable[["Oracle"], dict]] = None,
    progress: bool = False,
    stop_after: Optional[int] = None,
) -> dict:
    """Run (or resume) a training job; writes the adapter, ``oracle.json``, ``train_log.jsonl`` and
    ``loss.png`` into ``config.out``. ``stop_after`` ends early after that many steps of this call
    (tests use it to simulate a crash). ``eval_fn`` gets an :class:`Oracle` over the adapter being trained.
    Returns the summary dict written into the card.
    """
    from .api import Oracle

    torch.manual_seed(config.seed)
    started = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    check_resume_settings(config, out)
    if lm is None:
        lm = load_model(config.model, device=config.device)
    if examples is None:
        ex_file = config.examples_path
        if ex_file.exists():
            examples = load_examples(ex_file)
            log.info("reusing the %d examples in %s", len(examples), ex_file)
        else:
            examples = build_examples(config, lm)
            save_examples(examples, ex_file)
    if not examples:
        raise InputError("no training examples: check --data-dir")
    d_model = lm.d_model
    store = None
    if config.activations == "store":
        store = capture_example_store(lm, examples, config.store_path, progress=progress)
        if store.n_docs != len(examples):
            raise CheckpointError(f"activation store {config.store_path} does not match the examples: delete it")
    scaler = None
    if config.input_scaling == "standardize":
        if (out / STATS_FILE).exists():  # a resumed run keeps the statistics it trained with
            scaler = InputScaler.load(out)
        else:
            scaler = fit_input_scaler(lm, examples, store, config.scaling_examples)
            scaler.save(out)
            log.info("input scaling measured on %d examples, layers %s", min(config.scaling_examples, len(examples)),
                     scaler.layers)
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
    if eval_fn is not None and step == 0:  # the LoRA starts as the identity: step 0 is the untrained oracle
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
    bar = _bar(config.total_steps, "train", progress)
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
        if skipped:  # one bad batch must not turn every weight into NaN
            n_skipped += 1
            optimizer.zero_grad(set_to_none=True)
            log.warning("step %d: non-finite loss or gradient, update skipped (%d so far)", step + 1, n_skipped)
        else:
            optimizer.step()
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
            bar.set_postfix_str(f"loss {float(loss):.3f}" + (f" {row['examples_per_s']:.1f} ex/s" if "examples_per_s" in row else ""))
        if step % config.save_every == 0 or step == config.total_steps:
            save_train_state(lm, optimizer, step, out, log_rows, config=dataclasses.asdict(config))
            _write_log(log_path, log_rows)
        if stop_after is not None and done_here >= stop_after and step < config.total_steps:
            save_train_state(lm, optimizer, step, out, log_rows, config=dataclasses.asdict(config))
            _write_log(log_path, log_rows)
            if bar:
                bar.close()
            return {"stopped_at": step}
    if bar:
        bar.close()
    lm.model.eval()
    lm.model.save_pretrained(str(out / "_adapter_tmp"), selected_adapters=["oracle"], safe_serialization=True)
    _promote_adapter(out)
    record_portable_base(out, config.model)
    _write_log(log_path, log_rows)
    plot_loss(log_rows, out / "loss.png")
    from .suite import plot_learning_curves

    plot_learning_curves(log_rows, out / "reading_curves.png")
    from .tasks.mix import summarize

    summary = {
        "steps": step, "examples": len(examples), "examples_seen": step * config.batch_size, "wall_time_s": round(time.perf_counter() - started, 1),
        "data": summarize(examples), "final_loss": log_rows[-1].get("loss") if log_rows else None,
        "hardware": _hardware(device), "bf16": bf16, "skipped_steps": n_skipped,
        "last_eval": next((r["eval"] for r in reversed(log_rows) if "eval" in r), None),
    }
    card.train_config, card.training = dataclasses.asdict(config), summary
    write_card(out, card)
    _rmtree(out / TRAIN_STATE)
    return summary


def _promote_adapter(out: Path) -> None:
    """Move the saved adapter files to the checkpoint root (PEFT nests non-default adapter names)."""
    tmp = out / "_adapter_tmp"
    src = tmp / "oracle" if (tmp / "oracle").is_dir() else tmp
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        os.replace(src / name, out / name)
    _rmtree(tmp)


def _write_log(path: Path, rows: list) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)


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
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
