"""The LatentQA dialogs: a hidden instruction (a persona or a goal) in a system prompt or an earlier turn, then a
user turn; what the upstream files say about each instruction.

Sources: ``system`` (``train/system.json`` + ``eval/system.json``: system prompt + user turn), ``stimulus``
(``eval/stimulus.json``: the instruction as a user turn, the first sentence of the model's reply, then the user
turn) and ``controls`` (the three demo controls). Splits are label-disjoint: a deterministic hash of the label puts
about 10 % of the labels in ``split="eval"``; those labels, and their instruction texts, never appear in
``split="train"``.

Example:
    >>> item = latentqa_items(split="eval", sources=("system",))[0]
    >>> item.dataset, item.chat()[0]["role"]
    ('latentqa/system', 'system')
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence

from hooks.errors import InputError

from oracle.data.files import PathLike, data_file, resolve_data_dir
from oracle.data.splits import EVAL_FRACTION, check_split, split_of


@dataclass(frozen=True)
class LatentQAItem:
    """One hidden instruction in one dialog, with what can be asked about it."""

    source: str                                # "system" | "stimulus" | "controls"
    label: str                                 # LatentQA label slug, e.g. "persona-role-dreamweaver"
    instruction: str                           # the full hidden instruction
    messages: tuple[tuple[str, str], ...]      # (role, content); the last one is the user turn read
    qa: tuple[tuple[str, str], ...] = ()       # upstream (question, answer) pairs, if any

    @property
    def dataset(self) -> str:
        return f"latentqa/{self.source}"

    @property
    def kind(self) -> Optional[str]:
        """``"persona"``, ``"goal"`` or None (controls)."""
        head = self.label.split("-", 1)[0]
        return head if head in ("persona", "goal") else None

    @property
    def topic(self) -> str:
        """A few words naming the instruction, from the label slug.

        Example:
            >>> LatentQAItem("system", "goal-stylistic-pun-lighthearted-tone", "", ()).topic
            'pun lighthearted tone'
        """
        parts = [p for p in self.label.split("-") if p]
        if self.kind is None:
            parts = parts[1:] if len(parts) > 1 else parts
            return " ".join(parts)
        return " ".join(parts[2:] if len(parts) >= 3 else parts[1:])

    def chat(self) -> list[dict]:
        return [{"role": r, "content": c} for r, c in self.messages]


def first_sentence(text: str, max_words: int = 40) -> str:
    """The first sentence of ``text``, cut at ``max_words`` words.

    Example:
        >>> first_sentence("Sure! I will do that. Then more.")
        'Sure!'
    """
    text = " ".join(text.split())
    sent = re.split(r"(?<=[.!?])\s+", text, maxsplit=1)[0]
    words = sent.split()
    return " ".join(words[:max_words]) + ("..." if len(words) > max_words else "")


_LEADS = (r"^please,?\s+", r"^i'd like you to\s+", r"^i would like you to\s+", r"^i want you to\s+",
          r"^could you (please )?", r"^can you (please )?")


def short_instruction(instruction: str) -> str:
    """The instruction's first sentence as an imperative, without the polite lead-in.

    Example:
        >>> short_instruction("Please adopt the persona of a dreamweaver. Be whimsical.")
        'Adopt the persona of a dreamweaver.'
        >>> short_instruction("In your next response, please try to use a pun.")
        'In your next response, try to use a pun.'
    """
    s = first_sentence(instruction)
    for pat in _LEADS:
        s = re.sub(pat, "", s, flags=re.IGNORECASE)
    s = re.sub(r",\s+please\s+", ", ", s)
    s = s.rstrip("?").rstrip()
    if s and s[-1] not in ".!":
        s += "."
    return s[:1].upper() + s[1:]


@lru_cache(maxsize=4)
def _load_items(root: str) -> tuple[LatentQAItem, ...]:
    base = resolve_data_dir(root)

    def read(rel: str):
        path = data_file(base, f"latentqa/{rel}")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InputError(f"{path} is not valid JSON ({e.msg}): restore it from shared/data") from None

    qa = {k: tuple((str(q), str(a)) for q, a in v) for k, v in read("eval/qa.json").items()}
    items: list[LatentQAItem] = []
    for rel in ("train/system.json", "eval/system.json"):
        for x in read(rel):
            items.append(LatentQAItem("system", x["label"], x["system"],
                                      (("system", x["system"]), ("user", x["stimulus_user"])), qa.get(x["label"], ())))
    for x in read("eval/stimulus.json"):
        reply = first_sentence(x["control_model"], max_words=30)
        items.append(LatentQAItem("stimulus", x["label"], x["control_user"],
                                  (("user", x["control_user"]), ("assistant", reply), ("user", x["stimulus_user"])),
                                  qa.get(x["label"], ())))
    prompts = read("prompts/default.json")
    controls = sorted((base / "latentqa" / "controls").glob("*.json"))
    for path in controls:
        for instruction, pairs in json.loads(path.read_text(encoding="utf-8")).items():
            for p in prompts:
                items.append(LatentQAItem("controls", f"control-{path.stem.replace('_', '-')}", instruction,
                                          (("system", instruction), ("user", p)), tuple((q, a) for q, a in pairs)))
    return tuple(items)


def latentqa_items(data_dir: Optional[PathLike] = None, split: str = "train",
                   sources: Optional[Sequence[str]] = None, eval_fraction: float = EVAL_FRACTION) -> list[LatentQAItem]:
    """The LatentQA items of one split (label-disjoint, and disjoint in instruction text).

    Example:
        >>> train = {i.label for i in latentqa_items(split="train")}
        >>> evals = {i.label for i in latentqa_items(split="eval")}
        >>> train & evals
        set()
    """
    check_split(split)
    items = _load_items(str(resolve_data_dir(data_dir)))
    in_eval = {i.label: split_of(i.label, eval_fraction, salt="latentqa") == "eval" for i in items}
    eval_texts = {" ".join(i.instruction.split()).lower() for i in items if in_eval[i.label]}
    out = []
    for i in items:
        if sources is not None and i.source not in sources:
            continue
        if split == "eval" and in_eval[i.label]:
            out.append(i)
        elif split == "train" and not in_eval[i.label] and " ".join(i.instruction.split()).lower() not in eval_texts:
            out.append(i)
    return out


def latentqa_dialogs(data_dir: Optional[PathLike] = None, split: str = "train") -> list[tuple[str, str, list[dict]]]:
    """``(dataset, label, messages)`` of the LatentQA dialogs of a split (for context prediction).

    The three demo controls are left out.

    Example:
        >>> dataset, label, messages = latentqa_dialogs(split="eval")[0]
        >>> messages[-1]["role"]
        'user'
    """
    return [(i.dataset, i.label, i.chat()) for i in latentqa_items(data_dir, split, sources=("system", "stimulus"))]
