"""Oracle core: injection, prompt, batching, training step, crash-and-resume, the query API, bad input."""
from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch

from hooks.errors import CheckpointError, InputError
from hooks.inject import inject_at, norm_matched_add
from hooks.testing import tiny_loaded, tiny_model
from oracle.core.batching import make_oracle_batch
from oracle.core.prompt import build_prompt, placeholder_token
from oracle.training.tasks.base import OracleExample


def test_coef_zero_gives_exactly_the_uninjected_logits():
    m = tiny_model("llama")
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    ref = m(ids).logits
    with inject_at(m, 1, [0, 0], [1, 3], torch.randn(2, 64), coef=0.0) as info:
        got = m(ids).logits
    assert info["calls"] == 1
    assert torch.equal(ref, got)


def test_vectors_land_only_on_placeholder_positions():
    m = tiny_model("qwen3", n_layers=3)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    seen = {}

    def grab(_m, _i, out):
        seen["h"] = (out[0] if isinstance(out, tuple) else out).detach().clone()

    from hooks.layers import decoder_layers

    h = decoder_layers(m)[1].register_forward_hook(grab)
    m(ids)
    base = seen["h"]
    h.remove()
    v = torch.randn(2, 64)
    with inject_at(m, 1, [0, 0], [2, 4], v):
        h = decoder_layers(m)[1].register_forward_hook(grab)  # runs after the injection hook
        m(ids)
    h.remove()
    changed = (seen["h"] - base).abs().sum(-1)[0]
    assert changed[2] > 0 and changed[4] > 0
    assert torch.count_nonzero(changed) == 2
    # the formula: h + ||h|| * v/||v||
    assert torch.allclose(seen["h"][0, [2, 4]], norm_matched_add(base[0, [2, 4]], v), atol=1e-5)


def test_cached_generation_does_not_reinject():
    m = tiny_model("llama")
    ids = torch.tensor([[5, 6, 7, 8]])
    with inject_at(m, 1, [0], [2], torch.randn(1, 64)) as info:
        out = m.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False,
                         pad_token_id=0)
    assert out.shape[1] == 9
    assert info["calls"] == 1  # prefill only; the 4 cached steps were left alone


def test_injection_rejects_mismatched_slots_and_widths():
    m = tiny_model("llama")
    with pytest.raises(InputError, match="one vector per slot"):
        with inject_at(m, 1, [0], [1, 2], torch.randn(2, 64)):
            pass
    with pytest.raises(InputError, match="width"):
        with inject_at(m, 1, [0], [1], torch.randn(1, 32)):
            m(torch.tensor([[5, 6, 7]]))


def test_placeholder_is_one_token_for_each_embedded_tokenizer(hf_tokenizer):
    toks = {"smollm2-135m": hf_tokenizer}
    try:
        from transformers import AutoTokenizer

        from hooks.models import embedded_gguf_path

        p = embedded_gguf_path("gemma3-270m")
        toks["gemma3-270m"] = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    except Exception as e:  # noqa: BLE001
        warnings.warn(f"gemma3-270m not installed, placeholder checked on smollm2 only ({e})")
    for name, tok in toks.items():
        ph, ph_id = placeholder_token(tok)
        assert ph == " ?", name
        prompt = build_prompt(tok, 15, 4, "What is the secret word?")
        assert [prompt.input_ids[i] for i in prompt.placeholder_positions] == [ph_id] * 4
        assert "You are a helpful" not in prompt.text  # no default system prompt added


def test_prompt_text_matches_design(hf_tokenizer):
    p = build_prompt(hf_tokenizer, 7, 2, "Is it?")
    assert "Layer: 7\n ? ? \nIs it?" in p.text
    with pytest.raises(InputError, match="empty"):
        build_prompt(hf_tokenizer, 7, 2, "  ")


def _examples(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ctx = torch.randint(3, 200, (8,), generator=g).tolist()
        out.append(OracleExample("classification", ctx, [7], 1, "Is it?", "Yes" if i % 2 else "No"))
    return out


def test_a_training_step_lowers_the_loss_on_a_fixed_batch():
    from peft import LoraConfig, get_peft_model

    from oracle.training.loop import TrainConfig, make_batch, oracle_loss

    lm = tiny_loaded("llama", seed=3)
    import copy

    lm.model = get_peft_model(copy.deepcopy(lm.model), LoraConfig(r=4, target_modules="all-linear"), adapter_name="oracle")
    cfg = TrainConfig(out="unused", placeholder="?")
    exs = _examples(8)
    batch = make_batch(lm, cfg, exs, list(range(8)), None)
    params = [p for p in lm.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    before = float(oracle_loss(lm, batch, cfg, False))
    for _ in range(5):
        opt.zero_grad()
        oracle_loss(lm, batch, cfg, False).backward()
        opt.step()
    after = float(oracle_loss(lm, batch, cfg, False))
    assert after < before - 0.1


def test_right_and_left_padded_batches_give_the_same_loss():
    from peft import LoraConfig, get_peft_model

    from oracle.training.loop import TrainConfig, oracle_loss

    lm = tiny_loaded("llama")
    import copy

    lm.model = get_peft_model(copy.deepcopy(lm.model), LoraConfig(r=4, target_modules="all-linear"), adapter_name="oracle")
    v = [torch.randn(3, 64), torch.randn(1, 64)]
    losses = []
    for side in ("left", "right"):
        b = make_oracle_batch(lm.tokenizer, v, [1, 1], ["What are the next tokens?", "Is it?"], ["abc def", "Yes"],
                              placeholder="?", side=side)
        losses.append(float(oracle_loss(lm, b, TrainConfig(out="unused", placeholder="?"), False)))
    assert abs(losses[0] - losses[1]) < 1e-4


def test_loss_per_example_weighs_every_answer_the_same():
    from peft import LoraConfig, get_peft_model

    from oracle.training.loop import TrainConfig, oracle_loss

    lm = tiny_loaded("llama")
    import copy

    lm.model = get_peft_model(copy.deepcopy(lm.model), LoraConfig(r=4, target_modules="all-linear"), adapter_name="oracle")
    v = [torch.randn(3, 64), torch.randn(1, 64)]
    qs, answers = ["What are the next tokens?", "Is it?"], ["abc def ghi jkl", "Yes"]

    def loss(idx, per):
        b = make_oracle_batch(lm.tokenizer, [v[i] for i in idx], [1] * len(idx), [qs[i] for i in idx],
                              [answers[i] for i in idx], placeholder="?", side="right")
        return float(oracle_loss(lm, b, TrainConfig(out="unused", placeholder="?", loss_per=per), False)), b

    single = [loss([i], "example")[0] for i in (0, 1)]
    n_tok = [int((loss([i], "token")[1].labels_BL != -100).sum()) for i in (0, 1)]
    assert n_tok[0] > n_tok[1]
    assert loss([0, 1], "example")[0] == pytest.approx(sum(single) / 2, rel=1e-4)
    assert loss([0, 1], "token")[0] == pytest.approx((single[0] * n_tok[0] + single[1] * n_tok[1]) / sum(n_tok),
                                                      rel=1e-4)
    with pytest.raises(InputError):
        TrainConfig(out="unused", loss_per="batch")


def _train(tmp_path, name, stop_after=None):
    from oracle.training.loop import TrainConfig, train_oracle

    lm = tiny_loaded("llama", seed=5)
    lm = type(lm)(model=__import__("copy").deepcopy(lm.model), tokenizer=lm.tokenizer, spec=lm.spec)
    cfg = TrainConfig(out=str(tmp_path / name), model="tiny-llama", steps=6, batch_size=4, lr=1e-3, warmup_steps=1,
                      save_every=2, lora_r=4, activations="on_the_fly", placeholder="?", onpolicy=0, seed=1)
    return train_oracle(cfg, lm=lm, examples=_examples(16), stop_after=stop_after), cfg


def test_in_training_evaluation_injects_where_the_run_does(tmp_path):
    """The evaluation's oracle carries the run's injection layer, coefficient and placeholder, and its forward
    pass really adds the vectors at the output of that block."""
    import hooks.inject as inject
    from oracle.training.loop import TrainConfig, train_oracle

    lm = _fresh_tiny()   # training attaches an adapter: never to the cached model
    seen = []

    def eval_fn(oracle):
        calls = []
        real = inject.inject_at

        def spy(model, layer, *args, **kwargs):
            calls.append((layer, args[-1] if len(args) >= 4 else kwargs.get("coef")))
            return real(model, layer, *args, **kwargs)

        import oracle.core.api as api
        api.inject_at, saved = spy, api.inject_at
        try:
            oracle.yes_probability(torch.randn(1, lm.d_model), "Is it?")
        finally:
            api.inject_at = saved
        seen.append((oracle.card.injection_layer, oracle.card.coef, oracle.card.placeholder, calls))
        return {}

    cfg = TrainConfig(out=str(tmp_path / "run"), model="tiny-llama", steps=2, batch_size=4, lr=1e-3, warmup_steps=1,
                      save_every=2, eval_every=2, lora_r=4, activations="on_the_fly", placeholder="?", onpolicy=0,
                      injection_layer=0, coef=0.5, seed=1)
    train_oracle(cfg, lm=lm, examples=_examples(8), eval_fn=eval_fn)
    assert len(seen) == 2   # step 0 (untrained) and the last step
    for layer, coef, placeholder, calls in seen:
        assert (layer, coef, placeholder) == (0, 0.5, "?")
        assert calls and all(c == (0, 0.5) for c in calls)
    card = json.loads((tmp_path / "run" / "oracle.json").read_text())
    assert (card["injection_layer"], card["coef"]) == (0, 0.5)


def test_crash_and_resume_gives_the_same_adapter(tmp_path):
    from safetensors.torch import load_file

    full, cfg = _train(tmp_path, "full")
    part, _ = _train(tmp_path, "crash", stop_after=3)
    assert part == {"stopped_at": 3}
    assert (tmp_path / "crash" / "train_state" / "optimizer.safetensors").exists()
    resumed, _ = _train(tmp_path, "crash")
    a = load_file(str(tmp_path / "full" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "crash" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    card = json.loads((tmp_path / "crash" / "oracle.json").read_text())
    assert card["training"]["steps"] == 6 and card["train_config"]["lora_r"] == 4
    assert (tmp_path / "crash" / "loss.png").exists() and (tmp_path / "crash" / "train_log.jsonl").exists()
    assert not (tmp_path / "crash" / "train_state").exists()


def test_resuming_with_changed_settings_names_the_fields(tmp_path):
    from oracle.training.loop import train_oracle

    part, cfg = _train(tmp_path, "crash", stop_after=2)
    assert part == {"stopped_at": 2}
    changed = dataclasses.replace(cfg, lr=2e-3, lora_r=8, eval_every=3, time_budget_s=60.0)
    lm = tiny_loaded("llama", seed=5)
    with pytest.raises(CheckpointError, match=r"other settings \(lora_r: 4 -> 8; lr: 0.001 -> 0.002\)") as e:
        train_oracle(changed, lm=lm, examples=_examples(16))
    assert "delete" in str(e.value) and "train_state" in str(e.value)


def _fresh_tiny():
    """A private copy of the (cached) tiny model: a test that attaches adapters must not share it."""
    from hooks.testing import ByteTokenizer, LoadedModel, tiny_model

    return LoadedModel(model=tiny_model.__wrapped__("llama", 2, 5), tokenizer=ByteTokenizer(), spec="tiny-llama")


def test_init_from_continues_an_oracle_and_refuses_other_settings(tmp_path):
    """--init-from starts from the given oracle's adapter and input scaling (step 0 reads with its weights), keeps
    its training summary in the new card, and refuses an oracle trained with another LoRA shape or injection."""
    from safetensors.torch import load_file

    from oracle.core.scaling import STATS_FILE
    from oracle.training.loop import train_oracle

    _, cfg = _train(tmp_path, "first")
    first = tmp_path / "first"
    seen = []

    def eval_fn(oracle):
        seen.append({n: p.detach().clone() for n, p in oracle.lm.model.named_parameters() if "lora_B" in n})
        return {}

    cont = dataclasses.replace(cfg, out=str(tmp_path / "cont"), steps=2, init_from=str(first), eval_every=100)
    train_oracle(cont, lm=_fresh_tiny(), examples=_examples(16), eval_fn=eval_fn)
    saved = load_file(str(first / "adapter_model.safetensors"))
    b_saved = sorted(v.abs().sum().item() for k, v in saved.items() if "lora_B" in k)
    b_step0 = sorted(v.abs().sum().item() for v in seen[0].values())
    assert b_step0 == pytest.approx(b_saved) and max(b_saved) > 0   # a fresh LoRA would have B == 0
    assert (tmp_path / "cont" / STATS_FILE).read_bytes() == (first / STATS_FILE).read_bytes()
    card = json.loads((tmp_path / "cont" / "oracle.json").read_text())
    assert card["training"]["init_from"] == str(first) and card["training"]["init_training"]["steps"] == 6
    for change in ({"lora_r": 8}, {"coef": 0.5}):
        bad = dataclasses.replace(cont, out=str(tmp_path / f"bad{len(change)}{list(change)[0]}"), **change)
        with pytest.raises(CheckpointError, match=f"--init-from .*other settings \\({list(change)[0]}"):
            train_oracle(bad, lm=_fresh_tiny(), examples=_examples(16))


def test_input_scaling_ships_with_the_adapter_and_the_oracle_applies_it(tmp_path):
    from oracle.core.api import Oracle, Query
    from oracle.core.scaling import STATS_FILE, InputScaler

    _, cfg = _train(tmp_path, "scaled")
    folder = tmp_path / "scaled"
    card = json.loads((folder / "oracle.json").read_text())
    assert card["input_scaling"] == "standardize" and (folder / STATS_FILE).exists()
    scaler = InputScaler.load(folder)
    assert scaler.layers == [1]
    # the statistics are those of the training activations (examples read layer 1 at position 7)
    lm = tiny_loaded("llama", seed=5)
    from oracle.core.batching import target_vectors

    exs = _examples(16)
    raw = torch.cat(target_vectors(lm, [e.context_ids for e in exs], [e.positions for e in exs], [1] * 16))
    assert torch.allclose(scaler.mean[1], raw.mean(0), atol=1e-5)
    assert torch.allclose(scaler(raw, 1).std(0), torch.ones(raw.shape[1]), atol=1e-4)
    # the loaded oracle injects scaler(v), and only the scale for a difference
    oracle = Oracle.load(folder, lm=lm)
    v = torch.randn(2, 64) * 5 + 3
    assert torch.equal(oracle._batch([Query(v, "Is it?", 1)], diff=False).vectors_ND, scaler(v, 1))
    assert torch.equal(oracle._batch([Query(v, "Is it?", 1)], diff=True).vectors_ND, v / scaler.std[1])
    from oracle.core.card import OracleCard

    assert Oracle.from_model(lm, card=OracleCard.for_model(lm)).scaler is None
    assert oracle.baseline().scaler is oracle.scaler and oracle.baseline().card is oracle.card


def test_input_scaling_bad_files_and_settings_are_one_line(tmp_path):
    from oracle.core.scaling import STATS_FILE, InputScaler
    from oracle.training.loop import TrainConfig

    with pytest.raises(InputError, match="--input-scaling must be"):
        TrainConfig(input_scaling="whiten")
    with pytest.raises(CheckpointError, match=f"has no {STATS_FILE}"):
        InputScaler.load(tmp_path)
    (tmp_path / STATS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        InputScaler.load(tmp_path)
    s = InputScaler.fit({3: [torch.randn(5, 8)]})
    with pytest.raises(InputError, match="width 4"):
        s(torch.randn(1, 4), 3)
    s.save(tmp_path)
    back = InputScaler.load(tmp_path)
    assert torch.equal(back.mean[3], s.mean[3]) and torch.equal(back.std[3], s.std[3])
    # a layer without statistics uses the nearest measured one
    assert torch.equal(s(torch.ones(1, 8), 9), s(torch.ones(1, 8), 3))


def test_runs_with_another_task_mix_never_share_examples_or_activations():
    # regression: the cached example list was named by the out folder's name alone, so a run in runs/b/oracle
    # silently trained on the examples another mix had built for runs/a/oracle
    from oracle.training.loop import TrainConfig

    a = TrainConfig(out="runs/a/oracle")
    for other in (TrainConfig(out="runs/b/oracle", open_class_frac=0), TrainConfig(out="runs/a/oracle", seed=1),
                  TrainConfig(out="runs/a/oracle", negated_question_frac=0), TrainConfig(out="runs/a/oracle", n_examples=7),
                  TrainConfig(out="runs/a/oracle", verify_kinds={"word": 1.0})):
        assert other.examples_path != a.examples_path and other.store_path != a.store_path
    same = TrainConfig(out="runs/a/oracle", lr=5e-4, steps=3, eval_every=7)   # e.g. a resumed or retuned run
    assert same.examples_path == a.examples_path and same.store_path == a.store_path
    assert TrainConfig(out="runs/a/oracle", examples_file="ex.jsonl").examples_path.name == "ex.jsonl"


def test_config_validation_is_one_line():
    from oracle.training.loop import TrainConfig

    with pytest.raises(InputError, match="--activations"):
        TrainConfig(activations="disk")
    with pytest.raises(InputError, match="learning rate"):
        TrainConfig(lr=5)
    with pytest.raises(InputError, match="unknown task famil"):
        TrainConfig(mix={"classification": 1.0, "secrets": 1.0})
    with pytest.raises(InputError, match="positive sum"):
        TrainConfig(mix={"classification": 0})
    with pytest.raises(InputError, match="--open-class-frac"):
        TrainConfig(open_class_frac=-0.1)
    with pytest.raises(InputError, match="--negated-question-frac"):
        TrainConfig(negated_question_frac=2)


def test_ao_train_and_eval_reject_bad_arguments_in_one_line(tmp_path, capsys):
    from oracle.cli.main import main

    assert main(["train", "--out", str(tmp_path / "o"), "--mix", "{classification: 1}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--mix is not valid JSON" in err
    assert not (tmp_path / "o").exists()
    assert main(["eval", "--n", "0", "--families-n", "0", "--out", str(tmp_path / "e")]) == 2
    assert "not both 0" in capsys.readouterr().err and not (tmp_path / "e").exists()


# -- the query API on the embedded model and the shipped oracle ---------------------------------

SHIPPED = "checkpoints/oracle-smollm2-135m"


@pytest.fixture(scope="module")
def shipped(embedded_lm):
    from oracle.core.api import Oracle

    oracle = Oracle.load(SHIPPED, lm=embedded_lm)
    yield oracle
    # give the shared session model back without the oracle adapter
    embedded_lm.model = embedded_lm.model.unload() if hasattr(embedded_lm.model, "unload") else embedded_lm.model
    embedded_lm.adapters.clear()


@pytest.mark.slow
def test_ask_batch_matches_single_asks(shipped):
    from oracle.core.api import Query

    qs = [Query("The cat sat on the mat.", "What animal is mentioned?", positions="all"),
          Query("I hated this movie, it was awful.", "Answer with 'Yes' or 'No' only. Is the sentiment positive?"),
          Query(torch.randn(2, 576), "What is this about?")]
    batch = shipped.ask_batch(qs, max_new_tokens=8)
    single = [shipped.ask(q.source, q.question, positions=q.positions, max_new_tokens=8) for q in qs]
    assert batch == single
    p = shipped.yes_probability(qs[1].source, qs[1].question)
    assert 0.0 <= p <= 1.0


@pytest.mark.slow
def test_bad_input_to_the_oracle(shipped):
    with pytest.raises(InputError, match="width 576"):
        shipped.ask(torch.randn(3, 100), "What is it?")
    with pytest.warns(UserWarning, match="not one the oracle was trained on"):
        shipped.ask(torch.randn(1, 576), "What is it?", layer=3, max_new_tokens=2)
    with pytest.raises(InputError, match="over the"):
        shipped.ask(torch.randn(1, 576), "why " * 9000, max_new_tokens=2)
    with pytest.raises(InputError, match="diff=True needs a target adapter"):
        shipped.ask("hello", "What?", diff=True)
    with pytest.raises(InputError, match="NaN or inf"):
        shipped.ask(torch.full((1, 576), float("nan")), "What is it?", max_new_tokens=2)
    n = len(shipped.encode("The cat sat."))
    with pytest.raises(InputError, match=f"position 100 is outside the text, which has {n} tokens"):
        shipped.ask("The cat sat.", "What is it?", positions=100, max_new_tokens=2)
    with pytest.raises(InputError, match="outside the text"):
        shipped.ask("The cat sat.", "What is it?", positions=[0, -n - 1], max_new_tokens=2)
    from hooks.positions import Positions

    assert Positions.parse(-1).select(n) == [n - 1] and Positions.parse([0, -2]).select(n) == [0, n - 2]


def test_oracle_card_for_another_base_model_is_refused(tmp_path):
    import shutil

    from oracle.core.api import Oracle

    dst = tmp_path / "oracle"
    shutil.copytree(SHIPPED, dst, ignore=shutil.ignore_patterns("eval", "*.png", "*.jsonl"))
    with pytest.raises(CheckpointError, match="trained on smollm2-135m"):
        Oracle.load(dst, lm=tiny_loaded("llama"))
    (dst / "adapter_model.safetensors").unlink()
    (dst / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(CheckpointError, match="pickled"):
        Oracle.load(dst, lm=tiny_loaded("llama"))


def test_scores_by_asked_separates_a_question_and_its_negation():
    from oracle.evals.heldout import scores_by_asked
    from oracle.training.tasks.base import OracleExample

    # P(Yes) follows the feature and ignores "not": right on "x", wrong on "not_x", chance overall
    exs = [OracleExample("classification", [1], [0], 0, "q", a, meta={"asked": k})
           for a, k in [("Yes", "x"), ("No", "x"), ("Yes", "not_x"), ("No", "not_x")]]
    sc = scores_by_asked([0.9, 0.1, 0.4, 0.6], exs)
    assert sc["accuracy"] == 0.5 and sc["n"] == 4
    assert sc["by_asked"]["x"]["accuracy"] == 1.0 and sc["by_asked"]["x"]["auroc"] == 1.0
    assert sc["by_asked"]["not_x"]["accuracy"] == 0.0 and sc["by_asked"]["not_x"]["auroc"] == 0.0


@pytest.mark.slow
def test_eval_report_scores_agree_with_the_api_and_list_training_groups(shipped, tmp_path):
    from oracle.core.api import Query
    from oracle.evals.heldout import (evaluate_heldout_scores, evaluate_training_groups, example_vectors,
                                 heldout_accuracies, write_report, yes_no_scores)
    from oracle.training.tasks.classification import build_classification

    exs = build_classification(shipped.lm.tokenizer, shipped.lm.n_layers, 12, 0, split="eval", datasets=["tense"],
                               position="last")
    sc = yes_no_scores(shipped, exs)
    p = shipped.yes_probability_batch([Query(v, e.question, e.layer) for v, e in zip(example_vectors(shipped, exs), exs)])
    assert sc["accuracy"] == sum((pi >= 0.5) == (e.answer == "Yes") for pi, e in zip(p, exs)) / len(exs)
    assert sc["mean_p_yes"] == pytest.approx(sum(p) / len(p))
    assert 0.0 <= sc["auroc"] <= 1.0 and sc["n"] == 12

    fam = {"context_prediction": {"exact_match": 0.0, "first_word_match": 0.0},
           "classification_eval_split": evaluate_training_groups(shipped, n=4)}
    assert set(fam["classification_eval_split"]) == {"gmt", "relations", "sst2", "tense"}
    scores = evaluate_heldout_scores(shipped, n=8, positions=["last"], datasets=["engels/139_news_class_Politics"])
    sc = scores["engels/139_news_class_Politics"]["last"]
    assert set(sc["by_asked"]) == {"politics", "not_politics"}
    assert [v["n"] for v in sc["by_asked"].values()] == [4, 4]
    assert sc["accuracy"] == pytest.approx(sum(v["accuracy"] for v in sc["by_asked"].values()) / 2)
    heldout = heldout_accuracies(scores)
    assert heldout == {"engels/139_news_class_Politics": {"last": sc["accuracy"]}}
    md, png = write_report(heldout, heldout, tmp_path, families=fam, families_untrained=fam,
                           trained_scores=scores, untrained_scores=scores)
    text = md.read_text()
    assert "classification `tense` (training group, eval split)" in text and png.is_file()
    assert "| engels/139_news_class_Politics | last | not_politics |" in text
    md, png = write_report({}, {}, tmp_path / "families_only", families=fam, families_untrained=fam)  # ao eval --n 0
    assert png is None and "Held-out classification" not in md.read_text() and "`gmt`" in md.read_text()


@pytest.mark.slow
def test_ctrl_c_during_ao_train_saves_and_resumes_to_the_same_adapter(tmp_path, tiny_model_dir):
    """SIGINT during `ao train` (a subprocess on the tiny model folder): the step it interrupts finishes, the run is
    saved, one line says how to resume (exit 130); rerunning the command gives the uninterrupted run's adapter."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from safetensors.torch import load_file

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "oracle.cli", "train", "--model", str(tiny_model_dir), "--out", str(out),
                "--store-dir", str(out.parent / f"cache-{out.name}"), "--n-examples", "64", "--steps", "120",
                "--batch-size", "4", "--lora-r", "4", "--save-every", "1000", "--activations", "on_the_fly",
                "--onpolicy", "0", "--no-eval", "--calibration-n", "0", "--scaling-examples", "16"]

    stopped = tmp_path / "stopped"
    proc = subprocess.Popen(command(stopped), cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not (stopped / "input_scaling.safetensors").exists():
            time.sleep(0.02)
        time.sleep(1.5)   # into the training loop
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = err.decode(errors="replace")
    assert proc.returncode == 130, text[-2000:]
    assert text.strip().splitlines()[-1] == ("interrupted: the run was saved at its last step; rerun the same "
                                             "command to resume from there")
    state = json.loads((stopped / "train_state" / "state.json").read_text())
    assert 0 < state["step"] < 120 and not (stopped / "adapter_model.safetensors").exists()
    assert subprocess.run(command(stopped), cwd=repo, env=env, capture_output=True, timeout=300).returncode == 0
    fresh = tmp_path / "fresh"
    assert subprocess.run(command(fresh), cwd=repo, env=env, capture_output=True, timeout=300).returncode == 0
    a = load_file(str(stopped / "adapter_model.safetensors"))
    b = load_file(str(fresh / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
