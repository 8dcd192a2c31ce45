"""The model zoo, one architecture per file. Importing this package registers every model."""

from dlforge.models import mlp  # noqa: F401
from dlforge.models.output import Output

__all__ = ["Output"]
