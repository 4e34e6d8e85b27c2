"""Sensitivity, calibration and abstention (oracle.core.confidence, oracle.evals.calibrate): constructed cases on tiny models."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from hooks.errors import CheckpointError, InputError
from hooks.testing import tiny_loaded
from oracle.core.api import Oracle, Query
from oracle.core.confidence import (CALIBRATION_FILE, Answer, Calibration, KindCalibration, adapter_sha256, check_threshold,
                               expected_calibration_error, fit_temperature, fit_thresholds, js_bits)


def _oracle(coef: float = 1.0) -> Oracle:
    lm = tiny_loaded("llama", seed=3)
    oracle = Oracle.untrained(lm=lm)
    oracle.card = dataclasses.replace(oracle.card, placeholder="?", coef=coef, injection_layer=0)
    return oracle


def _queries(oracle: Oracle, n: int = 3) -> list[Query]:
    g = torch.Generator().manual_seed(0)
    return [Query(torch.randn(2, oracle.lm.d_model, generator=g) * 5, "Is it?", layer=1) for _ in range(n)]


def test_js_is_zero_for_equal_and_one_for_disjoint_distributions():
    p = torch.tensor([[0.2, 0.8], [1.0, 0.0]])
    assert js_bits(p, p).tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    assert js_bits(p[1:], torch.tensor([[0.0, 1.0]])).item() == pytest.approx(1.0)


def test_an_answer_that_ignores_the_vectors_has_zero_sensitivity_and_abstains():
    """With injection coefficient 0 the vectors change nothing: sensitivity 0, and the oracle abstains; with the
    vectors injected, the same questions depend on them."""
    deaf = _oracle(coef=0.0)
    queries = _queries(deaf)
    assert deaf.sensitivity(queries, [["a", "b"]] * 3) == [0.0] * 3
    assert deaf.sensitivity(queries) == [0.0] * 3
    reading = _oracle(coef=1.0)
    assert min(reading.sensitivity(queries, [["a", "b"]] * 3)) > 1e-6   # a tiny random model reads a little
    assert min(reading.sensitivity(queries)) > 1e-6
    for oracle in (deaf, reading):
        oracle.calibration = Calibration(choice=KindCalibration(min_sensitivity=1e-6))
    ans = deaf.choose(queries[0].source, "Is it?", ["a", "b"], layer=1, abstain=True, details=True)
    assert isinstance(ans, Answer) and ans.abstained and ans.sensitivity == 0.0
    assert deaf.choose(queries[0].source, "Is it?", ["a", "b"], layer=1, abstain=True) == "can't tell"
    assert reading.choose(queries[0].source, "Is it?", ["a", "b"], layer=1, abstain=True) in ("a", "b")


def test_plain_calls_keep_returning_strings():
    oracle = _oracle()
    src = _queries(oracle, 1)[0].source
    assert isinstance(oracle.choose(src, "Is it?", ["yes", "no"], layer=1), str)
    assert isinstance(oracle.ask(src, "Is it?", layer=1, max_new_tokens=2), str)
    ans = oracle.ask(src, "Is it?", layer=1, max_new_tokens=2, details=True)
    assert isinstance(ans, Answer) and not ans.abstained and 0 <= ans.confidence <= 1
    with pytest.raises(CheckpointError, match="no calibration.json"):
        oracle.ask(src, "Is it?", layer=1, abstain=True)


def test_temperature_one_leaves_probabilities_unchanged_and_fit_recovers_overconfidence():
    scores = torch.tensor([[-0.3, -1.2, -4.0]])
    assert torch.allclose(Calibration().probabilities(scores, "choice"), scores.softmax(-1))
    rng = np.random.default_rng(0)
    # scores 4x too confident: the right answer wins 73 % of the time at margin 4 -> T near 4
    rows, gold = [], []
    for _ in range(400):
        g = int(rng.random() < 1 / (1 + math.exp(-1.0)))
        rows.append(np.array([0.0, 4.0]))
        gold.append(g)
    assert 3.0 < fit_temperature(rows, gold) < 5.5


def test_ece_and_thresholds():
    assert expected_calibration_error([0.95] * 10, [True] * 9 + [False]) == pytest.approx(0.05)
    s, c, fig = fit_thresholds([0.9, 0.9, 0.7, 0.7], [0.3, 0.01, 0.3, 0.01], [1, 0, 1, 0], 0.99)
    assert s > 0.01 and fig["precision"] == 1.0 and fig["coverage"] == 0.5 and fig["reached_target"]


def test_calibration_round_trips_as_json_and_is_tied_to_its_adapter(tmp_path):
    (tmp_path / "adapter_model.safetensors").write_bytes(b"weights one")
    cal = Calibration(choice=KindCalibration(1.7, 0.02, 0.6), open=KindCalibration(0.9, 0.1, 0.3),
                      target_precision=0.8, adapter_sha256=adapter_sha256(tmp_path), fit={"choice": {"n": 5}})
    path = cal.save(tmp_path)
    assert json.loads(path.read_text())["choice"]["temperature"] == 1.7   # plain JSON, no pickle
    assert Calibration.load(tmp_path) == cal
    (tmp_path / "adapter_model.safetensors").write_bytes(b"weights two")
    with pytest.raises(CheckpointError, match="fitted for another adapter: refit it with `ao calibrate"):
        Calibration.load(tmp_path)
    (tmp_path / CALIBRATION_FILE).write_text('{"choice": {"temperature": 1}}')
    with pytest.raises(CheckpointError, match="is not a calibration file"):
        Calibration.load(tmp_path)
    assert Calibration.load(tmp_path / "nothing") is None


def test_thresholds_outside_0_1_are_refused():
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(InputError, match="outside \\[0, 1\\]"):
            check_threshold("--min-confidence", bad)
    assert check_threshold("--min-confidence", 0.0) == 0.0


@pytest.mark.parametrize("argv, message", [
    (["ask", "--text", "hi", "--question", "q", "--abstain", "--min-confidence", "1.5"], "--min-confidence 1.5 is outside"),
    (["ask", "--text", "hi", "--question", "q", "--abstain", "--yes-prob"], "--abstain works with"),
    (["ask", "--text", "hi", "--question", "What is it?", "--yes-prob"], "is not a yes/no question"),
    (["calibrate", "--target-precision", "2"], "--target-precision 2.0 is outside"),
    (["calibrate", "--oracle", "checkpoints/organisms/benign"], "has no oracle.json"),
])
def test_cli_refuses_bad_confidence_arguments_in_one_line(argv, message, capsys):
    from oracle.cli.main import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
