"""Held-out evaluation of an oracle: classification sets it never trained on (singular_plural and the
engels files), context prediction and system-prompt QA on their eval splits; trained vs untrained vs chance."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Optional, Sequence

import torch

from hooks.atomic import save_figure
from hooks.progress import progress_bar

from oracle.core.api import Oracle, Query
from oracle.core.reference import OracleSpec, parse_oracle_ref
from oracle.core.batching import target_vectors
from oracle.data.labelled import heldout_dataset_names
from oracle.training.tasks.base import LAST_MAX, OracleExample
from oracle.training.tasks.classification import build_heldout_classification

log = logging.getLogger(__name__)


def example_vectors(oracle: Oracle, examples: Sequence[OracleExample], batch_size: int = 32) -> list[torch.Tensor]:
    """Each example's target activations (its positions at its layer), read with the target adapter if one is set."""
    out: list[torch.Tensor] = []
    for s in range(0, len(examples), batch_size):
        chunk = examples[s:s + batch_size]
        out += target_vectors(oracle.lm, [e.context_ids for e in chunk], [e.positions for e in chunk],
                              [e.layer for e in chunk], adapter="target" if oracle.has_target else None)
    return out


def p_yes_scores(p_yes: Sequence[float], is_yes: Sequence[bool]) -> dict:
    """Accuracy of thresholding P(Yes) at 0.5, AUROC of P(Yes) (NaN with one class), and mean P(Yes).
    Accuracy near 0.5 with AUROC well above it means reading without calibration.

    Example:
        >>> p_yes_scores([0.9, 0.4, 0.2], [True, True, False])["accuracy"]
        0.6666666666666666
    """
    from probes.metrics import accuracy, auroc

    auc = auroc(list(is_yes), list(p_yes)) if len(set(is_yes)) == 2 else float("nan")
    return {"accuracy": accuracy([bool(y) for y in is_yes], [pi >= 0.5 for pi in p_yes]), "auroc": auc,
            "mean_p_yes": sum(p_yes) / max(1, len(p_yes)), "n": len(p_yes)}


def yes_probabilities(oracle: Oracle, examples: Sequence[OracleExample], batch_size: int = 32) -> list[float]:
    """The oracle's P(Yes) for each example's question about the example's own activations."""
    vecs = example_vectors(oracle, examples, batch_size)
    return oracle.yes_probability_batch([Query(v, e.question, e.layer) for v, e in zip(vecs, examples)],
                                        batch_size=batch_size)


def scores_by_asked(p_yes: Sequence[float], examples: Sequence[OracleExample]) -> dict:
    """:func:`p_yes_scores` of all the examples, plus ``by_asked``: the same per class the question names
    (``meta["asked"]``).

    Example:
        >>> exs = [OracleExample("classification", [1], [0], 0, "q", a, meta={"asked": k})
        ...        for a, k in [("Yes", "x"), ("No", "x"), ("Yes", "not_x"), ("No", "not_x")]]
        >>> sc = scores_by_asked([0.9, 0.1, 0.4, 0.6], exs)
        >>> sc["accuracy"], sc["by_asked"]["x"]["auroc"], sc["by_asked"]["not_x"]["auroc"]
        (0.5, 1.0, 0.0)
    """
    is_yes = [e.answer == "Yes" for e in examples]
    scores = p_yes_scores(p_yes, is_yes)
    scores["by_asked"] = {a: p_yes_scores([pi for pi, e in zip(p_yes, examples) if e.meta["asked"] == a],
                                          [y for y, e in zip(is_yes, examples) if e.meta["asked"] == a])
                          for a in sorted({e.meta["asked"] for e in examples})}
    return scores


def yes_no_scores(oracle: Oracle, examples: Sequence[OracleExample], batch_size: int = 32) -> dict:
    """``p_yes_scores`` of the oracle's answers to the examples' yes/no questions."""
    return p_yes_scores(yes_probabilities(oracle, examples, batch_size), [e.answer == "Yes" for e in examples])


def yes_no_accuracy(oracle: Oracle, examples: Sequence[OracleExample], batch_size: int = 32) -> float:
    """Accuracy of thresholding P(Yes) at 0.5 against the Yes/No answers."""
    return yes_no_scores(oracle, examples, batch_size)["accuracy"]


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", "", s.lower())).strip()


def generation_scores(oracle: Oracle, examples: Sequence[OracleExample], batch_size: int = 32,
                      max_new_tokens: int = 24) -> dict:
    """Exact match and first-word match of generated answers."""
    vecs = example_vectors(oracle, examples, batch_size)
    answers = oracle.ask_batch([Query(v, e.question, e.layer) for v, e in zip(vecs, examples)],
                               max_new_tokens=max_new_tokens, batch_size=batch_size)
    exact = sum(_norm(a) == _norm(e.answer) for a, e in zip(answers, examples))
    first = sum(bool(_norm(a)) and bool(_norm(e.answer)) and _norm(a).split()[0] == _norm(e.answer).split()[0]
                for a, e in zip(answers, examples))
    n = max(1, len(examples))
    return {"exact_match": exact / n, "first_word_match": first / n, "n": len(examples),
            "samples": [{"q": e.question, "gold": e.answer, "pred": a} for a, e in list(zip(answers, examples))[:5]]}


def evaluate_heldout_scores(oracle: Oracle, n: int = 200, positions: Sequence[str] = ("last", LAST_MAX),
                            datasets: Optional[Sequence[str]] = None, seed: int = 0,
                            data_dir=None, progress: bool = False) -> dict:
    """``{dataset: {position: scores}}`` on the held-out classification sets: :func:`p_yes_scores` of all the
    examples, plus ``by_asked``: the same scores split by the class the question names. Within one question the
    answer is Yes exactly for the texts of that class (for its negation, of the other), so each split's AUROC
    says whether P(Yes) follows the text, apart from how the oracle treats the question's wording.

    Example:
        >>> res = evaluate_heldout_scores(oracle, n=8, positions=["last"], datasets=["singular_plural"])  # doctest: +SKIP
        >>> sorted(res["singular_plural"]["last"]["by_asked"])                                     # doctest: +SKIP
        ['multiple', 'single']
    """
    names = list(datasets) if datasets else heldout_dataset_names(data_dir)
    out: dict = {}
    items = [(d, p) for d in names for p in positions]
    bar = progress_bar(len(items), f"held-out ({'trained' if oracle.trained else 'untrained'})", progress)
    for d, p in items:
        exs = build_heldout_classification(oracle.lm.tokenizer, oracle.lm.n_layers, d, n=n, seed=seed,
                                           data_dir=data_dir, position=p)
        out.setdefault(d, {})[p] = scores_by_asked(yes_probabilities(oracle, exs), exs)
        out[d][p]["choice"] = choice_scores(oracle, exs)
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    return out


def choice_form(dataset: str, classes: Sequence[str]) -> tuple[str, list[str]]:
    """The open question and the two candidate answers that ask a held-out set's yes/no question as a choice,
    in the order of the set's class names (``["athlete", "not_athlete"]`` -> ``["an athlete", "not an athlete"]``).

    Example:
        >>> choice_form("engels/60_wikidata_occupation_isathlete", ["athlete", "not_athlete"])
        ('Is this person an athlete or not?', ['an athlete', 'not an athlete'])
        >>> choice_form("singular_plural", ["single", "multiple"])[1]
        ['singular', 'plural']
    """
    if dataset == "singular_plural":
        return "Is the subject of this sentence singular or plural?", ["singular", "plural"]
    pos = classes[0].replace("_", " ")
    if "wikidata" in dataset:
        noun = ("an " if pos[:1] in "aeiou" else "a ") + pos
        return f"Is this person {noun} or not?", [noun, f"not {noun}"]
    if "news_class" in dataset:
        return f"Is this article about {pos} or not?", [pos, f"not {pos}"]
    return f"Is this text about {pos} or not?", [pos, classes[1].replace("_", " ")]


def choice_scores(oracle: Oracle, examples: Sequence[OracleExample], batch_size: int = 32) -> dict:
    """The held-out examples' texts asked as a choice (:func:`choice_form`) between the two class answers, scored by
    :meth:`Oracle.answer_logprobs`: accuracy of the higher-scoring answer, AUROC of the margin. One question per
    text (the yes/no examples ask each text once or twice; duplicates are dropped)."""
    from probes.metrics import accuracy, auroc

    seen, exs = set(), []
    for e in examples:
        if e.meta["text"] not in seen:
            seen.add(e.meta["text"])
            exs.append(e)
    classes = sorted({e.meta["class"] for e in exs} | {e.meta["asked"] for e in exs},
                     key=lambda c: (c.startswith("not_"), c == "multiple"))
    question, cands = choice_form(exs[0].dataset, classes)
    vecs = example_vectors(oracle, exs, batch_size)
    scores = oracle.answer_logprobs([Query(v, question, e.layer) for v, e in zip(vecs, exs)], [cands] * len(exs),
                                    batch_size=batch_size)
    y = [classes.index(e.meta["class"]) for e in exs]
    margin = [s[1] - s[0] for s in scores]
    return {"accuracy": accuracy(y, [int(m > 0) for m in margin]),
            "auroc": auroc(y, margin) if len(set(y)) == 2 else float("nan"), "n": len(exs),
            "question": question, "candidates": cands}


def heldout_accuracies(scores: dict) -> dict:
    """``{dataset: {position: accuracy}}`` from :func:`evaluate_heldout_scores`."""
    return {d: {p: sc["accuracy"] for p, sc in v.items()} for d, v in scores.items()}


def evaluate_families(oracle: Oracle, n: int = 100, seed: int = 0, data_dir=None) -> dict:
    """Context prediction (generation), system-prompt QA (yes/no + generation), yes/no classification per
    training group (last token) and topic/mention questions (WikiText-2 test articles), all on the eval splits:
    did the oracle learn its own training tasks?"""
    from oracle.training.tasks.context_prediction import build_context_prediction
    from oracle.training.tasks.latentqa import build_latentqa
    from oracle.training.tasks.topics import build_topics

    tok, nl = oracle.lm.tokenizer, oracle.lm.n_layers
    cp = build_context_prediction(tok, nl, n, seed, data_dir=data_dir, split="eval")
    lqa = build_latentqa(tok, nl, n, seed, data_dir=data_dir, split="eval")
    lqa_yn = [e for e in lqa if e.answer in ("Yes", "No")]
    lqa_gen = [e for e in lqa if e.answer not in ("Yes", "No")]
    res = {"context_prediction": generation_scores(oracle, cp)}
    if lqa_yn:
        res["latentqa_yes_no_accuracy"] = yes_no_accuracy(oracle, lqa_yn)
    if lqa_gen:
        res["latentqa_generation"] = generation_scores(oracle, lqa_gen)
    res["classification_eval_split"] = evaluate_training_groups(oracle, n, seed, data_dir)
    topics = [e for e in build_topics(tok, nl, n, seed, data_dir=data_dir, split="eval") if not e.meta["open"]]
    by_kind = {k: [e for e in topics if e.meta["kind"] == k] for k in ("article", "mention")}
    res["topic_eval_split"] = {k: yes_no_scores(oracle, exs) for k, exs in by_kind.items() if exs}
    return res


def evaluate_training_groups(oracle: Oracle, n: int = 100, seed: int = 0, data_dir=None) -> dict:
    """``{group: yes_no_scores}`` for each training classification group's eval split (last token)."""
    from oracle.training.tasks.classification import TRAIN_GROUPS, build_classification

    tok, nl = oracle.lm.tokenizer, oracle.lm.n_layers
    return {g: yes_no_scores(oracle, build_classification(tok, nl, n, seed, data_dir, "eval", datasets=[g],
                                                          position="last"))
            for g in TRAIN_GROUPS}


def heldout_mean(results: dict, position: str) -> float:
    vals = [v[position] for v in results.values() if position in v]
    return sum(vals) / max(1, len(vals))


def _by_question_table(trained_scores: dict, untrained_scores: dict, positions: Sequence[str]) -> list[str]:
    lines = ["| held-out set | position | question names | trained AUROC / accuracy | untrained AUROC / accuracy |",
             "|---|---|---|---|---|"]
    for d, per_pos in trained_scores.items():
        for p in positions:
            for asked, sc in per_pos[p]["by_asked"].items():
                su = untrained_scores.get(d, {}).get(p, {}).get("by_asked", {}).get(asked, {})
                lines.append(f"| {d} | {p} | {asked} | {sc['auroc']:.3f} / {sc['accuracy']:.3f} | "
                             f"{su.get('auroc', float('nan')):.3f} / {su.get('accuracy', float('nan')):.3f} |")
    return lines


def write_report(trained: dict, untrained: dict, out_dir: Path, families: Optional[dict] = None,
                 families_untrained: Optional[dict] = None, command: str = "",
                 trained_scores: Optional[dict] = None, untrained_scores: Optional[dict] = None,
                 ) -> tuple[Path, Optional[Path]]:
    """Markdown table + PNG bar chart: trained vs untrained vs chance, per held-out set and position
    (no chart when ``trained`` is empty, i.e. the held-out part was skipped). With the
    :func:`evaluate_heldout_scores` results, a second table gives AUROC and accuracy per question class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    positions = sorted({p for v in trained.values() for p in v}, key=lambda p: (p != "last", p))
    lines = ["| held-out set | position | trained | untrained | chance |", "|---|---|---|---|---|"]
    for d in trained:
        for p in positions:
            lines.append(f"| {d} | {p} | {trained[d][p]:.3f} | {untrained[d][p]:.3f} | 0.500 |")
    for p in positions:
        lines.append(f"| **mean** | {p} | **{heldout_mean(trained, p):.3f}** | {heldout_mean(untrained, p):.3f} | 0.500 |")
    md = ["# Oracle evaluation on held-out data", ""]
    if command:
        md += [f"Made by: `{command}`", ""]
    if trained:
        md += ["## Held-out classification (P(Yes) >= 0.5 vs the label; balanced examples)", ""] + lines
    if trained and trained_scores:
        md += ["", "## Held-out classification per question class", "",
               "Within one question class the answer is Yes exactly for the texts of that class (for a negated "
               "class such as `not_politics`, for the other texts): AUROC above 0.5 means P(Yes) follows the text "
               "the right way round for that wording. An oracle that reads the feature but ignores \"not\" scores "
               "above 0.5 on one class and below on the other, and its overall accuracy stays at chance.", ""]
        md += _by_question_table(trained_scores, untrained_scores or {}, positions)
    if trained and trained_scores:
        md += ["", "## Held-out classification asked as a choice", "",
               "The same texts asked openly, scored by the summed log-probability of each class's full answer "
               "(e.g. \"an athlete\" vs \"not an athlete\"): accuracy / AUROC of the margin.", "",
               "| held-out set | position | candidates | trained | untrained |", "|---|---|---|---|---|"]
        for d, per_pos in trained_scores.items():
            for p in positions:
                c = per_pos[p].get("choice")
                if not c:
                    continue
                cu = (untrained_scores or {}).get(d, {}).get(p, {}).get("choice", {})
                md.append(f"| {d} | {p} | {' / '.join(c['candidates'])} | {c['accuracy']:.3f} / {c['auroc']:.3f} | "
                          f"{cu.get('accuracy', float('nan')):.3f} / {cu.get('auroc', float('nan')):.3f} |")
    if families:
        md += ["", "## Other task families (eval splits)", "", "| metric | trained | untrained |", "|---|---|---|"]
        cp, cpu = families["context_prediction"], (families_untrained or {}).get("context_prediction", {})
        md.append(f"| context prediction, exact match | {cp['exact_match']:.3f} | {cpu.get('exact_match', float('nan')):.3f} |")
        md.append(f"| context prediction, first word | {cp['first_word_match']:.3f} | {cpu.get('first_word_match', float('nan')):.3f} |")
        if "latentqa_yes_no_accuracy" in families:
            md.append(f"| system-prompt QA, yes/no accuracy | {families['latentqa_yes_no_accuracy']:.3f} | "
                      f"{(families_untrained or {}).get('latentqa_yes_no_accuracy', float('nan')):.3f} |")
        if "latentqa_generation" in families:
            g, gu = families["latentqa_generation"], (families_untrained or {}).get("latentqa_generation", {})
            md.append(f"| system-prompt QA, first word of instruction | {g['first_word_match']:.3f} | "
                      f"{gu.get('first_word_match', float('nan')):.3f} |")
        for kind, sc in families.get("topic_eval_split", {}).items():
            su = (families_untrained or {}).get("topic_eval_split", {}).get(kind, {})
            md.append(f"| topic questions `{kind}` (eval split), accuracy / AUROC | {sc['accuracy']:.3f} / "
                      f"{sc['auroc']:.3f} | {su.get('accuracy', float('nan')):.3f} / {su.get('auroc', float('nan')):.3f} |")
        for g, sc in families.get("classification_eval_split", {}).items():
            su = (families_untrained or {}).get("classification_eval_split", {}).get(g, {})
            md.append(f"| classification `{g}` (training group, eval split), accuracy / AUROC | "
                      f"{sc['accuracy']:.3f} / {sc['auroc']:.3f} | "
                      f"{su.get('accuracy', float('nan')):.3f} / {su.get('auroc', float('nan')):.3f} |")
    md_path = out_dir / "eval.md"
    md_path.write_text("\n".join(md) + "\n")
    if not trained:
        return md_path, None
    names = list(trained)
    fig, axes = plt.subplots(1, len(positions), figsize=(6 * len(positions), 4.5), squeeze=False)
    for ax, p in zip(axes[0], positions):
        x = range(len(names) + 1)
        tv = [trained[d][p] for d in names] + [heldout_mean(trained, p)]
        uv = [untrained[d][p] for d in names] + [heldout_mean(untrained, p)]
        ax.bar([i - 0.2 for i in x], tv, width=0.4, label="trained oracle")
        ax.bar([i + 0.2 for i in x], uv, width=0.4, label="untrained (Patchscopes-style)")
        ax.axhline(0.5, color="gray", ls="--", label="chance")
        ax.set_xticks(list(x))
        ax.set_xticklabels([d.replace("engels/", "")[:22] for d in names] + ["MEAN"], rotation=45, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(f"held-out classification, activation: {p}")
        ax.set_ylabel("accuracy")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    png = save_figure(fig, out_dir / "eval.png")
    return md_path, png


def quick_eval_fn(n: int = 32, datasets: Sequence[str] = ("singular_plural", "engels/60_wikidata_occupation_isathlete",
                                                          "engels/139_news_class_Politics"), data_dir=None):
    """A cheap check to run during training: yes/no accuracy and AUROC on a few held-out sets (mean) and on the
    training families' eval split (AUROC shows reading before calibration lets accuracy move)."""
    cache: dict = {}

    def fn(oracle: Oracle) -> dict:
        lm = oracle.lm
        if "indist" not in cache:
            from oracle.training.tasks.classification import build_classification

            cache["indist"] = build_classification(lm.tokenizer, lm.n_layers, 2 * n, 1, data_dir=data_dir, split="eval")
        indist = yes_no_scores(oracle, cache["indist"])
        scores = {}
        for d in datasets:
            if d not in cache:
                cache[d] = build_heldout_classification(lm.tokenizer, lm.n_layers, d, n=n, seed=1, data_dir=data_dir)
            scores[d] = yes_no_scores(oracle, cache[d])

        def mean(key: str) -> float:
            return round(sum(v[key] for v in scores.values()) / len(scores), 4)

        return {"heldout_accuracy": mean("accuracy"), "heldout_auroc": mean("auroc"),
                "indist_accuracy": round(indist["accuracy"], 4), "indist_auroc": round(indist["auroc"], 4),
                **{k: round(v["accuracy"], 4) for k, v in scores.items()}}

    return fn


def run_heldout_eval(oracle_path: OracleSpec, n: int = 200, families_n: int = 100, data_dir=None,
                     device: str = "cpu", out: Optional[Path] = None, command: str = "",
                     write_card: bool = True) -> tuple[Path, Optional[Path]]:
    """``ao eval``: the held-out classification sets (``n`` each) and the training families (``families_n``),
    the trained oracle against the untrained one with the same card and input scaling; the report goes to
    ``out`` (default: the oracle folder's ``eval/``) and, unless ``write_card`` is False, the figures into the card."""
    from hooks.models import load_model

    from oracle.core.card import update_evaluation
    from oracle.core.scaling import InputScaler

    ref = parse_oracle_ref(oracle_path, require_card=True)
    oracle_path, card = ref.path, ref.card
    lm = load_model(card.base_model, device=device)
    # the baseline gets the same injection as the oracle under test, input scaling included
    # (and the card's injection layer, coefficient and placeholder)
    untrained = Oracle.untrained(lm=lm, card=card, scaler=InputScaler.for_checkpoint(oracle_path, card.input_scaling))
    u_sc = evaluate_heldout_scores(untrained, n=n, data_dir=data_dir, progress=True) if n else {}
    u_fam = evaluate_families(untrained, n=families_n, data_dir=data_dir) if families_n else None
    oracle = Oracle.load(ref, lm=lm)
    t_sc = evaluate_heldout_scores(oracle, n=n, data_dir=data_dir, progress=True) if n else {}
    t_fam = evaluate_families(oracle, n=families_n, data_dir=data_dir) if families_n else None
    t_res, u_res = heldout_accuracies(t_sc), heldout_accuracies(u_sc)
    md, png = write_report(t_res, u_res, out or Path(oracle_path) / "eval", t_fam, u_fam, command=command,
                           trained_scores=t_sc, untrained_scores=u_sc)
    figures: dict = {}
    if n:
        summary = {pos: {"trained": round(heldout_mean(t_res, pos), 4), "untrained": round(heldout_mean(u_res, pos), 4)}
                   for pos in ("last", LAST_MAX)}
        figures["heldout_classification"] = {"n_per_set": n, "mean": summary, "per_set_trained": t_res,
                                             "per_set_untrained": u_res, "scores_trained": t_sc,
                                             "scores_untrained": u_sc}
    if families_n:
        figures.update(families_trained=t_fam, families_untrained=u_fam)
    if write_card:
        update_evaluation(Path(oracle_path), figures)
    return md, png
