"""Typed errors. Every user-facing failure is one of these, with a one-line message
that names the problem and the fix; the CLI prints the message and exits with code 2."""
from __future__ import annotations


class AOError(Exception):
    """Base class of every error the project raises on bad input."""


class ModelLoadError(AOError):
    """The model or adapter could not be found or loaded."""


class LayerError(AOError):
    """A layer spec does not name a layer of the model."""


class InputError(AOError):
    """Texts, labels, questions or tensors that the job cannot use."""


class StoreError(AOError):
    """An activation store is missing, locked, corrupt or made with another model."""


class CheckpointError(AOError):
    """An oracle, probe or organism checkpoint is missing, unsafe or for another model."""


class DataError(AOError):
    """The public data could not be fetched, or a data folder does not match the registry."""
