"""Judging an oracle: the reading suite, the unseen-questions suite, held-out classification, calibration
and the probe benchmark."""
