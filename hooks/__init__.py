"""Everything that touches a model's internals: loading, layer discovery, capture, injection, the HDF5 store."""
from .errors import AOError, CheckpointError, DataError, InputError, LayerError, ModelLoadError, StoreError
from .layers import decoder_layers, n_layers, resolve_layer, resolve_layers, unwrap
from .models import DEFAULT_MODEL, LoadedModel, active_adapter, adapters_disabled, attach_adapter, load_model
from .capture_job import CaptureConfig, run_capture
from .paths import data_dir
from .positions import parse_positions, select_positions
from .store import ActivationStore, StoreWriter

__all__ = [
    "AOError", "CheckpointError", "DataError", "InputError", "LayerError", "ModelLoadError", "StoreError",
    "decoder_layers", "n_layers", "resolve_layer", "resolve_layers", "unwrap",
    "DEFAULT_MODEL", "LoadedModel", "active_adapter", "adapters_disabled", "attach_adapter", "load_model",
    "ActivationStore", "CaptureConfig", "StoreWriter", "data_dir", "parse_positions", "run_capture",
    "select_positions",
]
