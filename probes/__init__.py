"""Linear probes on captured activations, their metrics, and the probe-vs-oracle benchmark (probes.bench, `ao probe-bench`)."""
from .linear import KINDS, LinearProbe, ProbeConfig, fit_logistic_torch, train_probe
from .metrics import accuracy, auroc, bootstrap_ci, evaluate_probe, majority_baseline

__all__ = [
    "KINDS", "LinearProbe", "ProbeConfig", "fit_logistic_torch", "train_probe",
    "accuracy", "auroc", "bootstrap_ci", "evaluate_probe", "majority_baseline",
]
