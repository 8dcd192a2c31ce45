"""Training: the Trainer (one loop), callbacks, optimizers and schedules, checkpoints, distributed set-up.

This package knows nothing of the toolkit above it; `dlforge.train(...)`, the API's train function, is made
callable by the top-level package (see `dlforge/__init__.py`).
"""
