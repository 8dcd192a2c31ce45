"""Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network"): a small
student learns from the labels and from a trained teacher's softened predictions.

    dlforge train fashion-mlp train.distill="{teacher: runs/fashion-resnet-..., alpha: 0.5, temperature: 4}"

    loss = alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))

The T^2 keeps the soft term's gradients at the scale of the hard term's as T changes. "CE(labels)" is the student's
own loss, as its config makes it (label smoothing and class weights included). The KL is averaged per sample for a
classifier's logits (B, K), and per token for a language model's (B, T, V), over the positions whose label is not
-100 (padding, prompts).

`Distiller` wraps the student, so that the Trainer stays as it is: it trains the wrapper, whose loss is the one
above. The teacher runs without gradients, in eval mode, on the same batch as the student (the two must read the
same inputs: `build_distiller` checks the logits' shapes, the tokenizer, and warns when the preprocessing differs).
To everything that reads the model's weights (checkpoints, the optimizer, EMA, the best model folder) the wrapper
is the student: its state dict and parameters are the student's, under the student's own names, and the teacher is
held outside the module tree. In evaluation the wrapper is the student alone (val/loss is the student's own loss,
comparable to a run without a teacher). `unwrap` gives the student for the run's final model folder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from dlforge.artifacts import load_model, weights_sha256
from dlforge.config import DistillConfig
from dlforge.data.dataset import DataBundle, collate_batch
from dlforge.errors import ConfigError, DlforgeError, note, warn
from dlforge.models.output import Output
from dlforge.runs.rundir import model_dir

WHERE = "train.distill.teacher"
# preprocessing.json entries that say nothing of how inputs are prepared
_NOT_INPUTS = {"task", "label_names", "tokenizer", "tokenizer_hash"}


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), the mean over rows: logits (..., K) each, every
    leading position a row (a sample, or a token); `mask` (...) keeps the rows where it is True."""
    s, t = student.float().flatten(0, -2), teacher.float().flatten(0, -2)  # (N, K)
    if mask is not None:
        keep = mask.flatten()
        s, t = s[keep], t[keep]
    if len(s) == 0:  # every label ignored: nothing to match, and no NaN from a mean over nothing
        return student.sum() * 0.0
    kl = F.kl_div(F.log_softmax(s / temperature, dim=-1), F.log_softmax(t / temperature, dim=-1),
                  log_target=True, reduction="batchmean")  # sum over classes, mean over rows
    return kl * temperature**2


def token_mask(batch: Mapping[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor | None:
    """The positions that count for a language model's logits (B, T, V): labels (B, T) not -100; None otherwise."""
    labels = batch.get("labels")
    if logits.ndim == 3 and labels is not None and labels.shape == logits.shape[:2]:
        return labels != -100
    return None


class Distiller(nn.Module):
    """The student, trained against a teacher: `forward(batch) -> Output` whose loss, in training, is the distillation
    loss (see the module's docstring). The teacher is held in a tuple, out of the module tree: it is in no state
    dict, no parameter or module list and no optimizer; `.to()` moves it with the student (`_apply`), and `train()`
    leaves it in eval mode (it is not a child). `teacher_record` says which teacher it is (for run.json)."""

    def __init__(self, student: nn.Module, teacher: nn.Module, alpha: float = 0.5, temperature: float = 4.0,
                 teacher_record: dict[str, str] | None = None):
        super().__init__()
        self.student = student
        teacher.eval().requires_grad_(False)
        self._teacher = (teacher,)
        self.alpha, self.temperature = alpha, temperature
        self.teacher_record = teacher_record or {}

    @property
    def teacher(self) -> nn.Module:
        return self._teacher[0]

    def forward(self, batch: dict[str, torch.Tensor]) -> Output:
        out = self.student(batch)
        if not self.training or out.loss is None:  # evaluation, prediction: the student alone
            return out
        with torch.no_grad():  # not inference_mode: its tensors could not be saved for the KL's backward
            teacher_logits = self.teacher(batch).logits
        soft = distill_loss(out.logits, teacher_logits, self.temperature, token_mask(batch, out.logits))
        return dataclasses.replace(out, loss=self.alpha * out.loss + (1 - self.alpha) * soft)

    def _apply(self, fn, recurse: bool = True):
        self.teacher._apply(fn, recurse)  # .to(device), .float(), channels-last...: the teacher goes along
        return super()._apply(fn, recurse)

    # --- to the Trainer, the optimizer and checkpoints, the wrapper is the student ----------------------------------

    def state_dict(self, *args, **kwargs) -> dict[str, Any]:
        return self.student.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        return self.student.load_state_dict(state_dict, strict=strict, assign=assign)

    def named_modules(self, memo: set | None = None, prefix: str = "", remove_duplicate: bool = True
                      ) -> Iterator[tuple[str, nn.Module]]:
        # the student's modules under their own names, and so its parameters and buffers (named_parameters,
        # modules(), parameters() go through here): names then mean what they say (train.transfer's stages)
        return self.student.named_modules(memo, prefix, remove_duplicate)

    @property
    def config(self) -> Any:
        return self.student.config

    @property
    def registry_name(self) -> str:
        return self.student.registry_name

    @property
    def stage_names(self) -> list[str]:
        return list(getattr(self.student, "stage_names", []) or [])

    @property
    def supports_activation_checkpointing(self) -> bool:
        return getattr(self.student, "supports_activation_checkpointing", False)

    @property
    def activation_checkpointing(self) -> bool:
        return getattr(self.student, "activation_checkpointing", False)

    @activation_checkpointing.setter
    def activation_checkpointing(self, value: bool) -> None:
        self.student.activation_checkpointing = value

    def flops_per_token(self, *args, **kwargs) -> float:
        """The student's (train.mfu): the teacher's forward is not counted."""
        return self.student.flops_per_token(*args, **kwargs)


def teacher_record(model: nn.Module) -> dict[str, Any]:
    """{"distill_teacher": {ref, path, weights_sha256}} for a Distiller (run.json records it), else {}."""
    return {"distill_teacher": model.teacher_record} if isinstance(model, Distiller) else {}


def unwrap(model: nn.Module) -> nn.Module:
    """The model a run saves and evaluates: a Distiller's student, any other model itself."""
    return model.student if isinstance(model, Distiller) else model


def build_distiller(student: nn.Module, cfg: DistillConfig, runs_dir: str | Path, data: DataBundle) -> Distiller:
    """Load the teacher `cfg.teacher` and wrap `student` with it, after checking on a first training batch that the
    two give logits of one shape, that text is tokenized as the teacher was trained, and that the inputs were
    prepared alike (a warning otherwise). Errors are ConfigErrors naming train.distill.teacher. Torch's RNG is left
    as it was: a run with a teacher draws its dropout masks as the same run without one does."""
    try:
        folder = model_dir(cfg.teacher, runs_dir)
        with torch.random.fork_rng(devices=[]):  # building the teacher draws initial weights, then loads its own
            teacher, meta = load_model(folder)
    except DlforgeError as exc:
        raise ConfigError(f"{WHERE}: {exc}") from None
    extra = meta["extra"]
    if data.tokenizer is not None:
        _check_tokenizer(data.tokenizer, meta, folder)
    _check_inputs(extra.get("preprocessing.json") or {}, data.preprocessing, folder)
    _check_logits(student, teacher, data, folder)
    record = {"ref": cfg.teacher, "path": str(folder.resolve()), "weights_sha256": weights_sha256(folder)}
    note(f"{WHERE} {cfg.teacher}: {record['path']} (weights SHA-256 {record['weights_sha256']})")
    return Distiller(student, teacher, cfg.alpha, cfg.temperature, record)


def _check_tokenizer(tokenizer: Any, meta: dict[str, Any], folder: Path) -> None:
    from dlforge.text.tokenizer import has_tokenizer, model_tokenizer, same_vocabulary

    if not has_tokenizer(meta):
        raise ConfigError(f"{WHERE}: {folder} has no tokenizer, and this run's data is text; the teacher must be a "
                          "model trained on tokens of the same tokenizer")
    theirs = model_tokenizer(meta, str(folder))
    if not same_vocabulary(tokenizer, theirs):
        raise ConfigError(f"{WHERE}: {folder} was trained with another tokenizer (hash {theirs.hash[:12]}.., this run "
                          f"{tokenizer.hash[:12]}..); set data.tokenizer to the teacher run so both read the same "
                          "tokens")


def _check_inputs(theirs: dict[str, Any], ours: dict[str, Any], folder: Path) -> None:
    """Refuse other class names; warn when the inputs were prepared otherwise (the teacher gets the student's batch)."""
    if theirs.get("label_names") and ours.get("label_names") and theirs["label_names"] != ours["label_names"]:
        raise ConfigError(f"{WHERE}: {folder} predicts the classes {_short(theirs['label_names'])}, this run's data "
                          f"has {_short(ours['label_names'])}; the teacher must have the student's classes")
    differ = sorted(k for k in (set(theirs) & set(ours)) - _NOT_INPUTS if not _close(theirs[k], ours[k]))
    if differ:
        warn(f"{WHERE}: {folder} was trained on inputs prepared otherwise ({', '.join(differ)} differ); it is given "
             "the student's batches as they are")


def _check_logits(student: nn.Module, teacher: nn.Module, data: DataBundle, folder: Path) -> None:
    """Run both on two training samples (in eval mode, the RNG put back) and compare their logits' shapes."""
    was_training = student.training
    student.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            batch = next(iter(DataLoader(data.train, batch_size=2, collate_fn=collate_batch)))
            ours, theirs = student(batch).logits, teacher(batch).logits
    except Exception as exc:  # the teacher can't read this data at all (other channels, other image size...)
        raise ConfigError(f"{WHERE}: {folder} could not read this run's batches: {type(exc).__name__}: {exc}"
                          ) from None
    finally:
        student.train(was_training)
    if ours.shape != theirs.shape:
        raise ConfigError(f"{WHERE}: {folder} gives logits of shape {tuple(theirs.shape)}, the student "
                          f"{tuple(ours.shape)} (for 2 samples); the teacher must predict the same classes or "
                          "vocabulary")
    if not (ours.ndim == 2 and ours.shape[1] >= 2) and token_mask(batch, ours) is None:
        raise ConfigError(f"{WHERE}: distillation matches class or token probabilities: logits (B, classes) or "
                          f"(B, T, vocabulary) with labels (B, T); this model's are {tuple(ours.shape)}")


def _close(a: Any, b: Any) -> bool:
    """Equal, numbers to 1e-4 relative (statistics of the same split computed twice)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return abs(a - b) <= 1e-4 * max(abs(a), abs(b), 1e-12)
    return a == b


def _short(names: list[Any]) -> str:
    return ", ".join(map(str, names[:5])) + (", ..." if len(names) > 5 else "")
