"""Linear probes on captured activations and their metrics. The probe-vs-oracle benchmark (`ao probe-bench`) is oracle.probe_bench: it needs the oracle, so it sits above this package."""
from .linear import KINDS, LinearProbe, ProbeConfig, train_probe
from .metrics import accuracy, auroc, bootstrap_ci, evaluate_probe, majority_baseline
from .torch_fit import fit_logistic_torch

__all__ = [
    "KINDS", "LinearProbe", "ProbeConfig", "fit_logistic_torch", "train_probe",
    "accuracy", "auroc", "bootstrap_ci", "evaluate_probe", "majority_baseline",
]
