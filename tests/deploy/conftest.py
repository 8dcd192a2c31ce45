"""What the serving and monitoring tests share."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two tiny trained runs: an iris logistic regression (tabular) and a digits CNN (images)."""
    from dlforge.api import train

    d = tmp_path_factory.mktemp("classic")
    quiet = ["train.progress=false", "train.tensorboard=false", "train.checkpoint_every=null", "train.max_epochs=null"]
    return {"iris": train("iris-logistic", ["train.max_steps=30", *quiet], run_dir=d / "runs" / "iris").run_dir,
            "digits": train("digits-cnn", ["train.max_steps=30", *quiet], run_dir=d / "runs" / "digits").run_dir}
