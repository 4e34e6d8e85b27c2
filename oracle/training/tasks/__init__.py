"""Training and evaluation task builders of the oracle.

Every builder has the signature ``build_<name>(tokenizer, n_layers, n, seed, data_dir=None,
split="train", **opts) -> list[OracleExample]``, is deterministic given ``seed``, and spreads the
source layer evenly over the depths 25/50/75 % (:func:`source_layers`).
"""
from hooks.layers import source_layers
from oracle.data.splits import split_of
from oracle.training.tasks.base import NO, OracleExample, YES, load_examples, save_examples
from oracle.training.tasks.classification import (build_classification, build_heldout_classification,
                                                  classification_dataset_names)
from oracle.training.tasks.context_prediction import build_context_prediction
from oracle.training.tasks.latentqa import build_latentqa
from oracle.training.tasks.topics import build_topics
from oracle.training.tasks.mix import DEFAULT_WEIGHTS, FAMILIES, build_training_mix, check_example, summarize
from oracle.training.tasks.onpolicy import (build_onpolicy_context_prediction, default_onpolicy_prompts,
                                            generate_onpolicy_chats, load_onpolicy_chats)

__all__ = [
    "FAMILIES", "YES", "NO", "OracleExample", "check_example", "load_examples", "save_examples", "source_layers",
    "split_of", "build_classification", "build_heldout_classification", "classification_dataset_names",
    "build_context_prediction", "build_latentqa", "DEFAULT_WEIGHTS",
    "build_training_mix", "summarize", "build_onpolicy_context_prediction", "default_onpolicy_prompts",
    "generate_onpolicy_chats", "load_onpolicy_chats", "build_topics",
]
