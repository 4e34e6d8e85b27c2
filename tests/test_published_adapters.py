"""Published Activation Oracle adapters (bare PEFT folders, no oracle.json) load, get a derived card,
and answer exactly as the published injection says they should.

Everything runs on a tiny random-init Qwen3 built from a config in a temporary folder, with a
byte-level BPE tokenizer and a Qwen3-style chat template (``enable_thinking``), and a random LoRA
saved in the layout of the published adapters (``adapter_config.json`` + ``adapter_model.safetensors``).
The reference below is written from the paper's description and does not import this project's
prompt, batching or injection code.
"""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from hooks.errors import CheckpointError, LayerError, ModelLoadError
from hooks.adapter_base import is_local_path, load_adapter_base, resolve_adapter_base
from hooks.models import EMBEDDED, load_model
from hooks.paths import REPO_ROOT
from oracle.core.api import Oracle, Query
from oracle.core.card import read_card
from oracle.core.published import CardOverrides
from oracle.core.yes_no import yes_share

N_LAYERS, D_MODEL = 4, 64
QUESTION = "Is this text about the moon?"
# Qwen3's chat template, cut down to what one user turn needs; with enable_thinking=False the
# generation prompt ends in an empty think block, as Qwen3's own template renders it.
QWEN3_TEMPLATE = (
    "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}{%- endif %}"
)
CORPUS = [
    "Layer: 2\n ? ? ? \nWhat is the model thinking about? Yes No yes no",
    "Is this text about the moon? Is the sentiment positive? Answer with Yes or No.",
    "The moon rose over the quiet harbour, and the cat watched it from the wall.",
]


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from oracle.cli.main import main

    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(rc: int, err: str, *needles: str) -> str:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


# -- fixtures: a tiny Qwen3, its oracle adapter, a target adapter ---------------------------------

def _save_tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, show_progress=False,
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 40, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = QWEN3_TEMPLATE
    fast.save_pretrained(folder)
    return fast


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory) -> Path:
    """A random-init 4-layer Qwen3 (d_model 64) saved with save_pretrained next to its tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("tiny-qwen3")
    tok = _save_tokenizer(folder)
    assert len(tok.encode(" ?", add_special_tokens=False)) == 1
    cfg = AutoConfig.for_model("qwen3", vocab_size=len(tok), hidden_size=D_MODEL, intermediate_size=2 * D_MODEL,
                               num_hidden_layers=N_LAYERS, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                               max_position_embeddings=512, tie_word_embeddings=False, initializer_range=0.2,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder, safe_serialization=True)
    return folder


def _lora(qwen3_dir: Path, folder: Path, seed: int, targets: list[str], base_name: str | None = None) -> Path:
    """A random (non-zero) LoRA saved as PEFT saves it, then ``base_model_name_or_path`` set to ``base_name``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(qwen3_dir)
    torch.manual_seed(seed)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False))
    with torch.no_grad():  # make the adapter matter: B is zero-free but small after init_lora_weights=False
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(20.0)
    peft_model.save_pretrained(str(folder), safe_serialization=True)
    cfg_path = folder / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = base_name if base_name is not None else str(qwen3_dir)
    cfg_path.write_text(json.dumps(cfg, indent=2))
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "adapter_config.json",
                                                        "adapter_model.safetensors"]
    return folder


ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def bare_oracle(qwen3_dir, tmp_path_factory) -> Path:
    """A bare oracle adapter (the published layout) whose adapter_config.json names the tiny Qwen3's folder."""
    return _lora(qwen3_dir, tmp_path_factory.mktemp("ao") / "oracle", seed=1, targets=ALL_LINEAR)


@pytest.fixture(scope="module")
def bare_target(qwen3_dir, tmp_path_factory) -> Path:
    """A fine-tune to audit: a bare LoRA target adapter on the same tiny Qwen3."""
    return _lora(qwen3_dir, tmp_path_factory.mktemp("target") / "target", seed=2, targets=["q_proj", "v_proj"])


def _copy_naming(adapter: Path, dst: Path, base_name: str) -> Path:
    shutil.copytree(adapter, dst)
    cfg = json.loads((dst / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = base_name
    (dst / "adapter_config.json").write_text(json.dumps(cfg))
    return dst


@pytest.fixture(scope="module")
def oracle(bare_oracle) -> Oracle:
    return Oracle.load(bare_oracle)


# -- the reference: the published injection, written from the paper -------------------------------

class Reference:
    """The published recipe, independently: prompt ``"Layer: L\\n" + " ?"*K + " \\n" + question`` in the
    chat template (``enable_thinking=False``); at the output of decoder block 1, on the prefill pass
    only, each placeholder position's residual ``h`` becomes ``h + ||h|| * v/||v|| * coef``."""

    def __init__(self, model_dir: Path, adapter_dir: Path) -> None:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_dir)
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
        self.calls = 0

    def prompt_ids(self, layer: int, k: int, question: str) -> list[int]:
        content = f"Layer: {layer}\n" + " ?" * k + " \n" + question
        ids = self.tok.apply_chat_template([{"role": "user", "content": content}], tokenize=True,
                                           add_generation_prompt=True, enable_thinking=False)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def placeholder_positions(self, ids: list[int], k: int) -> list[int]:
        (special,) = self.tok.encode(" ?", add_special_tokens=False)
        pos = [i for i, t in enumerate(ids) if t == special][:k]
        assert len(pos) == k and pos[-1] - pos[0] == k - 1
        return pos

    def hook(self, vectors_KD: torch.Tensor, positions: list[int], coef: float = 1.0):
        unit = torch.nn.functional.normalize(vectors_KD, dim=-1)

        def fn(_module, _inputs, output):
            resid = output[0] if isinstance(output, tuple) else output
            if resid.shape[1] <= 1:  # a cached generation step: never inject
                return output
            self.calls += 1
            orig = resid[0, positions, :]
            resid[0, positions, :] = orig + unit * orig.norm(dim=-1, keepdim=True) * coef
            return output

        return self.model.base_model.model.model.layers[1].register_forward_hook(fn)

    @torch.no_grad()
    def logits(self, vectors_KD: torch.Tensor, layer: int, question: str) -> tuple[list[int], torch.Tensor]:
        ids = self.prompt_ids(layer, vectors_KD.shape[0], question)
        handle = self.hook(vectors_KD, self.placeholder_positions(ids, vectors_KD.shape[0]))
        try:
            out = self.model(input_ids=torch.tensor([ids])).logits[0]
        finally:
            handle.remove()
        return ids, out

    @torch.no_grad()
    def greedy(self, vectors_KD: torch.Tensor, layer: int, question: str, n: int) -> list[int]:
        """Greedy decoding with no cache: every step re-reads the whole prompt (injected each time,
        which is what prefill-only injection plus a KV cache must equal)."""
        ids = self.prompt_ids(layer, vectors_KD.shape[0], question)
        handle = self.hook(vectors_KD, self.placeholder_positions(ids, vectors_KD.shape[0]))
        new: list[int] = []
        try:
            for _ in range(n):
                nxt = int(self.model(input_ids=torch.tensor([ids + new]), use_cache=False).logits[0, -1].argmax())
                new.append(nxt)
                if nxt == self.tok.eos_token_id:
                    break
        finally:
            handle.remove()
        return new

    @torch.no_grad()
    def residual(self, text: str, layer: int) -> torch.Tensor:
        """The base model's (adapter off) output of block ``layer`` at the text's last token."""
        ids = self.tok(text, add_special_tokens=True)["input_ids"]
        with self.model.disable_adapter():
            hs = self.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        return hs[layer + 1][0, -1:]


@pytest.fixture(scope="module")
def reference(qwen3_dir, bare_oracle) -> Reference:
    return Reference(qwen3_dir, bare_oracle)


def _our_logits(oracle: Oracle, queries: list[Query]) -> tuple[torch.Tensor, object]:
    """The oracle's logits for a batch, through the same batch, adapter and injection the API uses."""
    from hooks.inject import inject_at

    b = oracle._batch(queries, diff=False)
    with torch.no_grad(), oracle._oracle_ctx(), inject_at(oracle.lm.model, oracle.card.injection_layer, b.rows_N,
                                                          b.positions_N, b.vectors_ND, oracle.card.coef) as info:
        logits = oracle.lm.model(input_ids=b.tokens_BL, attention_mask=b.mask_BL, position_ids=b.position_ids_BL,
                                 use_cache=False).logits.float()
    assert info["calls"] == 1
    return logits, b


# -- 1. a bare PEFT oracle adapter loads, with a derived card ---------------------------------------

def test_bare_adapter_gets_the_derived_card_and_says_so(bare_oracle, caplog):
    with caplog.at_level(logging.WARNING, logger="oracle.core.published"):
        o = Oracle.load(bare_oracle)
    card = o.card
    assert card.source_layers == [1, 2, 3]  # 25/50/75 % of 4 layers
    assert (card.injection_layer, card.placeholder, card.coef, card.input_scaling, card.chat_style) == \
        (1, " ?", 1.0, "none", "published")
    assert card.d_model == D_MODEL and card.base_weights_hash == o.lm.weights_hash
    assert o.scaler is None and o.trained
    lines = [r.getMessage() for r in caplog.records if "derived its card" in r.getMessage()]
    assert len(lines) == 1 and "ao card init" in lines[0] and "\n" not in lines[0]
    assert not (bare_oracle / "oracle.json").exists()  # loading never writes


def test_overrides_replace_each_field(bare_oracle):
    o = Oracle.load(bare_oracle, overrides=CardOverrides.parse(source_layers="0,-1", injection_layer="2", coef="0.5",
                                                              placeholder=" ?"))
    assert (o.card.source_layers, o.card.injection_layer, o.card.coef) == ([0, 3], 2, 0.5)
    o = Oracle.load(bare_oracle, overrides=CardOverrides.parse(source_layers="50%"))
    assert o.card.source_layers == [2]


# -- 2. the cross-check against the reference -------------------------------------------------------

@pytest.mark.parametrize("k", [1, 3])
def test_logits_equal_the_reference_injection(oracle, reference, k):
    torch.manual_seed(10 + k)
    vecs = torch.randn(k, D_MODEL) * 3.0
    layer = oracle.card.source_layers[1]
    ours, b = _our_logits(oracle, [Query(vecs, QUESTION)])
    ref_ids, ref = reference.logits(vecs, layer, QUESTION)
    assert b.tokens_BL[0].tolist() == ref_ids  # the same prompt, token for token
    assert (ours[0] - ref).abs().max().item() <= 1e-5
    # the injection matters: without it the logits differ well beyond the tolerance
    with torch.no_grad(), oracle._oracle_ctx():
        plain = oracle.lm.model(input_ids=b.tokens_BL, attention_mask=b.mask_BL).logits[0].float()
    assert (plain - ref).abs().max().item() > 1e-3
    # the public API reads the same numbers: P(yes) (spellings summed) from the reference's last-token logits
    p_ref = yes_share(ref[-1].log_softmax(-1)[None], reference.tok).item()
    assert oracle.yes_probability(vecs, QUESTION) == pytest.approx(p_ref, abs=1e-5)


def test_a_batch_with_several_placeholder_counts_equals_the_reference(oracle, reference):
    torch.manual_seed(20)
    vecs = [torch.randn(1, D_MODEL), torch.randn(4, D_MODEL), torch.randn(2, D_MODEL)]
    layer = oracle.card.source_layers[1]
    ours, b = _our_logits(oracle, [Query(v, QUESTION) for v in vecs])
    for i, v in enumerate(vecs):
        _, ref = reference.logits(v, layer, QUESTION)
        assert (ours[i, -1] - ref[-1]).abs().max().item() <= 1e-5  # left-padded rows end at the same token
    got = oracle.yes_probability_batch([Query(v, QUESTION) for v in vecs])
    assert len(got) == 3


def test_text_sources_are_read_from_the_base_model_with_the_oracle_off(oracle, reference):
    text = "The moon rose over the quiet harbour."
    layer = oracle.card.source_layers[1]
    want = reference.residual(text, layer)
    got = oracle.activations([text], layer, ["last"])[0]
    assert (got - want).abs().max().item() <= 1e-5
    _, ref = reference.logits(want, layer, QUESTION)
    p_ref = yes_share(ref[-1].log_softmax(-1)[None], reference.tok).item()
    assert oracle.yes_probability(text, QUESTION) == pytest.approx(p_ref, abs=1e-5)


@pytest.mark.parametrize("k", [1, 3])
def test_cached_generation_never_reinjects(oracle, reference, monkeypatch, k):
    import oracle.core.api as api

    seen: list[dict] = []
    real = api.inject_at

    def counting(*args, **kwargs):
        cm = real(*args, **kwargs)

        class Wrapped:
            def __enter__(self):
                info = cm.__enter__()
                seen.append(info)
                return info

            def __exit__(self, *exc):
                return cm.__exit__(*exc)

        return Wrapped()

    monkeypatch.setattr(api, "inject_at", counting)
    torch.manual_seed(30 + k)
    vecs = torch.randn(k, D_MODEL) * 3.0
    n = 6
    answer = oracle.ask(vecs, QUESTION, max_new_tokens=n)
    assert len(seen) == 1 and seen[0]["calls"] == 1  # one prefill, no injection on the cached steps
    ref_new = reference.greedy(vecs, oracle.card.source_layers[1], QUESTION, n)
    assert answer == reference.tok.decode(ref_new, skip_special_tokens=True).strip()
    assert reference.calls > 0


# -- the command line: ao ask, ao card init, bad input ----------------------------------------------

def test_ao_ask_answers_with_a_bare_adapter(bare_oracle, capsys, caplog):
    with caplog.at_level(logging.WARNING, logger="oracle.core.published"):
        rc, out, err = _cli(["ask", "--oracle", str(bare_oracle), "--text", "The moon is bright.", "--question",
                             QUESTION, "--max-new-tokens", "3"], capsys)
    assert rc == 0, err
    assert "derived its card" in caplog.text
    rc, out, err = _cli(["ask", "--oracle", str(bare_oracle), "--text", "The moon is bright.", "--question", QUESTION,
                         "--yes-prob", "--source-layers", "1,3", "--layer", "3"], capsys)
    assert rc == 0 and out.startswith("P(Yes) = "), err


@pytest.mark.parametrize("named", ["/home/someone/models/Qwen3-8B", "nobody-here/Qwen3-8B-not-on-this-machine"])
def test_unreachable_base_is_one_line_and_base_fixes_it(bare_oracle, qwen3_dir, tmp_path, capsys, named):
    bare = _copy_naming(bare_oracle, tmp_path / "published", named)
    argv = ["ask", "--oracle", str(bare), "--text", "The moon.", "--question", QUESTION, "--max-new-tokens", "2"]
    rc, _, err = _cli(argv, capsys)
    _one_line_error(rc, err, named, "--base")
    with pytest.raises(ModelLoadError, match="--base"):
        Oracle.load(bare)
    rc, _, err = _cli(argv + ["--base", str(qwen3_dir)], capsys)
    assert rc == 0, err


def test_source_layer_past_the_depth_is_one_line(bare_oracle, tmp_path, capsys):
    argv = ["ask", "--oracle", str(bare_oracle), "--text", "The moon.", "--question", QUESTION]
    rc, _, err = _cli(argv + ["--source-layers", "2,7"], capsys)
    _one_line_error(rc, err, "source layer 7", "4 layers")
    with pytest.raises(LayerError, match="source layer 9"):
        Oracle.load(bare_oracle, overrides=CardOverrides(source_layers=(9,)))
    # a written card (ao card init, then edited) is checked the same way
    card_dir = tmp_path / "carded"
    shutil.copytree(bare_oracle, card_dir)
    rc, _, err = _cli(["card", "init", str(card_dir)], capsys)
    assert rc == 0, err
    d = json.loads((card_dir / "oracle.json").read_text())
    d["source_layers"] = [1, 12]
    (card_dir / "oracle.json").write_text(json.dumps(d))
    with pytest.raises(LayerError, match="source layer 12, but the model has 4 layers"):
        Oracle.load(card_dir)


def test_card_init_records_the_derived_card(bare_oracle, tmp_path, capsys, caplog):
    folder = tmp_path / "oracle"
    shutil.copytree(bare_oracle, folder)
    rc, out, err = _cli(["card", "init", str(folder), "--coef", "1.0"], capsys)
    assert rc == 0, err
    assert f"wrote {folder}/oracle.json" in out
    card = read_card(folder)
    assert (card.source_layers, card.injection_layer, card.placeholder, card.chat_style) == ([1, 2, 3], 1, " ?",
                                                                                            "published")
    assert "ao card init" in card.training["note"]
    # the structure-only (meta device) hash equals the loaded model's: the card loads with no derivation
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="oracle.core.published"):
        o = Oracle.load(folder)
    assert "derived its card" not in caplog.text
    assert o.card.base_weights_hash == o.lm.weights_hash
    rc, _, err = _cli(["card", "init", str(folder)], capsys)
    _one_line_error(rc, err, "already has oracle.json", "--force")
    rc, _, err = _cli(["card", "init", str(folder), "--force", "--source-layers", "25%,75%"], capsys)
    assert rc == 0 and read_card(folder).source_layers == [1, 3]


def test_card_init_with_an_unreachable_base_is_one_line(bare_oracle, tmp_path, capsys):
    bare = _copy_naming(bare_oracle, tmp_path / "published", "/elsewhere/Qwen3-8B")
    rc, _, err = _cli(["card", "init", str(bare)], capsys)
    _one_line_error(rc, err, "/elsewhere/Qwen3-8B", "--base")
    assert not (bare / "oracle.json").exists()


# -- 4. targets and the audit -----------------------------------------------------------------------

def test_bare_target_and_bare_oracle_in_one_audit(qwen3_dir, bare_oracle, bare_target, tmp_path, capsys):
    out = tmp_path / "report"
    rc, stdout, err = _cli(["audit", "--base", str(qwen3_dir), "--target", str(bare_target), "--oracle",
                            str(bare_oracle), "--out", str(out), "--methods", "oracle,logit_lens", "--n-prompts", "2",
                            "--max-new-tokens", "2"], capsys)
    assert rc == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["oracle"]["source_layers"] == [1, 2, 3]
    assert report["target"]["base_model_name_or_path"] == str(qwen3_dir)
    assert set(report["methods"]) == {"oracle", "logit_lens"}
    o = Oracle.load(bare_oracle, target_adapter=bare_target)
    assert o.has_target and set(o.lm.adapters) == {"oracle", "target"}


def test_an_oracle_for_another_base_is_refused_in_one_line(bare_oracle, qwen3_dir, tmp_path, capsys):
    other = _copy_naming(bare_oracle, tmp_path / "qwen3-8b-oracle", "Qwen/Qwen3-8B")
    benign = REPO_ROOT / "checkpoints" / "organisms" / "benign"
    out = tmp_path / "out"
    rc, _, err = _cli(["audit", "--target", str(benign), "--oracle", str(other), "--out", str(out)], capsys)
    _one_line_error(rc, err, "was made for Qwen/Qwen3-8B, not smollm2-135m")
    assert not out.exists()
    # a bare adapter naming an embedded model is refused on another base before anything is attached
    named_emb = _copy_naming(bare_oracle, tmp_path / "emb", "smollm2-135m")
    lm = load_model(str(qwen3_dir))
    lm.spec = "someone/tiny-qwen3"  # as if loaded by its Hugging Face id
    with pytest.raises(CheckpointError, match="was made for smollm2-135m, not someone/tiny-qwen3"):
        Oracle.load(named_emb, lm=lm)
    # shapes that do not fit are one line too (a base whose name cannot be compared: a local folder)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hooks.models import LoadedModel
    from hooks.testing import tiny_config

    narrow = LoadedModel(model=AutoModelForCausalLM.from_config(tiny_config("qwen3", N_LAYERS, d_model=32)).eval(),
                         tokenizer=AutoTokenizer.from_pretrained(qwen3_dir), spec=str(tmp_path / "narrow-qwen3"))
    with pytest.raises(CheckpointError, match="does not fit"):
        Oracle.load(bare_oracle, lm=narrow)


# -- 3. our own adapters travel the same way --------------------------------------------------------

def _committed_adapter_configs() -> list[Path]:
    try:
        names = subprocess.run(["git", "ls-files", "*adapter_config.json"], cwd=REPO_ROOT, capture_output=True,
                               text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        names = [str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "checkpoints").rglob("adapter_config.json")]
    return [REPO_ROOT / n for n in names]


def test_no_committed_adapter_config_names_a_local_path():
    configs = _committed_adapter_configs()
    assert len(configs) >= 6
    for path in configs:
        named = json.loads(path.read_text())["base_model_name_or_path"]
        assert not is_local_path(named), f"{path} names the machine-local base {named}"
        assert named in EMBEDDED or "/" in named, f"{path}: {named} is neither an embedded spec nor a hub id"


def test_old_machine_local_names_resolve_to_the_embedded_model(bare_oracle, tmp_path):
    for i, named in enumerate(["/root/.cache/activation-oracles/smollm2-135m-552b29bb0acfca72",
                               "/home/u/.cache/activation-oracles/gemma3-270m-0123456789abcdef", "smollm2-135m"]):
        folder = _copy_naming(bare_oracle, tmp_path / f"a{i}", named)
        assert resolve_adapter_base(folder) in EMBEDDED
    assert resolve_adapter_base(bare_oracle, base="gemma3-270m") == "gemma3-270m"


@pytest.mark.slow
def test_a_shipped_adapter_loads_with_a_clean_model_cache(tmp_path, monkeypatch):
    """No cache folder of any machine is needed: the adapter names smollm2-135m, which loads from
    the embedded GGUF into a fresh cache, and plain PEFT attaches the adapter to it."""
    from peft import PeftModel

    monkeypatch.setenv("AO_CACHE_DIR", str(tmp_path / "clean-cache"))
    organism = REPO_ROOT / "checkpoints" / "organisms" / "taboo-moon"
    lm = load_adapter_base(organism)
    assert lm.spec == "smollm2-135m"
    model = PeftModel.from_pretrained(lm.model, str(organism))
    assert any("lora_A" in n for n, _ in model.named_parameters())
    oracle_dir = REPO_ROOT / "checkpoints" / "oracle-smollm2-135m"
    assert resolve_adapter_base(oracle_dir) == read_card(oracle_dir).base_model == "smollm2-135m"
