"""Linear probes on captured activations and their metrics. The probe-vs-oracle benchmark (`ao probe-bench`) is oracle.evals.probe_bench: it needs the oracle, so it sits above this package."""
from probes.linear import KINDS, LinearProbe, ProbeConfig
from probes.metrics import accuracy, auroc, bootstrap_ci, majority_baseline

__all__ = [
    "KINDS", "LinearProbe", "ProbeConfig",
    "accuracy", "auroc", "bootstrap_ci", "majority_baseline",
]
