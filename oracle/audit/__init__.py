"""Audits of fine-tuned adapters (model organisms): does fine-tuning hide a secret word or a trigger?

The trained oracle, the oracle on (target - base) differences, the untrained oracle, black-box
prompting, prefill attacks and the logit lens read the same prompts; each ranks candidate words and
scores trigger detection. The audit reads only the adapter files, never ``organism.json``.

Example:
    >>> from oracle.audit import AuditConfig, run_audit
    >>> report = run_audit(AuditConfig(target="checkpoints/organisms/benign", out="runs/audit"))  # doctest: +SKIP
    >>> sorted(report["methods"])                                                                 # doctest: +SKIP
    ['ask_target', 'logit_lens', 'logit_lens_diff', 'oracle', 'oracle_diff', 'prefill', 'untrained_oracle']
"""
from oracle.audit.config import METHODS, SECRET_THRESHOLD, AuditConfig
from oracle.audit.run import run_audit

__all__ = ["METHODS", "SECRET_THRESHOLD", "AuditConfig", "run_audit"]
