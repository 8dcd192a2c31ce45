"""dlforge: deep learning end to end on PyTorch — one CLI, one artifact format, offline."""

from dlforge import train  # the training subpackage; calling it trains: dlforge.train("preset", [...])

__version__ = "0.1.0"


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
