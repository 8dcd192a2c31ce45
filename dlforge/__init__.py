"""dlforge: deep learning end to end on PyTorch — one CLI, one artifact format, offline.

The top of the house: these functions call `dlforge.api` lazily, so importing any module of dlforge stays cheap.
"""

import types

from dlforge import train  # the training subpackage; calling it trains: dlforge.train("preset", [...])

__version__ = "0.1.0"


class _CallableTrain(types.ModuleType):
    """`dlforge.train` is both the training subpackage and the API's train function. A package and a function
    cannot share a name (importing the subpackage rebinds it), so the subpackage's module gets this class, whose
    `__call__` is `dlforge.api.train`: a module `__class__` assignment is Python's supported way to make a module
    callable. It is done here, at the top floor, so that `dlforge.train` itself never reaches up to the API."""

    def __call__(self, *args, **kwargs):
        """Train a preset, YAML file or config dict; see `dlforge.api.train`."""
        from dlforge.api import train as _train

        return _train(*args, **kwargs)


train.__class__ = _CallableTrain


def load(*args, **kwargs):
    """Load a trained model from a model folder or a run; see `dlforge.api.load`."""
    from dlforge.api import load as _load

    return _load(*args, **kwargs)


def evaluate(*args, **kwargs):
    """Evaluate a run's model on a split; see `dlforge.api.evaluate`."""
    from dlforge.api import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


def predict(*args, **kwargs):
    """Predict the rows of a CSV/Parquet file with a run's model; see `dlforge.api.predict`."""
    from dlforge.api import predict as _predict

    return _predict(*args, **kwargs)


def create_model(name: str, **overrides):
    """Build a registered model by name; see `dlforge.registry.create_model`."""
    from dlforge.registry import create_model as _create

    return _create(name, **overrides)


def list_models() -> list[str]:
    from dlforge.registry import list_models as _list

    return _list()


__all__ = ["create_model", "evaluate", "list_models", "load", "predict", "train"]
