"""Published Activation Oracle adapters: a bare PEFT folder (``adapter_config.json`` +
``adapter_model.safetensors``, no ``oracle.json``) gets its card from the Activation Oracle
conventions, each field overridable.

The conventions (Karvonen et al., "Activation Oracles", and their code): activations are read at
25, 50 and 75 % of the base model's depth (``int(n_layers * p / 100)``), injected at the output of
block 1 at the ``" ?"`` placeholder tokens with a norm-matched add (coefficient 1), raw (no input
scaling), into the prompt ``"Layer: L\\n" + " ?" * K + " \\n" + question`` rendered with the chat
template as their code renders it (``enable_thinking=False``, nothing stripped: chat style
``"published"``). ``ao card init FOLDER`` writes the derived card so the choice is recorded.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence, Union

from hooks.errors import CheckpointError, InputError, ModelLoadError
from hooks.layers import resolve_layer
from hooks.adapter_base import (is_local_path, model_skeleton, portable_base_name, resolve_adapter_base,
                                same_base)
from hooks.folders import check_oracle_folder
from hooks.models import LoadedModel, check_adapter_folder

from oracle.core.card import OracleCard, check_card_fits, has_card, read_card, write_card
from oracle.core.prompt import DEFAULT_PLACEHOLDER

log = logging.getLogger(__name__)

AO_LAYER_PERCENTS = (25, 50, 75)
AO_INJECTION_LAYER = 1
AO_COEF = 1.0
AO_CHAT_STYLE = "published"
DERIVED_NOTE = "derived from adapter_config.json and the Activation Oracle conventions (no oracle.json)"

LayerSpec = Union[int, str]


@dataclass(frozen=True)
class CardOverrides:
    """Fields given by the user (``--base``, ``--source-layers``, ...) that replace the card's own.

    ``source_layers`` holds layer specs (indices, negative indices, percents such as ``"25%"``),
    resolved against the model's depth when it is known.

    Example:
        >>> CardOverrides.parse(source_layers="9,18,27", coef="1.5").source_layers
        (9, 18, 27)
        >>> CardOverrides().given()
        {}
    """

    base: Optional[str] = None
    source_layers: Optional[tuple[LayerSpec, ...]] = None
    injection_layer: Optional[int] = None
    coef: Optional[float] = None
    placeholder: Optional[str] = None

    @classmethod
    def parse(cls, base: Optional[str] = None, source_layers: Optional[str] = None,
              injection_layer: Optional[Union[int, str]] = None, coef: Optional[Union[float, str]] = None,
              placeholder: Optional[str] = None) -> "CardOverrides":
        """Overrides from command-line strings (``source_layers="9,18,27"`` or ``"25%,50%,75%"``);
        a malformed value is a one-line InputError.

        Example:
            >>> CardOverrides.parse(source_layers="25%, 75%").source_layers
            ('25%', '75%')
        """
        layers: Optional[tuple[LayerSpec, ...]] = None
        if source_layers is not None:
            parts = [p.strip() for p in str(source_layers).split(",") if p.strip()]
            if not parts:
                raise InputError("--source-layers is empty: give layers such as 9,18,27 or 25%,50%,75%")
            layers = tuple(int(p) if p.lstrip("-").isdigit() else p for p in parts)
        try:
            inj = None if injection_layer is None else int(injection_layer)
            cf = None if coef is None else float(coef)
        except ValueError:
            raise InputError(f"--injection-layer must be an integer and --coef a number, got {injection_layer!r} "
                             f"and {coef!r}") from None
        if cf is not None and not (math.isfinite(cf) and cf > 0):
            raise InputError(f"--coef must be a positive finite number (the card's is 1), not {coef!r}")
        if placeholder is not None and not placeholder:
            raise InputError("--placeholder is empty: pass the placeholder string, e.g. ' ?'")
        return cls(base=base or None, source_layers=layers, injection_layer=inj, coef=cf, placeholder=placeholder)

    def given(self) -> dict:
        """The fields that were set, by name."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


def named_base(folder: Union[str, Path]) -> str:
    """The ``base_model_name_or_path`` of an adapter folder (``""`` when it names none).

    Example:
        >>> named_base("checkpoints/organisms/benign")
        'smollm2-135m'
    """
    return str(check_adapter_folder(folder).get("base_model_name_or_path") or "").strip()


def check_named_base(folder: Union[str, Path], spec: str) -> None:
    """Refuse, in one line, a bare oracle adapter whose ``adapter_config.json`` names another base
    model than ``spec`` (names that cannot be compared, such as a local folder, pass; the shapes are
    checked when the adapter is attached).

    Example:
        >>> check_named_base("checkpoints/organisms/benign", "gemma3-270m")
        Traceback (most recent call last):
        ...
        hooks.errors.CheckpointError: oracle checkpoints/organisms/benign was made for smollm2-135m, not gemma3-270m: use an oracle for gemma3-270m, or pass --base smollm2-135m
    """
    named = named_base(folder)
    if named and same_base(named, spec) is False:
        raise CheckpointError(f"oracle {folder} was made for {named}, not {spec}: use an oracle for {spec}, "
                              f"or pass --base {named}")


def _layer_index(spec: LayerSpec, n_layers: int) -> int:
    if isinstance(spec, int) or str(spec).strip().lstrip("-").isdigit():
        i = int(spec)
        return i + n_layers if i < 0 else i  # out of range: check_card_fits says so, naming the oracle
    return resolve_layer(spec, n_layers)


def _check_placeholder(folder: Union[str, Path], tokenizer, placeholder: str) -> None:
    if len(tokenizer.encode(placeholder, add_special_tokens=False)) != 1:
        raise InputError(f"the placeholder {placeholder!r} of oracle {folder} is not one token for this tokenizer: "
                         f"pass --placeholder with the one it was trained with")


def apply_overrides(card: OracleCard, overrides: CardOverrides, n_layers: int) -> OracleCard:
    """The card with the overridden fields replaced (``base`` is used to load the model, not here).

    Example:
        >>> card = OracleCard(base_model="m", base_weights_hash="h", d_model=64, source_layers=[1, 2, 3])
        >>> apply_overrides(card, CardOverrides(source_layers=("50%", -1), coef=2.0), n_layers=4).source_layers
        [2, 3]
    """
    changes: dict = {}
    if overrides.source_layers is not None:
        changes["source_layers"] = sorted({_layer_index(s, n_layers) for s in overrides.source_layers})
    for name in ("injection_layer", "coef", "placeholder"):
        value = getattr(overrides, name)
        if value is not None:
            changes[name] = value
    return replace(card, **changes) if changes else card


def _card_base(folder: Union[str, Path], spec: str) -> str:
    """The base model a derived card records: the portable name, not a folder of this machine when
    the adapter names the same model (``Qwen/Qwen3-8B`` for a local copy ``/models/Qwen3-8B``)."""
    named = named_base(folder)
    if named and is_local_path(spec) and not is_local_path(named):
        same = same_base(named, spec)
        if same or (same is None and Path(str(spec).rstrip("/")).name.lower() == named.rsplit("/", 1)[-1].lower()):
            return named
    return portable_base_name(spec)


def derive_card(folder: Union[str, Path], lm: LoadedModel, overrides: Optional[CardOverrides] = None,
                announce: bool = True) -> OracleCard:
    """The card of a bare PEFT oracle adapter on the loaded base model ``lm``: the Activation Oracle
    conventions (module docstring), then ``overrides``. Logs one line saying so (``announce``).

    Example:
        >>> derive_card("adamkarvonen-Qwen3-8B-oracle", qwen3_8b).source_layers   # doctest: +SKIP
        [9, 18, 27]
    """
    overrides = overrides or CardOverrides()
    n = lm.n_layers
    card = OracleCard(base_model=_card_base(folder, lm.spec), base_weights_hash=lm.weights_hash, d_model=lm.d_model,
                      source_layers=sorted({int(n * p / 100) for p in AO_LAYER_PERCENTS}),
                      injection_layer=AO_INJECTION_LAYER, placeholder=DEFAULT_PLACEHOLDER, coef=AO_COEF,
                      input_scaling="none", chat_style=AO_CHAT_STYLE, training={"note": DERIVED_NOTE})
    card = apply_overrides(card, overrides, n)
    check_card_fits(card, folder, n, lm.d_model)
    _check_placeholder(folder, lm.tokenizer, card.placeholder)
    if announce:
        log.warning("oracle %s has no oracle.json: derived its card from adapter_config.json and the Activation Oracle "
                    "conventions (base %s, source layers %s, injection at block %d, placeholder %r, coef %g, no input "
                    "scaling, chat style %s); record it with `ao card init %s`", folder, card.base_model,
                    card.source_layers, card.injection_layer, card.placeholder, card.coef, card.chat_style, folder)
    return card


def resolve_card(folder: Union[str, Path], lm: LoadedModel, card: Optional[OracleCard] = None,
                 overrides: Optional[CardOverrides] = None) -> OracleCard:
    """The card an oracle runs with on ``lm``: its own (``card``, read from ``oracle.json``) or, for
    a bare adapter, the derived one; ``overrides`` applied; checked against the model's depth and
    width (one-line LayerError / CheckpointError). A bare adapter that names another base model is
    refused unless ``overrides.base`` chose the base.

    Example:
        >>> resolve_card("checkpoints/oracle-smollm2-135m", lm, read_card("checkpoints/oracle-smollm2-135m")).coef  # doctest: +SKIP
        1.0
    """
    overrides = overrides or CardOverrides()
    if card is None:
        if overrides.base is None:
            check_named_base(folder, lm.spec)
        elif same_base(named_base(folder), overrides.base) is False:
            log.warning("oracle %s names base model %s; running it on %s as --base asks", folder, named_base(folder),
                        overrides.base)
        return derive_card(folder, lm, overrides)
    card = apply_overrides(card, overrides, lm.n_layers)
    if overrides.given():
        log.info("oracle %s: card fields overridden: %s", folder, overrides.given())
    check_card_fits(card, folder, lm.n_layers, lm.d_model)
    if overrides.placeholder is not None:
        _check_placeholder(folder, lm.tokenizer, card.placeholder)
    return card


def init_card(folder: Union[str, Path], overrides: Optional[CardOverrides] = None, force: bool = False) -> OracleCard:
    """Write ``oracle.json`` for a bare PEFT oracle adapter: the derived card (:func:`derive_card`),
    computed from the base model's structure without loading its weights. Refuses to replace an
    existing card unless ``force``.

    Example:
        >>> init_card("adamkarvonen-Qwen3-8B-oracle").source_layers   # doctest: +SKIP
        [9, 18, 27]
    """
    folder = Path(folder)
    check_oracle_folder(folder, "`ao card init` writes the card of an oracle adapter only")
    overrides = overrides or CardOverrides()
    if has_card(folder) and not force:
        raise CheckpointError(f"{folder} already has oracle.json: pass --force to replace it with a derived card")
    spec = resolve_adapter_base(folder, overrides.base)
    try:
        skeleton = model_skeleton(spec)
    except ModelLoadError as e:
        if overrides.base:
            raise
        raise ModelLoadError(f"the base model {spec!r} named by {folder}/adapter_config.json cannot be read here "
                             f"({str(e).splitlines()[0][:160]}): pass it with --base") from None
    if overrides.base is None:
        check_named_base(folder, skeleton.spec)
    card = derive_card(folder, skeleton, overrides, announce=False)
    card = replace(card, training={"note": DERIVED_NOTE.replace("(no oracle.json)", "by `ao card init`")})
    write_card(folder, card)
    return card


def load_card(folder: Union[str, Path]) -> Optional[OracleCard]:
    """The card in ``oracle.json``, or ``None`` for a bare PEFT adapter (its card is derived on load).

    Example:
        >>> load_card("checkpoints/organisms/benign") is None
        True
    """
    return read_card(Path(folder)) if has_card(folder) else None


__all__: Sequence[str] = ("AO_LAYER_PERCENTS", "CardOverrides", "apply_overrides", "check_named_base", "derive_card",
                          "init_card", "load_card", "named_base", "resolve_card")
