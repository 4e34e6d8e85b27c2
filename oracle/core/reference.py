"""An oracle reference: the ``--oracle`` a user names, parsed once into the folder it means and its card.

One rule for every command (``ao ask``, ``ao eval``, ``ao calibrate``, ``ao audit``, ``ao demo``) and for
``Oracle.load``: the path is taken as given, relative to the working directory, and a relative path under
``checkpoints/`` that is not there is the repository's shipped copy (:func:`hooks.paths.shipped_path`). The folder
is checked (a safetensors PEFT adapter, not a model organism) and its card (``oracle.json``) read, once; a bare PEFT
adapter has no card (it is derived when the oracle loads, on the base model). Where an oracle is optional
(``ao audit``), ``none`` (any case) or an empty string means no oracle.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from hooks.errors import InputError
from hooks.folders import check_oracle_folder
from hooks.paths import shipped_path

from oracle.core.card import OracleCard, has_card
from oracle.core.published import load_card

#: what a user may pass for an oracle: a folder (string or path) or an already parsed reference
OracleSpec = Union[str, Path, "OracleRef"]
#: the spellings of "no oracle" where one is optional
NO_ORACLE = ("", "none")
NO_CARD = "has no oracle.json: pass a checkpoint folder made by `ao train` (or give a bare adapter its card: `ao card init`)"


@dataclass(frozen=True)
class OracleRef:
    """An oracle folder, resolved and checked, with its card (``None`` for a bare PEFT adapter). Made by
    :func:`parse_oracle_ref` only.

    Example:
        >>> ref = parse_oracle_ref("checkpoints/oracle-smollm2-135m")
        >>> ref.path.name, ref.card.source_layers, parse_oracle_ref(ref) is ref
        ('oracle-smollm2-135m', [7, 15, 22], True)
    """

    path: Path
    card: Optional[OracleCard]

    def __str__(self) -> str:
        return str(self.path)


def resolve_oracle_path(spec: Union[str, Path]) -> Path:
    """The folder an ``--oracle`` names (the module's rule). Called by :func:`parse_oracle_ref` only.

    Example:
        >>> resolve_oracle_path("checkpoints/oracle-smollm2-135m").name
        'oracle-smollm2-135m'
    """
    return shipped_path(spec)


def parse_oracle_ref(spec: Optional[OracleSpec], *, allow_none: bool = False,
                     require_card: bool = False) -> Optional[OracleRef]:
    """The one parse function of an oracle reference: the folder resolved (:func:`resolve_oracle_path`), checked
    and its card read; an :class:`OracleRef` comes back as it is. With ``allow_none``, ``None``, ``""`` and
    ``"none"`` (any case) mean no oracle and give ``None``; with ``require_card`` a folder without ``oracle.json``
    (a bare adapter, a model organism) is refused. A missing or unusable folder is a one-line error.

    Example:
        >>> parse_oracle_ref("none", allow_none=True) is None
        True
        >>> parse_oracle_ref("checkpoints/organisms/benign")
        Traceback (most recent call last):
        ...
        hooks.errors.CheckpointError: checkpoints/organisms/benign is a model organism (organism.json), not an oracle: pass it as --target-adapter (the model to audit) and an oracle folder as --oracle
    """
    if isinstance(spec, OracleRef):
        if require_card and spec.card is None:
            raise InputError(f"{spec.path} {NO_CARD}")
        return spec
    if allow_none and (spec is None or str(spec).strip().lower() in NO_ORACLE):
        return None
    if spec is None or not str(spec).strip():
        raise InputError("no oracle folder given: pass one, e.g. --oracle checkpoints/oracle-smollm2-135m")
    path = resolve_oracle_path(spec)
    if require_card and not has_card(path):
        raise InputError(f"{path} {NO_CARD}")
    check_oracle_folder(path)
    return OracleRef(path, load_card(path))
