"""The task interface: what the API asks of a kind of model, so that the API itself never branches on a task name.

A dataset names its task in `info["task"]`; the registry turns that name into a `Task` (`create_task`). A new task
is one file here with a registered subclass (and its line in `dlforge.catalog`):

    @register_task("segmentation")
    class Segmentation(Task):
        def metrics(self, info, loss_name="", split="val"):
            return SegmentationMetrics(info["num_classes"])

Every method has a default that does nothing task-specific, so a task overrides only what it has.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dlforge.data.dataset import DataBundle, collate_batch
from dlforge.errors import ConfigError, DlforgeError
from dlforge.eval.metrics import TaskMetrics
from dlforge.layers.losses import CLASSIFICATION_LOSSES

TARGET_KEYS = ("y", "labels", "naive")  # batch entries that are targets, never model inputs
GENERATIVE_FIELDS = frozenset({"code_size", "latent", "schedule", "noise_dim"})  # fields of generative models only


@dataclass
class RunReport:
    """What a task's final report may use: the run's name and folder, its trained model, data and device."""

    name: str
    run_path: Path
    model: torch.nn.Module
    data: DataBundle
    device: torch.device
    metrics: TaskMetrics  # the test split's metrics, already computed


class Task:
    """A kind of model output and everything the toolkit does with it after the loss."""

    name = ""

    def metric_set(self, **options: Any) -> TaskMetrics:
        """This task's `TaskMetrics` from explicit options (`TaskMetrics(name, **options)`)."""
        raise NotImplementedError(f"task {self.name!r} has no metrics")

    def metrics(self, info: dict[str, Any], loss_name: str = "", split: str = "val") -> TaskMetrics:
        """The metrics of `split` of a DataBundle with this `info`, for a model trained with `loss_name`."""
        raise NotImplementedError(f"task {self.name!r} has no metrics")

    def model_options(self, user: dict[str, Any], fields: set[str], info: dict[str, Any], data_name: str
                      ) -> dict[str, Any]:
        """The model's config options (`user`, from the config) with what this task decides for it; `fields` are
        the model config's field names."""
        return user

    def decoded_scores(self, model: torch.nn.Module, dataset: Any, info: dict[str, Any], tokenizer: Any,
                       model_meta: dict[str, Any], train: Any = None) -> tuple[dict[str, float], dict[str, Any]] | None:
        """Scores that need decoding (BLEU of beam search, exact match of generated answers, FID of samples) on a
        validation or test split, and their report; None when the task has none. `model_meta` describes the model
        folder (its tokenizers); `train` is the training split, where a score compares against it."""
        return None

    report_key = ""  # the key of `decoded_scores`' report in eval.json
    generates = False  # predict decodes step by step (text, translations): more than one forward, so no ONNX stand-in

    def trainer_class(self, model: torch.nn.Module) -> type:
        """The Trainer that trains `model`: the one loop, or a subclass with its own step (a GAN's two players)."""
        from dlforge.train.trainer import Trainer

        return Trainer

    def test_report(self, run: RunReport) -> dict[str, Any]:
        """Plots and tables of the test split, written under the run folder; returns eval.json entries."""
        return {}

    def predict(self, model: torch.nn.Module, input_path: Path) -> list[dict[str, Any]]:
        """Predictions for the inputs at `input_path` (read as this task's models read inputs), one row each."""
        raise DlforgeError(f"dlforge predict: not available for {self.name} models")

    def predict_input(self, preprocessing: dict[str, Any]) -> tuple[str, str] | None:
        """What `dlforge predict RUN FILE` reads for a model with this `preprocessing` (its preprocessing.json), as
        the model card shows it: an example file name, and a sentence on what that file holds and what comes out;
        None when the task has no predict."""
        return None

    def signature(self, data: DataBundle, model: torch.nn.Module) -> dict[str, Any]:
        """The model's inputs and outputs, as export and serving see them: {"task", "inputs": [...], "outputs":
        [...]}, each a {"name", "dtype", "shape"} with -1 for the batch and for any length that varies."""
        sample = collate_batch([data.train[0]])
        inputs = {k: v for k, v in sample.items() if k not in TARGET_KEYS}
        with torch.no_grad():
            was_training = model.training
            model.eval()
            try:
                logits = model({k: v.to(device_of(model)) for k, v in inputs.items()}).logits
            finally:
                model.train(was_training)
        varying = set(self.varying_dims)
        return {"task": self.name,
                "inputs": [_spec(k, v, varying) for k, v in inputs.items()],
                "outputs": [_spec("logits", logits, varying)]}

    varying_dims: tuple[int, ...] = ()  # dimensions after the batch whose size varies (a sequence's length: 1)


def choose_loss(task: str, user: dict[str, Any], fields: set[str], info: dict[str, Any], data_name: str
                ) -> dict[str, Any]:
    """The loss of a classification or regression model: the config's, checked against the task, or the task's
    default (cross-entropy, MSE)."""
    if fields & GENERATIVE_FIELDS:
        raise ConfigError(f"model: a generative model (it reconstructs or samples images) needs images for generation "
                          f"(data.task: generation); data {data_name!r} is {task}")
    if "loss" not in fields:
        return user
    loss = user.get("loss", "mse" if task == "regression" else "cross_entropy")
    if task == "regression" and loss in CLASSIFICATION_LOSSES:
        raise ConfigError(f"model.loss: {loss!r} is a classification loss but data {data_name!r} is regression")
    if task == "classification" and loss not in CLASSIFICATION_LOSSES:
        raise ConfigError(f"model.loss: {loss!r} is a regression loss but data {data_name!r} is classification")
    if loss == "bce" and info.get("num_classes") != 2:
        raise ConfigError(f"model.loss: 'bce' needs two classes, the data has {info.get('num_classes')}")
    return {**user, "loss": loss}


def device_of(model: torch.nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _spec(name: str, tensor: torch.Tensor, varying: set[int]) -> dict[str, Any]:
    shape = [-1] + [-1 if i + 1 in varying else int(n) for i, n in enumerate(tensor.shape[1:])]
    return {"name": name, "dtype": str(tensor.dtype).removeprefix("torch."), "shape": shape}
