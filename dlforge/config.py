"""The one typed config schema: `data`, `model`, `train` sections, YAML presets and dotted overrides.

    cfg = load_config("breast-cancer-mlp", ["train.lr=3e-3", "model.hidden=[256,256]"])

A preset is a name: `./configs/<name>.yaml` in the working directory if there is one, else one of the presets that
ship inside the package as data (`dlforge/configs/<name>.yaml`); a path to any YAML file works too. Each override is
`key.sub=value` with the value read as YAML (`[256,256]` is a list, `null` is None). The `data` and `model` sections
are checked against the config class that the dataset or model registered, so every key anywhere is validated, and a
wrong one becomes one `ConfigError` line naming the key, with a suggestion for a likely typo.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from dlforge import aliases
from dlforge.errors import ConfigError, clip, clip_repr
from dlforge.errors import validation_to_config_error as _to_config_error
from dlforge.paths import RUN_NAME_MAX, existing_file, exists, fitting_name
from dlforge.safe_yaml import load_yaml, read_yaml
from dlforge.sections import Section, bool_for_number, check_indexed_section

# The folder of YAML presets, both inside the package (package data) and in the working directory, where it adds
# presets or replaces built-in ones of the same name.
PRESETS_FOLDER = "configs"


class DataConfig(Section):
    """Fields every dataset config has; each dataset subclasses it with its own fields."""

    name: str
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes (0: load in the main process)")
    limit: int | None = Field(None, ge=1, description="keep only the first N samples of every split (smoke runs)")


class EarlyStopping(Section):
    metric: str | None = Field(None, description="metric to watch, e.g. 'val/accuracy'; default: train.monitor")
    mode: Literal["auto", "min", "max"] = Field("auto", description="auto: min for losses, max for other metrics")
    patience: int = Field(10, ge=1, description="evaluations without improvement before stopping")
    min_delta: float = Field(0.0, ge=0, description="the least change that counts as an improvement")


class EMAConfig(Section):
    """An exponential moving average of the weights, evaluated and saved in their place (train.ema)."""

    decay: float = Field(0.999, gt=0, lt=1, description="weight of the average at each step")
    warmup: bool = Field(True, description="decay min(decay, (1 + n) / (10 + n)) at update n: early steps count")


class TransferConfig(Section):
    """Transfer learning: start from another run's weights, with a new head for this data's labels."""

    init_from: str = Field(description="a run (folder, name or 'latest'), a model folder, a transformers BERT folder "
                                       "or 'minilm', whose backbone to load")
    freeze: str = Field("none", description="none; all (the whole backbone); or a stage name (frozen with all before)")
    backbone_lr: float = Field(0.1, ge=0, description="backbone learning rate as a multiple of train.lr (head: 1x)")
    layer_decay: float | None = Field(None, gt=0, le=1, description="layer-wise lr decay: each backbone stage gets "
                                      "this times the lr of the stage above it (e.g. 0.8 for BERT)")


class LoRAConfig(Section):
    """LoRA (Hu et al. 2021): train a low-rank update B A of chosen linear layers, the base model frozen."""

    rank: int = Field(8, ge=1, description="r: the rank of the update (A is r x in, B is out x r)")
    alpha: float = Field(16.0, gt=0, description="the update is scaled by alpha / rank")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter's input")
    targets: list[str] = Field(default_factory=lambda: ["qkv", "proj"], min_length=1,
                               description="linear layers to adapt, by name or name suffix (gpt: qkv, proj, fc, "
                                           "gate, up; 'proj' is both attn.proj and ffn.proj)")


class DistillConfig(Section):
    """Knowledge distillation (Hinton et al. 2015): learn from the labels and from a trained teacher's predictions."""

    teacher: str = Field(description="the teacher: a run (folder, name, 'latest', 'latest:NAME') or a model folder")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the label loss; 1 - alpha weighs the teacher's")
    temperature: float = Field(4.0, gt=0, description="T: both softmaxes over logits / T; the teacher term x T^2")


class PruneConfig(Section):
    """Pruning during a fine-tuning run (`dlforge prune`): magnitude masks, or whole channels removed."""

    sparsity: float = Field(description="fraction of the weights (unstructured) or of each group's channels "
                            "(structured) to remove", gt=0, lt=1)
    structured: bool = Field(False, description="remove channels from conv/linear layers (needs train.init_from)")
    scope: Literal["global", "layer"] = Field("global", description="unstructured: one magnitude threshold over "
                                              "all layers, or the same sparsity in each")
    schedule: Literal["oneshot", "gradual"] = Field("oneshot", description="unstructured: prune at the start, or "
                                                    "raise sparsity cubically (Zhu & Gupta 2017)")
    start_step: int = Field(0, ge=0, description="gradual: the step of the first pruning")
    end_step: int | None = Field(None, ge=1, description="gradual: the step the full sparsity is reached "
                                 "(default: 3/4 of train.max_steps)")
    every: int = Field(50, ge=1, description="gradual: steps between mask updates")


class TrainConfig(Section):
    """The Trainer's knobs. Training stops at `max_steps` or `max_epochs`, whichever comes first."""

    max_steps: int | None = Field(None, ge=1, description="optimizer steps to train for")
    max_epochs: int | None = Field(None, ge=1, description="passes over the training split to train for")
    batch_size: int | Literal["full"] = Field(32, description="samples per step; 1 = stochastic GD, 'full' = batch GD")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    group_by_length: bool = Field(False, description="batch samples of similar length together (less padding); "
                                  "for datasets that know their sample lengths, e.g. bible_translation")
    # optimizer
    optimizer: Literal["sgd", "adam", "adamw", "adagrad", "rmsprop"] = Field("adamw", description="torch.optim's")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (`dlforge lr-find` suggests one)")
    weight_decay: float = Field(0.0, ge=0, description="not applied to biases and norm weights")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd and rmsprop")
    nesterov: bool = Field(False, description="Nesterov momentum (sgd)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="adam and adamw: decay of the moment estimates")
    # schedule
    scheduler: Literal[
        "constant", "step", "multistep", "exponential", "cosine", "linear", "onecycle", "plateau"
    ] = Field("constant", description="learning-rate schedule over the run's steps")
    warmup_steps: int = Field(0, ge=0, description="linear warmup before cosine, linear or constant")
    min_lr: float = Field(0.0, ge=0, description="floor of cosine and linear decay")
    step_size: int = Field(1000, ge=1, description="steps between decays of 'step'")
    milestones: list[int] = Field(default_factory=list, description="steps at which 'multistep' decays")
    gamma: float = Field(0.1, gt=0, description="decay factor of step, multistep, exponential (per step), plateau")
    plateau_patience: int = Field(5, ge=0, description="evaluations without improvement before 'plateau' decays")
    # mechanics
    grad_clip: float | None = Field(None, gt=0, description="clip the gradients' global norm (or each value) to this")
    grad_clip_mode: Literal["norm", "value"] = Field("norm", description="what train.grad_clip bounds")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast dtype (fp16 with loss scaling)")
    activation_checkpointing: bool = Field(False, description="recompute activations in backward: less memory")
    compile: bool = Field(False, description="torch.compile the model")
    channels_last: bool = Field(False, description="4-D weights and image batches in channels-last memory format")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    seed: int = Field(0, description="seeds weights, data order, dropout and augmentation")
    nan_policy: Literal["stop", "skip"] = Field("stop", description="on a NaN/inf loss or gradient: stop, or skip "
                                                "the step")
    max_skipped_steps: int | None = Field(25, ge=1, description="stop when this many steps in a row were skipped "
                                          "(nan_policy skip, fp16 overflow); null: never")
    # evaluation, logging, checkpoints
    log_every: int = Field(10, ge=1, description="steps between training log rows; the first and last steps are "
                           "logged too")
    eval_every: int | Literal["epoch"] = Field("epoch", description="steps between evaluations on val, or epoch")
    limit_eval_batches: int | float | None = Field(None, description="evaluate only the first N batches (an integer) "
                                                   "or this fraction (0 < x <= 1) of each split, in validation and "
                                                   "in the final report, which says so; null: all of it")
    checkpoint_every: int | Literal["epoch"] | None = Field("epoch", description="steps between checkpoints, epoch, "
                                                            "or null for none")
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept (the best one is kept besides)")
    monitor: str = Field("val/loss", description="metric for best-checkpoint tracking")
    monitor_mode: Literal["auto", "min", "max"] = Field("auto", description="auto: min for losses, max otherwise")
    early_stopping: EarlyStopping | None = Field(None, description="stop when a metric stops improving")
    ema: EMAConfig | None = Field(None, description="evaluate and keep a moving average of the weights")
    transfer: TransferConfig | None = Field(None, description="start from another run's backbone, new head")
    init_from: str | None = Field(None, description="start from all the weights of this run (folder, name, 'latest', "
                                  "'latest:NAME') or model folder: continued pretraining, fine-tuning")
    lora: LoRAConfig | None = Field(None, description="train LoRA adapters over the init_from model, frozen")
    prune: PruneConfig | None = Field(None, description="prune the weights while training (see dlforge prune)")
    distill: DistillConfig | None = Field(None, description="learn from a teacher run's softened predictions too")
    progress: bool = Field(True, description="show progress on stderr: a bar on a terminal, else plain lines")
    progress_every: float = Field(30.0, gt=0, description="seconds between plain progress lines (steps, rate, ETA) "
                                  "when stderr is not a terminal: logs, CI, nohup")
    tensorboard: bool = Field(True, description="TensorBoard events in the run's tensorboard/ folder")
    mfu: bool = Field(False, description="log model-FLOPs utilization: tokens/s x the model's FLOPs per token over "
                      "a matmul peak measured at the start (models with flops_per_token, e.g. gpt)")

    @field_validator("batch_size", "eval_every", "checkpoint_every")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be >= 1")
        return v

    @field_validator("limit_eval_batches")
    @classmethod
    def _limit(cls, v: Any) -> Any:
        if (isinstance(v, int) and v < 1) or (isinstance(v, float) and not 0 < v <= 1):
            raise ValueError("expected a number of batches >= 1 or a fraction in (0, 1]")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        ok = v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit())
        if not ok:
            raise ValueError("expected auto, cpu, cuda, cuda:N or mps")
        return v

    @model_validator(mode="after")
    def _stop_condition(self) -> TrainConfig:
        if self.max_steps is None and self.max_epochs is None:
            raise ValueError("set train.max_steps or train.max_epochs")
        if self.init_from is not None and self.transfer is not None:
            raise ConfigError("train.init_from: give either train.init_from (every weight) or train.transfer (a "
                              "backbone under a new head), not both")
        if self.lora is not None and self.init_from is None:
            raise ConfigError("train.lora: needs train.init_from, the base model the adapters are trained over")
        return self


# `dlforge train --quick`: a short run of any preset, to see it work end to end. Given before the user's overrides,
# which win. The warmup of a longer preset is scaled down to the 50 steps by the Trainer.
QUICK_OVERRIDES = ("train.max_steps=50", "train.eval_every=50", "train.checkpoint_every=50", "train.log_every=10",
                   "train.limit_eval_batches=4")


class Config(Section):
    """A whole run: what data, which model, how to train."""

    name: str = Field("run", description="run name; the run folder is <runs_dir>/<name>-<timestamp>")
    runs_dir: str = Field("runs", description="the folder that holds the run folders and registry.db")
    data: dict[str, Any]
    model: dict[str, Any]
    train: TrainConfig

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        return fitting_name(v, "name", RUN_NAME_MAX)

    @field_validator("data")
    @classmethod
    def _check_data(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from dlforge.registry import dataset_entry

        name = _section_name(v, "data", "datasets")
        if info.context == OUTLINE:
            return v
        entry = dataset_entry(name)  # an old name finds its entry (with a warning)
        return _validate_section(entry.config_cls, {**v, "name": entry.name}, "data")  # the current name

    @field_validator("model")
    @classmethod
    def _check_model(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from dlforge.registry import model_entry

        name = _section_name(v, "model", "models")
        if info.context == OUTLINE:
            return v
        config_cls = model_entry(name).config_cls
        rest = aliases.model_keys({k: w for k, w in v.items() if k != "name"}, _field_names(config_cls))
        # types and ranges of the keys given; data-derived fields (in_features...) are filled in at build time
        return {"name": name, **_validate_section(config_cls, rest, "model")}

    def data_config(self) -> DataConfig:
        from dlforge.registry import dataset_entry

        return dataset_entry(self.data["name"]).config_cls.model_validate(self.data)

    def hash(self) -> str:
        """SHA-256 of the resolved config, to tell runs with identical settings apart from the rest."""
        from dlforge.registry import model_entry

        resolved = self.model_dump(mode="json")
        cls = model_entry(self.model["name"]).config_cls
        given = {k: v for k, v in self.model.items() if k != "name"}
        # defaults filled in, so writing a default out and leaving it out hash alike
        resolved["model"] = {"name": self.model["name"], **TypeAdapter(cls).dump_python(cls(**given), mode="json")}
        blob = json.dumps(resolved, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


OUTLINE = "outline"  # validation context: every key but those of the data and model sections, which need the zoo


def _section_name(values: dict[str, Any], section: str, listing: str) -> str:
    if "name" not in values:
        raise ConfigError(f"{section}.name: missing; expected a name from `dlforge {listing}`")
    return values["name"]


def _validate_section(config_cls: type, values: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A pydantic model section: all of it, defaults filled. A pydantic dataclass: the keys given, validated."""
    try:
        if isinstance(config_cls, type) and issubclass(config_cls, BaseModel):
            return config_cls.model_validate(values).model_dump(mode="json")
        _refuse_bool_for_numbers(config_cls, values, prefix)  # a Section checks this itself
        return _given(config_cls(**values), values)  # a pydantic dataclass validates on construction
    except (ValidationError, TypeError) as exc:
        err = validation_to_config_error(exc, prefix=prefix, fields=_field_names(config_cls))
        if err is None:
            raise
        raise err from exc


def _refuse_bool_for_numbers(config_cls: type, values: dict[str, Any], prefix: str) -> None:
    fields = getattr(config_cls, "__pydantic_fields__", {})
    for key, value in values.items():
        expected = bool_for_number(fields[key].annotation, value) if key in fields else None
        if expected:
            raise ConfigError(f"{prefix}.{key}: expected {expected}, got {value!r}")


def _given(obj: Any, values: dict[str, Any]) -> dict[str, Any]:
    # Keep only the keys the user gave, with their validated values, so data-derived defaults can fill the rest.
    full = TypeAdapter(type(obj)).dump_python(obj, mode="json")
    return {k: full[k] for k in values}


def _field_names(config_cls: type) -> list[str]:
    if isinstance(config_cls, type) and issubclass(config_cls, BaseModel):
        return list(config_cls.model_fields)
    return [f.name for f in dataclasses.fields(config_cls)]


def _all_keys(model_cls: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model_cls.model_fields.items():
        keys.append(prefix + name)
        ann = field.annotation
        for sub in getattr(ann, "__args__", (ann,)):
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                keys += _all_keys(sub, prefix + name + ".")
    return keys


def validation_to_config_error(exc: Exception, prefix: str, fields: list[str] | None = None) -> ConfigError | None:
    """`dlforge.errors.validation_to_config_error`, suggesting among every key of the whole config when neither a
    prefix nor the fields are given."""
    if prefix == "" and fields is None:
        fields = _all_keys(Config)
    return _to_config_error(exc, prefix, fields)


# --- loading ---------------------------------------------------------------------------------------------------


def preset_dirs() -> list[Traversable]:
    """Where preset names are looked up, first wins: `./configs` in the working directory (read at each call), then
    the presets inside the package, read through importlib.resources so that a wheel, a zip or an editable install
    all find them."""
    return [Path.cwd() / PRESETS_FOLDER, resources.files("dlforge") / PRESETS_FOLDER]


def list_presets() -> dict[str, Traversable]:
    """Preset name -> YAML file (a Path, or a Traversable inside a zipped package), from `preset_dirs()`."""
    found: dict[str, Traversable] = {}
    for folder in preset_dirs():
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".yaml") and entry.is_file():
                found.setdefault(entry.name.removesuffix(".yaml"), entry)
    return found


def resolve_preset(name_or_path: str) -> Traversable:
    """A YAML file given by path (`.yaml`/`.yml`, or any existing file or folder), else the preset of that name."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or exists(p):
        return existing_file(p, "a YAML config file (or a preset name: see `dlforge presets`)", ConfigError)
    presets = list_presets()
    if name_or_path not in presets and name_or_path in aliases.PRESETS:
        name_or_path = aliases.preset_name(name_or_path)
    if name_or_path not in presets:
        close = difflib.get_close_matches(name_or_path, list(presets), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "; see `dlforge presets`"
        raise ConfigError(f"{clip(name_or_path)}: no such preset or YAML file{hint}")
    return presets[name_or_path]


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` overrides (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {clip_repr(item)}: expected key=value, e.g. train.lr=3e-3")
        key, _, text = item.partition("=")
        try:
            value = load_yaml(text, f"override {clip_repr(item)}") if text.strip() else ""
        except yaml.YAMLError:
            value = text
        if isinstance(value, str):
            value = _number_or_str(value)
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return raw


def _number_or_str(text: str) -> Any:
    # YAML 1.1 reads "3e-3" as a string; a person typing it means a number.
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        return text


def load_config(preset: str | Path | dict[str, Any], overrides: list[str] | None = None) -> Config:
    """Load a preset name, a YAML path or a dict, apply overrides and validate."""
    if isinstance(preset, dict):
        raw, source = copy.deepcopy(preset), "config"  # overrides must not reach into the caller's dict
    else:
        path = resolve_preset(str(preset))
        raw, source = read_yaml(path), Path(path.name).stem
    raw.setdefault("name", source)
    check_outline(apply_overrides(copy.deepcopy(raw), overrides or []))  # before the zoo: see check_outline
    apply_overrides(raw, _new_model_keys(raw, overrides or []))
    return _validate(raw)


def _new_model_keys(raw: dict[str, Any], overrides: list[str]) -> list[str]:
    """Rename old model keys (`dlforge.aliases.MODEL_KEYS`) in the YAML's model section, in place, and in the
    overrides, returned: so that `model.n_layer=2` overrides a preset's `n_layers`, as `model.n_layers=2` does."""
    from dlforge.registry import config_fields, indexed_fields, model_entry

    section = apply_overrides(copy.deepcopy(raw), overrides).get("model")
    name = section.get("name") if isinstance(section, dict) else None
    if not isinstance(name, str):
        return overrides  # validation names what is wrong
    try:
        fields = list(indexed_fields("model", name) or config_fields(model_entry(name).config_cls))
    except ConfigError:
        return overrides
    if isinstance(raw.get("model"), dict):
        raw["model"] = aliases.model_keys(raw["model"], fields)
    renamed = []
    for item in overrides:
        key, eq, value = item.partition("=")
        parts = key.strip().split(".")
        if eq and len(parts) == 2 and parts[0] == "model":
            item = f"model.{next(iter(aliases.model_keys({parts[1]: None}, fields)))}={value}"
        renamed.append(item)
    return renamed


def validate_config(raw: dict[str, Any]) -> Config:
    check_outline(raw)
    return _validate(raw)


def check_outline(raw: dict[str, Any]) -> None:
    """Validate every key that needs no model or dataset: the top level, the train section, the sections' names.
    Checked first, because the data and model sections import the zoo (and torch): a mistake elsewhere is told
    before that, in a fraction of a second; so is a data or model key that a built-in dataset or model lacks."""
    cfg = _validate(raw, context=OUTLINE)
    check_indexed_section("dataset", "data", cfg.data["name"], cfg.data)
    check_indexed_section("model", "model", cfg.model["name"], cfg.model)


def _validate(raw: dict[str, Any], context: str | None = None) -> Config:
    try:
        return Config.model_validate(raw, context=context)
    except ValidationError as exc:  # a ConfigError from a section validator is not wrapped: it passes through
        raise validation_to_config_error(exc, prefix="") from None


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def json_schema() -> dict[str, Any]:
    """JSON Schema of the whole config, with `data` and `model` as one-of the registered config classes."""
    from dlforge.registry import dataset_entries, model_entries

    schema = Config.model_json_schema()

    def variants(entries) -> list[dict[str, Any]]:
        out = []
        for e in entries:
            s = TypeAdapter(e.config_cls).json_schema()
            # nested sections (e.g. data.augment) refer to "#/$defs/...": those definitions live at the root
            for key, definition in s.pop("$defs", {}).items():
                if schema.setdefault("$defs", {}).setdefault(key, definition) != definition:
                    raise ValueError(f"two config classes named {key!r} with different schemas")
            s["title"] = e.name
            s.setdefault("properties", {})["name"] = {"const": e.name}
            s["required"] = ["name"]  # data-derived fields are filled in at build time
            out.append(s)
        return out

    schema["properties"]["data"] = {"oneOf": variants(dataset_entries()), "description": "see `dlforge datasets`"}
    schema["properties"]["model"] = {"oneOf": variants(model_entries()), "description": "see `dlforge models`"}
    return schema
