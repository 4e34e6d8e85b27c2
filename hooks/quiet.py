"""A clean terminal: third-party deprecation warnings, log lines and model-loader progress bars silenced, the
project's own bars and warnings kept. The ``ao`` commands call :func:`quiet_third_party` unless ``-v`` is given;
:func:`loading` wraps model loading (``hooks.models``) so the loader bars of ``transformers`` (``Loading weights``,
the GGUF de-quantizing bar) stay off while it is on.

Example:
    >>> with loading():      # a no-op until quiet_third_party() was called
    ...     pass
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import warnings
from typing import Iterator

THIRD_PARTY = ("transformers", "torch", "peft", "accelerate", "huggingface_hub", "tokenizers", "safetensors", "gguf",
               "nnsight", "transformer_lens", "sklearn", "h5py", "einops", "matplotlib", "pooch", "urllib3", "numpy")
_state = {"quiet": False}


def is_quiet() -> bool:
    return _state["quiet"]


def quiet_third_party() -> None:
    """Ignore deprecation warnings (any package's) and every warning raised inside a third-party package, raise
    their loggers to ERROR, and turn off the Hugging Face progress bars. The project's own warnings and
    progress bars (``hooks.progress``) are untouched."""
    _state["quiet"] = True
    for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", module=r"(%s)(\.|$)" % "|".join(THIRD_PARTY))
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")   # read when huggingface_hub is first imported
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:
        _quiet_transformers()


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    with contextlib.suppress(ImportError):
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


@contextlib.contextmanager
def loading() -> Iterator[None]:
    """While loading a model: no loader bars when quiet (the GGUF converter uses ``tqdm`` directly, so its name is
    swapped for a disabled one and restored afterwards)."""
    if not _state["quiet"]:
        yield
        return
    _quiet_transformers()
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        gguf_utils = None
    original = getattr(gguf_utils, "tqdm", None)
    if original is not None:
        gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        if original is not None:
            gguf_utils.tqdm = original
