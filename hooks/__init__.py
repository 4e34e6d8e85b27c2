"""Everything that touches a model's internals: loading, layer discovery, capture, injection, the HDF5 store."""
from .errors import AOError, CheckpointError, InputError, LayerError, ModelLoadError, StoreError
from .layers import decoder_layers, n_layers, resolve_layer, resolve_layers, unwrap
from .models import DEFAULT_MODEL, LoadedModel, active_adapter, adapters_disabled, attach_adapter, load_model
from .paths import data_dir

__all__ = [
    "AOError", "CheckpointError", "InputError", "LayerError", "ModelLoadError", "StoreError",
    "decoder_layers", "n_layers", "resolve_layer", "resolve_layers", "unwrap",
    "DEFAULT_MODEL", "LoadedModel", "active_adapter", "adapters_disabled", "attach_adapter", "load_model",
    "data_dir",
]
