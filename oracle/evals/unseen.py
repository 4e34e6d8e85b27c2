"""The unseen-questions suite (``ao eval --suite unseen``): questions the oracle was never taught, about
concepts no part of the training mix reads (:mod:`oracle.data.unseen_sets`), each asked three ways.

Per set (``n`` label-balanced items, layer ``L``, the text's first or last 16 token vectors):

* **yes/no** naming the concept ("Is the person named at the end of this text a singer?", asked after the
  training's answer-format instruction, :func:`oracle.core.yes_no.as_taught`): the log-odds of yes against the
  control vectors (:func:`oracle.core.yes_no.yes_no_scores`), AUROC over the items;
* **choice** among the set's family of answers (five occupations, four news topics): each candidate's
  first-token log-probability (spellings summed) against the control vectors, AUROC of the concept's softmax
  share over the candidates;
* **open** one-word question: the log-probability of the concept's first token (any spelling), AUROC.

Beside them, on the same items: the untrained oracle (same card and scaling, no adapter); logistic probes on
the mean of the same vectors with 8, 64 and all labels of the set's probe half (texts split by hash); and the
text baseline, the base model asked the same three questions with the plain text in its prompt, which shows
which questions the base model cannot answer even from the words.

Example:
    >>> res = run_unseen(Oracle.load("checkpoints/oracle-smollm2-135m"), UnseenConfig(n=20))   # doctest: +SKIP
    >>> res["sets"]["singer"]["trained"]["yes_no"]                                             # doctest: +SKIP
    0.71
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from hooks.atomic import save_figure
from hooks.capture import pad_batch, position_ids_from_mask
from hooks.errors import InputError
from hooks.positions import Positions
from hooks.progress import progress_bar

from oracle.core.api import Oracle, Query
from oracle.core.prompt import render_user_turn
from oracle.data.chat import tokenize_text
from oracle.data.unseen_sets import UnseenSet, check_unseen_names, unseen_items
from oracle.core.yes_no import (YES_NO_PREFIX, as_taught, control_first_token_logprobs, resolved_queries,
                                 yes_no_instruction, yes_no_scores, yes_share)

log = logging.getLogger(__name__)

READ_TOKENS = 16               # token vectors injected per item: the headline, or the name and what precedes it
_FIRST, _LAST_READ = Positions.parse(slice(0, READ_TOKENS)), Positions.parse(slice(-READ_TOKENS, None))
PROBE_SIZES = (8, 64)
FORMS = ("yes_no", "choice", "open")


@dataclass
class UnseenConfig:
    """One run of the unseen-questions suite (saved beside its report).

    Example:
        >>> UnseenConfig(n=10, sets=["singer"]).n
        10
    """

    n: int = 80                           # items per set, half of them positive
    probe_n: int = 128                    # most labels a probe gets (the set's probe half)
    sets: Optional[list] = None           # default: every unseen set
    layer: Optional[int] = None           # default: the oracle's middle source layer
    seed: int = 0
    data_dir: Optional[str] = None
    text_baseline: bool = True

    def __post_init__(self) -> None:
        if self.n < 4 or self.probe_n < 8:
            raise InputError("the unseen suite needs --suite-n >= 4 items per set and --probe-n >= 8 labels")
        check_unseen_names(self.sets)


def concept_first_tokens(tokenizer, word: str) -> list[int]:
    """The first token of each spelling of ``word`` ("singer", "Singer", " singer", " Singer") that names the word
    rather than any word: the whole spelling, or a first piece of 3+ characters (a bare "S" or "A" would also
    start "Sports" or "A journalist").

    Example:
        >>> [tok.decode([i]) for i in concept_first_tokens(tok, "singer")]      # doctest: +SKIP
        [' singer', ' Singer']
    """
    ids: list[int] = []
    for w in (word, word.capitalize(), " " + word, " " + word.capitalize()):
        t = tokenizer.encode(w, add_special_tokens=False)
        if t and (len(t) == 1 or len(tokenizer.decode([t[0]]).strip()) >= 3) and t[0] not in ids:
            ids.append(int(t[0]))
    if not ids:
        raise InputError(f"no spelling of {word!r} starts with a token of its own: it cannot be scored from the first "
                         f"answer token; use a longer word")
    return ids


def _read_positions(spec: UnseenSet) -> Positions:
    return _FIRST if spec.read == "first" else _LAST_READ


def length_batches(lengths: Sequence[int], size: int) -> list[list[int]]:
    """Indices in batches of ``size`` with similar lengths (less padding: a name and a long passage never share one).

    Example:
        >>> length_batches([5, 90, 7, 80], 2)
        [[0, 2], [3, 1]]
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[s:s + size] for s in range(0, len(order), size)]


def item_vectors(oracle: Oracle, spec: UnseenSet, texts: Sequence[str], layer: int,
                 batch_size: int = 16) -> list[torch.Tensor]:
    """The injected vectors of each text: its first or last :data:`READ_TOKENS` token vectors at ``layer``."""
    out: list = [None] * len(texts)
    for idx in length_batches([len(t) for t in texts], batch_size):
        for i, v in zip(idx, oracle.activations([texts[i] for i in idx], layer, [_read_positions(spec)] * len(idx))):
            out[i] = v
    return out


def _auroc(labels: Sequence[int], scores: Sequence[float]) -> float:
    from probes.metrics import auroc

    return round(float(auroc(list(labels), list(scores))), 4)


def family_logprobs(logprobs_NV: torch.Tensor, tokenizer, words: Sequence[str]) -> torch.Tensor:
    """``(N, len(words))``: each word's first-token log-probability, its spellings summed (logsumexp)."""
    return torch.stack([logprobs_NV[:, concept_first_tokens(tokenizer, w)].logsumexp(-1) for w in words], dim=-1)


def oracle_scores(oracle: Oracle, spec: UnseenSet, vecs: Sequence[torch.Tensor], layer: int) -> dict[str, list[float]]:
    """Per item, the three forms' scores (higher: the concept holds) and the yes/no sensitivity. The choice is
    scored on the candidates' first tokens (each set's candidates are single words with distinct first tokens),
    against the control vectors, as a softmax over the candidates."""
    tok = oracle.lm.tokenizer

    def queries(question: str) -> list[Query]:
        return [Query(v, question, layer) for v in vecs]

    yn = yes_no_scores(oracle, queries(spec.yes_no))
    asked = resolved_queries(oracle, queries(spec.choice))
    real = family_logprobs(oracle.first_token_logprobs(asked), tok, spec.candidates)
    ctrl = torch.stack([family_logprobs(lp, tok, spec.candidates)
                        for lp in control_first_token_logprobs(oracle, asked)]).mean(0)
    choice = (real - ctrl).softmax(-1)[:, 0]
    open_lp = family_logprobs(oracle.first_token_logprobs(queries(spec.open)), tok, [spec.concept])[:, 0]
    return {"yes_no": [y.against_control for y in yn], "choice": choice.tolist(), "open": open_lp.tolist(),
            "sensitivity": [y.sensitivity for y in yn]}


@torch.no_grad()
def text_baseline_scores(lm, spec: UnseenSet, texts: Sequence[str], batch_size: int = 16,
                         instruction: str = YES_NO_PREFIX) -> dict[str, list[float]]:
    """The base model (no adapter) asked the same three questions with the plain text in its prompt, scored
    like the oracle's answers (first answer token; the yes/no question after the oracle's ``instruction``)."""
    from hooks.models import active_adapter

    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def next_logprobs(question: str) -> torch.Tensor:
        seqs = [tokenize_text(tok, render_user_turn(tok, f"{t}\n\n{question}")) for t in texts]
        rows: list = [None] * len(seqs)
        for idx in length_batches([len(q) for q in seqs], batch_size):
            tokens_BL, mask_BL = pad_batch([seqs[i] for i in idx], pad, side="left", device=lm.device)
            logits = lm.model(input_ids=tokens_BL, attention_mask=mask_BL, position_ids=position_ids_from_mask(mask_BL),
                              use_cache=False, logits_to_keep=1).logits[:, -1].float()
            for i, row in zip(idx, logits.log_softmax(-1).cpu()):
                rows[i] = row
        return torch.stack(rows)

    with active_adapter(lm.model, None):
        yes = yes_share(next_logprobs(as_taught(spec.yes_no, instruction)), tok)
        choice = family_logprobs(next_logprobs(spec.choice), tok, spec.candidates).softmax(-1)[:, 0]
        open_lp = family_logprobs(next_logprobs(spec.open), tok, [spec.concept])[:, 0]
    return {"yes_no": yes.tolist(), "choice": choice.tolist(), "open": open_lp.tolist()}


def probe_aurocs(oracle: Oracle, cfg: UnseenConfig, spec: UnseenSet, layer: int,
                 eval_vecs: Sequence[torch.Tensor], labels: Sequence[int]) -> dict[str, float]:
    """AUROC of a logistic probe on the mean vector, trained on 8, 64 and all labels of the set's probe half."""
    from probes import LinearProbe, ProbeConfig

    from oracle.evals.suite import PROBE_CS, stratified_indices

    rows = unseen_items(spec.name, min(cfg.probe_n, _probe_capacity(spec, cfg)), "probe", cfg.seed, cfg.data_dir)
    X = torch.stack([v.float().mean(0) for v in item_vectors(oracle, spec, [t for t, _ in rows], layer)]).numpy()
    y = np.asarray([lab for _, lab in rows])
    Xe = torch.stack([v.float().mean(0) for v in eval_vecs]).numpy()
    out = {}
    for name, size in [(str(s), s) for s in PROBE_SIZES if s <= len(y)] + [("all", len(y))]:
        idx = stratified_indices(y, size, cfg.seed)
        probe = LinearProbe.fit(X[idx], y[idx], ProbeConfig(Cs=PROBE_CS))
        out[name] = _auroc(labels, probe.decision_function(Xe).tolist())
    out["n_all"] = len(y)
    return out


def _probe_capacity(spec: UnseenSet, cfg: UnseenConfig) -> int:
    from oracle.data.files import resolve_data_dir
    from oracle.data.unseen_sets import unseen_rows, unseen_split

    rows = [r for r in unseen_rows(str(resolve_data_dir(cfg.data_dir)), spec.name) if unseen_split(r[0]) == "probe"]
    return 2 * min(sum(1 for r in rows if r[1] == y) for y in (0, 1))


def run_unseen(oracle: Oracle, cfg: UnseenConfig, progress: bool = False) -> dict:
    """Score every set of ``cfg`` for the untrained oracle, ``oracle``, the probes and the text baseline."""
    layer = cfg.layer if cfg.layer is not None else oracle.card.source_layers[len(oracle.card.source_layers) // 2]
    untrained = oracle.baseline()
    sets = check_unseen_names(cfg.sets)
    bar = progress_bar(len(sets), "unseen sets", progress)
    results: dict = {"config": asdict(cfg), "layer": layer, "sets": {}}
    for spec in sets:
        rows = unseen_items(spec.name, cfg.n, "eval", cfg.seed, cfg.data_dir)
        texts, labels = [t for t, _ in rows], [lab for _, lab in rows]
        vecs = item_vectors(untrained, spec, texts, layer)
        r: dict = {"concept": spec.concept, "n": len(rows), "questions": {f: getattr(spec, f) for f in FORMS},
                   "candidates": list(spec.candidates)}
        for name, o in (("untrained", untrained), ("trained", oracle)):
            scores = oracle_scores(o, spec, vecs, layer)
            r[name] = {f: _auroc(labels, scores[f]) for f in FORMS}
            r[name]["sensitivity"] = round(float(np.mean(scores["sensitivity"])), 4)
        r["probe"] = probe_aurocs(untrained, cfg, spec, layer, vecs, labels)
        if cfg.text_baseline:
            tb = text_baseline_scores(oracle.lm, spec, texts, instruction=yes_no_instruction(oracle.card))
            r["text"] = {f: _auroc(labels, tb[f]) for f in FORMS}
        results["sets"][spec.name] = r
        log.info("unseen %s: %s", spec.name, {k: r[k] for k in ("untrained", "trained", "probe")})
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    results["summary"] = summarize(results)
    return results


def summarize(results: dict) -> dict:
    """The issue's targets, counted: sets where yes/no gains >= 0.15 over untrained, beats the 8-label probe;
    sets where choice and open reach the 8-label probe."""
    sets = results["sets"].values()
    return {
        "n_sets": len(results["sets"]),
        "yes_no_gain_0.15": sum(s["trained"]["yes_no"] >= s["untrained"]["yes_no"] + 0.15 for s in sets),
        "yes_no_at_probe8": sum(s["trained"]["yes_no"] >= s["probe"]["8"] for s in sets),
        "choice_at_probe8": sum(s["trained"]["choice"] >= s["probe"]["8"] for s in sets),
        "open_at_probe8": sum(s["trained"]["open"] >= s["probe"]["8"] for s in sets),
    }


def unseen_table(results: dict) -> list[str]:
    """The Markdown table: one row per set and form; AUROC for every column."""
    from oracle.evals.suite import score_cell as cell

    lines = ["| set | form | untrained | trained | probe 8 | probe 64 | probe all | text baseline |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in results["sets"].items():
        p = r["probe"]
        for form in FORMS:
            lines.append(f"| {name} | {form.replace('_', '/')} | {cell(r['untrained'][form])} "
                         f"| **{cell(r['trained'][form])}** | {cell(p.get('8'))} | {cell(p.get('64'))} "
                         f"| {cell(p.get('all'))} | {cell(r.get('text', {}).get(form))} |")
    return lines


def write_unseen_report(results: dict, out_dir: Path, command: str = "") -> tuple[Path, Path]:
    """``unseen.md`` (table and questions), ``unseen.json`` and ``unseen.png`` in ``out_dir``, atomically."""
    from oracle.evals.suite import write_report

    s = results["summary"]
    md = ["# Unseen questions", "",
          f"Layer {results['layer']}, {results['config']['n']} label-balanced items per set, never trained on (concepts and "
          "dataset held out by name). AUROC; probes: logistic probes on the mean of the same vectors with 8, 64 and all "
          "labels of the set's other half; text baseline: the base model asked the same question with the plain text.", ""]
    md += unseen_table(results)
    md += ["", f"Yes/no: trained >= untrained + 0.15 on {s['yes_no_gain_0.15']} of {s['n_sets']} sets, at or above the "
           f"8-label probe on {s['yes_no_at_probe8']}; choice at or above it on {s['choice_at_probe8']}, open on "
           f"{s['open_at_probe8']}.", "", "Questions:", ""]
    for name, r in results["sets"].items():
        md.append(f"- `{name}`: yes/no \"{r['questions']['yes_no']}\"; choice \"{r['questions']['choice']}\" among "
                  f"{', '.join(r['candidates'])}; open \"{r['questions']['open']}\"")
    return write_report(out_dir, "unseen", md, results, plot_unseen, command)


def plot_unseen(results: dict, path: Path) -> None:
    """One panel per form: AUROC per set for untrained, trained, probe 8, probe all and the text baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["sets"])
    series = [("untrained", lambda r, f: r["untrained"][f]), ("trained", lambda r, f: r["trained"][f]),
              ("probe 8", lambda r, f: r["probe"].get("8")), ("probe all", lambda r, f: r["probe"].get("all")),
              ("text baseline", lambda r, f: r.get("text", {}).get(f))]
    fig, axes = plt.subplots(1, len(FORMS), figsize=(5 * len(FORMS), 4), sharey=True)
    width = 0.8 / len(series)
    for ax, form in zip(axes, FORMS):
        for j, (label, get) in enumerate(series):
            xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(names))]
            ys = [get(results["sets"][n], form) for n in names]
            ax.bar([x for x, y in zip(xs, ys) if y is not None], [y for y in ys if y is not None], width=width,
                   label=label)
        ax.axhline(0.5, color="black", lw=1, ls="--")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
        ax.set_title(form.replace("_", "/"))
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("AUROC on unseen items")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.suptitle("questions never taught, concepts never trained on (dashed: chance)")
    fig.tight_layout()
    save_figure(fig, path)
