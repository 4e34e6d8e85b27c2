"""Linear probes and their metrics: synthetic activations with a planted direction (offline, CPU, seeded)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hooks.errors import CheckpointError, InputError
from probes import LinearProbe, ProbeConfig, accuracy, auroc, bootstrap_ci, majority_baseline

D = 64


def planted(n: int, seed: int, *, anisotropic: bool = True, margin: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """Activations whose class is written along one hidden unit direction ``u`` (class means +-margin*u).

    With ``anisotropic`` every feature also gets its own scale and a large offset, so a probe only
    works if its standardisation is folded into ``w``/``b`` correctly. Bayes accuracy ~ Phi(margin).
    """
    rng = np.random.default_rng(seed)
    u_D = np.random.default_rng(1234).normal(size=D)
    u_D /= np.linalg.norm(u_D)
    y_N = rng.integers(0, 2, size=n)
    X_ND = rng.normal(size=(n, D)) + np.outer((2 * y_N - 1) * margin, u_D)
    if anisotropic:
        scale_D = np.random.default_rng(7).uniform(0.5, 3.0, size=D)
        offset_D = np.random.default_rng(8).normal(0.0, 5.0, size=D)
        X_ND = X_ND * scale_D + offset_D
    else:
        X_ND = X_ND + 3.0
    return X_ND, y_N


@pytest.fixture(scope="module")
def data():
    X_tr, y_tr = planted(400, seed=1)
    X_te, y_te = planted(4000, seed=2)
    return X_tr, y_tr, X_te, y_te


@pytest.fixture(scope="module")
def logistic(data):
    X_tr, y_tr, _, _ = data
    return LinearProbe.fit(X_tr, y_tr, ProbeConfig(kind="logistic", seed=0))


# ----------------------------------------------------------------------------- fitting

def test_logistic_recovers_planted_direction(data, logistic):
    _, _, X_te, y_te = data
    assert accuracy(y_te, logistic.predict(X_te)) > 0.95
    assert logistic.kind == "logistic" and logistic.classes == [0, 1] and logistic.d_model == D
    info = logistic.info
    assert info["selection"] == "holdout" and info["C"] in ProbeConfig().Cs
    assert len(info["search"]) == len(ProbeConfig().Cs) and info["n_train"] == 400
    # scores are exactly X @ w + b (standardisation folded in) and probabilities are their sigmoid
    s = logistic.decision_function(X_te[:5])
    np.testing.assert_array_equal(s, X_te[:5] @ logistic.w_D + logistic.b)
    np.testing.assert_allclose(logistic.predict_proba(X_te[:5]), 1 / (1 + np.exp(-s)))


def test_diff_means_recovers_planted_direction():
    X_tr, y_tr = planted(400, seed=1, anisotropic=False)
    X_te, y_te = planted(4000, seed=2, anisotropic=False)
    probe = LinearProbe.fit(X_tr, y_tr, ProbeConfig(kind="diff_means"))
    assert accuracy(y_te, probe.predict(X_te)) > 0.95
    mu_pos, mu_neg = X_tr[y_tr == 1].mean(0), X_tr[y_tr == 0].mean(0)
    np.testing.assert_allclose(probe.w_D, mu_pos - mu_neg)
    # the threshold sits at the midpoint of the projected class means
    assert probe.decision_function(((mu_pos + mu_neg) / 2)[None])[0] == pytest.approx(0.0, abs=1e-9)
    u_D = np.random.default_rng(1234).normal(size=D)
    assert abs(probe.direction() @ (u_D / np.linalg.norm(u_D))) > 0.9


def test_shuffled_labels_stay_near_chance(data):
    X_tr, y_tr, X_te, y_te = data
    y_shuffled = np.random.default_rng(5).permutation(y_tr)
    for kind in ("logistic", "diff_means"):
        probe = LinearProbe.fit(X_tr, y_shuffled, ProbeConfig(kind=kind))
        assert 0.35 < accuracy(y_te, probe.predict(X_te)) < 0.65, kind


def test_few_labels_fall_back_to_cv_then_fixed_C(data):
    X_tr, _, _, _ = data
    p8 = LinearProbe.fit(X_tr[:8], [0, 1] * 4)
    assert p8.info["selection"] == "cv4" and p8.predict(X_tr[:8]).shape == (8,)
    p_skewed = LinearProbe.fit(X_tr[:8], [0, 0, 1, 1, 1, 1, 1, 1])
    assert p_skewed.info["selection"] == "cv2"
    p_single = LinearProbe.fit(X_tr[:8], [0, 1, 1, 1, 1, 1, 1, 1], ProbeConfig(fallback_C=0.5))
    assert p_single.info["selection"] == "fixed" and p_single.info["C"] == 0.5
    p_given = LinearProbe.fit(X_tr[:8], [0, 1] * 4, ProbeConfig(Cs=[0.3]))
    assert p_given.info["selection"] == "given" and p_given.info["C"] == 0.3


def test_label_values_are_kept(data):
    X_tr, y_tr, X_te, _ = data
    words = np.where(y_tr == 1, "yes", "no")
    probe = LinearProbe.fit(X_tr, words, ProbeConfig(kind="diff_means"))
    assert probe.classes == ["no", "yes"]
    pred = probe.predict(X_te[:20])
    assert set(pred.tolist()) <= {"no", "yes"}
    np.testing.assert_array_equal(pred == "yes", probe.decision_function(X_te[:20]) > 0)
    bools = LinearProbe.fit(X_tr, y_tr.astype(bool), ProbeConfig(kind="diff_means"))
    assert bools.classes == [False, True] and bools.predict(X_te[:3]).dtype == bool


def test_accepts_torch_tensors(data, logistic):
    X_tr, y_tr, X_te, _ = data
    np.testing.assert_array_equal(logistic.decision_function(torch.from_numpy(X_te[:10])),
                                  logistic.decision_function(X_te[:10]))
    p = LinearProbe.fit(torch.from_numpy(X_tr), torch.from_numpy(y_tr), ProbeConfig(kind="diff_means"))
    assert p.classes == [0, 1]


# ----------------------------------------------------------------------------- save / load

def test_save_load_is_bitwise(tmp_path, data, logistic):
    X_tr, y_tr, X_te, _ = data
    dm = LinearProbe.fit(X_tr, y_tr, ProbeConfig(kind="diff_means"), metadata={"layer": 15, "task": "planted"})
    for name, probe in (("logistic", logistic), ("dm", dm)):
        folder = probe.save(tmp_path / name)
        assert sorted(p.name for p in folder.iterdir()) == ["probe.json", "probe.safetensors"]
        loaded = LinearProbe.load(folder)
        assert loaded.decision_function(X_te).tobytes() == probe.decision_function(X_te).tobytes()
        assert loaded.w_D.tobytes() == probe.w_D.tobytes() and loaded.b == probe.b
        assert (loaded.kind, loaded.classes, loaded.config, loaded.metadata) == \
               (probe.kind, probe.classes, probe.config, probe.metadata)
        assert loaded.info == json.loads(json.dumps(probe.info))
    assert LinearProbe.load(tmp_path / "dm").metadata == {"layer": 15, "task": "planted"}


def test_load_refuses_bad_folders(tmp_path, logistic):
    with pytest.raises(CheckpointError, match="does not exist"):
        LinearProbe.load(tmp_path / "nothing")
    folder = logistic.save(tmp_path / "p")
    (folder / "probe.safetensors").rename(tmp_path / "w.bak")
    with pytest.raises(CheckpointError, match="probe.safetensors is missing"):
        LinearProbe.load(folder)
    # weights from another save: sha256 mismatch
    other = LinearProbe(w_D=np.zeros(D), b=0.0, kind="diff_means", classes=[0, 1]).save(tmp_path / "other")
    (other / "probe.safetensors").replace(folder / "probe.safetensors")
    with pytest.raises(CheckpointError, match="sha256 differs"):
        LinearProbe.load(folder)
    (tmp_path / "w.bak").replace(folder / "probe.safetensors")
    assert LinearProbe.load(folder).b == logistic.b
    meta = json.loads((folder / "probe.json").read_text())
    meta["format_version"] = 99
    (folder / "probe.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format v99"):
        LinearProbe.load(folder)
    (folder / "probe.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        LinearProbe.load(folder)


def test_save_rejects_unserialisable_metadata(tmp_path):
    probe = LinearProbe(w_D=np.ones(3), b=0.0, kind="diff_means", classes=[0, 1], metadata={"bad": object()})
    with pytest.raises(InputError, match="JSON"):
        probe.save(tmp_path / "p")
    assert not (tmp_path / "p").exists()


# ----------------------------------------------------------------------------- input validation

@pytest.mark.parametrize("X, y, message", [
    (np.zeros((5, 3)), [0, 1, 0, 1], "got 4 labels for 5 documents"),
    (np.zeros((4, 3)), [1, 1, 1, 1], "only one class in the labels .* a probe needs both"),
    (np.zeros((4, 3)), [0, 1, 2, 1], "probes are binary"),
    (np.zeros(4), [0, 1, 0, 1], "must be 2-D"),
    (np.zeros((4, 3, 2)), [0, 1, 0, 1], "must be 2-D"),
    (np.zeros((4, 3)), np.zeros((4, 1)), "labels must be 1-D"),
    (np.zeros((0, 3)), [], "empty"),
    (np.array([[0.0, 1.0], [np.nan, 1.0], [0.0, np.inf], [1.0, 1.0]]), [0, 1, 0, 1], "NaN or inf values in 2 of 4 rows"),
    (np.zeros((4, 3)), [0.0, 1.0, np.nan, 1.0], "labels contain NaN"),
])
@pytest.mark.parametrize("kind", ["logistic", "diff_means"])
def test_bad_input_raises(X, y, message, kind):
    with pytest.raises(InputError, match=message) as e:
        LinearProbe.fit(X, y, ProbeConfig(kind=kind))
    assert "\n" not in str(e.value)


def test_decision_function_checks_width(logistic):
    with pytest.raises(InputError, match="X has 10 features but the probe was trained on 64"):
        logistic.decision_function(np.zeros((2, 10)))


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "svm"}, "unknown probe kind"),
    ({"Cs": []}, "non-empty"),
    ({"Cs": [1.0, -2.0]}, "positive"),
    ({"Cs": "abc"}, "Cs must be"),
    ({"val_fraction": 0.0}, "val_fraction"),
    ({"val_fraction": 1.5}, "val_fraction"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed must be an integer"),
    ({"max_iter": 0}, "max_iter"),
    ({"fallback_C": 0}, "fallback_C"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(InputError, match=message):
        ProbeConfig(**kwargs)


# ----------------------------------------------------------------------------- metrics

def test_accuracy_auroc_majority():
    assert accuracy([0, 1, 1, 0], [0, 1, 0, 0]) == 0.75
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert auroc(["no", "no", "yes"], [0.0, 1.0, 2.0]) == 1.0
    with pytest.raises(InputError, match="two classes"):
        auroc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(InputError, match="got 3 labels but 2"):
        accuracy([0, 1, 1], [0, 1])
    assert majority_baseline([1, 1, 0], [1, 0, 0, 0]) == 0.25
    assert majority_baseline([0, 1], [0, 0, 1]) == pytest.approx(2 / 3)  # tie -> smaller label


def test_bootstrap_ci_contains_point_and_is_deterministic():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=300)
    scores = y + rng.normal(0, 1.0, size=300)
    for metric, s in ((auroc, scores), (accuracy, (scores > 0.5).astype(int))):
        point, low, high = bootstrap_ci(metric, y, s, n_boot=200, seed=3)
        assert point == metric(y, s)
        assert low <= point <= high and 0.0 < high - low < 0.2
        assert bootstrap_ci(metric, y, s, n_boot=200, seed=3) == (point, low, high)
        assert bootstrap_ci(metric, y, s, n_boot=200, seed=4) != (point, low, high)


def test_bootstrap_skips_one_class_resamples():
    y, s = [0, 1, 1, 1, 1], [0.5, 0.9, 0.8, 0.2, 0.7]
    point, low, high = bootstrap_ci(auroc, y, s, n_boot=200, seed=0)
    assert point == 0.75 and 0.0 <= low <= high <= 1.0
    with pytest.raises(InputError, match="undefined on all"):
        bootstrap_ci(lambda a, b: float("nan"), y, s, n_boot=20)
    with pytest.raises(InputError, match="n_boot"):
        bootstrap_ci(auroc, y, s, n_boot=0)
