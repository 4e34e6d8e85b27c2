"""Where runs and their outputs live: ``scripts/`` holds tools only, each experiment is a folder of its own under
``experiments/`` (script, report with its command, small results), and ``docs/`` holds documents, not run outputs.
Read from the file system only (nothing imported, no model)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
DOCS = REPO / "docs"

TOOLS = {"bench_capture.py", "bench_oracle.py", "make_data_registry.py", "train_organisms.py", "score_audits.py",
         "device_train.sh"}
RUN_OUTPUT_SUFFIXES = {".json", ".jsonl", ".csv", ".npy", ".h5", ".pt", ".safetensors"}
MAX_RESULT_BYTES = 50_000      # a small result kept in git; a larger raw output belongs under runs/
MAX_FIGURE_BYTES = 300_000     # a .png figure
FOLDER_NAME = re.compile(r"^\d{4}(-\d{2})?-[a-z0-9][a-z0-9-]*$")   # 2026-12-verify-curves, 2026-cpu-run-1
COMMAND_BLOCK = re.compile(r"^```bash\n.*?\S.*?^```", re.MULTILINE | re.DOTALL)


def _skipped(path: Path) -> bool:
    """Caches and hidden folders that git ignores (``__pycache__``, ``.ipynb_checkpoints``)."""
    return any(part == "__pycache__" or part.startswith(".") for part in path.parts)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not _skipped(p.relative_to(root)))


def _experiment_folders() -> list[Path]:
    return sorted(p for p in EXPERIMENTS.iterdir() if p.is_dir() and not _skipped(p.relative_to(EXPERIMENTS)))


def test_scripts_holds_only_the_tools():
    found = {p.name for p in (REPO / "scripts").iterdir() if not _skipped(Path(p.name))}
    assert found == TOOLS, f"scripts/ is for tools; move experiments to experiments/<yyyy-mm-name>/: {found ^ TOOLS}"


def test_there_are_experiments():
    assert len(_experiment_folders()) >= 10


@pytest.mark.parametrize("folder", _experiment_folders(), ids=lambda p: p.name)
def test_each_experiment_has_a_report_with_its_command(folder: Path):
    assert FOLDER_NAME.match(folder.name), f"{folder.name}: name it <yyyy>-<mm>-<name> (or <yyyy>-<name>)"
    readme = folder / "README.md"
    assert readme.is_file(), f"{folder.name} has no README.md (the command, figures, what it means)"
    assert COMMAND_BLOCK.search(readme.read_text(encoding="utf-8")), f"{readme}: no ```bash command block"


def test_the_index_lists_every_experiment():
    index = (EXPERIMENTS / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in _experiment_folders() if f"]({p.name}/README.md)" not in index]
    assert missing == [], f"experiments/README.md lacks a line for {missing}"


def test_experiment_scripts_do_not_import_each_other_through_sys_path():
    offenders = [str(p.relative_to(REPO)) for p in EXPERIMENTS.rglob("*.py")
                 if not _skipped(p.relative_to(EXPERIMENTS)) and "sys.path" in p.read_text(encoding="utf-8")]
    assert offenders == [], f"shared helpers belong in the library, not in sys.path imports: {offenders}"


def test_experiment_files_are_small():
    too_big = []
    for p in _files(EXPERIMENTS):
        limit = MAX_FIGURE_BYTES if p.suffix == ".png" else MAX_RESULT_BYTES
        if p.stat().st_size > limit:
            too_big.append(f"{p.relative_to(REPO)} ({p.stat().st_size:,} bytes > {limit:,})")
    assert too_big == [], f"raw outputs belong under runs/, not in git: {too_big}"


def test_docs_holds_documents_only():
    subfolders = [p.name for p in DOCS.iterdir() if p.is_dir() and not _skipped(Path(p.name))]
    assert subfolders == [], f"docs/ has no subfolders (run outputs go to experiments/): {subfolders}"
    outputs = [p.name for p in _files(DOCS) if p.suffix in RUN_OUTPUT_SUFFIXES]
    assert outputs == [], f"run outputs under docs/: {outputs}"
