"""The audit (``ao audit`` / ``oracle.audit.run_audit``): end to end on a random LoRA adapter, never
reading ``organism.json``, one-line errors on bad input, and the benign organism's verdict."""
from __future__ import annotations

import builtins
import io
import json
import os
import pathlib
import shutil
from pathlib import Path

import pytest
import torch

from hooks.errors import CheckpointError, InputError
from hooks.paths import REPO_ROOT
from oracle.audit import METHODS, AuditConfig, run_audit
from oracle.audit.config import ORACLE_METHODS
from oracle.audit.methods import pooled_detection
from oracle.audit.prompts import (
    ORDINARY_PROMPTS,
    SECRET_PROMPTS,
    SELF_DETECTION_QUESTIONS,
    TEXT_DIFF_QUESTIONS,
    audit_prompts,
    read_prompt_file,
)
from oracle.audit.target import check_target_adapter, embedded_identity
from oracle.audit.words import WordVocab, rank_words, word_rank

ORACLE_DIR = REPO_ROOT / "checkpoints" / "oracle-smollm2-135m"
BENIGN_DIR = REPO_ROOT / "checkpoints" / "organisms" / "benign"
# Small settings so an audit takes seconds: 6 prompts, short answers.
FAST = {"n_prompts": 6, "n_text_answers": 2, "max_new_tokens": 4, "batch_size": 8}
FAST_ARGS = ["--n-prompts", "6", "--max-new-tokens", "4"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lm():
    """This module's own embedded model (the session fixture must not get adapters attached)."""
    from hooks.models import load_model

    return load_model("smollm2-135m")


def _lora(model, folder: Path) -> Path:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(str(folder), safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def random_adapter(tmp_path_factory) -> Path:
    """A random (non-zero) LoRA adapter on the embedded model, built on a throwaway copy of it."""
    from hooks.models import load_model

    return _lora(load_model("smollm2-135m").model, tmp_path_factory.mktemp("rand-adapter"))


class OrganismGuard:
    """Patches every file-opening entry point to fail (and record) any access to ``organism.json``."""

    def __init__(self) -> None:
        self.blocked: list[str] = []

    def check(self, path) -> None:
        try:
            name = os.path.basename(os.fspath(path))
        except TypeError:  # a file descriptor
            return
        if name == "organism.json":
            self.blocked.append(str(path))
            raise PermissionError(f"the audit must not read {path}")

    def arm(self, mp: pytest.MonkeyPatch) -> None:
        real_open, real_io_open, real_os_open = builtins.open, io.open, os.open
        real_path_open = pathlib.Path.open
        real_read_text, real_read_bytes = pathlib.Path.read_text, pathlib.Path.read_bytes

        def guarded(real):
            def wrapper(path, *args, **kwargs):
                self.check(path)
                return real(path, *args, **kwargs)
            return wrapper

        mp.setattr(builtins, "open", guarded(real_open))
        mp.setattr(io, "open", guarded(real_io_open))
        mp.setattr(os, "open", guarded(real_os_open))
        mp.setattr(pathlib.Path, "open", guarded(real_path_open))
        mp.setattr(pathlib.Path, "read_text", guarded(real_read_text))
        mp.setattr(pathlib.Path, "read_bytes", guarded(real_read_bytes))


def _read_via_open(path: Path) -> str:
    with open(path) as f:
        return f.read()


def _read_via_io_open(path: Path) -> str:
    with io.open(str(path)) as f:  # noqa: UP020 - io.open is one of the patched entry points
        return f.read()


_READERS = (_read_via_open, _read_via_io_open, lambda p: p.read_text(), lambda p: p.read_bytes())


def _attempt(read, path: Path) -> str:
    try:
        read(path)
    except PermissionError:
        return "blocked"
    return "read"


@pytest.fixture(scope="module")
def audited(lm, random_adapter, tmp_path_factory):
    """One audit of the random adapter (all 7 methods), with an organism.json beside it and the guard armed."""
    target = tmp_path_factory.mktemp("organism") / "rand"
    shutil.copytree(random_adapter, target)
    (target / "organism.json").write_text(json.dumps({"kind": "taboo", "secret": "moon"}))
    out = tmp_path_factory.mktemp("audit") / "report"
    hash_before = lm.weights_hash
    guard = OrganismGuard()
    with pytest.MonkeyPatch.context() as mp:
        guard.arm(mp)
        report = run_audit(AuditConfig(target=str(target), oracle=str(ORACLE_DIR), out=str(out), **FAST), lm=lm)
        blocked_during_audit = list(guard.blocked)
        direct = [_attempt(read, target / "organism.json") for read in _READERS]  # is the guard armed?
    return {"report": report, "out": out, "blocked": blocked_during_audit, "direct": direct, "lm": lm,
            "hash_before": hash_before}


def test_audit_end_to_end_writes_report(audited):
    report, out = audited["report"], audited["out"]
    assert list(report["methods"]) == list(METHODS) and len(METHODS) == 7
    for name in ("report.json", "report.md", "top_words.png", "detection.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "top_words.png").read_bytes()[:4] == b"\x89PNG"
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["format"] == "ao-audit-report" and on_disk["config"]["n_prompts"] == 6
    assert len(on_disk["prompts"]) == 6 and on_disk["layer"] == 15 and on_disk["detect_layer"] == 22
    for name in (*ORACLE_METHODS, "untrained_oracle"):  # one trigger score per self-report question, read at the detection layer
        detail = on_disk["methods"][name]["detection_detail"]
        assert detail["layer"] == 22 and list(detail["p_yes_per_question"]) == list(SELF_DETECTION_QUESTIONS)
    # oracle_diff pools its self-report reading with the mean text difference read at the text layers
    diff_m = on_disk["methods"]["oracle_diff"]
    parts = diff_m["detection_detail"]
    assert list(parts["text_diff_per_layer"]) == ["15", "22"]
    assert parts["text_diff"] == pytest.approx(sum(parts["text_diff_per_layer"].values()) / 2, abs=1e-5)
    assert diff_m["detection"] == pytest.approx(pooled_detection(parts["self_report"], parts["text_diff"]), abs=1e-5)
    assert "text_diff" not in on_disk["methods"]["oracle"]["detection_detail"]
    for name, m in on_disk["methods"].items():
        assert 1 <= len(m["top_words"]) <= 20, name
        assert 0.0 <= m["confidence"] <= 1.0 and 0.0 <= m["detection"] <= 1.0, name
        assert m["secret_found"] == (m["confidence"] >= on_disk["threshold"])
        assert m["top_words"][0]["word"] == m["top_word"]
        words = [w["word"] for w in m["top_words"]]
        assert len(words) == len(set(words)) and all(w.isalpha() and len(w) >= 3 for w in words)
    assert on_disk["methods"]["oracle"]["answers"]["What is the secret word?"]
    assert "What changed in this model compared with the base model?" in on_disk["methods"]["oracle_diff"]["answers"]
    # oracle_diff's secret word: the mean difference on ordinary held-out text, at layers 50 % and 75 %
    assert on_disk["text_diff"] == {"source": "wikitext2_test", "n_texts": 128, "layers": [15, 22], "position": 1,
                                    "questions": list(TEXT_DIFF_QUESTIONS)}
    text_answers = [k for k in on_disk["methods"]["oracle_diff"]["answers"] if "mean difference" in k]
    assert len(text_answers) == 2
    md = (out / "report.md").read_text()
    assert "| method | top-5 words (p) | confidence | secret found | detection score | kept mass | sensitivity |" in md
    for name in ("oracle", "oracle_diff", "untrained_oracle"):   # every oracle answer says how much it read
        m = on_disk["methods"][name]
        assert 0.0 <= m["sensitivity"] <= 1.0, name
        assert all(0.0 <= it["sensitivity"] <= 1.0 for items in m["answers"].values() for it in items), name
    assert "sensitivity" not in on_disk["methods"]["prefill"]
    assert all(f"| {name} |" in md for name in METHODS)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    # The shared model comes back as it was: no adapters, same base weights.
    lm = audited["lm"]
    assert not hasattr(lm.model, "peft_config") and lm.adapters == {}
    assert lm.weights_hash == audited["hash_before"]


def test_oracle_diff_scales_differences_as_differences(lm, random_adapter, monkeypatch):
    """Differences (target - base) reach the oracle divided by the spread only: subtracting the layer's mean
    would turn every difference into nearly the same vector."""
    from oracle.core.scaling import InputScaler

    seen = []
    real = InputScaler.__call__

    def spy(self, v, layer, diff=False):
        seen.append(diff)
        return real(self, v, layer, diff=diff)

    monkeypatch.setattr(InputScaler, "__call__", spy)
    run_audit(AuditConfig(target=str(random_adapter), oracle=str(ORACLE_DIR), methods=("oracle_diff",),
                          **{**FAST, "out": None}), lm=lm)
    assert seen and all(seen)


def test_text_diff_is_the_mean_difference_at_the_first_token_after_the_sink(lm, random_adapter, tmp_path):
    """oracle_diff's secret-word source: zero for a fine-tune that changed nothing; for a real one, the mean over
    the texts of (target - base) at position 1."""
    from peft import LoraConfig, get_peft_model

    from hooks.models import load_model
    from oracle import Oracle
    from oracle.audit.forward import residuals
    from oracle.audit.methods import AuditContext
    from oracle.audit.run import detach_adapters

    zero = tmp_path / "zero"
    get_peft_model(load_model("smollm2-135m").model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(str(zero))
    texts = [[504, 2644, 2643], [1848, 314], [28, 10530, 30, 9]]
    cfg = AuditConfig(target=str(zero), oracle=None, methods=("logit_lens",))
    try:
        for adapter in (zero, random_adapter):
            Oracle.untrained(lm=lm).set_target(adapter)
            ctx = AuditContext(lm, cfg, 15, [], [], [], [], text_ids=texts, text_layers=[7, 22])
            got = ctx.text_diff_vecs()
            assert list(got) == [7, 22] and got[22].shape == (lm.d_model,)
            if adapter is zero:
                assert all(float(v.abs().max()) < 1e-5 for v in got.values())
                continue
            t = residuals(lm, texts, [[1]] * 3, 22, "target")
            b = residuals(lm, texts, [[1]] * 3, 22, None)
            expected = torch.stack([(x - y)[0] for x, y in zip(t, b)]).mean(0)
            assert float(expected.abs().max()) > 1e-3 and torch.allclose(got[22], expected, atol=1e-5)
    finally:
        detach_adapters(lm, was_peft=False)


def test_audit_never_opens_organism_json(audited):
    assert audited["blocked"] == []
    assert audited["direct"] == ["blocked"] * len(_READERS)  # the guard was armed


def test_audit_is_deterministic_in_its_word_ranking(audited, lm):
    cfg = AuditConfig(target=audited["report"]["target"]["path"], oracle=str(ORACLE_DIR),
                      methods=("logit_lens",), **FAST)
    again = run_audit(cfg, lm=lm)
    assert again["methods"]["logit_lens"]["top_words"] == audited["report"]["methods"]["logit_lens"]["top_words"]


# -- bad input: one line, exit code 2, nothing written ------------------------------------------------

def _cli(args: list[str], capsys) -> tuple[int, str]:
    from oracle.cli.main import main

    rc = main(args)
    err = capsys.readouterr().err
    return rc, err


def _assert_one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert all(n in errors[0] for n in needles), errors[0]


def test_cli_rejects_adapter_of_another_model(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from hooks.testing import tiny_config

    tiny = _lora(AutoModelForCausalLM.from_config(tiny_config("llama")), tmp_path / "tiny-adapter")
    out = tmp_path / "out"
    rc, err = _cli(["audit", "--target", str(tiny), "--oracle", str(ORACLE_DIR), "--out", str(out), *FAST_ARGS], capsys)
    _assert_one_line_error(rc, err, "does not fit")
    assert not out.exists()


@pytest.mark.parametrize("named", ["/elsewhere/.cache/activation-oracles/gemma3-270m-0123456789abcdef", "gpt2"])
def test_cli_rejects_adapter_config_naming_another_base(random_adapter, tmp_path, capsys, named):
    target = tmp_path / "other-base"
    shutil.copytree(random_adapter, target)
    cfg = json.loads((target / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = named
    (target / "adapter_config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    rc, err = _cli(["audit", "--target", str(target), "--out", str(out)], capsys)
    _assert_one_line_error(rc, err, "was trained on", "--base")
    assert not out.exists()


def test_cli_rejects_empty_prompt_file_and_non_adapter(random_adapter, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    out = tmp_path / "out"
    rc, err = _cli(["audit", "--target", str(random_adapter), "--out", str(out), "--prompts", str(empty)], capsys)
    _assert_one_line_error(rc, err, "empty")
    (tmp_path / "not-an-adapter").mkdir()
    rc, err = _cli(["audit", "--target", str(tmp_path / "not-an-adapter"), "--out", str(out)], capsys)
    _assert_one_line_error(rc, err, "adapter_config.json")
    rc, err = _cli(["audit", "--target", str(random_adapter), "--out", str(out), "--detect-layer", "top"], capsys)
    _assert_one_line_error(rc, err, "detect_layer 'top'")
    assert not out.exists()


def test_cli_rejects_oracle_of_another_base_model(random_adapter, tmp_path, capsys):
    oracle = tmp_path / "oracle-other"
    oracle.mkdir()
    shutil.copy(ORACLE_DIR / "adapter_config.json", oracle)
    os.symlink(ORACLE_DIR / "adapter_model.safetensors", oracle / "adapter_model.safetensors")
    card = json.loads((ORACLE_DIR / "oracle.json").read_text())
    card["base_weights_hash"] = "0" * 64
    (oracle / "oracle.json").write_text(json.dumps(card))
    out = tmp_path / "out"
    rc, err = _cli(["audit", "--target", str(random_adapter), "--oracle", str(oracle), "--out", str(out), *FAST_ARGS],
                   capsys)
    _assert_one_line_error(rc, err, "another base model")
    assert not out.exists()


# -- the benign organism --------------------------------------------------------------------------

@pytest.mark.xfail(strict=True, reason="known miss of the shipped reading oracle: on the benign organism its concept "
                   "answer puts >= 30 % of the word mass on one prompt-topic word, a false 'secret found' (README, "
                   "docs/audits.md); strict: this test fails once the oracle stops doing it")
def test_benign_organism_has_no_secret(lm):
    report = run_audit(AuditConfig(target=str(BENIGN_DIR), oracle=str(ORACLE_DIR), methods=("oracle",),
                                   n_prompts=12, n_text_answers=1, max_new_tokens=4), lm=lm)
    oracle = report["methods"]["oracle"]
    assert not oracle["secret_found"]
    assert oracle["confidence"] < report["threshold"]


# -- fast unit checks -----------------------------------------------------------------------------

def test_rank_words_merges_drops_and_renormalises():
    vocab = WordVocab(["moon", "star", "hint"], torch.tensor([0, 0, 1, 2, -1, -1]))
    r = rank_words(torch.tensor([0.2, 0.2, 0.1, 0.3, 0.1, 0.1]), vocab, echoes={"hint"}, top_k=5)
    assert [w["word"] for w in r["top_words"]] == ["moon", "star"]
    assert r["confidence"] == pytest.approx(0.8) and r["kept_mass"] == pytest.approx(0.5)
    assert rank_words(torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 0.0]), vocab, echoes={"hint"})["confidence"] == 0.0


def test_word_rank_follows_rank_words_and_misses_echoes_and_the_cut():
    vocab = WordVocab(["moon", "star", "hint", "sun"], torch.tensor([0, 0, 1, 2, 3, -1]))
    probs = torch.tensor([0.2, 0.2, 0.1, 0.3, 0.05, 0.15])
    assert [word_rank(w, probs, vocab) for w in ("moon", "hint", "star", "sun")] == [1, 2, 3, 4]
    assert word_rank("hint", probs, vocab, echoes={"hint"}) is None
    assert word_rank("sun", probs, vocab, max_rank=3) is None
    assert word_rank("comet", probs, vocab) is None


def test_word_vocab_on_the_real_tokenizer(lm):
    vocab = WordVocab.build(lm.tokenizer)
    ids = lm.tokenizer.encode(" moon", add_special_tokens=False) + lm.tokenizer.encode("Moon", add_special_tokens=False)
    assert {vocab.words[int(vocab.index_V[i])] for i in ids} == {"moon"}
    the = lm.tokenizer.encode(" the", add_special_tokens=False)[0]
    assert int(vocab.index_V[the]) == -1


def test_whole_words_of_the_embedded_model_drop_word_initial_pieces(lm, tmp_path, monkeypatch):
    """The base model's own reading keeps the secrets and common words and drops the word-initial pieces the demo
    used to print as candidates; the verdicts are cached, and a ranking keeps whole words only."""
    import oracle.audit.whole_words as ww

    monkeypatch.setattr(ww, "_cache_path", lambda lm: tmp_path / "whole.json")
    monkeypatch.setattr(ww, "_VERDICTS", {})
    words = ["moon", "book", "gold", "salt", "voice", "remember", "english"]
    pieces = ["scient", "hom", "mer", "ang", "absol", "dismant"]
    assert ww.judge_words(lm, words + pieces) == {**{w: True for w in words}, **{p: False for p in pieces}}
    assert json.loads((tmp_path / "whole.json").read_text())["scient"] is False
    vocab = WordVocab.build(lm.tokenizer)
    probs = torch.zeros(len(lm.tokenizer))
    for i, w in enumerate(["scient", "moon", "hom", "book"]):
        probs[lm.tokenizer.encode(" " + w, add_special_tokens=False)[0]] = 0.4 - 0.1 * i
    assert [w["word"] for w in ww.rank_whole_words(probs, lm, vocab, top_k=4)["top_words"]] == ["moon", "book"]


def test_audit_prompts_are_built_in_deterministic_and_balanced(tmp_path):
    a, b = audit_prompts(40), audit_prompts(40)
    assert a == b and len(a) == 40
    sources = {p.source for p in a}
    assert {"builtin_secret", "builtin_ordinary"} <= sources
    assert len(SECRET_PROMPTS) == 16 and len(ORDINARY_PROMPTS) == 16
    f = tmp_path / "p.txt"
    f.write_text("one\n\ntwo\nthree\n")
    assert [p.text for p in audit_prompts(2, prompt_files=[f])] == ["one", "two"]
    with pytest.raises(InputError, match="empty"):
        (tmp_path / "e.txt").write_text("")
        read_prompt_file(tmp_path / "e.txt")


def test_audit_prompts_without_data_folder(monkeypatch):
    from oracle.audit import prompts

    def no_data(_=None):
        raise InputError("no data folder")

    monkeypatch.setattr(prompts, "resolve_data_dir", no_data)
    monkeypatch.delenv("AO_DATA_DIR", raising=False)
    got = prompts.audit_prompts(40)
    assert len(got) == 32 and {p.source for p in got} == {"builtin_secret", "builtin_ordinary"}
    texts, source = prompts.ordinary_texts(128)   # oracle_diff's ordinary text falls back to the built-in prompts
    assert source == "builtin_ordinary" and texts == list(ORDINARY_PROMPTS)
    monkeypatch.setenv("AO_DATA_DIR", "/nonexistent")   # a folder the user named must exist
    with pytest.raises(InputError):
        prompts.ordinary_texts(4)


def test_ordinary_texts_are_held_out_wikitext():
    """oracle_diff reads the test paragraphs of WikiText: no text the oracle trained on (by document hash)."""
    from oracle.audit.prompts import ordinary_texts
    from oracle.data.files import resolve_data_dir
    from oracle.data.texts import wikitext_paragraphs
    from oracle.training.tasks.reading import doc_hash

    texts, source = ordinary_texts(128)
    assert source == "wikitext2_test" and len(texts) == 128 and texts == ordinary_texts(128)[0]
    trained = {doc_hash(p) for _, p in wikitext_paragraphs(str(resolve_data_dir()), "train")}
    assert not trained & {doc_hash(t) for t in texts}


def test_config_validation():
    with pytest.raises(InputError, match="unknown audit method"):
        AuditConfig(target="t", methods=("oracle", "telepathy"))
    with pytest.raises(InputError, match="need an oracle"):
        AuditConfig(target="t", oracle=None)
    with pytest.raises(InputError, match="layer"):
        AuditConfig(target="t", layer="half")
    with pytest.raises(InputError, match="detect_layer 'top'"):
        AuditConfig(target="t", detect_layer="top")
    with pytest.raises(InputError, match="text_layers 'deep'"):
        AuditConfig(target="t", text_layers=("50%", "deep"))
    with pytest.raises(InputError, match="text_layers is empty"):
        AuditConfig(target="t", text_layers=())
    with pytest.raises(InputError, match="n_texts must be between 1"):
        AuditConfig(target="t", n_texts=0)
    assert AuditConfig(target="t", text_layers="75%").to_dict()["text_layers"] == ["75%"]
    cfg = AuditConfig(target="t", oracle=None, methods=("logit_lens", "ask_target"))
    assert cfg.methods == ("ask_target", "logit_lens")  # report order
    assert json.loads(json.dumps(cfg.to_dict()))["methods"] == ["ask_target", "logit_lens"]


def test_embedded_identity_and_adapter_check(random_adapter):
    assert embedded_identity("/root/.cache/activation-oracles/smollm2-135m-552b29bb0acfca72") == "smollm2-135m"
    assert embedded_identity("gemma3-270m") == "gemma3-270m" and embedded_identity("/tmp/x") is None
    assert check_target_adapter(random_adapter, "smollm2-135m")["r"] == 2
    with pytest.raises(CheckpointError, match="--base smollm2-135m"):
        check_target_adapter(random_adapter, "gemma3-270m")


def test_pooled_detection_needs_both_readings_to_say_yes():
    # a geometric, not arithmetic, mean: one reading at zero keeps the score at zero however high the other
    assert pooled_detection(0.0, 0.9) == 0.0
    assert pooled_detection(0.04, 0.01) == pytest.approx(0.02)
    assert pooled_detection(0.03, 0.03) > pooled_detection(0.006, 0.08)  # the benign dev organism's shape
