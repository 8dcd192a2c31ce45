"""The model zoo, one architecture per file. Importing this package registers every model."""

from dlforge.models import (  # noqa: F401  (each module registers its presets)
    alexnet,
    bert,
    char_rnn,
    efficientnet,
    googlenet,
    gpt,
    lenet,
    mlp,
    resnet,
    rnn,
    seq2seq,
    simple_cnn,
    vgg,
)
from dlforge.models.output import Output

__all__ = ["Output"]
