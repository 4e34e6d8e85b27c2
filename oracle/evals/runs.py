"""What ``ao eval``, ``ao calibrate`` and ``ao train`` do once their flags are parsed: run a suite on an oracle,
write its report and record it in the oracle's card; fit and save a calibration; train with the in-training
checks (the reading suite's learning curves, or the quick held-out check) and calibrate after.

Example:
    >>> run = evaluate_skills("checkpoints/oracle-smollm2-135m", SuiteConfig(n=40), record=False)   # doctest: +SKIP
    >>> run.results["rows"]["word_at"]["trained"]["accuracy"], run.markdown.name                  # doctest: +SKIP
    (0.95, 'suite.md')
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from hooks.outputs import check_output_path

from oracle.core.api import Oracle
from oracle.core.card import update_evaluation
from oracle.core.confidence import Calibration
from oracle.evals.calibrate import CalibrationConfig, append_confidence_section, calibrate
from oracle.evals.heldout import quick_eval_fn
from oracle.evals.suite import SuiteConfig, plot_learning_curves, run_suite, suite_eval_fn, write_suite_report
from oracle.evals.unseen import UnseenConfig, run_unseen, write_unseen_report
from oracle.core.reference import OracleSpec, parse_oracle_ref
from oracle.training.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class SuiteRun:
    """A suite's figures and the report files written for them."""

    results: dict
    markdown: Path
    figure: Path


def report_folder(oracle: OracleSpec, out: Optional[Path | str] = None) -> Path:
    """Where an evaluation of ``oracle`` writes its report: ``out``, else the oracle folder's ``eval/``.

    Example:
        >>> report_folder("checkpoints/oracle-smollm2-135m", "runs/suite")
        PosixPath('runs/suite')
    """
    return Path(out) if out else parse_oracle_ref(oracle).path / "eval"


def record_evaluation(oracle: OracleSpec, key: str, results: dict, command: str = "") -> None:
    """Record a suite's figures in the oracle's card under ``key`` (with the command that made them)."""
    update_evaluation(parse_oracle_ref(oracle, require_card=True).path, {key: {"command": command, **results}})


def evaluate_skills(oracle: OracleSpec, cfg: SuiteConfig, out: Optional[Path | str] = None, command: str = "",
                    confidence: bool = False, record: bool = True, device: str = "cpu",
                    progress: bool = False) -> SuiteRun:
    """The reading-skills suite on ``oracle`` (:func:`oracle.evals.suite.run_suite`), its report in
    :func:`report_folder`, with the calibration section when ``confidence``, recorded in the card as
    ``reading_suite`` when ``record``."""
    ref = parse_oracle_ref(oracle, require_card=record)   # a bare adapter has no card to record in
    model = Oracle.load(ref, device=device)
    results = run_suite(model, cfg, progress=progress)
    md, png = write_suite_report(results, report_folder(ref, out), command=command)
    if confidence:
        results["confidence"] = append_confidence_section(model, cfg, results["layer"], md)
    if record:
        record_evaluation(ref, "reading_suite", results, command)
    return SuiteRun(results, md, png)


def evaluate_unseen(oracle: OracleSpec, cfg: UnseenConfig, out: Optional[Path | str] = None, command: str = "",
                    record: bool = True, device: str = "cpu", progress: bool = False) -> SuiteRun:
    """The unseen-questions suite on ``oracle`` (:func:`oracle.evals.unseen.run_unseen`), its report in
    :func:`report_folder`, recorded in the card as ``unseen_questions`` when ``record``."""
    ref = parse_oracle_ref(oracle, require_card=record)
    results = run_unseen(Oracle.load(ref, device=device), cfg, progress=progress)
    md, png = write_unseen_report(results, report_folder(ref, out), command=command)
    if record:
        record_evaluation(ref, "unseen_questions", results, command)
    return SuiteRun(results, md, png)


def fit_calibration(oracle: OracleSpec, cfg: CalibrationConfig, device: str = "cpu",
                    progress: bool = False) -> tuple[Calibration, Path]:
    """Fit ``oracle``'s calibration (:func:`oracle.evals.calibrate.calibrate`) and write ``calibration.json``
    beside its adapter; an oracle without a card (a bare adapter) is refused in one line."""
    ref = parse_oracle_ref(oracle, require_card=True)
    check_output_path(ref.path, flag="--oracle")   # calibration.json is written into it
    cal, _ = calibrate(Oracle.load(ref, device=device), cfg, progress=progress)
    return cal, cal.save(ref.path)


def in_training_check(cfg: TrainConfig, n_per_skill: int = 16) -> Callable[[Oracle], dict]:
    """The check ``ao train`` runs at every evaluation step: the reading suite's rows (``n_per_skill`` unseen items
    each: the learning curves) when the mix trains reading skills, else the quick held-out check."""
    if "reading" in cfg.mix:
        return suite_eval_fn(n=n_per_skill, data_dir=cfg.data_dir)
    return quick_eval_fn(data_dir=cfg.data_dir)


def train_with_checks(cfg: TrainConfig, checks: bool = True, n_per_skill: int = 16, progress: bool = False) -> dict:
    """:func:`oracle.training.loop.train_oracle` with the in-training checks (:func:`in_training_check`, unless
    ``checks`` is False) and, once the adapter is saved, their learning curves in ``reading_curves.png``.
    Returns the training summary."""
    from oracle.training.loop import train_oracle

    return train_oracle(cfg, eval_fn=in_training_check(cfg, n_per_skill) if checks else None, progress=progress,
                        on_finish=lambda rows, out: plot_learning_curves(rows, out / "reading_curves.png"))


def calibrate_after_training(cfg: TrainConfig, checks: bool = True,
                             progress: bool = False) -> Optional[tuple[Calibration, Path]]:
    """Fit and save the calibration of the oracle ``cfg`` trained, when the run asks for one
    (``calibration_n`` > 0), trains reading skills (the calibration items) and ran its checks; else ``None``."""
    if not (cfg.calibration_n and "reading" in cfg.mix and checks):
        return None
    return fit_calibration(cfg.out, CalibrationConfig(n=cfg.calibration_n, data_dir=cfg.data_dir), device=cfg.device,
                           progress=progress)
