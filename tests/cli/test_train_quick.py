"""Short runs of long presets: `--quick`, `train.limit_eval_batches`, and a warmup scaled to a shortened run (issue 13,
defect 24)."""

from __future__ import annotations

import json

from dlforge import api
from dlforge.train.checkpoint import find_checkpoints
from tests.clitools import ok_json, run_here, train_rows, write_blobs_csv, write_config


def test_quick_is_a_short_run_whose_bundle_the_overrides_override(tmp_path, capfd):
    csv = write_blobs_csv(tmp_path / "blobs.csv", n=120)
    cfg = write_config(tmp_path / "long.yaml", csv, max_steps=2000, scheduler="cosine", warmup_steps=100,
                       eval_every=10, checkpoint_every=5, log_every=1)
    proc = run_here(capfd, "train", str(cfg), "train.max_steps=40", "--quick", "--json", "--run-dir",
                    str(tmp_path / "run"))
    summary = ok_json(proc)
    assert summary["steps"] == 40  # the override wins over the bundle's 50
    assert ("note: train.warmup_steps 100 is not shorter than the run (40 steps): warming up over 4 steps instead"
            in proc.stderr.splitlines())
    run = tmp_path / "run"
    rows = train_rows(run)
    assert [r["step"] for r in rows] == [1, 10, 20, 30, 40]  # step 1, then every 10; eval_every 50: no validation
    assert [c.name for c in find_checkpoints(run / "checkpoints")] == ["checkpoint-40"]
    assert summary["eval_note"] == "" and "eval_limited" not in json.loads((run / "eval.json").read_text())


def test_limited_evaluation_says_so_in_eval_json_the_result_and_the_card(tmp_path):
    csv = write_blobs_csv(tmp_path / "blobs.csv", n=120)
    cfg = write_config(tmp_path / "c.yaml", csv, max_steps=4, checkpoint_every=None)
    result = api.train(cfg, ["train.limit_eval_batches=0.5"], run_dir=tmp_path / "run")
    evaluation = json.loads((result.run_dir / "eval.json").read_text())
    assert evaluation["eval_limited"] == {"limit_eval_batches": 0.5,
                                          "samples": {"train": [48, 96], "val": [6, 12], "test": [6, 12]}}
    assert result.eval_note == ("metrics from part of each split (train.limit_eval_batches 0.5): train 48 of 96, "
                                "val 6 of 12, test 6 of 12 samples")
    assert f"Note: {result.eval_note}." in (result.run_dir / "README.md").read_text()
    assert sum(evaluation["test_per_class"][c]["support"] for c in evaluation["test_per_class"]) == 6  # the report too
