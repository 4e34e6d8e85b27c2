"""Model organisms: fine-tuned targets with a known ground truth (taboo, backdoor, risk, benign)."""
from oracle.organisms.train import CARD, KINDS, OrganismConfig, read_card, train_organism

__all__ = ["CARD", "KINDS", "OrganismConfig", "read_card", "train_organism"]
