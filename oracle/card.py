"""The oracle checkpoint card (``oracle.json``) and the checks that a checkpoint folder is usable."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from hooks.errors import CheckpointError

from .prompt import PROMPT_FORMAT_VERSION

CARD = "oracle.json"


@dataclass
class OracleCard:
    """What an oracle checkpoint is: base model, layers, injection, training summary, evaluation.

    Example:
        >>> OracleCard(base_model="smollm2-135m", base_weights_hash="h", d_model=576, source_layers=[7, 15, 22]).injection_layer
        1
    """

    base_model: str
    base_weights_hash: str
    d_model: int
    source_layers: list[int]
    injection_layer: int = 1
    placeholder: str = " ?"
    coef: float = 1.0
    input_scaling: str = "none"
    prompt_format_version: int = PROMPT_FORMAT_VERSION
    train_config: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)


def write_card(folder: Path, card: OracleCard) -> None:
    """Write ``oracle.json`` atomically."""
    path = Path(folder) / CARD
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(card), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_card(folder: Path) -> OracleCard:
    """Read and check an oracle checkpoint folder (card + safetensors adapter)."""
    folder = Path(folder)
    path = folder / CARD
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {CARD}: pass an oracle checkpoint folder (e.g. checkpoints/oracle-smollm2-135m)")
    try:
        d = json.loads(path.read_text())
        card = OracleCard(**{k: v for k, v in d.items() if k in OracleCard.__dataclass_fields__})
    except (json.JSONDecodeError, TypeError) as e:
        raise CheckpointError(f"{path} is not a valid oracle card ({e}): retrain or restore it") from None
    if card.prompt_format_version != PROMPT_FORMAT_VERSION:
        raise CheckpointError(f"{path} uses prompt format v{card.prompt_format_version}; this code speaks v{PROMPT_FORMAT_VERSION}")
    return card


def update_evaluation(folder: Path, evaluation: dict, key: Optional[str] = None) -> None:
    """Merge measured evaluation figures into the card."""
    card = read_card(folder)
    if key:
        card.evaluation[key] = evaluation
    else:
        card.evaluation.update(evaluation)
    write_card(folder, card)
