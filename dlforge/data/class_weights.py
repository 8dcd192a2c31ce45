"""Class weights for an imbalanced classification dataset, from its training split (`data.class_weights: balanced`).

Shared by every dataset that offers them (tabular, seattle_weather); the model's loss takes them as `class_weights`.
"""

from __future__ import annotations

import numpy as np

from dlforge.errors import DataError


def balanced_class_weights(train_ids: np.ndarray, label_names: list[str], source: str) -> list[float]:
    """One weight per class, n_samples / (n_classes * count_c) over the training labels `train_ids` (N,): the
    "balanced" heuristic of sklearn.utils.class_weight.compute_class_weight. A class without a training sample is a
    DataError naming `source` and the class."""
    counts = np.bincount(train_ids, minlength=len(label_names))
    if counts.min() == 0:
        missing = label_names[int(counts.argmin())]
        raise DataError(f"{source}: class {missing!r} has no sample in the train split; class weights need every "
                        "class")
    return (len(train_ids) / (len(label_names) * counts)).tolist()
