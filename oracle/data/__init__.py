"""What the oracle reads: the shared data folder's files, the hash split of items into train and eval,
chat and tokenisation helpers, and the unseen-question sets no training family opens. Imports only ``hooks``."""
