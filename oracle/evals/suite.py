"""The reading-skills suite: can the oracle read each skill of :mod:`oracle.training.tasks.reading` on texts it never
trained on, against the untrained oracle and a logistic probe on the very same vectors?

One run scores every skill three ways: the untrained oracle (same card, no adapter), the trained oracle,
and, for the class skills, a logistic probe (:class:`probes.LinearProbe`, one-vs-rest for tense) trained
on 8 ... 512 labels from the skill's training split (the last:50 rows, several vectors, give the probe their mean).
``next_word`` also reports the logit lens on the same vector. Every item comes from the eval split (no
document shared with training, by hash) and rotates through all paraphrases; the column ``held-out q``
is the trained oracle's accuracy on the paraphrase never used in training.

Example:
    >>> res = run_suite(Oracle.load("checkpoints/oracle-smollm2-135m"), SuiteConfig(n=100))    # doctest: +SKIP
    >>> res["rows"]["word_at"]["trained"]["accuracy"]                                          # doctest: +SKIP
    0.93
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from hooks.atomic import atomic_write_text, save_figure
from hooks.errors import InputError
from hooks.progress import progress_bar

from oracle.core.api import Oracle, Query
from oracle.evals.heldout import example_vectors
from oracle.data.files import resolve_data_dir
from oracle.data.splits import make_rng
from oracle.training.tasks.base import SEED_NAMES, OracleExample
from oracle.training.tasks.reading import SKILLS, build_reading, check_skills, sample_item

log = logging.getLogger(__name__)

PROBE_SIZES = (8, 16, 32, 64, 128, 256, 512)
PROBE_CS = (0.01, 0.1, 1.0, 10.0)   # C searched by validation, as probes.LinearProbe does (four values keep it quick)


@dataclass
class SuiteConfig:
    """One run of the suite (saved beside its report).

    Example:
        >>> SuiteConfig(n=10, skills=["word_at"]).rows()
        [('word_at', 'word_at', 'one')]
    """

    n: int = 100                          # eval items per row
    probe_n: int = 512                    # most labels a probe gets
    skills: Optional[list] = None         # default: every skill
    layer: Optional[int] = None           # default: the oracle's middle source layer
    seed: int = 0
    data_dir: Optional[str] = None

    def __post_init__(self) -> None:
        if self.n < 2 or self.probe_n < 8:
            raise InputError(f"the suite needs --suite-n >= 2 items per skill and --probe-n >= 8 labels, not {self.n} "
                             f"and {self.probe_n}")
        if self.skills is not None:
            check_skills(self.skills)

    def rows(self) -> list[tuple[str, str, str]]:
        """``(row name, skill, position)`` of every row of the table."""
        out = []
        for name in self.skills or list(SKILLS):
            for pos in SKILLS[name].positions:
                out.append((name if len(SKILLS[name].positions) == 1 else f"{name} ({pos})", name, pos))
        return out


def suite_items(lm, cfg: SuiteConfig, layer: int) -> dict[str, list[OracleExample]]:
    """The eval items of every row, all paraphrases in turn, read at ``layer``."""
    return {row: build_reading(lm.tokenizer, lm.n_layers, cfg.n, cfg.seed, cfg.data_dir, "eval", skills={skill: 1.0},
                               position=pos, layer=layer, questions="all")
            for row, skill, pos in cfg.rows()}


def _norm(s: str) -> str:
    return s.strip().lower()


def score_oracle(oracle: Oracle, items: Sequence[OracleExample], vecs: Sequence[torch.Tensor]) -> dict:
    """Accuracy (and AUROC for choice rows) of one oracle on one row; ``held_out_accuracy`` on the paraphrase
    never trained on."""
    queries = [Query(v, e.question, e.layer) for v, e in zip(vecs, items)]
    tok = oracle.lm.tokenizer
    out: dict = {"n": len(items)}
    if items[0].meta["scoring"] == "first_token":
        pred = oracle.first_token_logprobs(queries).argmax(-1).tolist()
        gold = [tok.encode(e.answer, add_special_tokens=False)[0] for e in items]
        right = [_norm(tok.decode([p])) == _norm(tok.decode([g])) for p, g in zip(pred, gold)]
    else:
        scores = oracle.answer_logprobs(queries, [e.meta["candidates"] for e in items])
        labels = [e.meta["label"] for e in items]
        right = [int(np.argmax(s)) == y for s, y in zip(scores, labels)]
        out["auroc"] = _auroc(labels, np.asarray(scores))
    out["accuracy"] = float(np.mean(right))
    held = [r for r, e in zip(right, items) if e.meta["held_out_question"]]
    out["held_out_accuracy"] = float(np.mean(held)) if held else float("nan")
    return out


def _auroc(labels: Sequence[int], scores_NC: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels)
    if len(set(y.tolist())) < 2:
        return float("nan")
    if scores_NC.shape[1] == 2:
        return float(roc_auc_score(y, scores_NC[:, 1] - scores_NC[:, 0]))
    p = torch.as_tensor(scores_NC).softmax(-1).numpy()
    if len(set(y.tolist())) < p.shape[1]:
        return float("nan")
    return float(roc_auc_score(y, p, multi_class="ovr"))


def chance(items: Sequence[OracleExample]) -> float:
    """What guessing gets: 1/#candidates for choice rows, the commonest answer's share for open rows."""
    if items[0].meta["scoring"] == "choice":
        return float(np.mean([1 / len(e.meta["candidates"]) for e in items]))
    answers = [_norm(e.answer) for e in items]
    return max(answers.count(a) for a in set(answers)) / len(answers)


def _features(vecs: Sequence[torch.Tensor]) -> np.ndarray:
    return torch.stack([v.float().mean(0) for v in vecs]).numpy()


def probe_scores(oracle: Oracle, cfg: SuiteConfig, skill: str, pos: str, layer: int,
                 eval_vecs: Sequence[torch.Tensor], eval_items: Sequence[OracleExample]) -> dict:
    """A logistic probe per label budget of :data:`PROBE_SIZES` (up to ``cfg.probe_n``), trained on the skill's
    training split at the same layer and positions, scored on the suite's own vectors."""
    from probes import LinearProbe, ProbeConfig

    config = ProbeConfig(Cs=PROBE_CS)
    lm = oracle.lm
    root = str(resolve_data_dir(cfg.data_dir))
    rng = make_rng(cfg.seed, f"suite-probe:{skill}:{SEED_NAMES.get(pos, pos)}")
    train = []
    for _ in range(cfg.probe_n):
        ids, positions, answer, _, _, _ = sample_item(rng, lm.tokenizer, skill, "train", root, pos)
        train.append(OracleExample("reading", list(ids), list(positions), layer, "?", answer, skill))
    X = _features(example_vectors(oracle.baseline(), train))
    classes = list(SKILLS[skill].classes)
    y = np.asarray([classes.index(e.answer) for e in train])
    Xe, ye = _features(eval_vecs), np.asarray([e.meta["label"] for e in eval_items])
    out = {}
    for size in [s for s in PROBE_SIZES if s <= cfg.probe_n] or [cfg.probe_n]:
        idx = stratified_indices(y, size, cfg.seed)
        if len(set(y[idx].tolist())) < 2:
            continue
        scores = np.stack([LinearProbe.fit(X[idx], (y[idx] == c).astype(int), config).decision_function(Xe)
                           for c in range(len(classes))], axis=1) if len(classes) > 2 else None
        if scores is None:
            d = LinearProbe.fit(X[idx], y[idx], config).decision_function(Xe)
            scores = np.stack([-d / 2, d / 2], axis=1)
        out[size] = {"accuracy": float((scores.argmax(1) == ye).mean()), "auroc": _auroc(ye.tolist(), scores)}
    return out


def stratified_indices(y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` row indices with every class as evenly represented as the data allow."""
    rng = np.random.default_rng(seed)
    groups = [rng.permutation(np.flatnonzero(y == c)).tolist() for c in sorted(set(y.tolist()))]
    picked: list[int] = []
    while len(picked) < min(size, len(y)):
        for g in groups:
            if g and len(picked) < size:
                picked.append(g.pop())
    return np.asarray(sorted(picked))


def labels_to_match(probe: dict, accuracy: float) -> str:
    """The fewest probe labels whose accuracy reaches ``accuracy`` (``">N"`` when none does).

    Example:
        >>> labels_to_match({8: {"accuracy": 0.6}, 64: {"accuracy": 0.8}}, 0.7)
        '64'
    """
    for size in sorted(probe):
        if probe[size]["accuracy"] >= accuracy:
            return str(size)
    return f">{max(probe)}" if probe else "-"


def lens_scores(oracle: Oracle, items: Sequence[OracleExample], vecs: Sequence[torch.Tensor]) -> float:
    """Logit-lens accuracy at naming the next token's word from the same vectors (next_word rows)."""
    from hooks.logit_lens import logit_lens

    tok = oracle.lm.tokenizer
    pred = logit_lens(oracle.lm, torch.cat([v[-1:] for v in vecs]), None).argmax(-1).tolist()
    gold = [e.meta["next_token"] for e in items]
    return float(np.mean([g is not None and _norm(tok.decode([p])) == _norm(tok.decode([g]))
                          for p, g in zip(pred, gold)]))


def run_suite(oracle: Oracle, cfg: SuiteConfig, progress: bool = False, probes: bool = True) -> dict:
    """Score every row of ``cfg`` for the untrained oracle, ``oracle`` and the probes; returns the results
    dict that :func:`write_suite_report` renders."""
    layer = cfg.layer if cfg.layer is not None else oracle.card.source_layers[len(oracle.card.source_layers) // 2]
    untrained = oracle.baseline()
    items = suite_items(oracle.lm, cfg, layer)
    rows: dict = {}
    bar = progress_bar(len(items), "reading suite", progress)
    for (row, skill, pos), exs in zip(cfg.rows(), items.values()):
        vecs = example_vectors(untrained, exs)
        r = {"skill": skill, "position": pos, "chance": chance(exs),
             "untrained": score_oracle(untrained, exs, vecs)}
        if oracle.trained:
            r["trained"] = score_oracle(oracle, exs, vecs)
        if probes and SKILLS[skill].classes:
            r["probe"] = probe_scores(oracle, cfg, skill, pos, layer, vecs, exs)
            if "trained" in r:
                r["labels_to_match"] = labels_to_match(r["probe"], r["trained"]["accuracy"])
        if skill == "next_word":
            r["logit_lens"] = lens_scores(oracle, exs, vecs)
        rows[row] = r
        log.info("suite %s: %s", row, {k: v for k, v in r.items() if k != "probe"})
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    return {"config": asdict(cfg), "layer": layer, "rows": rows}


def suite_eval_fn(n: int = 24, skills: Optional[Sequence[str]] = None, data_dir=None):
    """A learning-curve check for ``ao train``: the trained oracle's accuracy per suite row on ``n`` items
    (items and vectors built once), plus their mean as ``reading_mean``."""
    cfg = SuiteConfig(n=n, skills=list(skills) if skills else None, data_dir=data_dir, seed=1)
    cache: dict = {}

    def fn(oracle: Oracle) -> dict:
        if not cache:
            layer = oracle.card.source_layers[len(oracle.card.source_layers) // 2]
            for row, exs in suite_items(oracle.lm, cfg, layer).items():
                cache[row] = (exs, example_vectors(oracle.baseline(), exs))
        acc = {row: round(score_oracle(oracle, exs, vecs)["accuracy"], 4) for row, (exs, vecs) in cache.items()}
        return {"reading_mean": round(float(np.mean(list(acc.values()))), 4), "skills": acc}

    return fn


# ---------------------------------------------------------------- report

def score_cell(x: Optional[float]) -> str:
    """A score as a table cell: two decimals, ``-`` for a missing or NaN one.

    Example:
        >>> score_cell(0.8125), score_cell(None), score_cell(float("nan"))
        ('0.81', '-', '-')
    """
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.2f}"


def suite_table(results: dict) -> list[str]:
    """The Markdown table of a suite run."""
    lines = ["| skill | chance | untrained | trained | held-out q | probe 8 | probe 64 | probe all | labels to match |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row, r in results["rows"].items():
        t = r.get("trained", {})
        p = r.get("probe", {})
        p_all = p[max(p, key=int)] if p else None
        cell = lambda d, k="accuracy": score_cell(d.get(k)) if d else "-"  # noqa: E731
        extra = f" (lens {score_cell(r['logit_lens'])})" if "logit_lens" in r else ""
        lines.append(f"| {row} | {score_cell(r['chance'])} | {cell(r['untrained'])} | {cell(t)}{extra} | "
                     f"{cell(t, 'held_out_accuracy')} | {cell(p.get(8) or p.get('8'))} | "
                     f"{cell(p.get(64) or p.get('64'))} | {cell(p_all)} | {r.get('labels_to_match', '-')} |")
    return lines


def write_suite_report(results: dict, out_dir: Path, command: str = "") -> tuple[Path, Path]:
    """``suite.md`` (table), ``suite.json`` (every figure) and ``suite.png`` (bars) in ``out_dir``, atomically."""
    md = ["# Reading-skills suite", "",
          f"Layer {results['layer']}, {results['config']['n']} unseen items per row (eval split, all paraphrases). "
          "Accuracy; probe columns: a logistic probe on the same vectors (mean vector for the last:50 rows) "
          "with that many labels; `held-out q`: the trained oracle on the paraphrase it never trained on.", ""]
    md += suite_table(results)
    return write_report(out_dir, "suite", md, results, plot_suite, command)


def write_report(out_dir: Path, stem: str, md: list[str], results: dict, plot, command: str = "") -> tuple[Path, Path]:
    """``<stem>.md`` (``md`` and the command), ``<stem>.json`` (``results``) and ``<stem>.png`` (``plot``) in
    ``out_dir``, each written atomically; returns the Markdown and the figure paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if command:
        md = md + ["", f"Command: `{command}`"]
    atomic_write_text(out_dir / f"{stem}.md", "\n".join(md) + "\n")
    atomic_write_text(out_dir / f"{stem}.json", json.dumps(results, indent=1, default=str))
    png = out_dir / f"{stem}.png"
    plot(results, png)
    return out_dir / f"{stem}.md", png


def plot_suite(results: dict, path: Path) -> None:
    """Grouped bars per row: chance, untrained, trained, probe with 64 and with all labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(results["rows"].items())
    series = [("untrained", lambda r: r["untrained"]["accuracy"]),
              ("trained", lambda r: r.get("trained", {}).get("accuracy")),
              ("probe 64", lambda r: _probe_at(r, 64)),
              ("probe all", lambda r: _probe_at(r, None))]
    fig, ax = plt.subplots(figsize=(max(8, 0.75 * len(rows)), 4.5))
    width = 0.8 / len(series)
    for j, (label, get) in enumerate(series):
        xs, ys = [], []
        for i, (_, r) in enumerate(rows):
            v = get(r)
            if v is not None:
                xs.append(i + (j - (len(series) - 1) / 2) * width)
                ys.append(v)
        ax.bar(xs, ys, width=width, label=label)
    for i, (_, r) in enumerate(rows):
        ax.plot([i - 0.4, i + 0.4], [r["chance"]] * 2, color="black", lw=1, ls="--")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([name for name, _ in rows], rotation=40, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy on unseen texts")
    ax.set_title("reading-skills suite (dashed: chance)")
    ax.legend(fontsize=8, ncol=4, loc="upper right")
    fig.tight_layout()
    save_figure(fig, path)


def _probe_at(r: dict, size: Optional[int]) -> Optional[float]:
    p = {int(k): v for k, v in r.get("probe", {}).items()}
    if not p:
        return None
    return p[max(p) if size is None else size]["accuracy"] if (size is None or size in p) else None


def plot_learning_curves(log_rows: list, path: Path) -> bool:
    """Accuracy per suite row against training step, from the in-training checks of ``ao train``
    (``train_log.jsonl`` rows with ``eval.skills``); step 0 is the untrained oracle. False when the log
    holds no such checks (nothing is written)."""
    pts = [(r["step"], r["eval"]["skills"]) for r in log_rows
           if isinstance(r.get("eval"), dict) and isinstance(r["eval"].get("skills"), dict)]
    if not pts:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(pts[0][1])
    fig, ax = plt.subplots(figsize=(8, 4.8))
    cmap = plt.get_cmap("tab20")
    for i, name in enumerate(names):
        xs = [s for s, acc in pts if name in acc]
        ys = [acc[name] for _, acc in pts if name in acc]
        ax.plot(xs, ys, "o-" if SKILLS[name.split(" ")[0]].trained else "x--", color=cmap(i % 20), label=name, ms=3)
    ax.set_xlabel("training step")
    ax.set_ylabel("accuracy on unseen texts")
    ax.set_ylim(0, 1)
    ax.set_title("reading skills during training (dashed: never trained)")
    ax.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    save_figure(fig, path)
    return True
