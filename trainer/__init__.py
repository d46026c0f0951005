"""The MACL trainer: store + split readers -> tensors; models, losses, training loop, evaluation,
baselines, checkpoints, reports, recommend. Imports ``schemas`` only (never pipeline, flows or
Prefect); ``trainer.cli`` adds ``macl train``, ``macl evaluate`` and ``macl recommend``."""
