"""Reading skills, the choice scorer and the reading-skills suite."""
from __future__ import annotations

import pytest
import torch

from hooks.errors import InputError


@pytest.fixture(scope="module")
def tiny_oracle():
    from hooks.testing import tiny_loaded
    from oracle.core.api import Oracle

    return Oracle.untrained(lm=tiny_loaded("llama", n_layers=4))


def _full_sequence_logprob(oracle, vec, question: str, answer: str) -> float:
    """Independent reference: one unpadded forward of prompt + answer, every logit computed."""
    from hooks.inject import inject_at
    from oracle.core.batching import make_oracle_batch

    b = make_oracle_batch(oracle.lm.tokenizer, [vec], [1], [question], [answer], side="right")
    with inject_at(oracle.lm.model, oracle.card.injection_layer, b.rows_N, b.positions_N, b.vectors_ND, 1.0):
        logits = oracle.lm.model(input_ids=b.tokens_BL, attention_mask=b.mask_BL).logits[0, :-1].log_softmax(-1)
    labels = b.labels_BL[0, 1:]
    keep = labels != -100
    return float(logits[keep].gather(-1, labels[keep][:, None]).sum())


def test_choice_scorer_sums_each_candidates_full_sequence_logprob(tiny_oracle):
    from oracle.core.api import Query

    torch.manual_seed(0)
    vecs = [torch.randn(2, 64), torch.randn(1, 64)]
    cands = [["no", "yes, surely", "maybe"], ["cat", "a much longer answer"]]
    queries = [Query(v, "Which one?", layer=1) for v in vecs]
    got = tiny_oracle.answer_logprobs(queries, cands, batch_size=3)   # mixed lengths across chunks
    for v, cs, row in zip(vecs, cands, got):
        ref = [_full_sequence_logprob(tiny_oracle, v, "Which one?", c) for c in cs]
        assert row == pytest.approx(ref, abs=1e-4)
    best = max(zip(got[0], cands[0]))[1]
    assert tiny_oracle.choose(vecs[0], "Which one?", cands[0], layer=1) == best


def test_choice_scorer_rejects_bad_candidates_in_one_line(tiny_oracle):
    from oracle.core.api import Query

    q = [Query(torch.randn(1, 64), "Which?", layer=1)]
    with pytest.raises(InputError, match="at least two candidate"):
        tiny_oracle.answer_logprobs(q, [["only"]])
    with pytest.raises(InputError, match="tokenize identically"):
        tiny_oracle.answer_logprobs(q, [["same", "same"]])


def test_first_token_logprobs_are_the_answer_start_distribution(tiny_oracle):
    from oracle.core.api import Query

    v = torch.randn(1, 64)
    lp = tiny_oracle.first_token_logprobs([Query(v, "Which word?", layer=1)])
    assert lp.shape == (1, 256) and torch.allclose(lp.exp().sum(-1), torch.ones(1), atol=1e-4)
    # the first answer token's log-probability is the first term of the full-sequence score
    tok = tiny_oracle.lm.tokenizer.encode("A", add_special_tokens=False)[0]
    two = tiny_oracle.answer_logprobs([Query(v, "Which word?", layer=1)], [["A", "B"]])[0][0]
    assert float(lp[0, tok]) >= two - 1e-4


# -- the skills and their splits (real tokenizer and data) ---------------------------------------

@pytest.fixture(scope="module")
def tok(hf_tokenizer):
    return hf_tokenizer


def test_suite_documents_never_overlap_training_documents(tok):
    from oracle.training.tasks.reading import SKILLS, build_reading

    trainable = {s: 1.0 for s, spec in SKILLS.items() if spec.trained}
    train = build_reading(tok, 30, 600, seed=0, skills=trainable)
    suite = build_reading(tok, 30, 300, seed=0, split="eval", skills={s: 1.0 for s in SKILLS}, questions="all")
    assert {e.meta["skill"] for e in suite} == set(SKILLS)
    train_docs = {e.meta["doc"] for e in train}
    assert not train_docs & {e.meta["doc"] for e in suite}
    # and by the token ids the target reads
    assert not {tuple(e.context_ids) for e in train} & {tuple(e.context_ids) for e in suite}
    # the calibration split (what temperature and abstention are fitted on) shares no document with either
    calib = build_reading(tok, 30, 300, seed=0, split="calibration", skills={s: 1.0 for s in SKILLS}, questions="all")
    calib_docs = {e.meta["doc"] for e in calib}
    assert {e.meta["skill"] for e in calib} == set(SKILLS)
    assert not calib_docs & {e.meta["doc"] for e in suite} and not calib_docs & train_docs


def test_held_out_paraphrases_never_appear_in_the_training_mix(tok):
    from oracle.training.tasks.mix import build_training_mix
    from oracle.training.tasks.reading import SKILLS

    held = {spec.held_out_question for spec in SKILLS.values()}
    exs = build_training_mix(tok, 30, 400, seed=0, weights={"reading": 0.5, "classification": 0.2, "latentqa": 0.2,
                                                            "topic": 0.1})
    assert {e.question for e in exs if e.family == "reading"}   # reading questions were asked
    assert not held & {e.question for e in exs}
    assert not held & {e.question.split(". ", 1)[-1] for e in exs}   # nor behind a yes/no prefix


def test_every_skill_has_three_paraphrases_and_choice_items_name_their_answer(tok):
    from oracle.training.tasks.reading import SKILLS, build_reading

    for name, spec in SKILLS.items():
        assert len(set(spec.questions)) >= 3, name
    for e in build_reading(tok, 30, 40, seed=1, split="eval", skills={s: 1.0 for s in SKILLS}, questions="all"):
        if e.meta["scoring"] == "choice":
            assert e.meta["candidates"][e.meta["label"]] == e.answer
            assert len(set(e.meta["candidates"])) == len(e.meta["candidates"]) >= 2
        assert 1 <= len(e.positions) <= 50 and max(e.positions) < len(e.context_ids)


def test_topic_texts_do_not_name_their_title():
    from oracle.training.tasks.reading import mask_title

    assert mask_title("Homarus gammarus, the European lobster, lives in the Atlantic.",
                      "Homarus gammarus") == ", the European lobster, lives in the Atlantic."


def test_unknown_skills_and_held_out_training_are_refused(tok):
    from oracle.training.tasks.reading import build_reading
    from oracle.training.loop import TrainConfig

    with pytest.raises(InputError, match="unknown skill"):
        build_reading(tok, 30, 4, seed=0, skills={"telepathy": 1.0})
    with pytest.raises(InputError, match="held out from training"):
        build_reading(tok, 30, 4, seed=0, skills={"singular_plural": 1.0})
    with pytest.raises(InputError, match="held out"):
        TrainConfig(out="x", skills={"singular_plural": 1.0})


def test_labels_to_match_and_chance():
    from oracle.evals.suite import chance, labels_to_match
    from oracle.training.tasks.base import OracleExample

    probe = {8: {"accuracy": 0.55}, 64: {"accuracy": 0.7}, 512: {"accuracy": 0.9}}
    assert labels_to_match(probe, 0.6) == "64" and labels_to_match(probe, 0.95) == ">512"
    exs = [OracleExample("reading", [1], [0], 0, "q", a, meta={"scoring": "first_token"}) for a in "aab"]
    assert chance(exs) == pytest.approx(2 / 3)


# -- the command line -----------------------------------------------------------------------------

def test_cli_choice_and_suite_bad_input_is_one_line(capsys):
    from oracle.cli.main import main

    assert main(["eval", "--suite", "skills", "--skills", "word_at,telepathy"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown skill(s) 'telepathy'" in err
    assert main(["ask", "--untrained", "--model", "no-such-model", "--text", "x", "--question", "q",
                 "--choices", "only"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "at least two candidate" in err


@pytest.mark.slow
def test_cli_choice_bad_candidates_on_the_embedded_model(capsys):
    from oracle.cli.main import main

    base = ["ask", "--untrained", "--text", "I loved this film.", "--question", "What is the sentiment?"]
    assert main(base + ["--choices", "good|good"]) == 2
    assert "tokenize identically" in capsys.readouterr().err
    assert main(base + ["--choices", "negative|positive"]) == 0
    assert "choice: " in capsys.readouterr().out
