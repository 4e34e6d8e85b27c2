"""Input scaling: z-score each dimension of a target activation before it is injected into the oracle.

Why: on SmolLM2-135M five residual dimensions hold 58-67 % of the squared norm of the last-token vectors at
layers 7-22, and the vectors of unrelated texts have a mean cosine of 0.6-0.7 (``experiments/2026-input-scaling/activation_geometry.py``). The
norm-matched injection ``h + ||h|| v/||v||`` then spends most of its budget on a direction that is the same
for every input. Subtracting the per-dimension mean and dividing by the per-dimension standard deviation (both
measured once on the training activations, per source layer) leaves the part that varies, with every
dimension on the same scale. The oracle card records the choice (``input_scaling``) and the statistics ship
beside the adapter in safetensors; an oracle without them (the published Activation Oracle checkpoints, the
untrained baseline) injects the raw vectors, exactly as docs/design.md states.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional, Union

import torch

from hooks.errors import CheckpointError, InputError

log = logging.getLogger(__name__)

STATS_FILE = "input_scaling.safetensors"
SCALINGS = ("none", "standardize")


@dataclass
class InputScaler:
    """Per-layer ``(v - mean_D) / std_D``, applied to every vector before injection.

    Example:
        >>> s = InputScaler.fit({7: [torch.tensor([[1.0, 10.0], [3.0, 30.0], [5.0, 50.0]])]})   # mean 3, 30; std 2, 20
        >>> s(torch.tensor([[5.0, 50.0]]), 7).tolist()
        [[1.0, 1.0]]
        >>> s(torch.tensor([[4.0, 40.0]]), 7, diff=True).tolist()   # a difference is only rescaled
        [[2.0, 2.0]]
    """

    mean: dict[int, torch.Tensor]
    std: dict[int, torch.Tensor]

    @property
    def layers(self) -> list[int]:
        """Source layers the statistics were measured at.

        Example:
            >>> InputScaler.fit({15: [torch.randn(4, 3)], 7: [torch.randn(4, 3)]}).layers
            [7, 15]
        """
        return sorted(self.mean)

    @classmethod
    def fit(cls, vectors_by_layer: Mapping[int, Iterable[torch.Tensor]], min_std: float = 1e-3) -> "InputScaler":
        """Mean and standard deviation per dimension of all the ``(K, D)`` vectors given for each layer.

        Example:
            >>> [round(x, 6) for x in InputScaler.fit({3: [torch.zeros(2, 4)]}).std[3].tolist()]   # a constant dimension is not blown up
            [0.001, 0.001, 0.001, 0.001]
        """
        mean, std = {}, {}
        for layer, vecs in vectors_by_layer.items():
            rows_ND = torch.cat([v.detach().float().reshape(-1, v.shape[-1]) for v in vecs])
            if rows_ND.shape[0] < 2:
                raise InputError(f"input scaling needs at least 2 vectors at layer {layer}, got {rows_ND.shape[0]}")
            mean[int(layer)] = rows_ND.mean(0)
            std[int(layer)] = rows_ND.std(0).clamp_min(min_std)
        if not mean:
            raise InputError("input scaling needs vectors for at least one layer")
        return cls(mean, std)

    def _layer(self, layer: int) -> int:
        if layer in self.mean:
            return layer
        # a layer the oracle was not trained on (Oracle warns about it): the nearest layer's statistics
        return min(self.mean, key=lambda L: (abs(L - layer), L))

    def __call__(self, v_KD: torch.Tensor, layer: int, diff: bool = False) -> torch.Tensor:
        """The scaled vectors (fp32, on ``v_KD``'s device). ``diff=True``: a difference of two activations
        (target minus base) is only divided by the standard deviation, since its mean is not the layer's."""
        L = self._layer(int(layer))
        if v_KD.shape[-1] != self.mean[L].shape[0]:
            raise InputError(f"vectors have width {v_KD.shape[-1]} but the input scaling was measured on width "
                             f"{self.mean[L].shape[0]}")
        v = v_KD.float()
        mean, std = self.mean[L].to(v.device), self.std[L].to(v.device)
        return v / std if diff else (v - mean) / std

    def save(self, folder: Union[str, Path]) -> Path:
        """Write ``input_scaling.safetensors`` into ``folder`` atomically."""
        from safetensors.torch import save_file

        path = Path(folder) / STATS_FILE
        tensors = {f"mean.{L}": self.mean[L].contiguous() for L in self.mean}
        tensors.update({f"std.{L}": self.std[L].contiguous() for L in self.std})
        tmp = path.with_suffix(".safetensors.tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, folder: Union[str, Path]) -> "InputScaler":
        """Read the statistics an oracle checkpoint ships (safetensors only)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(folder) / STATS_FILE
        if not path.is_file():
            raise CheckpointError(f"{folder} says input_scaling=standardize but has no {STATS_FILE}: copy it from the "
                                  f"training run or retrain")
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path} is not a readable safetensors file ({e}): copy it again or retrain") from None
        mean = {int(k.split(".", 1)[1]): v for k, v in tensors.items() if k.startswith("mean.")}
        std = {int(k.split(".", 1)[1]): v for k, v in tensors.items() if k.startswith("std.")}
        if not mean or set(mean) != set(std):
            raise CheckpointError(f"{path} does not hold a mean and a std per layer: copy it again or retrain")
        return cls(mean, std)

    @classmethod
    def for_checkpoint(cls, folder: Union[str, Path], input_scaling: str) -> Optional["InputScaler"]:
        """The scaler an oracle checkpoint was trained with (its card's ``input_scaling``), or ``None`` for raw inputs.

        Example:
            >>> InputScaler.for_checkpoint("checkpoints/oracle-smollm2-135m", "none") is None
            True
        """
        return cls.load(folder) if input_scaling == "standardize" else None
