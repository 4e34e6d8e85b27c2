"""Teaching the oracle: the task families that build examples (``tasks``), the training configuration, the
loop and its checkpoints. Nothing here imports ``oracle.evals`` or ``oracle.audit``: in-training checks are
callbacks the caller wires in."""
