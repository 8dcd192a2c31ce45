"""Training: the Trainer (one loop), callbacks, optimizers and schedules, checkpoints, distributed set-up.

The package is also the API's `train` function: `dlforge.train("breast-cancer-mlp", ["train.lr=3e-3"])` calls
`dlforge.api.train`. A package and a function cannot share the name `dlforge.train` otherwise, because importing
the subpackage rebinds the name; a module class with `__call__` is Python's supported way to make a module callable.
"""

import sys
import types


class _TrainModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        """Train a preset, YAML file or config dict; see `dlforge.api.train`."""
        from dlforge.api import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _TrainModule
