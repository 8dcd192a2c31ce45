"""Training: the Trainer (one loop), callbacks, optimizers and schedules, checkpoints, distributed set-up."""
