"""Checkpoints and model folders: exact round trips, tamper detection, crash safety, no pickle ever executed."""

from __future__ import annotations

import hashlib
import json
import math
import pathlib
import pickle
import random
import struct

import numpy as np
import pytest
import torch
from pydantic.dataclasses import dataclass
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from dlforge import artifacts, registry
from dlforge.errors import CheckpointError
from dlforge.registry import create_model
from dlforge.train import checkpoint as ckpt

# --- helpers ---------------------------------------------------------------------------------------------------------


def assert_same(a, b, path="state"):
    """Equal values AND equal types, all the way down (floats bit for bit, nan included)."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b) or torch.equal(a.isnan(), b.isnan()), path
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), path
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert type(k) is type(list(b)[list(a).index(k)]), f"{path}: key {k!r}"
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b)), path
    elif isinstance(a, np.generic):
        assert a.tobytes() == b.tobytes(), path
    else:
        assert a == b, path


def disk_round_trip(tmp_path, state):
    return ckpt.load_checkpoint(ckpt.save_checkpoint(tmp_path / "checkpoints" / "checkpoint-1", state))


def rehash(directory):
    """Rewrite manifest.json to match the files: what someone who tampers on purpose would do."""
    manifest = json.loads((directory / "manifest.json").read_text())
    files = {
        p.name: {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "bytes": p.stat().st_size}
        for p in directory.iterdir()
        if p.name != "manifest.json"
    }
    manifest["files"] = files
    (directory / "manifest.json").write_text(json.dumps(manifest))


def train_steps(model, optimizer, steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(8, 4, generator=gen), torch.randn(8, 2, generator=gen)
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


class Payload:
    """Unpickling this creates a marker file: the proof that a pickle ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


# --- generic state ---------------------------------------------------------------------------------------------------


def test_rng_states_round_trip_exactly_and_draw_the_same_numbers(tmp_path):
    gen = torch.Generator().manual_seed(3)
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generator": gen.get_state(),
    }
    back = disk_round_trip(tmp_path, state)
    assert_same(state, back)
    assert isinstance(back["python"][1], tuple) and len(back["python"][1]) == 625
    assert back["numpy"][1].dtype == np.uint32

    expected = (random.random(), np.random.rand(3), torch.rand(3), torch.rand(3, generator=gen))
    random.setstate(back["python"])
    np.random.set_state(back["numpy"])
    torch.set_rng_state(back["torch"])
    gen2 = torch.Generator()
    gen2.set_state(back["generator"])
    drawn = (random.random(), np.random.rand(3), torch.rand(3), torch.rand(3, generator=gen2))
    assert expected[0] == drawn[0]
    assert np.array_equal(expected[1], drawn[1])
    assert torch.equal(expected[2], drawn[2]) and torch.equal(expected[3], drawn[3])


def test_odd_values_keep_their_types(tmp_path):
    base = torch.arange(12.0).reshape(3, 4)
    state = {
        "floats": [float("nan"), float("inf"), float("-inf"), -0.0, 0.1, 1e308, 5e-324],
        "ints": {0: "zero", -1: (1, 2), 2**70: None, (1, "a"): True, 1.5: "float key"},
        "markers": {"__tensor__": 1, "__tuple__": [2]},  # plain dicts that look like encoded nodes
        "nested": ((), [], {}, ([(1,)],)),
        "numpy": [np.float32(0.1), np.int64(-3), np.bool_(True), np.float64("nan"), np.uint32(2**32 - 1)],
        "arrays": [
            np.arange(5, dtype=np.uint32) * 1_000_000_000,
            np.array([2**64 - 1, 7], dtype=np.uint64),
            np.array([1.5, np.nan], dtype=np.float16),
            np.array(3.25),
            np.array([[True, False]]),
            np.arange(6, dtype=">i4").reshape(2, 3).T,  # big-endian, not contiguous
            np.zeros((0, 3), dtype=np.int8),
        ],
        "tensors": [base, base.t(), base[1], torch.tensor(2, dtype=torch.bfloat16), torch.zeros(0, dtype=torch.int16)],
        "dtypes": [torch.float32, torch.bfloat16, torch.int64],
        "text": "ünïcode",
    }
    back = disk_round_trip(tmp_path, state)
    assert_same(state, back)
    assert all(t.is_contiguous() for t in back["tensors"])
    back["tensors"][0].add_(1)  # tensors that shared storage come back independent
    assert torch.equal(back["tensors"][2], base[1])


def test_unsupported_values_are_refused_with_their_path(tmp_path):
    with pytest.raises(TypeError, match=r"state\['callbacks'\]\[0\]: values of type function"):
        ckpt.flatten_state({"callbacks": [lambda: None]})
    with pytest.raises(TypeError, match=r"state\['ids'\]: values of type set"):
        ckpt.flatten_state({"ids": {1, 2}})


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_optimizer_scaler_and_scheduler_states_round_trip(tmp_path):
    model = nn.Linear(4, 2)
    adamw = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_steps(model, adamw, 2)
    train_steps(model, sgd, 2)
    schedulers = [
        torch.optim.lr_scheduler.OneCycleLR(sgd, max_lr=0.1, total_steps=10),
        torch.optim.lr_scheduler.CosineAnnealingLR(adamw, T_max=5),
        torch.optim.lr_scheduler.LambdaLR(adamw, lambda step: 0.5**step),
    ]
    for scheduler in schedulers:
        scheduler.step()
    state = {
        "adamw": adamw.state_dict(),
        "sgd": sgd.state_dict(),
        "scaler": torch.amp.GradScaler("cpu").state_dict(),
        "schedulers": [s.state_dict() for s in schedulers],
    }
    assert isinstance(state["adamw"]["state"][0]["step"], torch.Tensor)
    assert "momentum_buffer" in state["sgd"]["state"][1]
    back = disk_round_trip(tmp_path, state)
    assert_same(state, back)


def test_resumed_optimizer_continues_bitwise_identically(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    train_steps(model, optimizer, 3, seed=1)
    path = ckpt.save_checkpoint(
        tmp_path / "checkpoint-3", {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    )

    state = ckpt.load_checkpoint(path)
    resumed = nn.Linear(4, 2)
    resumed.load_state_dict(state["model"])
    resumed_optimizer = torch.optim.AdamW(resumed.parameters(), lr=1.0)
    resumed_optimizer.load_state_dict(state["optimizer"])

    train_steps(model, optimizer, 5, seed=2)
    train_steps(resumed, resumed_optimizer, 5, seed=2)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


# --- manifest, fallback, crashes -------------------------------------------------------------------------------------


def truncate(path):
    path.write_bytes(path.read_bytes()[:-10])


def flip_one_byte(path):
    data = bytearray(path.read_bytes())
    data[5] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "filename", "problem"),
    [
        (truncate, "state.safetensors", "size mismatch (expected"),
        (flip_one_byte, "state.json", "sha256 mismatch"),
        (pathlib.Path.unlink, "state.json", "missing"),
        (pathlib.Path.unlink, "manifest.json", "missing"),
    ],
)
def test_manifest_detects_damage(tmp_path, damage, filename, problem):
    directory = ckpt.save_checkpoint(tmp_path / "checkpoint-7", {"w": torch.ones(100), "step": 7})
    damage(directory / filename)
    with pytest.raises(CheckpointError) as info:
        ckpt.load_checkpoint(directory)
    assert str(info.value).startswith(f"{directory / filename}: {problem}")


def test_load_latest_falls_back_to_the_previous_good_checkpoint(tmp_path):
    assert ckpt.load_latest_checkpoint(tmp_path / "nothing") is None
    for step in (100, 200, 30):
        ckpt.save_checkpoint(tmp_path / f"checkpoint-{step}", {"step": step, "w": torch.full((4,), float(step))})
    (tmp_path / "checkpoint-bad").mkdir()  # not a step number: ignored
    assert [p.name for p in ckpt.find_checkpoints(tmp_path)] == ["checkpoint-30", "checkpoint-100", "checkpoint-200"]
    bad = tmp_path / "checkpoint-200" / "state.safetensors"
    bad.write_bytes(bad.read_bytes()[:-1] + b"\x00")

    warnings_seen = []
    path, state = ckpt.load_latest_checkpoint(tmp_path, warn=warnings_seen.append)
    assert path.name == "checkpoint-100" and state["step"] == 100
    assert warnings_seen == [
        "checkpoint-200 is damaged (state.safetensors: sha256 mismatch); falling back to checkpoint-100"
    ]

    for step in (30, 100):
        (tmp_path / f"checkpoint-{step}" / "state.json").unlink()
    with pytest.raises(CheckpointError, match="every checkpoint"):
        ckpt.load_latest_checkpoint(tmp_path, warn=warnings_seen.append)


def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint-120"
    ckpt.save_checkpoint(target, {"step": 120, "w": torch.zeros(3)})

    def half_then_crash(tensors, path, metadata=None):
        pathlib.Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(target, {"step": 120, "w": torch.ones(3)})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-120"]
    assert torch.equal(ckpt.load_checkpoint(target)["w"], torch.zeros(3))

    real_rename = ckpt.os.rename

    def rename_fails_into_place(src, dst):
        if ".tmp-" in str(src):
            raise OSError("crash between the two renames")
        real_rename(src, dst)

    monkeypatch.setattr(ckpt.os, "rename", rename_fails_into_place)
    with pytest.raises(OSError, match="two renames"):
        ckpt.save_checkpoint(target, {"step": 120, "w": torch.ones(3)})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-120"]
    assert torch.equal(ckpt.load_checkpoint(target)["w"], torch.zeros(3))

    ckpt.save_checkpoint(target, {"step": 120, "w": torch.ones(3)})  # the same step again, after a resume
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-120"]
    assert torch.equal(ckpt.load_checkpoint(target)["w"], torch.ones(3))


def test_leftovers_of_a_killed_writer_are_cleaned_up(tmp_path):
    dead = 999_999_999  # above any pid_max: no such process
    ckpt.save_checkpoint(tmp_path / "checkpoint-5", {"step": 5})
    ckpt.save_checkpoint(tmp_path / "checkpoint-9", {"step": 9})
    # killed mid-write, and killed between moving checkpoint-9 aside and renaming its replacement into place
    (tmp_path / f".checkpoint-10.tmp-{dead}-abcd").mkdir()
    (tmp_path / f".checkpoint-10.tmp-{dead}-abcd" / "state.safetensors").write_bytes(b"half")
    (tmp_path / "checkpoint-9").rename(tmp_path / f".checkpoint-9.old-{dead}-abcd")
    (tmp_path / f".checkpoint-9.tmp-{dead}-ef01").mkdir()
    assert [p.name for p in ckpt.find_checkpoints(tmp_path)] == ["checkpoint-5"]

    path, state = ckpt.load_latest_checkpoint(tmp_path)
    assert path.name == "checkpoint-9" and state == {"step": 9}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-5", "checkpoint-9"]


def test_prune_keeps_the_newest_and_the_protected(tmp_path):
    for step in (1, 2, 3, 4, 5):
        ckpt.save_checkpoint(tmp_path / f"checkpoint-{step}", {"step": step})
    (tmp_path / ".checkpoint-6.tmp-999999999-abcd").mkdir()
    removed = ckpt.prune_checkpoints(tmp_path, keep=2, protect={tmp_path / "checkpoint-1"})
    assert [p.name for p in removed] == ["checkpoint-2", "checkpoint-3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1", "checkpoint-4", "checkpoint-5"]


# --- model folders ---------------------------------------------------------------------------------------------------


def test_save_and_load_model_gives_identical_outputs(tmp_path):
    model = create_model("mlp", in_features=5, out_features=3)
    preprocessing = {"mean": [0.1, 0.2], "std": [1.0, 2.0]}
    directory = artifacts.save_model(model, tmp_path / "model", extra_files={"preprocessing.json": preprocessing})
    assert sorted(p.name for p in directory.iterdir()) == [
        "config.json",
        "manifest.json",
        "model.safetensors",
        "preprocessing.json",
    ]
    config = json.loads((directory / "config.json").read_text())
    assert config["model"] == "mlp" and config["format"] == "dlforge-model" and config["config"]["in_features"] == 5

    loaded, meta = artifacts.load_model(directory)
    assert not loaded.training
    assert meta["model"] == "mlp" and meta["extra"] == {"preprocessing.json": preprocessing}
    x = torch.randn(4, 5)
    model.eval()
    assert torch.equal(model({"x": x}).logits, loaded({"x": x}).logits)


def test_invalid_config_json_is_named(tmp_path):
    directory = artifacts.save_model(create_model("mlp", in_features=5, out_features=3), tmp_path / "model")
    (directory / "config.json").write_text("{not json")
    rehash(directory)
    with pytest.raises(CheckpointError, match=r"config\.json: invalid JSON"):
        artifacts.load_model(directory)


def test_pickles_are_never_unpickled(tmp_path):
    live = tmp_path / "live-marker"
    pickle.loads(pickle.dumps(Payload(live)))  # the payload does run when unpickled...
    assert live.exists()

    marker = tmp_path / "marker"
    payload = pickle.dumps(Payload(marker))
    directory = artifacts.save_model(create_model("mlp", in_features=5, out_features=3), tmp_path / "model")
    (directory / "model.safetensors").write_bytes(payload)
    (directory / "pytorch_model.bin").write_bytes(payload)
    rehash(directory)
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        artifacts.load_model(directory)
    (tmp_path / "model.pt").write_bytes(payload)
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        artifacts.load_weights(create_model("mlp", in_features=5, out_features=3), tmp_path / "model.pt")
    (directory / "model.safetensors").unlink()
    rehash(directory)
    with pytest.raises(CheckpointError, match="does not list model.safetensors"):
        artifacts.load_model(directory)
    assert not marker.exists()  # ...but loading never ran it


def test_weights_must_match_the_model_exactly(tmp_path):
    model = create_model("mlp", in_features=5, out_features=3, hidden=[8, 8])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "model.safetensors"

    wrong = dict(state, **{"blocks.1.linear.weight": torch.zeros(8, 9), "head.weight": torch.zeros(2, 8)})
    save_file(wrong, path)
    with pytest.raises(CheckpointError, match=r"'blocks\.1\.linear\.weight' expected shape \(8, 8\), found \(8, 9\)"):
        artifacts.load_weights(model, path)

    save_file({k: v for k, v in state.items() if k != "blocks.0.linear.bias"}, path)
    with pytest.raises(CheckpointError, match=r"'blocks\.0\.linear\.bias' expected shape \(8,\), found missing"):
        artifacts.load_weights(model, path)

    save_file(dict(state, extra=torch.zeros(2)), path)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: weight 'extra' expected none"):
        artifacts.load_weights(model, path)


def test_non_finite_weights_are_refused_at_save(tmp_path):
    model = create_model("mlp", in_features=5, out_features=3)
    with torch.no_grad():
        model.blocks[0].linear.weight[0, 0] = float("nan")
    message = "refusing to save checkpoint-8: model weight 'blocks.0.linear.weight' is not finite"
    with pytest.raises(CheckpointError, match=message):
        ckpt.save_checkpoint(tmp_path / "checkpoint-8", {"model": model.state_dict()})
    with pytest.raises(CheckpointError, match="refusing to save model: model weight 'blocks.0.linear.weight'"):
        artifacts.save_model(model, tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


@dataclass
class TiedConfig:
    width: int = 4


class Tied(nn.Module):
    """Two layers sharing one weight Parameter (weight tying)."""

    def __init__(self, config: TiedConfig):
        super().__init__()
        self.config = config
        self.a = nn.Linear(config.width, config.width)
        self.b = nn.Linear(config.width, config.width)
        self.b.weight = self.a.weight


def test_tied_weights_are_saved_once_and_stay_tied(tmp_path, monkeypatch):
    def tied(**overrides) -> Tied:
        return Tied(TiedConfig(**overrides))

    monkeypatch.setitem(registry._MODELS, "tied_test", registry.Entry("tied_test", tied, TiedConfig, ""))
    model = create_model("tied_test", width=3)
    directory = artifacts.save_model(model, tmp_path / "model")
    with safe_open(directory / "model.safetensors", framework="pt") as f:
        assert sorted(f.keys()) == ["a.bias", "a.weight", "b.bias"]
        assert json.loads(f.metadata()["dlforge_aliases"]) == {"b.weight": "a.weight"}

    loaded, meta = artifacts.load_model(directory)
    assert meta["config"] == {"width": 3}
    assert loaded.a.weight is loaded.b.weight
    assert torch.equal(loaded.a.weight, model.a.weight) and torch.equal(loaded.b.bias, model.b.bias)


def test_weights_are_readable_like_every_other_file_of_the_folder(tmp_path, tiny_mlp):
    """safetensors writes 0600 files; a model folder's and a checkpoint's weights get the mode the JSON files get, so
    another account that may read the run may read its weights (issue 13, defect 21)."""
    folder = artifacts.save_model(tiny_mlp(), tmp_path / "model")
    state = ckpt.save_checkpoint(tmp_path / "checkpoint-1", {"model": tiny_mlp().state_dict(), "step": 1})
    for directory, weights in ((folder, "model.safetensors"), (state, "state.safetensors")):
        modes = {p.name: p.stat().st_mode & 0o777 for p in directory.iterdir()}
        assert modes[weights] == modes["manifest.json"] and modes[weights] & 0o044 == 0o044, modes
