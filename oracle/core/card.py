"""The oracle checkpoint card (``oracle.json``) and the checks that a checkpoint folder is usable."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from hooks.atomic import write_json_atomic
from hooks.errors import CheckpointError, LayerError
from hooks.layers import source_layers

from oracle.core.prompt import CHAT_STYLES, DEFAULT_CHAT_STYLE, PROMPT_FORMAT_VERSION

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
    chat_style: str = DEFAULT_CHAT_STYLE  # "published" for the published Activation Oracles (oracle.core.prompt)
    train_config: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)

    @classmethod
    def for_model(cls, lm, input_scaling: str = "none") -> "OracleCard":
        """The card of an oracle made on the loaded model ``lm`` (a :class:`hooks.models.LoadedModel`) with this
        project's defaults: source layers at 25/50/75 % of its depth, injection at block 1, placeholder ``" ?"``,
        coefficient 1. What an adapter being trained, or the baseline of no oracle, runs with.

        Example:
            >>> from hooks.testing import tiny_loaded
            >>> OracleCard.for_model(tiny_loaded("llama", n_layers=4)).source_layers
            [1, 2, 3]
        """
        return cls(base_model=lm.spec, base_weights_hash=lm.weights_hash, d_model=lm.d_model,
                   source_layers=source_layers(lm.n_layers), input_scaling=input_scaling)


def has_card(folder: Path | str) -> bool:
    """Whether a checkpoint folder has its ``oracle.json`` (a bare PEFT adapter has none).

    Example:
        >>> has_card("checkpoints/oracle-smollm2-135m"), has_card("checkpoints/organisms/benign")
        (True, False)
    """
    return (Path(folder) / CARD).is_file()


def check_card_fits(card: OracleCard, folder: Path | str, n_layers: int, d_model: int) -> None:
    """Fail with one line when the card cannot describe this model: a source or injection layer past
    its depth, another residual width, an unknown chat style.

    Example:
        >>> card = OracleCard(base_model="m", base_weights_hash="h", d_model=64, source_layers=[1, 9])
        >>> check_card_fits(card, "o", n_layers=4, d_model=64)
        Traceback (most recent call last):
        ...
        hooks.errors.LayerError: oracle o reads source layer 9, but the model has 4 layers (0..3): pass --source-layers with layers of this model
    """
    for layer in card.source_layers:
        if not 0 <= int(layer) < n_layers:
            raise LayerError(f"oracle {folder} reads source layer {layer}, but the model has {n_layers} layers "
                             f"(0..{n_layers - 1}): pass --source-layers with layers of this model")
    if not card.source_layers:
        raise LayerError(f"oracle {folder} has no source layers: pass --source-layers")
    if not 0 <= int(card.injection_layer) < n_layers:
        raise LayerError(f"oracle {folder} injects at block {card.injection_layer}, but the model has {n_layers} "
                         f"layers (0..{n_layers - 1}): pass --injection-layer")
    if int(card.d_model) != int(d_model):
        raise CheckpointError(f"oracle {folder} reads vectors of width {card.d_model}, but the model's residual is "
                              f"{d_model} wide: use an oracle for this base model")
    if card.chat_style not in CHAT_STYLES:
        raise CheckpointError(f"oracle {folder} has chat_style {card.chat_style!r}: use one of {', '.join(CHAT_STYLES)}")


def write_card(folder: Path, card: OracleCard) -> None:
    """Write ``oracle.json`` atomically."""
    write_json_atomic(Path(folder) / CARD, asdict(card), indent=2)


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
