"""Everything that touches a model's internals: loading, layer discovery, capture, injection, the HDF5 store."""
from hooks.errors import AOError, CheckpointError, DataError, InputError, LayerError, ModelLoadError, StoreError
from hooks.layers import Layer, decoder_layers, n_layers, resolve_layer, resolve_layers, unwrap
from hooks.models import DEFAULT_MODEL, LoadedModel, active_adapter, adapters_disabled, attach_adapter, load_model
from hooks.capture_job import CaptureConfig, run_capture
from hooks.paths import data_dir
from hooks.positions import Positions, parse_positions, select_positions
from hooks.store import ActivationStore, StoreWriter

__all__ = [
    "AOError", "CheckpointError", "DataError", "InputError", "LayerError", "ModelLoadError", "StoreError",
    "Layer", "decoder_layers", "n_layers", "resolve_layer", "resolve_layers", "unwrap",
    "DEFAULT_MODEL", "LoadedModel", "active_adapter", "adapters_disabled", "attach_adapter", "load_model",
    "ActivationStore", "CaptureConfig", "Positions", "StoreWriter", "data_dir", "parse_positions", "run_capture",
    "select_positions",
]
