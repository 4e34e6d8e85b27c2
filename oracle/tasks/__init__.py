"""Training and evaluation task builders of the oracle.

Every builder has the signature ``build_<name>(tokenizer, n_layers, n, seed, data_dir=None,
split="train", **opts) -> list[OracleExample]``, is deterministic given ``seed``, and spreads the
source layer evenly over the depths 25/50/75 % (:func:`source_layers`).
"""
from .base import (FAMILIES, NO, YES, OracleExample, check_example, load_examples, save_examples, source_layers,
                   split_of)
from .classification import (build_classification, build_heldout_classification, classification_dataset_names,
                             heldout_dataset_names)
from .context_prediction import build_context_prediction
from .latentqa import build_latentqa, latentqa_items
from .topics import build_topics
from .mix import DEFAULT_WEIGHTS, build_training_mix, summarize
from .onpolicy import (build_onpolicy_context_prediction, default_onpolicy_prompts, generate_onpolicy_chats,
                       load_onpolicy_chats)

__all__ = [
    "FAMILIES", "YES", "NO", "OracleExample", "check_example", "load_examples", "save_examples", "source_layers",
    "split_of", "build_classification", "build_heldout_classification", "classification_dataset_names",
    "heldout_dataset_names", "build_context_prediction", "build_latentqa", "latentqa_items", "DEFAULT_WEIGHTS",
    "build_training_mix", "summarize", "build_onpolicy_context_prediction", "default_onpolicy_prompts",
    "generate_onpolicy_chats", "load_onpolicy_chats", "build_topics",
]
