"""The model card: `run_dir/README.md`, a factual Markdown summary of a finished run.

Its sections follow Mitchell et al., "Model Cards for Model Reporting" (FAT* 2019): model details, intended use,
factors, metrics, evaluation data, training data, quantitative analyses, ethical considerations, caveats and
recommendations (and how to load the model). Every line is generated from the run's resolved config, the data's
`info`, the final metrics and the parameter count; a fact that was not recorded is written as "not recorded", and
what was not measured as "not measured", rather than guessed. `dlforge fairness` later replaces the factors,
quantitative analyses and ethical considerations with what it measured (`write_fairness_sections`); the card
renders the figures it is handed and computes none.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from dlforge.runs.progress import format_duration
from dlforge.runs.rundir import atomic_write_text

NOT_RECORDED = "not recorded"
NO_AUDIT = "- No fairness audit was done: performance on subgroups was not measured."


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


def _training_data(config: dict[str, Any], info: dict[str, Any]) -> list[str]:
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
        "## Training data",
        "",
        f"- Source: {info.get('source') or data.get('name', NOT_RECORDED)}",
        f"- Task: {info.get('task', NOT_RECORDED)}",
        f"- Split sizes: {sizes_text}",
        f"- Labels: {labels_text}",
        f"- Features: {features if features is not None else NOT_RECORDED}",
        "- Training rows: the train split" + (f", {sizes['train']:,} examples" if "train" in sizes else ""),
    ]


def _evaluation_data(config: dict[str, Any], info: dict[str, Any], metrics: dict[str, dict[str, float]]
                     ) -> list[str]:
    data = config.get("data", {})
    sizes = info.get("split_sizes") or {}
    used = [f"{split} ({sizes[split]:,} examples)" if split in sizes else split for split in metrics] or ["none"]
    how = ", ".join(f"{key} {data[key]}" for key in ("val_fraction", "test_fraction", "split_seed") if key in data)
    return [
        "## Evaluation data",
        "",
        f"- Splits evaluated: {', '.join(used)}",
        f"- Drawn from: the same source as the training data ({'data: ' + how if how else 'split ' + NOT_RECORDED})",
        "- Data from another population, instrument or time: not measured",
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


def _factors(audit: dict[str, Any] | None) -> list[str]:
    lines = ["## Factors", ""]
    if audit is None:
        return [*lines, "- Groups: not recorded; no sensitive attribute was named, and performance was not broken "
                        "down by group (`dlforge fairness RUN --data test --sensitive COL` does)",
                "- Instrumentation and environment: not recorded"]
    parts = [f"{' x '.join(a['columns'])} ({len(a['groups'])} groups)" for a in audit["analyses"]]
    return [*lines, f"- Groups evaluated: {'; '.join(parts)}, on {audit['data']}",
            "- Instrumentation and environment: not recorded"]


def _quantitative(audit: dict[str, Any] | None) -> list[str]:
    lines = ["## Quantitative analyses", ""]
    if audit is None:
        return [*lines, "Not measured: the metrics above are of whole splits, none broken down by group. "
                        "`dlforge fairness RUN --data test --sensitive COL` adds the per-group table here."]
    return lines + fairness_lines(audit)


def _ethical(audit: dict[str, Any] | None) -> list[str]:
    sensitive = (f"audited: {', '.join(audit['sensitive'])} (see Quantitative analyses); whether other columns are "
                 "sensitive: not recorded") if audit else "not recorded (whether the data describe people, and "\
                                                          "which columns are sensitive attributes)"
    return [
        "## Ethical considerations",
        "",
        f"- Sensitive attributes: {sensitive}",
        "- Mitigations: none; training minimizes one loss over all examples alike, with no fairness constraint",
        "- Risks of use for decisions about people: not assessed; the model is not validated for them (see "
        "Intended use)",
    ]


def _caveats(info: dict[str, Any], metrics: dict[str, dict[str, float]]) -> list[str]:
    sizes = info.get("split_sizes") or {}
    lines = ["## Caveats and recommendations", ""]
    if sizes:
        total = sum(sizes.values())
        small = " That is a small data set; estimates from it are noisy." if total < 10_000 else ""
        lines.append(f"- Trained and evaluated on {total:,} examples in all.{small}")
    splits = " and ".join(metrics) or "no"
    lines += [
        f"- Metrics come from one training run (one seed), on the {splits} split(s) drawn from the same source as "
        "the training data; they carry no confidence intervals and say nothing about data from another population, "
        "instrument or time (distribution shift).",
        NO_AUDIT,
        "- Inputs outside the range seen in training are not detected; the model will still return a prediction.",
        "- Recommendation: measure the model on data from where it is to be used, and per group of the people it "
        "affects, before relying on it.",
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
        _intended_use(config, info),
        _factors(None),
        _metrics_section(metrics, weights, eval_note),
        _evaluation_data(config, info, metrics),
        _training_data(config, info),
        _training_section(config, wall_s, started_from),
        _quantitative(None),
        _ethical(None),
        _caveats(info, metrics),
        _how_to_load(run_dir, predict),
    ]
    text = "\n\n".join("\n".join(lines) for lines in sections) + "\n"
    path = run_dir / "README.md"
    atomic_write_text(path, text)
    return path


# --- the fairness audit (dlforge fairness) --------------------------------------------------------------------------

# The per-group table's columns: (key in a class's metrics, header); accuracy and n sit beside them.
FAIRNESS_COLUMNS = (("f1", "F1"), ("selection_rate", "selection rate"), ("tpr", "TPR"), ("fpr", "FPR"),
                    ("mean_score", "mean p"), ("observed_rate", "observed rate"), ("ece", "ECE"))
DISPARITY_NAMES = (("demographic_parity_difference", "demographic parity difference"),
                   ("demographic_parity_ratio", "ratio"), ("equalized_odds_difference", "equalized odds difference"),
                   ("equalized_odds_ratio", "ratio"))


def _cell(figure: dict[str, Any]) -> str:
    """'0.712 [0.690, 0.733]'; '-' for an undefined value."""
    if figure["value"] is None:
        return "-"
    ci = figure.get("ci")
    return f"{figure['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def fairness_lines(audit: dict[str, Any]) -> list[str]:
    """The Markdown of a fairness audit: what was measured, then per sensitive column (and their intersection) a
    table per audited class (a row per group, the whole set first) with its disparities and small groups.

    `audit` is `dlforge.eval.fairness.fairness_report`'s dict with `data` (what rows, in words) and `when` added.
    """
    boot = (f"95% bootstrap intervals in brackets ({audit['bootstrap']:,} resamples of all rows, percentile, seed "
            f"{audit['seed']})") if audit["bootstrap"] else "no intervals (not measured: --bootstrap 0)"
    binary = len(audit["labels"]) == 2
    audited = (f"the positive class `{audit['classes'][0]}`" if binary
               else f"each class against the rest ({len(audit['classes'])} classes)")
    lines = [
        f"Measured by `dlforge fairness` on {audit['data']}: {audit['n']:,} examples, {audit['when']}. For "
        f"{audited}, per group; {boot}. F1: of that class (the Metrics table's is the macro average); selection "
        "rate: share predicted the class; TPR and FPR: share of the class and of the rest predicted it; mean p and "
        "observed rate: the mean predicted probability of the class and its share, ECE: the expected calibration "
        f"error over {audit['calibration_bins']} bins. Disparities: "
        "between groups, max - min (difference) and min / max (ratio), as Fairlearn defines them. `-`: undefined "
        f"(no rows to divide by); `*`: fewer than {audit['min_group']} examples, too few to trust.",
    ]
    for analysis in audit["analyses"]:
        lines += ["", f"### By {' x '.join(analysis['columns'])}"]
        for name in audit["classes"]:
            if not binary:
                lines += ["", f"#### Class `{name}` against the rest"]
            lines += ["", "| group | n | accuracy | " + " | ".join(h for _, h in FAIRNESS_COLUMNS) + " |",
                      "|---|---:|" + "---:|" * (1 + len(FAIRNESS_COLUMNS))]
            for group in [audit["overall"], *analysis["groups"]]:
                label = group["name"] + (" *" if group.get("small") else "")
                cells = [_cell(group["accuracy"])] + [_cell(group["classes"][name][k]) for k, _ in FAIRNESS_COLUMNS]
                lines.append(f"| {label} | {group['n']:,} | " + " | ".join(cells) + " |")
            gaps = analysis["disparities"][name]
            said = [f"{title} {_cell(gaps[key])}" for key, title in DISPARITY_NAMES]
            lines += ["", f"- Disparities: {said[0]}, {said[1]}; {said[2]}, {said[3]}"]
        if analysis["flagged"]:
            lines.append(f"- Fewer than {audit['min_group']} examples: {'; '.join(analysis['flagged'])}")
    return lines


def write_fairness_sections(run_dir: Path, audit: dict[str, Any]) -> Path | None:
    """Put a fairness audit into the run's card (`run_dir/README.md`): Factors, Quantitative analyses and Ethical
    considerations are replaced (added when missing), and the "no fairness audit" caveat goes; a second audit
    replaces the first. Returns the card's path, or None when the run has no card. Written atomically."""
    path = Path(run_dir) / "README.md"
    if not path.is_file():
        return None
    sections = _split_sections(path.read_text(encoding="utf-8"))
    for lines, before in ((_factors(audit), "## Metrics"), (_quantitative(audit), "## Ethical considerations"),
                          (_ethical(audit), "## Caveats and recommendations")):
        _put_section(sections, lines, before)
    done = f"- A fairness audit was done on {audit['data']}: see Quantitative analyses."
    text = "\n\n".join("\n".join(lines) for lines in sections).replace(NO_AUDIT, done) + "\n"
    atomic_write_text(path, text)
    return path


def _split_sections(text: str) -> list[list[str]]:
    """The card's blocks: what precedes the first `## ` heading, then each `## ` section (heading and body)."""
    sections: list[list[str]] = [[]]
    fence = False
    for line in text.rstrip("\n").split("\n"):
        fence = fence != line.startswith("```")  # a YAML block may hold '## ' lines of its own
        if line.startswith("## ") and not fence:
            sections.append([])
        sections[-1].append(line)
    for lines in sections:  # the blank lines between blocks come back when they are joined
        while lines and not lines[-1].strip():
            lines.pop()
    return [lines for lines in sections if lines]


def _put_section(sections: list[list[str]], lines: list[str], before: str) -> None:
    """Replace the section with `lines`' heading, or insert it before the section `before` (or the last one, how to
    load, or at the end)."""
    headings = [block[0] for block in sections]
    if lines[0] in headings:
        sections[headings.index(lines[0])] = lines
        return
    for anchor in (before, "## Caveats and recommendations", "## Limitations", "## How to load"):
        if anchor in headings:
            sections.insert(headings.index(anchor), lines)
            return
    sections.append(lines)
