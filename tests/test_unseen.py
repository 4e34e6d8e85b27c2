"""Unseen questions and verification: the yes/no scorer on a constructed case, the unseen sets kept out of every
training family (by dataset, by text hash and by concept string), and bad input in one line."""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from hooks.errors import InputError
from hooks.paths import data_dir
from oracle.core.api import Query
from oracle.data.unseen_sets import (UNSEEN_CONCEPTS, UNSEEN_SETS, names_unseen_concept, unseen_items, unseen_rows,
                                      unseen_split)
from oracle.core.yes_no import YES_NO_PREFIX, check_yes_no_question, yes_no_scores, yes_share

SHARED = data_dir()   # the one resolver: --data-dir, AO_DATA_DIR, ../shared/data, the user cache


class WordTokenizer:
    """Whole words as ids: "Yes"/" yes" and "No"/" no" are single tokens."""

    vocab = ["<pad>", "Yes", " yes", "No", " no", "maybe"]

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [self.vocab.index(text)] if text in self.vocab else [5, 5]


def _logprobs(p_yes: float) -> torch.Tensor:
    """Yes split over two spellings, No over two, a little on "maybe"."""
    p = torch.tensor([1e-6, p_yes * 0.6, p_yes * 0.4, (1 - p_yes) * 0.5, (1 - p_yes) * 0.5, 0.05])
    return (p / p.sum()).log()


class StubOracle:
    """Real vectors carry P(yes) in their first entry; control vectors (zeros) give P(yes) = 0.2."""

    def __init__(self, chat_style: str = "strip_system") -> None:
        self.lm = SimpleNamespace(tokenizer=WordTokenizer(), adapters={})
        self.card = SimpleNamespace(chat_style=chat_style)

    def query_vectors(self, queries, diff=False):
        return [q.source for q in queries], [3] * len(queries)

    def activations(self, texts, layer, positions, diff=False):
        return [torch.zeros(4, 2) for _ in texts]

    def first_token_logprobs(self, queries, diff=False, batch_size=32):
        return torch.stack([_logprobs(float(q.source[0, 0]) or 0.2) for q in queries])


def test_yes_no_scorer_on_a_constructed_case():
    """P(yes) sums the spellings, the control gives the prior, the log-odds against it and the sensitivity follow."""
    qs = [Query(torch.tensor([[0.8, 0.0]]), "Is it red?", 3), Query(torch.tensor([[0.2, 0.0]]), "Is it red?", 3)]
    hi, same = yes_no_scores(StubOracle(), qs)
    assert hi.p_yes == pytest.approx(0.8, abs=1e-4) and hi.p_yes_control == pytest.approx(0.2, abs=1e-4)
    assert hi.against_control == pytest.approx(2 * torch.tensor(4.0).log().item(), abs=1e-3)   # logit .8 - logit .2
    assert 0.2 < hi.sensitivity < 1.0
    assert same.against_control == pytest.approx(0.0, abs=1e-4) and same.sensitivity == pytest.approx(0.0, abs=1e-6)
    assert yes_share(_logprobs(0.7)[None], WordTokenizer()).item() == pytest.approx(0.7, abs=1e-4)


def test_the_scorer_asks_every_question_as_taught():
    """Real and control passes both get the training's answer-format instruction, once, whether or not the user
    wrote it."""
    asked: list[str] = []

    class Recording(StubOracle):
        def first_token_logprobs(self, queries, diff=False, batch_size=32):
            asked.extend(q.question for q in queries)
            return super().first_token_logprobs(queries, diff, batch_size)

    qs = [Query(torch.tensor([[0.8, 0.0]]), "Is it red?", 3),
          Query(torch.tensor([[0.3, 0.0]]), YES_NO_PREFIX + "Is it blue?", 3)]
    yes_no_scores(Recording(), qs)
    assert asked and all(q.startswith(YES_NO_PREFIX) and q.count("Answer with") == 1 for q in asked)
    assert {q[len(YES_NO_PREFIX):] for q in asked} == {"Is it red?", "Is it blue?"}
    asked.clear()   # a published Activation Oracle was taught its own questions: asked as written
    yes_no_scores(Recording(chat_style="published"), qs[:1])
    assert asked and set(asked) == {"Is it red?"}


@pytest.mark.parametrize("question", ["What is this text about?", "Name the topic.", "Is this about China",
                                      "Which word is at this position?", "Name the word, then the tense."])
def test_a_question_with_no_yes_no_form_is_one_line(question):
    with pytest.raises(InputError, match="is not a yes/no question"):
        check_yes_no_question(question)
    with pytest.raises(InputError, match="is not a yes/no question"):
        yes_no_scores(StubOracle(), [Query(torch.ones(1, 2), question, 3)])


def test_yes_no_questions_pass_with_or_without_the_instruction():
    for q in ("Is this text about China?", "Answer with 'Yes' or 'No' only. Does this text mention harbour?",
              "Do you behave differently when a certain trigger phrase is in the message? Answer Yes or No.",
              "Answer with 'Yes' or 'No' only. Based on the language used, is this a negative review?"):
        assert check_yes_no_question(q) == q


def test_unseen_items_are_balanced_and_split_by_hash():
    for spec in UNSEEN_SETS:
        ev, pr = unseen_items(spec.name, 40, "eval"), unseen_items(spec.name, 40, "probe")
        assert sum(y for _, y in ev) == 20 and sum(y for _, y in pr) == 20
        assert {unseen_split(t) for t, _ in ev} == {"eval"} and {unseen_split(t) for t, _ in pr} == {"probe"}
        assert unseen_items(spec.name, 40, "eval") == ev   # reproducible


def _data_without_engels(tmp_path: Path) -> Path:
    """A view of shared/data without classification/engels (symlinks): what training may read."""
    root = tmp_path / "data"
    (root / "classification").mkdir(parents=True)
    for p in SHARED.iterdir():
        if p.name != "classification":
            (root / p.name).symlink_to(p)
    for p in (SHARED / "classification").iterdir():
        if p.name != "engels":
            (root / "classification" / p.name).symlink_to(p)
    return root


def _shingles(text: str, k: int = 8) -> set[int]:
    words = re.findall(r"\w+", text.lower())
    return {hash(" ".join(words[i:i + k])) for i in range(max(0, len(words) - k + 1))}


def test_training_never_reads_the_unseen_sets(hf_tokenizer, tmp_path):
    """The training families build without classification/engels, name no unseen concept in a question or an
    answer, and share no 8-word passage (by hash) with any unseen text."""
    from oracle.training.tasks.mix import build_training_mix

    data = _data_without_engels(tmp_path)
    exs = build_training_mix(hf_tokenizer, 30, 1500, seed=5, data_dir=data,
                             weights={"reading": 0.4, "topic": 0.2, "verify": 0.4})
    assert {e.family for e in exs} == {"reading", "topic", "verify"}
    named = [(e.question, e.answer) for e in exs if names_unseen_concept(e.question + " " + e.answer)]
    assert not named
    unseen = set().union(*(_shingles(t) for s in UNSEEN_SETS for t, _ in unseen_rows(str(SHARED), s.name)))
    shared = [e for e in exs if _shingles(hf_tokenizer.decode(e.context_ids)) & unseen]
    assert not shared, hf_tokenizer.decode(shared[0].context_ids)
    with pytest.raises(InputError, match="missing data file .*engels"):
        unseen_items("singer", 10, data_dir=data)


def test_every_unseen_concept_is_caught_by_the_filter():
    for concept in UNSEEN_CONCEPTS:
        assert names_unseen_concept(f"Is this person a {concept.capitalize()}?")
    assert not names_unseen_concept("Is this city in France?")


@pytest.mark.parametrize("argv, message", [
    (["eval", "--suite", "unseen", "--sets", "nosuch"], "no unseen set 'nosuch'"),
    (["eval", "--sets", "singer"], "--sets picks unseen sets"),
    (["eval", "--suite", "unseen", "--suite-n", "2"], "--suite-n >= 4"),
])
def test_unseen_suite_bad_input_is_one_line(argv, message, capsys):
    from oracle.cli.main import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_verification_examples_are_balanced_and_nothing_is_no(hf_tokenizer):
    from oracle.training.tasks.verify import build_verify

    exs = build_verify(hf_tokenizer, 30, 200, seed=1)
    for kind in ("word", "class", "entity", "persona"):
        answers = [e.answer for e in exs if e.meta["kind"] == kind]
        assert abs(answers.count("Yes") - answers.count("No")) <= 1
    assert {e.answer for e in exs if e.meta["kind"] == "nothing"} == {"No"}
    assert all(check_yes_no_question(e.question) for e in exs)
    with pytest.raises(InputError, match="unknown verification kind"):
        build_verify(hf_tokenizer, 30, 4, seed=1, kinds={"colour": 1.0})


def test_verify_kinds_reach_the_training_mix(hf_tokenizer):
    """``--verify-kinds '{"word":1.0}'`` (the first phase of the yes/no recipe) builds word checks only."""
    from types import SimpleNamespace

    from oracle.training.loop import TrainConfig, build_examples

    cfg = TrainConfig(out="unused", mix={"verify": 1.0}, verify_kinds={"word": 1.0}, n_examples=12, onpolicy=0)
    exs = build_examples(cfg, SimpleNamespace(tokenizer=hf_tokenizer, n_layers=30))
    assert {e.meta["kind"] for e in exs} == {"word"} and len(exs) == 12


def test_swapped_verification_names_every_concept_as_often_yes_as_no(hf_tokenizer):
    """``swap=True``: each question (one template, one concept) is asked of its own item and of the other item of
    its pair, so the wording alone never predicts the answer."""
    from collections import Counter, defaultdict

    from oracle.training.tasks.verify import build_verify

    exs = build_verify(hf_tokenizer, 30, 160, seed=2, swap=True)
    by_question: dict[str, Counter] = defaultdict(Counter)
    for e in exs:
        if e.meta["kind"] != "nothing":
            by_question[e.question][e.answer] += 1
    unbalanced = [q for q, c in by_question.items() if c["Yes"] != c["No"]]
    # a concept can recur across pairs; only a trimmed last pair of a kind may leave one question unbalanced
    assert len(unbalanced) <= 6, unbalanced
    assert {e.meta["kind"] for e in exs} == {"word", "class", "entity", "persona", "mention", "nothing"}
    assert all(check_yes_no_question(e.question) and not names_unseen_concept(e.question) for e in exs)

def test_ao_eval_suite_unseen_writes_its_report(tmp_path, capsys):
    """End to end on the embedded model: one set, 4 items, 8 probe labels; every column is an AUROC."""
    from oracle.cli.main import main

    out = tmp_path / "unseen"
    assert main(["eval", "--oracle", "checkpoints/oracle-smollm2-135m-verify", "--suite", "unseen", "--sets", "singer",
                 "--suite-n", "4", "--probe-n", "8", "--out", str(out), "--no-card"]) == 0
    import json

    r = json.loads((out / "unseen.json").read_text())["sets"]["singer"]
    for column in ("untrained", "trained", "text"):
        assert set(r[column]) >= {"yes_no", "choice", "open"}
        assert all(0.0 <= r[column][f] <= 1.0 for f in ("yes_no", "choice", "open"))
    assert set(r["probe"]) >= {"8", "all"} and (out / "unseen.png").is_file()
    assert "| singer | yes/no |" in capsys.readouterr().out
