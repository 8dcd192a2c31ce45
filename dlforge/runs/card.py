"""The model card: `run_dir/README.md`, a factual Markdown summary of a finished run.

Every line is generated from the run's resolved config, the data's `info`, the final metrics and the parameter
count; a fact that was not recorded is written as "not recorded" rather than guessed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from dlforge.runs.progress import format_duration
from dlforge.runs.rundir import atomic_write_text

NOT_RECORDED = "not recorded"


def _fmt(value: Any) -> str:
    """A metric value for the table: integers as they are, floats to 4 decimals (or 4 significant digits)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        return f"{value:.4g}"
    return f"{value:.4f}"


def _yaml_block(obj: dict[str, Any]) -> str:
    return "```yaml\n" + yaml.safe_dump(obj, sort_keys=False, default_flow_style=None).rstrip() + "\n```"


def _num_features(info: dict[str, Any], model: dict[str, Any]) -> int | None:
    if info.get("num_features") is not None:
        return int(info["num_features"])
    if info.get("feature_names"):
        return len(info["feature_names"])
    return model.get("in_features")


# --- sections ---------------------------------------------------------------------------------------------------


def _model_section(config: dict[str, Any], params: int) -> list[str]:
    model = config.get("model", {})
    return [
        "## Model",
        "",
        f"- Registry name: `{model.get('name', NOT_RECORDED)}`",
        f"- Parameters: {params:,}",
        "- Architecture config:",
        "",
        _yaml_block(model),
    ]


def _data_section(config: dict[str, Any], info: dict[str, Any]) -> list[str]:
    data = config.get("data", {})
    sizes = info.get("split_sizes") or {}
    sizes_text = ", ".join(f"{split} {count:,}" for split, count in sizes.items()) or NOT_RECORDED
    labels = info.get("label_names")
    if labels:
        labels_text = f"{len(labels)}: " + ", ".join(str(label) for label in labels)
    elif info.get("num_classes"):
        labels_text = f"{info['num_classes']} classes, unnamed"
    else:
        labels_text = "none (not a classification task)" if info.get("task") == "regression" else NOT_RECORDED
    features = _num_features(info, config.get("model", {}))
    return [
        "## Data",
        "",
        f"- Source: {info.get('source') or data.get('name', NOT_RECORDED)}",
        f"- Task: {info.get('task', NOT_RECORDED)}",
        f"- Split sizes: {sizes_text}",
        f"- Labels: {labels_text}",
        f"- Features: {features if features is not None else NOT_RECORDED}",
    ]


def _started_from(train: dict[str, Any], started_from: dict[str, str] | None) -> str:
    if started_from:
        return (f"`{started_from['path']}` ({started_from['key']}: `{started_from['ref']}`, weights SHA-256 "
                f"`{started_from['weights_sha256']}`)")
    return NOT_RECORDED if train.get("init_from") or train.get("transfer") else "random initialization"


def _training_section(config: dict[str, Any], wall_s: float, started_from: dict[str, str] | None) -> list[str]:
    train = config.get("train", {})
    optimizer = f"{train.get('optimizer', NOT_RECORDED)}"
    if "weight_decay" in train:
        optimizer += f" (weight decay {train['weight_decay']})"
    schedule = f"{train.get('scheduler', 'constant')}"
    if train.get("warmup_steps"):
        schedule += f" after {train['warmup_steps']} warmup steps"
    limits = [f"{train[k]} {k.removeprefix('max_')}" for k in ("max_steps", "max_epochs") if train.get(k)]
    length = "at most " + " or ".join(limits) if limits else NOT_RECORDED
    distill = train.get("distill")
    teacher = [f"- Distilled from: `{distill['teacher']}` (alpha {distill['alpha']}, temperature "
               f"{distill['temperature']}; run.json: the folder and weights' SHA-256)"] if distill else []
    return [
        "## Training",
        "",
        f"- Started from: {_started_from(train, started_from)}",
        *teacher,
        f"- Optimizer: {optimizer}",
        f"- Learning rate: {train.get('lr', NOT_RECORDED)}",
        f"- Schedule: {schedule}",
        f"- Length: {length}, batch size {train.get('batch_size', NOT_RECORDED)}",
        f"- Precision: {train.get('precision', NOT_RECORDED)}",
        f"- Seed: {train.get('seed', NOT_RECORDED)}",
        f"- Wall clock: {format_duration(wall_s)}",
    ]


def metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    """A Markdown table with a row per metric and a column per split.

    `metrics` maps a split to its metrics, e.g. `{"val": {"accuracy": 0.93}, "test": {"test/accuracy": 0.91}}`;
    a metric key may carry its split's prefix, which is dropped.
    """
    splits = list(metrics)
    by_metric: dict[str, dict[str, Any]] = {}
    for split, values in metrics.items():
        for key, value in values.items():
            by_metric.setdefault(key.removeprefix(f"{split}/"), {})[split] = value
    lines = ["| metric | " + " | ".join(splits) + " |", "|---|" + "---:|" * len(splits)]
    for metric, values in by_metric.items():
        cells = [_fmt(values[split]) if split in values else "-" for split in splits]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _metrics_section(metrics: dict[str, dict[str, float]], weights: str, eval_note: str) -> list[str]:
    body = metrics_table(metrics) if any(metrics.values()) else "No evaluation was recorded."
    said = [f"Of the {weights}.", ""] if weights else []
    return ["## Metrics", "", *said, body] + (["", f"Note: {eval_note}."] if eval_note else [])


def _intended_use(config: dict[str, Any], info: dict[str, Any]) -> list[str]:
    task = info.get("task", "prediction")
    source = info.get("source") or config.get("data", {}).get("name", "its training data")
    return [
        "## Intended use",
        "",
        f"A {task} model for inputs shaped like the `{source}` data it was trained on: the same features, in the "
        "same units, prepared by the preprocessing saved in the model folder. It serves experiments, baselines and "
        "teaching. It has not been validated for decisions about people (medical, financial, legal, hiring), and "
        "should not be used for them.",
    ]


def _limitations(info: dict[str, Any], metrics: dict[str, dict[str, float]]) -> list[str]:
    sizes = info.get("split_sizes") or {}
    lines = ["## Limitations", ""]
    if sizes:
        total = sum(sizes.values())
        small = " That is a small data set; estimates from it are noisy." if total < 10_000 else ""
        lines.append(f"- Trained and evaluated on {total:,} examples in all.{small}")
    splits = " and ".join(metrics) or "no"
    lines += [
        f"- Metrics come from one training run (one seed), on the {splits} split(s) drawn from the same source as "
        "the training data; they carry no confidence intervals and say nothing about data from another population, "
        "instrument or time (distribution shift).",
        "- No fairness audit was done: performance on subgroups was not measured.",
        "- Inputs outside the range seen in training are not detected; the model will still return a prediction.",
    ]
    return lines


def _how_to_load(run_dir: Path, predict: tuple[str, str] | None) -> list[str]:
    run = run_dir.as_posix()
    lines = [
        "## How to load",
        "",
        "```python",
        "import dlforge",
        "",
        f'model = dlforge.load("{run}/model")',
        "```",
        "",
    ]
    if predict is None:
        return [*lines, "`dlforge predict` does not read new inputs for this kind of model."]
    example, holds = predict
    return [*lines, "```bash", f"dlforge predict {run} {example}", "```", "", f"`{example}`: {holds}."]


def write_model_card(
    run_dir: Path,
    *,
    name: str,
    config: dict[str, Any],
    info: dict[str, Any],
    metrics: dict[str, dict[str, float]],
    params: int,
    wall_s: float,
    predict: tuple[str, str] | None = None,
    weights: str = "",
    started_from: dict[str, str] | None = None,
    eval_note: str = "",
) -> Path:
    """Write `run_dir/README.md`, the run's model card, and return its path.

    `config` is the resolved config (sections name, data, model, train); `info` is the data's info dict, of which
    `source`, `task`, `num_classes`, `label_names`, `feature_names` / `num_features` and `split_sizes` (split ->
    count) are used; `metrics` maps a split to its final metrics, and `weights` says which weights they are of
    ("best checkpoint (step 40, val/loss 0.31)"); `params` counts the model's parameters and `wall_s` is the
    training time in seconds. `predict` is what `dlforge predict` reads for this model (the task's
    `predict_input`): an example file name and what it holds; None when the task has no predict.
    `started_from` is what the weights started from, resolved when the run began: {key, ref (as written), path,
    weights_sha256}; None for a run from scratch. `eval_note` says when the metrics come from part
    of each split.
    """
    run_dir = Path(run_dir)
    header = [
        f"# {name}",
        "",
        f"Model card of the dlforge run `{run_dir.name}` (config `{config.get('name', NOT_RECORDED)}`).",
    ]
    sections = [
        header,
        _model_section(config, params),
        _data_section(config, info),
        _training_section(config, wall_s, started_from),
        _metrics_section(metrics, weights, eval_note),
        _intended_use(config, info),
        _limitations(info, metrics),
        _how_to_load(run_dir, predict),
    ]
    text = "\n\n".join("\n".join(lines) for lines in sections) + "\n"
    path = run_dir / "README.md"
    atomic_write_text(path, text)
    return path
