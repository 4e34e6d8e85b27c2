"""On-policy chats: the target model itself answers user prompts (greedy, batched, left-padded), the
chats are cached as JSON, and they become context-prediction examples, so that the oracle also
learns from text the model would write itself.

Example:
    >>> lm = load_model("smollm2-135m")                                           # doctest: +SKIP
    >>> chats = generate_onpolicy_chats(lm, default_onpolicy_prompts(n=64), "runs/onpolicy.json")  # doctest: +SKIP
    >>> exs = build_onpolicy_context_prediction(lm.tokenizer, lm.n_layers, 100, 0, chats=chats)  # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional, Sequence

from hooks.atomic import atomic_write_text
from hooks.errors import InputError
from hooks.progress import progress_bar

from oracle.data.chat import format_chat, tokenize_text
from oracle.data.files import PathLike, data_file, read_lines, resolve_data_dir
from oracle.data.latentqa import latentqa_items
from oracle.data.splits import check_split, make_rng
from oracle.training.tasks.base import MAX_POSITIONS, OracleExample, balanced_layers, check_n
from oracle.training.tasks.context_prediction import examples_from_chats, onpolicy_chat_records

log = logging.getLogger(__name__)

CACHE_VERSION = 1

#: simple question templates, filled with subjects of the relations data
QUESTION_TEMPLATES = (
    "Tell me a fun fact about {x}.",
    "What is {x}?",
    "Write one sentence about {x}.",
    "Describe {x} in a few words.",
    "Why might someone be interested in {x}?",
)
_TEMPLATE_SUBJECT_FILES = ("commonsense/object_superclass", "commonsense/task_done_by_tool",
                           "commonsense/work_location", "factual/country_capital_city", "factual/food_from_country",
                           "factual/landmark_in_country")


def default_onpolicy_prompts(data_dir: Optional[PathLike] = None, n: int = 512, seed: int = 0) -> list[str]:
    """``n`` distinct user prompts (fewer if the sources run out), deterministic given ``seed``.

    About 40 % LatentQA user turns (``train/system.json``, training-split labels only), 25 % question
    templates over relation subjects, and the rest from taboo chats (first user turns), audit prompts
    (``*_standard_val.txt`` only; the ``_test`` and ``direct`` prompts stay out) and ``latentqa/prompts/default.json``.

    Example:
        >>> ps = default_onpolicy_prompts(n=8)
        >>> len(ps), len(set(ps))
        (8, 8)
    """
    n = check_n(n)
    root = resolve_data_dir(data_dir)
    rng = make_rng(seed, "onpolicy-prompts")
    latentqa = sorted({i.messages[-1][1] for i in latentqa_items(root, "train", sources=("system",))})
    taboo = set()
    for path in sorted(data_file(root, "taboo/chats").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                msgs = json.loads(line).get("messages", [])
                if msgs and msgs[0].get("role") == "user":
                    taboo.add(msgs[0]["content"].strip())
    audit = []
    for kind in ("taboo", "gender", "ssc"):
        audit += read_lines(data_file(root, f"audit/{kind}/{kind}_standard_val.txt"))
    audit += json.loads(data_file(root, "latentqa/prompts/default.json").read_text(encoding="utf-8"))
    subjects = set()
    for rel in _TEMPLATE_SUBJECT_FILES:
        d = json.loads(data_file(root, f"classification/relations/{rel}.json").read_text(encoding="utf-8"))
        subjects.update(s["subject"] for s in d["samples"])
    subjects_l = sorted(subjects)
    templated = sorted({t.format(x=s) for t in QUESTION_TEMPLATES for s in subjects_l})

    pools = {"latentqa": sorted(latentqa), "templates": templated, "taboo": sorted(taboo), "audit": sorted(set(audit))}
    for pool in pools.values():
        rng.shuffle(pool)
    quota = {"latentqa": 0.4, "templates": 0.25, "taboo": 0.15, "audit": 0.2}
    chosen: list[str] = []
    seen: set[str] = set()
    for name, frac in quota.items():
        for p in pools[name][: int(round(n * frac))]:
            if p not in seen:
                seen.add(p)
                chosen.append(p)
    leftovers = [p for name in ("latentqa", "templates") for p in pools[name] if p not in seen]
    for p in leftovers:
        if len(chosen) >= n:
            break
        seen.add(p)
        chosen.append(p)
    rng.shuffle(chosen)
    return chosen[:n]


def _cache_identity(lm, max_new_tokens: int) -> dict:
    return {"model": str(getattr(lm, "spec", "")), "adapters": sorted(getattr(lm, "adapters", {}) or {}),
            "max_new_tokens": int(max_new_tokens)}


def _read_cache(path: Path) -> Optional[dict]:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        log.warning("on-policy cache %s is not valid JSON; regenerating it", path)
        return None
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("replies"), dict):
        log.warning("on-policy cache %s has an unknown format; regenerating it", path)
        return None
    return data


def generate_replies(lm, prompts: Sequence[str], max_new_tokens: int, adapter: Optional[str] = None) -> list[str]:
    """Greedy replies to user prompts in one left-padded batch, with only ``adapter`` on (None: base model)."""
    import torch

    from hooks.models import active_adapter

    tok = lm.tokenizer
    seqs = [tokenize_text(tok, format_chat(tok, [{"role": "user", "content": p}], add_generation_prompt=True))
            for p in prompts]
    eos = getattr(tok, "eos_token_id", None)
    pad = getattr(tok, "pad_token_id", None)
    pad = pad if pad is not None else (eos if eos is not None else 0)
    width = max(len(s) for s in seqs)
    input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=lm.device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=lm.device)
    gen_kwargs = dict(max_new_tokens=int(max_new_tokens), do_sample=False, pad_token_id=pad)
    if eos is not None:
        gen_kwargs["eos_token_id"] = eos
    with torch.no_grad(), active_adapter(lm.model, adapter):
        out = lm.model.generate(input_ids=input_ids, attention_mask=mask, **gen_kwargs)
    stops = {i for i in (eos, pad) if i is not None}
    replies = []
    for row in out[:, width:].tolist():
        cut = next((j for j, t in enumerate(row) if t in stops), len(row))
        replies.append(tok.decode(row[:cut], skip_special_tokens=True).strip())
    return replies


def generate_onpolicy_chats(lm, prompts: Sequence[str], cache_path: PathLike, max_new_tokens: int = 48,
                            batch_size: int = 16) -> list[list[dict]]:
    """Chats ``[user prompt, model reply]`` for every prompt, generated by ``lm``'s base model (adapters off).

    Replies already in the JSON cache at ``cache_path`` (same model spec, adapters and
    ``max_new_tokens``) are reused; the others are generated greedily in left-padded batches and the
    cache is rewritten atomically after each batch, so an interrupted run resumes.

    Example:
        >>> from hooks.testing import tiny_loaded
        >>> import tempfile, os
        >>> chats = generate_onpolicy_chats(tiny_loaded(), ["Hi"], os.path.join(tempfile.mkdtemp(), "c.json"),
        ...                                 max_new_tokens=2)
        >>> chats[0][0]
        {'role': 'user', 'content': 'Hi'}
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise InputError("max_new_tokens and batch_size must be >= 1")
    prompts = [str(p) for p in prompts]
    if any(not p.strip() for p in prompts):
        raise InputError("on-policy prompts must be non-empty strings")
    path = Path(cache_path)
    identity = _cache_identity(lm, max_new_tokens)
    cache = _read_cache(path)
    replies: dict[str, str] = {}
    if cache is not None:
        if all(cache.get(k) == v for k, v in identity.items()):
            replies = dict(cache["replies"])
        else:
            log.warning("on-policy cache %s was made with %s, not %s; regenerating it", path,
                        {k: cache.get(k) for k in identity}, identity)
    missing = list(dict.fromkeys(p for p in prompts if p not in replies))
    if missing:
        log.info("generating %d on-policy replies (%d cached) into %s", len(missing), len(replies), path)
        bar = progress_bar(len(missing), "on-policy chats", unit="chat")
        try:
            for i in range(0, len(missing), batch_size):
                batch = missing[i : i + batch_size]
                for p, r in zip(batch, generate_replies(lm, batch, max_new_tokens)):
                    replies[p] = r
                atomic_write_text(path, json.dumps({"version": CACHE_VERSION, **identity, "replies": replies},
                                                   ensure_ascii=False, indent=1))
                if bar:
                    bar.update(len(batch))
        finally:
            if bar:
                bar.close()
    else:
        log.info("reusing %d cached on-policy replies from %s", len(prompts), path)
    return [[{"role": "user", "content": p}, {"role": "assistant", "content": replies[p]}] for p in prompts]


def load_onpolicy_chats(cache_path: PathLike) -> list[list[dict]]:
    """Every chat stored in an on-policy cache file (in insertion order)."""
    path = Path(cache_path)
    cache = _read_cache(path)
    if cache is None:
        raise InputError(f"no usable on-policy cache at {path}: create it with generate_onpolicy_chats(...)")
    return [[{"role": "user", "content": p}, {"role": "assistant", "content": r}] for p, r in cache["replies"].items()]


def build_onpolicy_context_prediction(
    tokenizer,
    n_layers: int,
    n: int,
    seed: int,
    data_dir: Optional[PathLike] = None,
    split: str = "train",
    *,
    chats: Optional[Sequence[Sequence[dict]]] = None,
    cache_path: Optional[PathLike] = None,
    max_context_tokens: int = 64,
    max_predict_tokens: int = 20,
    max_window: int = MAX_POSITIONS,
    single_position_prob: float = 0.5,
) -> list[OracleExample]:
    """``n`` context-prediction examples from on-policy chats (``chats``, or those in ``cache_path``).

    ``data_dir`` is unused (kept for the common builder signature).
    """
    n, split = check_n(n), check_split(split)
    if chats is None:
        if cache_path is None:
            raise InputError("pass chats=... or cache_path=... (see generate_onpolicy_chats)")
        chats = load_onpolicy_chats(cache_path)
    records = onpolicy_chat_records(chats, split)
    if n and not records:
        raise InputError(f"none of the {len(chats)} on-policy chats falls in split {split!r} with a non-empty reply")
    rng = make_rng(seed, f"onpolicy:{split}")
    out = examples_from_chats(rng, tokenizer, records, n, max_context_tokens=max_context_tokens,
                              max_predict_tokens=max_predict_tokens, max_window=max_window,
                              single_position_prob=single_position_prob)
    for ex, layer in zip(out, balanced_layers(rng, len(out), n_layers)):
        ex.layer = layer
    log.info("built %d on-policy context-prediction examples (%s split)", len(out), split)
    return out
