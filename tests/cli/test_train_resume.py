"""Resuming a run with overrides: the schedule-defining keys are refused unless --allow-changes, a checkpoint of
another shape is one line naming it, and the resume says which checkpoint it took (issue 13, defects 12 and 32)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dlforge import api
from dlforge.config import load_config
from dlforge.errors import CheckpointError
from dlforge.train.checkpoint import load_latest_checkpoint
from dlforge.train.trainer import Trainer
from tests.clitools import one_line_error, run_here, train_rows, write_blobs_csv, write_config


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A finished 20-step cosine run with a checkpoint every 5 steps; copy it before changing it."""
    root = tmp_path_factory.mktemp("resume")
    csv = write_blobs_csv(root / "blobs.csv", n=120)
    cfg = write_config(root / "base.yaml", csv, max_steps=20, scheduler="cosine", warmup_steps=2, lr=0.02,
                       eval_every=10)
    return api.train(cfg, run_dir=root / "runs" / "base").run_dir


def copy_run(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "runs" / run.name))


def test_schedule_changes_are_refused_in_one_line_unless_allowed(base, tmp_path, capfd):
    before = (base / "config.yaml").read_text()
    proc = run_here(capfd, "train", "--resume", str(base), "train.max_steps=10", "train.lr=0.5",
                    "train.log_every=2", "data.limit=50", "data.num_workers=1")
    assert one_line_error(proc) == (  # log_every and num_workers are no part of the schedule or the data
        "error: --resume: data.limit None -> 50, train.max_steps 20 -> 10, train.lr 0.02 -> 0.5 would change the "
        "data or the schedule of the run being resumed; pass --allow-changes to resume with them anyway")
    assert (base / "config.yaml").read_text() == before

    run = copy_run(base, tmp_path)
    proc = run_here(capfd, "train", "--resume", str(run), "train.max_steps=30", "--allow-changes", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "resumed from checkpoint-20 (step 20)" in proc.stderr.splitlines()
    assert load_config(run / "config.yaml").train.max_steps == 30
    steps = [r["step"] for r in train_rows(run) if "split" not in r]
    assert steps == list(range(1, 31))


def test_a_checkpoint_of_another_shape_names_the_file_and_the_weight(base):
    before = (base / "config.yaml").read_text()
    checkpoint = base / "checkpoints" / "checkpoint-20" / "state.safetensors"
    with pytest.raises(CheckpointError) as err:
        api.train(None, ["model.hidden=[16,16]"], resume=base)
    assert str(err.value) == (
        f"{checkpoint}: weight 'blocks.0.linear.weight' expected shape (16, 6), found (32, 6); the model config "
        "differs from the one this checkpoint was trained with")
    assert (base / "config.yaml").read_text() == before  # a refused resume leaves the run's config alone


def test_optimizer_state_of_other_parameter_groups_is_a_checkpoint_error(base):
    # allowed changes that regroup the parameters (weight decay splits decay / no_decay) fail in one line too

    cfg = load_config(base / "config.yaml", ["train.weight_decay=0.1"])
    data = api.build_data(cfg)
    trainer = Trainer(api.build_model(cfg, data), cfg.train, data.train)
    path, state = load_latest_checkpoint(base / "checkpoints")
    message = rf"^{path}: the optimizer state has parameter groups of \[6\] tensors, this run \[3, 3\]; train"
    with pytest.raises(CheckpointError, match=message):
        trainer.load_state_dict(state, source=str(path))
