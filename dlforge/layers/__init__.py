"""Shared building blocks, one concept per file, picked by name."""

from dlforge.layers.activations import ACTIVATIONS, make_activation
from dlforge.layers.losses import LOSSES, Loss, to_probabilities
from dlforge.layers.norms import NORMS, is_norm, make_norm

__all__ = ["ACTIVATIONS", "LOSSES", "NORMS", "Loss", "is_norm", "make_activation", "make_norm", "to_probabilities"]
