"""Knowledge distillation (train.distill): the loss against a hand computation for a classifier and a language model,
the teacher frozen and out of every state dict, a distilled run whose model folder is the plain student, resume,
and the one-line errors naming train.distill.teacher."""

from __future__ import annotations

import json

import pytest
import torch
from clitools import write_blobs_csv
from safetensors import safe_open

from dlforge import api
from dlforge.artifacts import load_model, save_model
from dlforge.config import DistillConfig, TrainConfig, TransferConfig
from dlforge.data.dataset import DataBundle
from dlforge.deploy.distill import Distiller, build_distiller, unwrap
from dlforge.errors import ConfigError
from dlforge.registry import create_model
from dlforge.train.checkpoint import load_checkpoint
from dlforge.train.optim import build_optimizer
from dlforge.train.trainer import Trainer
from dlforge.train.transfer import lr_scales

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second thread only waits (see conftest)


def softmax(z: torch.Tensor) -> torch.Tensor:  # written out, not torch's: the test's own arithmetic
    e = torch.exp(z - z.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def hand_loss(student: torch.Tensor, teacher: torch.Tensor, labels: list[int], alpha: float, t: float) -> float:
    """alpha * CE + (1 - alpha) * T^2 * KL(p_teacher || p_student), each a plain mean over the rows given."""
    ce, kl = 0.0, 0.0
    for s_row, t_row, y in zip(student.double(), teacher.double(), labels, strict=True):
        ce -= torch.log(softmax(s_row)[y]).item()
        p, q = softmax(t_row / t), softmax(s_row / t)
        kl += sum((p[k] * (torch.log(p[k]) - torch.log(q[k]))).item() for k in range(len(p)))
    n = len(labels)
    return alpha * ce / n + (1 - alpha) * t * t * kl / n


def test_classifier_loss_matches_a_hand_computation(tiny_mlp):
    student, teacher = tiny_mlp(seed=0), tiny_mlp(seed=1)
    g = torch.Generator().manual_seed(0)
    batch = {"x": torch.randn(5, 4, generator=g), "y": torch.tensor([0, 2, 1, 1, 0])}
    model = Distiller(student, teacher, alpha=0.3, temperature=2.5).train()
    loss = model(batch).loss
    with torch.no_grad():
        want = hand_loss(student(batch).logits, teacher(batch).logits, batch["y"].tolist(), 0.3, 2.5)
    assert loss.item() == pytest.approx(want, rel=1e-5)
    # in evaluation the wrapper is the student alone: its own loss
    assert model.eval()(batch).loss.item() == pytest.approx(student(batch).loss.item())


def test_language_model_loss_is_per_token_over_labels_not_ignored():
    torch.manual_seed(0)
    student = create_model("gpt", vocab_size=11, context=8, dim=16, n_layers=1, n_heads=2)
    teacher = create_model("gpt", vocab_size=11, context=8, dim=16, n_layers=2, n_heads=2)
    ids = torch.randint(0, 11, (2, 6))
    labels = torch.randint(0, 11, (2, 6))
    labels[0, :3] = -100  # a prompt
    labels[1, 5] = -100  # padding
    batch = {"input_ids": ids, "labels": labels}
    loss = Distiller(student, teacher, alpha=0.5, temperature=4.0).train()(batch).loss
    with torch.no_grad():
        s, t = student(batch).logits, teacher(batch).logits  # (2, 6, 11)
    kept = [(b, i) for b in range(2) for i in range(6) if labels[b, i] != -100]
    want = hand_loss(torch.stack([s[b, i] for b, i in kept]), torch.stack([t[b, i] for b, i in kept]),
                     [int(labels[b, i]) for b, i in kept], 0.5, 4.0)
    assert loss.item() == pytest.approx(want, rel=1e-5)


def test_the_teacher_stays_frozen_out_of_the_state_dict_and_moves_with_the_student(tiny_mlp, blobs, train_config):
    student, teacher = tiny_mlp(seed=0), tiny_mlp(seed=1, hidden=[16])
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    model = Distiller(student, teacher)
    assert set(model.state_dict()) == set(student.state_dict())  # the student's own names, no prefix
    assert [id(p) for p in model.parameters()] == [id(p) for p in student.parameters()]
    Trainer(model, train_config(max_steps=3, batch_size=16, lr=0.1), blobs()).fit()
    assert not teacher.training and all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key
    model.to(torch.float64)
    assert {p.dtype for p in teacher.parameters()} == {torch.float64}
    assert unwrap(model) is student and unwrap(student) is student


def test_transfer_learning_rates_reach_the_student_through_the_wrapper():
    def cnn(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return create_model("resnet20", in_channels=1, image_size=8, num_classes=3, width=4)

    model = Distiller(cnn(0), cnn(1))
    cfg = TrainConfig(max_steps=1, transfer=TransferConfig(init_from="unused", backbone_lr=0.5))
    groups = build_optimizer(model, cfg, lr_scales=lr_scales(model, cfg.transfer)).param_groups
    assert sorted({g["lr"] for g in groups}) == [0.5 * cfg.lr, cfg.lr]


def test_a_teacher_of_other_logits_is_refused_in_one_line(tmp_path, tiny_mlp, blobs):
    folder = save_model(tiny_mlp(out_features=4), tmp_path / "teacher")
    data = DataBundle(train=blobs(classes=3), val=None, test=None)
    with pytest.raises(ConfigError, match=r"^train\.distill\.teacher: .* logits of shape \(2, 4\), the student "
                                          r"\(2, 3\)") as err:
        build_distiller(tiny_mlp(), DistillConfig(teacher=str(folder)), tmp_path, data)
    assert "\n" not in str(err.value)


# --- runs ----------------------------------------------------------------------------------------------------------


def blobs_config(root, name: str, hidden: list[int], **train) -> dict:
    """A run of a small MLP on a table of Gaussian blobs (a few quiet steps: a tabular run's report draws little)."""
    return {"name": name, "runs_dir": str(root / "runs"),
            "data": {"name": "csv", "path": str(root / "blobs.csv"), "target": "label", "val_fraction": 0.2,
                     "test_fraction": 0.2},
            "model": {"name": "mlp", "hidden": hidden},
            "train": {"max_steps": 3, "batch_size": 16, "lr": 1e-2, "progress": False, "tensorboard": False,
                      "checkpoint_every": None, "eval_every": 3, "seed": 0, **train}}


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    write_blobs_csv(root / "blobs.csv", n=120, classes=4)
    return root, api.train(blobs_config(root, "teacher", [32])).run_dir


def test_a_distilled_run_saves_evaluates_and_resumes_the_student_alone(teacher_run):
    root, teacher = teacher_run
    cfg = blobs_config(root, "student", [8], checkpoint_every=2,
                        distill={"teacher": str(teacher), "alpha": 0.5, "temperature": 4})
    run = api.train(cfg).run_dir
    student, meta = load_model(run / "model")  # a plain model folder of the student's class
    assert meta["model"] == "mlp" and type(student).__name__ == "MLP"
    with safe_open(str(run / "model" / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == set(student.state_dict())
    for ckpt in (run / "checkpoints").glob("checkpoint-*"):
        assert set(load_checkpoint(ckpt)["model"]) == set(student.state_dict()), ckpt
    record = json.loads((run / "run.json").read_text())["distill_teacher"]
    assert record["path"] == str((teacher / "model").resolve()) and len(record["weights_sha256"]) == 64
    assert f"- Distilled from: `{teacher}` (alpha 0.5, temperature 4.0;" in (run / "README.md").read_text()
    assert api.evaluate(run)["accuracy"] == pytest.approx(json.loads((run / "eval.json").read_text())
                                                          ["test"]["accuracy"])
    resumed = api.train(cfg, ["train.max_steps=5"], resume=run, allow_changes=True)  # the teacher is rebuilt
    assert resumed.status == "completed" and resumed.steps == 5
    assert load_model(run / "model")[1]["model"] == "mlp"


def test_a_missing_teacher_or_other_classes_are_refused_in_one_line(teacher_run):
    root, teacher = teacher_run
    with pytest.raises(ConfigError, match=r"^train\.distill\.teacher: ") as err:
        api.train(blobs_config(root, "s", [8], distill={"teacher": str(root / "no-such-run")}))
    assert "\n" not in str(err.value)
    cfg = blobs_config(root, "s", [8], distill={"teacher": str(teacher)})
    write_blobs_csv(root / "three.csv", n=60, classes=3)
    cfg["data"]["path"] = str(root / "three.csv")
    with pytest.raises(ConfigError, match=r"^train\.distill\.teacher: .* predicts the classes class0, class1, class2, "
                                          r"class3, this run's data has class0, class1, class2;") as err:
        api.train(cfg)
    assert "\n" not in str(err.value)


def test_a_gpt_student_distills_with_lora_and_refuses_another_tokenizer(tiny_lm_run, tmp_path):
    base = tiny_lm_run.run
    data = {"name": "lm_text", "corpus": str(tiny_lm_run.corpus), "tokenizer": str(base), "context": 16}
    cfg = {"name": "lm-student", "runs_dir": str(tmp_path / "runs"), "data": data,
           "model": {"name": "gpt", "context": 64, "dim": 32, "n_layers": 2, "n_heads": 2},
           "train": {"init_from": str(base), "lora": {"rank": 2, "alpha": 4, "targets": ["qkv"]},
                     "distill": {"teacher": str(base), "temperature": 2}, "max_steps": 2, "batch_size": 4,
                     "lr": 5e-2, "progress": False, "tensorboard": False, "checkpoint_every": None}}
    result = api.train(cfg)
    assert result.status == "completed" and "val" in result.metrics
    assert (result.run_dir / "adapter").is_dir() and load_model(result.run_dir / "model")[1]["model"] == "gpt"
    other = {**cfg, "data": {**data, "tokenizer": "bpe:280"}, "train": {**cfg["train"], "init_from": None,
                                                                      "lora": None}}
    with pytest.raises(ConfigError, match=r"^train\.distill\.teacher: .* another tokenizer") as err:
        api.train(other)
    assert "\n" not in str(err.value)
