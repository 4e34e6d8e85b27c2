"""Kinds of adapter folder: an oracle (``oracle.json``), a model organism (``organism.json``: a fine-tune to audit)
or a bare PEFT adapter (neither), told apart before anything loads."""
from __future__ import annotations

from pathlib import Path
from typing import Union

from hooks.errors import CheckpointError
from hooks.models import check_adapter_folder

#: the file that marks each kind of adapter folder (a bare PEFT adapter has neither)
ORACLE_CARD_FILE, ORGANISM_CARD_FILE = "oracle.json", "organism.json"


def folder_kind(path: Union[str, Path]) -> str:
    """What an adapter folder is: ``"organism"`` (``organism.json``: a fine-tuned model to audit), ``"oracle"``
    (``oracle.json``), or ``"adapter"`` (a bare PEFT adapter, such as a published oracle).

    Example:
        >>> folder_kind("checkpoints/oracle-smollm2-135m"), folder_kind("checkpoints/organisms/benign")
        ('oracle', 'organism')
    """
    folder = Path(path)
    if (folder / ORGANISM_CARD_FILE).is_file():
        return "organism"
    return "oracle" if (folder / ORACLE_CARD_FILE).is_file() else "adapter"


ORACLE_HINT = "pass it as --target-adapter (the model to audit) and an oracle folder as --oracle"


def check_oracle_folder(path: Union[str, Path], hint: str = ORACLE_HINT) -> dict:
    """:func:`check_adapter_folder`, refusing a model organism taken for an oracle (its adapter would answer with
    the organism's own chat, not read activations)."""
    cfg = check_adapter_folder(path)
    if folder_kind(path) == "organism":
        raise CheckpointError(f"{path} is a model organism ({ORGANISM_CARD_FILE}), not an oracle: {hint}")
    return cfg
