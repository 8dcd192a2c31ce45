"""Transfer learning (backbone load, freezing, per-part learning rates), batch transforms in the Trainer, and the
per-class and image reports of a finished run."""

from __future__ import annotations

import copy
import hashlib
import json

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import precision_recall_fscore_support

from dlforge import api
from dlforge.config import TransferConfig, load_config
from dlforge.data.augment import AugmentConfig, BatchAugment
from dlforge.data.dataset import TensorDictDataset
from dlforge.errors import ConfigError
from dlforge.eval.report import per_class
from dlforge.registry import create_model
from dlforge.train import transfer
from dlforge.train.optim import build_optimizer, build_schedule
from dlforge.train.trainer import Trainer
from tests.clitools import run_here


def small_cnn(num_classes: int = 5, seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("resnet20", **{"in_channels": 1, "image_size": 8, "num_classes": num_classes, "width": 4, **kw})


def images(n: int = 32, classes: int = 5, seed: int = 0) -> TensorDictDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDictDataset({"x": torch.randn(n, 1, 8, 8, generator=g),
                              "y": torch.randint(0, classes, (n,), generator=g)})


# --- backbone, head, freezing --------------------------------------------------------------------------------------


def test_load_backbone_copies_every_backbone_tensor_and_keeps_the_new_head():
    source, target = small_cnn(num_classes=5, seed=1), small_cnn(num_classes=3, seed=2)
    head_before = {k: v.clone() for k, v in target.state_dict().items() if k.startswith("head.")}
    copied = transfer.load_backbone(target, source)
    assert copied and all(not k.startswith("head.") for k in copied)
    src = source.state_dict()
    for key, value in target.state_dict().items():
        if key.startswith("head."):
            assert torch.equal(value, head_before[key])
        else:
            assert torch.equal(value, src[key]), key
    assert [m for m in target.head.modules() if isinstance(m, torch.nn.Linear)][-1].out_features == 3


def test_load_backbone_refuses_another_architecture_or_shape():
    with pytest.raises(ConfigError, match="holds a SimpleCNN, this run builds a ResNet; it must be a ResNet"):
        transfer.load_backbone(small_cnn(), create_model("simple_cnn", in_channels=1, image_size=8, num_classes=5))
    with pytest.raises(ConfigError, match=r"backbone tensor 'stem\..*' is .* in the source"):
        transfer.load_backbone(small_cnn(), small_cnn(width=8))


def test_freeze_up_to_a_stage_and_unknown_stage():
    model = small_cnn()
    frozen = transfer.freeze(model, "stage1")
    assert frozen == ["stem", "stage1"]
    for name, p in model.named_parameters():
        assert p.requires_grad == (name.split(".")[0] not in frozen), name
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.stage1.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.stage2.modules())
    assert transfer.freeze(small_cnn(), "none") == []
    assert transfer.freeze(small_cnn(), "all") == ["stem", "stage1", "stage2", "stage3"]
    with pytest.raises(ConfigError, match=r"train\.transfer\.freeze: 'stage9' is not a stage.*stem, stage1"):
        transfer.freeze(small_cnn(), "stage9")


def test_frozen_batchnorm_matches_batchnorm_in_eval_mode_and_keeps_its_keys():
    bn = torch.nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 3)
    frozen = transfer.FrozenBatchNorm2d(bn)
    x = torch.randn(4, 6, 5, 5)
    torch.testing.assert_close(frozen(x), bn.eval()(x), atol=1e-6, rtol=1e-5)
    assert set(frozen.state_dict()) == set(bn.state_dict())
    assert not list(frozen.parameters())


def test_a_training_step_leaves_the_frozen_stages_untouched(train_config):
    model = small_cnn()
    transfer.freeze(model, "stage2")
    before = copy.deepcopy(model.state_dict())
    cfg = train_config(max_steps=3, batch_size=8, optimizer="sgd", lr=0.1,
                       transfer=TransferConfig(init_from="unused", freeze="stage2", backbone_lr=0.5))
    Trainer(model, cfg, images()).fit()
    after = model.state_dict()
    for key in before:
        same = torch.equal(before[key], after[key])
        top = key.split(".")[0]
        if top in ("stem", "stage1", "stage2"):
            assert same, f"{key} changed although frozen"  # weights and BN running statistics alike
    head = next(k for k in before if k.startswith("head.") and k.endswith("weight"))
    assert not torch.equal(before[head], after[head])
    assert not torch.equal(before["stage3.0.conv1.conv.weight"], after["stage3.0.conv1.conv.weight"])


def test_backbone_and_head_learning_rates(train_config):
    model = small_cnn()
    cfg = train_config(max_steps=10, optimizer="sgd", lr=0.2, weight_decay=0.01, scheduler="onecycle",
                       transfer=TransferConfig(init_from="unused", backbone_lr=0.1))
    optimizer = build_optimizer(model, cfg, lr_scales=transfer.lr_scales(model, cfg.transfer))
    names = {id(p): n.split(".")[0] for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        tops = {names[id(p)] for p in group["params"]}
        assert group["lr"] == pytest.approx(0.2 if tops == {"head"} else 0.02)
        assert tops == {"head"} or "head" not in tops
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    schedule = build_schedule(optimizer, cfg, total_steps=10)
    for _ in range(3):  # onecycle: each group peaks at its own lr, so the ratio holds all along
        optimizer.step()
        schedule.step()
        lrs = {round(g["lr"] / optimizer.param_groups[-1]["lr"], 6) for g in optimizer.param_groups}
        assert lrs == {0.1, 1.0}


# --- batch transforms in the Trainer -------------------------------------------------------------------------------


def test_augmented_training_resumes_bit_for_bit(train_config):
    def trainer(steps: int) -> Trainer:
        cfg = train_config(max_steps=steps, batch_size=8, optimizer="sgd", lr=0.05)
        augment = BatchAugment(AugmentConfig(crop_padding=2, hflip=0.5, erasing=0.5))
        return Trainer(small_cnn(), cfg, images(), batch_transform=augment)

    full = trainer(8)
    full.fit()
    first = trainer(4)
    first.fit()
    state = copy.deepcopy(first.state_dict())
    second = trainer(8)
    second.load_state_dict(state)
    second.fit()
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key


def test_the_batch_transform_sees_training_batches_on_the_device_only(train_config):
    seen = []

    class Record(torch.nn.Module):
        def forward(self, batch):
            seen.append(batch["x"].shape[0])
            return {**batch, "x": batch["x"] * 0}  # blanks the images: the model can only learn the class prior

    cfg = train_config(max_steps=4, batch_size=8)
    t = Trainer(small_cnn(), cfg, images(n=16), val_data=images(n=12), batch_transform=Record())
    t.fit()
    assert seen == [8, 8, 8, 8]  # the 12 validation images never went through it


def test_channels_last_training_matches_contiguous(train_config):
    results = []
    for cl in (False, True):
        model = small_cnn()
        cfg = train_config(max_steps=3, batch_size=8, optimizer="sgd", lr=0.05, channels_last=cl)
        Trainer(model, cfg, images()).fit()
        results.append(model.state_dict())
        conv = next(p for p in model.parameters() if p.ndim == 4 and p.shape[1] > 1 and p.shape[-1] > 1)
        assert conv.is_contiguous(memory_format=torch.channels_last) != conv.is_contiguous()  # trained in that format
        assert conv.is_contiguous() != cl
    for key in results[0]:
        torch.testing.assert_close(results[0][key], results[1][key], atol=1e-5, rtol=1e-4)


def test_onednn_is_off_for_training_only_where_its_kernels_are_unsafe(monkeypatch):
    """An AVX2-only CPU on one thread: oneDNN's convolution backward corrupts the heap there (torch 2.13)."""
    from dlforge.train import trainer as trainer_module

    cpu = torch.device("cpu")
    for capability, threads, safe in (("AVX512", 1, True), ("AVX2", 2, True), ("AVX2", 1, False),
                                      ("DEFAULT", 1, False)):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        monkeypatch.setattr(torch, "get_num_threads", lambda n=threads: n)
        assert trainer_module.onednn_safe(cpu) is safe
        assert trainer_module.onednn_safe(torch.device("meta"))  # not a CPU: nothing to guard
        with trainer_module.onednn_guard(cpu):
            assert torch.backends.mkldnn.enabled is safe
        assert torch.backends.mkldnn.enabled
        with trainer_module.onednn_guard(cpu, convolutions=False):  # no convolution: nothing to guard
            assert torch.backends.mkldnn.enabled


# --- reports -------------------------------------------------------------------------------------------------------


def test_per_class_report_matches_sklearn():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 4, 300)
    pred = np.where(rng.random(300) < 0.6, true, rng.integers(0, 4, 300))
    pred[pred == 3] = 2  # class 3 is never predicted: precision 0, not nan
    confusion = [[int(((true == i) & (pred == j)).sum()) for j in range(4)] for i in range(4)]
    report = per_class(confusion, ["a", "b", "c", "d"])
    p, r, f, s = precision_recall_fscore_support(true, pred, labels=[0, 1, 2, 3], zero_division=0)
    for i, name in enumerate("abcd"):
        assert report[name]["precision"] == pytest.approx(p[i])
        assert report[name]["recall"] == pytest.approx(r[i])
        assert report[name]["f1"] == pytest.approx(f[i])
        assert report[name]["support"] == s[i]


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    """A pretrain run on digits 0-4, and a transfer run on digits 5-9 from it with the backbone frozen."""
    root = tmp_path_factory.mktemp("digits")
    base = {"runs_dir": str(root / "runs"),
            "model": {"name": "simple_cnn", "channels": [8, 16]},
            "train": {"max_steps": 12, "batch_size": 32, "lr": 0.01, "progress": False, "tensorboard": False,
                      "log_every": 4, "eval_every": 6, "checkpoint_every": 6, "device": "cpu"}}
    src = api.train({**base, "name": "src", "data": {"name": "digits", "classes": [0, 1, 2, 3, 4]}})
    tcfg = copy.deepcopy(base)
    tcfg["train"]["transfer"] = {"init_from": "latest:src", "freeze": "all", "backbone_lr": 0.1}
    dst = api.train({**tcfg, "name": "dst", "data": {"name": "digits", "classes": [5, 6, 7, 8, 9],
                                                    "label_fraction": 0.5}}, run_dir=None)
    return root, src, dst


def test_transfer_run_starts_from_the_source_backbone_and_keeps_it_frozen(digits_runs):
    root, src, dst = digits_runs
    source, target = api.load(src.run_dir), api.load(dst.run_dir)
    s, t = source.state_dict(), target.state_dict()
    backbone = [k for k in t if not k.startswith("head.")]
    assert backbone and all(torch.equal(s[k], t[k]) for k in backbone)  # frozen: identical after training
    assert target.config.num_classes == 5
    config = yaml.safe_load((dst.run_dir / "config.yaml").read_text())
    assert config["train"]["transfer"]["init_from"] == "latest:src"  # as written; resolved in run.json (defect 7)
    started = json.loads((dst.run_dir / "run.json").read_text())["started_from"]
    weights = src.run_dir / "model" / "model.safetensors"
    assert started == {"key": "train.transfer.init_from", "ref": "latest:src",
                       "path": str((src.run_dir / "model").resolve()),
                       "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert f"`{started['path']}` (train.transfer.init_from: `latest:src`" in (dst.run_dir / "README.md").read_text()
    assert "- Started from: random initialization" in (src.run_dir / "README.md").read_text()


def test_image_run_writes_per_class_report_confusion_and_misclassified_grid(digits_runs):
    _, src, _ = digits_runs
    ev = json.loads((src.run_dir / "eval.json").read_text())
    assert set(ev["test_per_class"]) == {"0", "1", "2", "3", "4"}
    assert sum(c["support"] for c in ev["test_per_class"].values()) == len(
        api.build_data(load_config(src.run_dir / "config.yaml")).test)
    for name in ("confusion.png", "misclassified.png"):
        assert (src.run_dir / "plots" / name).read_bytes().startswith(b"\x89PNG")


def test_predict_on_image_files_through_the_cli(capsys, digits_runs, tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    _, src, _ = digits_runs
    digits = load_digits()
    folder = tmp_path / "imgs"
    folder.mkdir()
    picks = [i for i in range(60) if digits.target[i] < 5][:6]
    for i in picks:
        Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8)).save(folder / f"{i:03d}.png")
    proc = run_here(capsys, "predict", str(src.run_dir), str(folder), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    rows = rows["predictions"] if isinstance(rows, dict) else rows
    assert [r["line"].rsplit("/", 1)[-1] for r in rows] == [f"{i:03d}.png" for i in picks]
    for r in rows:
        probs = [v for k, v in r.items() if k.startswith("p(")]
        assert len(probs) == 5 and sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert r["prediction"] in {"0", "1", "2", "3", "4"}
    missing = run_here(capsys, "predict", str(src.run_dir), str(tmp_path / "nope.png"))
    assert missing.returncode == 2 and "nope.png: not found" in missing.stderr

    # the table: the label, then the likeliest classes best first (--json keeps them all); in a pipe nothing is
    # cut, and beside the file name the row stays short
    shown = run_here(capsys, "predict", str(src.run_dir), str(folder), "--top-k", "2").stdout
    files = [str(r["line"]) for r in rows]
    assert "…" not in shown and all(f in shown for f in files)
    assert max(len(line) for line in shown.splitlines()) <= max(map(len, files)) + 60
    header = next(line for line in shown.splitlines() if "top 1" in line)
    assert "prediction" in header and "top 2" in header and "top 3" not in header and "p(" not in shown
    best = max((v, k[2:-1]) for k, v in rows[0].items() if k.startswith("p("))
    assert f"{best[1]} {best[0]:.4f}" in shown
