"""The learning-rate range test (`dlforge lr-find`, dlforge/train/lr_find.py): an exponential ramp, stopped on
divergence, a suggestion inside the range and below the divergence, and the model left as it was."""

from __future__ import annotations

import math

import torch
from clitools import ok_json, one_line_error, run_here, write_blobs_csv, write_config

from dlforge.train.lr_find import lr_range_test

PNG = b"\x89PNG\r\n\x1a\n"


def test_range_test_ramps_stops_on_divergence_and_restores_the_model(tiny_mlp, blobs, train_config):
    model = tiny_mlp()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    result = lr_range_test(model, train_config(max_steps=5, batch_size=16), blobs(n=128), start=1e-5, end=100.0,
                           steps=60)

    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())  # nothing was trained
    assert torch.equal(torch.get_rng_state(), rng)
    ratios = [b / a for a, b in zip(result.lrs, result.lrs[1:], strict=False)]
    assert result.lrs[0] == 1e-5 and all(math.isclose(r, (100 / 1e-5) ** (1 / 59)) for r in ratios)
    assert result.diverged_at is not None and len(result.lrs) < 60  # lr 100 blows any loss up: it stopped early
    assert result.lrs[-1] == result.diverged_at
    assert 1e-5 < result.suggestion < result.min_loss_lr <= result.diverged_at


def test_lr_find_command_on_a_tiny_table(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = write_config(tmp_path / "t.yaml", write_blobs_csv(tmp_path / "blobs.csv", n=120))
    proc = run_here(capsys, "lr-find", str(cfg), "train.batch_size=16", "--start", "1e-5", "--end", "100",
                          "--steps", "60", "--json")
    result = ok_json(proc)
    assert {"suggestion", "min_loss_lr", "diverged_at", "steps", "plot", "lrs", "losses", "smoothed"} <= set(result)
    assert 1e-5 < result["suggestion"] < result["diverged_at"] <= 100
    assert len(result["lrs"]) == len(result["losses"]) == len(result["smoothed"]) == result["steps"]
    assert result["plot"] == "runs/lr-find-t.png" and (tmp_path / result["plot"]).read_bytes().startswith(PNG)
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["lr-find-t.png"]  # no run folder, no registry

    proc = run_here(capsys, "lr-find", str(cfg), "--start", "1", "--end", "1e-3")
    assert "expected 0 < start < end" in one_line_error(proc)
