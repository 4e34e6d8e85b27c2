"""Task builders of the oracle (oracle.training.tasks): valid examples, balance, determinism, splits, held-out
refusal, on-policy cache. Uses the real SmolLM2 tokenizer (no model weights) and the shared data."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from hooks.errors import InputError
from oracle.training.tasks import (NO, YES, OracleExample, build_classification, build_context_prediction,
                          build_heldout_classification, build_latentqa, build_onpolicy_context_prediction,
                          build_training_mix, check_example, default_onpolicy_prompts, generate_onpolicy_chats,
                          load_examples, save_examples, source_layers, summarize)
from oracle.training.tasks import onpolicy as onpolicy_mod
from oracle.data.chat import tokenize_chat
from oracle.data.labelled import heldout_dataset_names
from oracle.data.latentqa import latentqa_items
from oracle.data.splits import make_rng
from oracle.training.tasks.base import allocate, balanced_bools
from oracle.training.tasks.classification import NEGATED_QUESTIONS, OPEN_QUESTIONS

N_LAYERS = 30
DEPTHS = [7, 15, 22]


@pytest.fixture(scope="module")
def tok():
    """The embedded SmolLM2-135M-Instruct tokenizer (tokenizer only, no weights)."""
    from transformers import AutoTokenizer

    from hooks.errors import ModelLoadError
    from hooks.models import embedded_gguf_path

    try:
        p = embedded_gguf_path("smollm2-135m")
    except ModelLoadError as e:
        pytest.skip(str(e))
    return AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)


@pytest.fixture(scope="module")
def fake_chats():
    """On-policy-like chats without running a model."""
    topics = ["the moon", "bread", "a violin", "tigers", "rain", "chess", "Paris", "glaciers", "honey", "volcanoes",
              "trains", "owls", "copper", "tea", "the ocean", "maps", "kites", "salt", "clocks", "bees"]
    return [[{"role": "user", "content": f"Tell me a fun fact about {t}."},
             {"role": "assistant", "content": f"Here is a fun fact about {t}: people have written about {t} for "
                                              f"centuries, and many of them found it surprising and beautiful."}]
            for t in topics]


def _dicts(exs):
    return [e.to_dict() for e in exs]


def _check_common(exs, n, family):
    assert len(exs) == n
    for e in exs:
        assert isinstance(e, OracleExample) and e.family == family
        check_example(e, N_LAYERS)
        assert e.layer in DEPTHS
        assert e.answer.strip() and e.question.strip()
        assert all(isinstance(i, int) for i in e.context_ids)
    counts = Counter(e.layer for e in exs)
    assert set(counts) == set(DEPTHS)
    assert max(counts.values()) - min(counts.values()) <= 1   # one third each


def test_layers_and_helpers():
    assert source_layers(30) == DEPTHS
    assert source_layers(18) == [4, 9, 13]
    assert allocate(7, {"a": 0.4, "b": 0.4, "c": 0.2}) == {"a": 3, "b": 3, "c": 1}
    assert sum(balanced_bools(make_rng(0, "x"), 10)) == 5
    with pytest.raises(InputError):
        source_layers(0)


def test_context_prediction_valid(tok):
    exs = build_context_prediction(tok, N_LAYERS, 60, seed=0)
    _check_common(exs, 60, "context_prediction")
    datasets = Counter(e.dataset for e in exs)
    assert "wikitext2_test" not in datasets
    assert {"wikitext2_valid", "tinyshakespeare"} <= set(datasets)
    assert any(d.startswith("latentqa/") for d in datasets)
    directions = Counter(e.meta["direction"] for e in exs)
    assert set(directions) == {"next", "previous"}
    for e in exs:
        assert 1 <= len(e.positions) <= 50 and len(e.context_ids) <= 64
        assert e.positions == list(range(e.positions[0], e.positions[-1] + 1))
        assert e.positions[-1] == len(e.context_ids) - 1          # the context ends at the last read position
        m = e.meta["n_tokens"]
        assert 1 <= m <= 20 and len(e.meta["answer_ids"]) == m
        assert tok.decode(e.meta["answer_ids"], skip_special_tokens=True).strip() == e.answer
        assert "<|im_" not in e.answer
        assert str(m) in e.question or (m == 1 and "token" in e.question)
        if e.meta["direction"] == "previous":
            assert e.positions[0] >= m
    assert any(len(e.positions) == 1 for e in exs) and any(len(e.positions) > 1 for e in exs)


def test_context_prediction_eval_split_and_bad_input(tok):
    exs = build_context_prediction(tok, N_LAYERS, 12, seed=0, split="eval", sources={"wikitext2": 1.0})
    assert {e.dataset for e in exs} == {"wikitext2_test"}
    with pytest.raises(InputError):
        build_context_prediction(tok, N_LAYERS, 4, seed=0, split="test")
    with pytest.raises(InputError):
        build_context_prediction(tok, N_LAYERS, 4, seed=0, sources={"reddit": 1.0})
    with pytest.raises(InputError):
        build_context_prediction(tok, N_LAYERS, 4, seed=0, data_dir="/nonexistent/data")
    with pytest.raises(InputError):
        build_context_prediction(tok, N_LAYERS, 4, seed=0, sources={"onpolicy": 1.0})   # no chats given
    # chats with none in the eval split: the other sources fill in
    from oracle.data.splits import split_of

    chat = next([{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": "An answer here."}]
                for i in range(100) if split_of(f"Question {i}?", salt="onpolicy") == "train")
    exs = build_context_prediction(tok, N_LAYERS, 6, seed=0, split="eval", chats=[chat])
    assert len(exs) == 6 and "onpolicy" not in {e.dataset for e in exs}


def test_determinism(tok, fake_chats):
    for build, kw in ((build_context_prediction, {"chats": fake_chats}), (build_classification, {}),
                      (build_latentqa, {})):
        a = build(tok, N_LAYERS, 24, 3, **kw)
        b = build(tok, N_LAYERS, 24, 3, **kw)
        c = build(tok, N_LAYERS, 24, 4, **kw)
        assert _dicts(a) == _dicts(b), build.__name__
        assert _dicts(a) != _dicts(c), build.__name__
    assert _dicts(build_heldout_classification(tok, N_LAYERS, "singular_plural", 20, seed=1)) == \
        _dicts(build_heldout_classification(tok, N_LAYERS, "singular_plural", 20, seed=1))


def test_classification_valid_and_balanced(tok):
    exs = build_classification(tok, N_LAYERS, 90, seed=0)
    _check_common(exs, 90, "classification")
    assert Counter(e.answer for e in exs) == {YES: 45, NO: 45}
    groups = Counter(e.dataset.split("/")[0] for e in exs)
    assert set(groups) == {"gmt", "relations", "sst2", "tense"}
    for e in exs:
        assert e.question.startswith("Answer with 'Yes' or 'No' only. ")
        assert e.meta["label"] == (1 if e.answer == YES else 0)
        assert len(e.context_ids) <= 64
        L = len(e.context_ids)
        if len(e.positions) == 1:
            assert e.positions[0] >= L - 3
        else:
            assert e.positions == list(range(L - len(e.positions), L))   # a window ending at the end
        assert "{}" not in e.question
    # questions about a wrong label where there is no natural negative
    tense = [e for e in exs if e.dataset == "tense"]
    assert any(e.answer == NO and e.meta["class"] not in e.question for e in tense)
    # only the sst2 dev file in the eval split; gmt / tense texts of the two splits are disjoint
    train_texts = {e.meta["text"] for e in build_classification(tok, N_LAYERS, 200, 1, datasets=["gmt", "tense"])}
    eval_texts = {e.meta["text"] for e in build_classification(tok, N_LAYERS, 200, 1, split="eval",
                                                                datasets=["gmt", "tense"])}
    assert not train_texts & eval_texts


def test_classification_open_questions(tok):
    plain = build_classification(tok, N_LAYERS, 80, seed=3)
    mixed = build_classification(tok, N_LAYERS, 80, seed=3, open_frac=0.25)
    assert _dicts(build_classification(tok, N_LAYERS, 80, seed=3, open_frac=0.0)) == _dicts(plain)
    opens = [e for e in mixed if e.meta.get("open")]
    assert len(opens) == 20
    for e in opens:
        group = e.dataset.split("/")[0]
        assert e.question == OPEN_QUESTIONS[group] and not e.question.startswith("Answer with 'Yes'")
        assert e.answer == e.meta["class"].capitalize() and e.answer not in (YES, NO)
        assert e.meta["label"] is None and e.meta["asked"] is None
    assert all(e.answer in (YES, NO) for e in mixed if not e.meta.get("open"))
    assert {e.answer for e in opens if e.dataset == "tense"} <= {"Past", "Present", "Future"}
    with pytest.raises(InputError, match="open_frac"):
        build_classification(tok, N_LAYERS, 4, seed=0, open_frac=1.5)


def test_classification_negated_questions(tok):
    plain = build_classification(tok, N_LAYERS, 80, seed=3)
    assert _dicts(build_classification(tok, N_LAYERS, 80, seed=3, negated_frac=0.0)) == _dicts(plain)
    mixed = build_classification(tok, N_LAYERS, 80, seed=3, open_frac=0.5, negated_frac=0.5)
    yes_no = [e for e in mixed if not e.meta.get("open")]
    negated = [e for e in yes_no if e.meta["negated"]]
    assert len(yes_no) == 40 and len(negated) == 20
    assert set(Counter(e.answer for e in negated)) == {YES, NO}
    for e in yes_no:
        group = e.dataset.split("/")[0]
        templates = NEGATED_QUESTIONS[group] if e.meta["negated"] else ()
        assert (e.question[len("Answer with 'Yes' or 'No' only. "):] in {t.format(e.meta["asked"]) for t in templates}
                ) == e.meta["negated"]
        # affirmative: Yes iff the text is of the class asked about; negated: Yes iff it is not
        assert (e.answer == YES) == ((e.meta["class"] == e.meta["asked"]) != e.meta["negated"])
    assert {e.dataset.split("/")[0] for e in negated} == {"gmt", "relations", "sst2", "tense"}
    with pytest.raises(InputError, match="negated_frac"):
        build_classification(tok, N_LAYERS, 4, seed=0, negated_frac=-0.5)


@pytest.mark.parametrize("name", ["singular_plural", "engels", "engels/59_wikidata_occupation_isjournalist",
                                  "engels/21_headline_istrump", "classification/singular_plural"])
def test_heldout_sets_refused_for_training(tok, name):
    with pytest.raises(InputError, match="held out"):
        build_classification(tok, N_LAYERS, 4, seed=0, datasets=[name])


def test_unknown_classification_dataset(tok):
    with pytest.raises(InputError, match="unknown classification dataset"):
        build_classification(tok, N_LAYERS, 4, seed=0, datasets=["ag_news"])
    with pytest.raises(InputError, match="unknown held-out dataset"):
        build_heldout_classification(tok, N_LAYERS, "gmt/cities", 4)


def test_heldout_builders(tok):
    names = heldout_dataset_names()
    assert names[0] == "singular_plural"
    assert len([n for n in names if n.startswith("engels/")]) == 6
    assert not any("istrump" in n or "ismale" in n for n in names)
    for name in names:
        for position in ("last", "last:50"):
            if position == "last:50" and name != "singular_plural" and name != names[1]:
                continue   # "last:50" on two sets is enough
            exs = build_heldout_classification(tok, N_LAYERS, name, n=200, seed=0, position=position)
            _check_common(exs, 200, "classification")
            assert Counter(e.answer for e in exs) == {YES: 100, NO: 100}
            assert len({e.meta["class"] for e in exs}) == 2
            assert Counter((e.meta["class"], e.answer) for e in exs).most_common()[-1][1] == 50
            for e in exs:
                L = len(e.context_ids)
                if position == "last":
                    assert e.positions == [L - 1]
                else:
                    assert e.positions == list(range(max(0, L - 50), L))
    fixed = build_heldout_classification(tok, N_LAYERS, "singular_plural", n=8, layers=15)
    assert {e.layer for e in fixed} == {15}


def test_heldout_text_halves_for_the_ceiling_diagnostic(tok):
    halves = {h: build_heldout_classification(tok, N_LAYERS, "singular_plural", n=None, seed=0, text_half=h)
              for h in ("train", "eval")}
    texts = {h: {e.meta["text"] for e in exs} for h, exs in halves.items()}
    assert not texts["train"] & texts["eval"]
    assert 300 < len(halves["train"]) + len(halves["eval"]) <= 368   # n=None: every usable text once
    for exs in halves.values():
        counts = Counter(e.meta["class"] for e in exs)
        assert counts["single"] == counts["multiple"]
    with pytest.raises(InputError, match="unknown split"):
        build_heldout_classification(tok, N_LAYERS, "singular_plural", n=4, text_half="test")


def test_latentqa_valid_and_label_disjoint(tok):
    train_items, eval_items = latentqa_items(split="train"), latentqa_items(split="eval")
    assert not {i.label for i in train_items} & {i.label for i in eval_items}
    assert not {i.instruction for i in train_items} & {i.instruction for i in eval_items}
    assert 0.05 < len(eval_items) / (len(train_items) + len(eval_items)) < 0.2

    train = build_latentqa(tok, N_LAYERS, 60, seed=0)
    evals = build_latentqa(tok, N_LAYERS, 30, seed=0, split="eval")
    _check_common(train, 60, "latentqa")
    _check_common(evals, 30, "latentqa")
    assert not {e.meta["label"] for e in train} & {i.label for i in eval_items}
    assert not {e.meta["label"] for e in evals} & {i.label for i in train_items}
    yes_no = [e for e in train if e.meta["kind"] in ("topic", "kind")]
    answers = Counter(e.answer for e in yes_no)
    assert set(answers) == {YES, NO} and abs(answers[YES] - answers[NO]) <= 2
    assert {e.meta["kind"] for e in train} == {"topic", "kind", "instruction", "qa"}
    for e in train + evals:
        assert len(e.context_ids) <= 96
        if e.meta["position"] == "last":
            assert e.positions == [len(e.context_ids) - 1]
        else:
            assert e.positions[-1] < len(e.context_ids) - 1   # inside the user turn, before the template tail
        if e.meta["kind"] == "instruction":
            assert e.answer[0].isupper() and not e.answer.lower().startswith("please")
    # the user_turn read is the user turn's tokens
    e = next(x for x in train if x.meta["position"] == "user_turn")
    text = tok.decode([e.context_ids[p] for p in e.positions])
    assert "<|im_" not in text and text.strip()


def test_tokenize_chat_spans(tok):
    msgs = [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hi there, friend"}]
    ids, spans = tokenize_chat(tok, msgs, add_generation_prompt=True)
    assert tok.decode(ids[spans[1][0]:spans[1][1]]) == "Hi there, friend"
    assert tok.decode(ids[spans[0][0]:spans[0][1]]) == "Be nice."


def test_onpolicy_cache_written_and_reused(tmp_path, monkeypatch):
    from hooks.testing import tiny_loaded

    lm = tiny_loaded("llama")
    cache = tmp_path / "sub" / "onpolicy.json"
    prompts = ["Hi", "What is tea?", "Tell me about owls."]
    chats = generate_onpolicy_chats(lm, prompts, cache, max_new_tokens=3, batch_size=2)
    assert cache.is_file()
    stored = json.loads(cache.read_text())
    assert set(stored["replies"]) == set(prompts) and stored["max_new_tokens"] == 3
    assert [c[0]["content"] for c in chats] == prompts and all(c[1]["role"] == "assistant" for c in chats)
    assert not list(cache.parent.glob("*.tmp"))

    calls = []
    real = onpolicy_mod.generate_replies

    def counting(lm_, batch, max_new_tokens):
        calls.append(list(batch))
        return real(lm_, batch, max_new_tokens)

    monkeypatch.setattr(onpolicy_mod, "generate_replies", counting)
    assert generate_onpolicy_chats(lm, prompts, cache, max_new_tokens=3) == chats     # reused, no generation
    assert calls == []
    more = generate_onpolicy_chats(lm, prompts + ["A new prompt"], cache, max_new_tokens=3)
    assert calls == [["A new prompt"]] and more[:3] == chats                          # only the missing one
    generate_onpolicy_chats(lm, prompts[:1], cache, max_new_tokens=4)                  # other settings: regenerate
    assert calls[-1] == ["Hi"]


def test_onpolicy_batching_is_left_padded():
    """A batched greedy reply equals the reply generated alone (left padding + attention mask)."""
    from hooks.testing import tiny_loaded

    lm = tiny_loaded("llama")
    prompts = ["Hi", "A much longer prompt than the first one"]
    together = onpolicy_mod.generate_replies(lm, prompts, 4)
    assert together[0] == onpolicy_mod.generate_replies(lm, prompts[:1], 4)[0]


def test_onpolicy_context_prediction(tok, fake_chats):
    exs = build_onpolicy_context_prediction(tok, N_LAYERS, 30, seed=0, chats=fake_chats)
    _check_common(exs, 30, "context_prediction")
    assert {e.dataset for e in exs} == {"onpolicy"}
    for e in exs:
        assert "<|im_" not in e.answer and e.positions[-1] == len(e.context_ids) - 1
    with pytest.raises(InputError):
        build_onpolicy_context_prediction(tok, N_LAYERS, 3, seed=0)


def test_default_onpolicy_prompts():
    a = default_onpolicy_prompts(n=40, seed=0)
    assert a == default_onpolicy_prompts(n=40, seed=0)
    assert len(a) == 40 == len(set(a)) and all(p.strip() for p in a)
    from hooks.paths import data_dir

    test_prompts = set()
    for path in (data_dir() / "audit").glob("*/*_test.txt"):
        test_prompts.update(s.strip() for s in path.read_text().splitlines())
    assert not set(default_onpolicy_prompts(n=400, seed=1)) & test_prompts


def test_training_mix_summary_and_jsonl(tok, fake_chats, tmp_path):
    exs = build_training_mix(tok, N_LAYERS, 50, seed=0, onpolicy_chats=fake_chats)
    summary = summarize(exs)
    assert summary["families"] == {"classification": 20, "context_prediction": 20, "latentqa": 10}
    assert sum(summary["datasets"]["context_prediction"].values()) == 20
    assert "onpolicy" in summary["datasets"]["context_prediction"]
    assert set(summary["layers"]) == {"7", "15", "22"}
    assert json.loads(json.dumps(summary)) == summary
    assert [e.family for e in exs] != sorted(e.family for e in exs)                  # shuffled
    assert _dicts(exs) == _dicts(build_training_mix(tok, N_LAYERS, 50, seed=0, onpolicy_chats=fake_chats))
    path = save_examples(exs, tmp_path / "mix.jsonl")
    assert path.read_text().count("\n") == 50
    assert _dicts(load_examples(path)) == _dicts(exs)
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(InputError):
        load_examples(tmp_path / "bad.jsonl")
    with pytest.raises(InputError):
        build_training_mix(tok, N_LAYERS, 10, seed=0, weights={"sae": 1.0})


def test_topics_valid_balanced_and_checkable(tok):
    from oracle.data.chat import decode
    from oracle.data.texts import content_words
    from oracle.training.tasks.topics import OPEN_QUESTION, build_topics

    exs = build_topics(tok, N_LAYERS, 120, seed=0, open_frac=0.2)
    _check_common(exs, 120, "topic")
    yes_no = [e for e in exs if not e.meta["open"]]
    assert Counter(e.answer for e in yes_no)[YES] == Counter(e.answer for e in exs)[YES]   # open answers are titles
    assert {e.meta["kind"] for e in exs} == {"article", "mention"}
    assert any(e.meta["negated"] for e in yes_no) and not all(e.meta["negated"] for e in yes_no)
    for e in exs:
        read = decode(tok, [e.context_ids[p] for p in e.positions])
        if e.meta["open"]:
            assert e.question == OPEN_QUESTION and e.answer == e.meta["title"]
        elif e.meta["kind"] == "mention":
            # the window read is the whole context, and the answer follows the word and the negation
            assert len(e.positions) == len(e.context_ids)
            present = e.meta["concept"] in content_words(read.replace("<unk>", " "))
            assert (e.answer == YES) == (present != e.meta["negated"]), (read, e.question, e.answer)
        else:
            names_title = e.meta["concept"] == e.meta["title"]
            if names_title:
                assert (e.answer == YES) != e.meta["negated"]
        assert e.meta["concept"] in e.question or e.meta["open"]
    assert _dicts(exs) == _dicts(build_topics(tok, N_LAYERS, 120, seed=0, open_frac=0.2))


def test_topics_eval_split_and_bad_input(tok):
    from oracle.training.tasks.topics import build_topics

    train_titles = {e.meta["title"] for e in build_topics(tok, N_LAYERS, 200, 0) if e.meta["kind"] == "article"}
    ev = build_topics(tok, N_LAYERS, 200, 0, split="eval")
    assert {e.dataset for e in ev} <= {"wikitext2_test", "tinyshakespeare"}
    assert not train_titles & {e.meta["title"] for e in ev if e.meta["kind"] == "article"}
    for bad in ({"negated_frac": 1.5}, {"mention_frac": -0.1}, {"max_context_tokens": 64}):
        with pytest.raises(InputError):
            build_topics(tok, N_LAYERS, 4, 0, **bad)
    mix = build_training_mix(tok, N_LAYERS, 20, seed=0, weights={"topic": 0.5, "classification": 0.5})
    assert summarize(mix)["families"] == {"classification": 10, "topic": 10}


def test_every_family_has_a_builder_of_the_one_signature():
    """The mix dispatches through one registry (the families are its keys); every builder takes the TaskBuilder
    protocol's arguments and belongs to the module of its family."""
    import inspect

    from oracle.training.tasks.mix import BUILDERS, FAMILIES

    assert FAMILIES == tuple(BUILDERS)
    for family, build in BUILDERS.items():
        params = list(inspect.signature(build).parameters.values())
        assert [p.name for p in params[:6]] == ["tokenizer", "n_layers", "n", "seed", "data_dir", "split"], family
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[6:]), family
        assert inspect.getmodule(build).FAMILY == family
