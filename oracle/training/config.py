"""The settings of an ``ao train`` run: one validated dataclass that drives the CLI (its field metadata
holds each flag's help) and is saved in the oracle card beside the result."""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from hooks.errors import InputError
from hooks.outputs import check_output_path

from oracle.core.scaling import SCALINGS
from oracle.training.tasks.mix import FAMILIES


def _opt(default, help: str, kind: Optional[type] = None):
    """A config field with its ``--help`` text (and, for ``None`` defaults, the type its flag parses to)."""
    return field(default=default, metadata={"help": help, "kind": kind or type(default)})


def _check_weights(flag: str, weights: dict) -> None:
    """One line unless ``weights`` are non-negative numbers with a positive sum."""
    if any(not isinstance(w, (int, float)) or w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise InputError(f"{flag} weights must be non-negative numbers with a positive sum, not {weights}")


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
                                        '(default: the reading skills only; why in experiments/)'})
    skills: Optional[dict] = field(default=None, metadata={
        "help": 'reading-skill weights as JSON, e.g. {"word_at":1.0} (default: oracle.training.tasks.reading.'
                'DEFAULT_SKILL_WEIGHTS)'})
    verify_kinds: Optional[dict] = field(default=None, metadata={
        "help": 'verification-kind weights as JSON, e.g. {"word":1.0}: the word check alone teaches the yes/no form '
                'first (default: oracle.training.tasks.verify.KIND_WEIGHTS)'})
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
    data_dir: Optional[str] = _opt(None, "shared data folder (default: `ao data where`)", str)
    examples_file: Optional[str] = _opt(None, "reuse a saved example list (JSONL) instead of building one", str)
    onpolicy_chats: Optional[str] = _opt(None, "JSON cache of chats written by the base model", str)
    onpolicy: int = _opt(512, "chats the base model writes (once, cached) when no cache is given and the mix has "
                              "context_prediction")
    calibration_n: int = _opt(32, "items per reading-skill row for the calibration fitted after training "
                                  "(calibration.json; 0 or --no-eval: skip; `ao calibrate` fits it later)")
    init_from: Optional[str] = _opt(None, "continue training from this oracle folder's adapter and input scaling (a "
                                          "new optimizer and schedule; its injection settings must match)", str)
    time_budget_s: Optional[float] = _opt(None, "fit the training into this many seconds (steps cut after a speed probe)",
                                          float)

    def __post_init__(self) -> None:
        check_output_path(self.out)
        if self.time_budget_s is not None and not (math.isfinite(self.time_budget_s) and self.time_budget_s > 0):
            raise InputError(f"--time-budget-s must be a positive number of seconds, not {self.time_budget_s}")
        if self.examples_file and Path(self.examples_file).is_dir():
            raise InputError(f"--examples-file {self.examples_file} is a folder: name a JSONL file of examples")
        if self.activations not in ("store", "on_the_fly"):
            raise InputError(f"--activations must be store or on_the_fly, not {self.activations!r}")
        if self.loss_per not in ("example", "token"):
            raise InputError(f"--loss-per must be example or token, not {self.loss_per!r}")
        if self.input_scaling not in SCALINGS:
            raise InputError(f"--input-scaling must be {' or '.join(SCALINGS)}, not {self.input_scaling!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise InputError(f"--precision must be auto, bf16 or fp32, not {self.precision!r}")
        if self.calibration_n < 0:
            raise InputError("--calibration-n must be 0 (skip) or more")
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
        _check_weights("--mix", self.mix)
        if self.activations == "store" and self.mix.get("context_diff", 0) > 0:
            raise InputError("the context_diff family reads differences of two passes, which the store does not hold: "
                             "add --activations on_the_fly")
        if self.skills is not None:
            from oracle.training.tasks.reading import SKILLS, check_skills

            check_skills(list(self.skills))
            held = [k for k in self.skills if not SKILLS[k].trained]
            if held:
                raise InputError(f"--skills names {held}, held out from training: drop it")
            _check_weights("--skills", self.skills)

        if self.verify_kinds is not None:
            from oracle.training.tasks.verify import KIND_WEIGHTS

            bad = sorted(set(self.verify_kinds) - set(KIND_WEIGHTS))
            if bad:
                raise InputError(f"--verify-kinds names unknown kind(s) {bad}: use {', '.join(KIND_WEIGHTS)}")
            _check_weights("--verify-kinds", self.verify_kinds)

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
                                                *(("verify_kinds",) if self.verify_kinds else ()),
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
