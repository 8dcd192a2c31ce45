"""`dlforge monitor`: has what a deployed model sees drifted from what it was trained on?

    report = monitor("runs/iris-logistic-...", reference="train", current="runs/requests.db")
    report = monitor("runs/fashion-simplecnn-...", reference="val", current="new_images/", out="drift.html")

The reference is a split of the run's own data, rebuilt from its saved config. The current sample is a request
store (`dlforge serve --store FILE`: the rows of this model, optionally `since` a time), another split of the run
(`train`, `val` or `test`, when no file has that name: what no drift looks like), or a file: a CSV or Parquet
table for a tabular run, an image file or folder for an image run, texts (.txt, one a line, or .jsonl with a "text")
for a text model, or a .npy of embeddings (N, D).

What is compared (statistics: `dlforge.eval.drift`):
- tabular runs: each feature column, in its raw units (numbers unscaled, categories by name), with every statistic
  and the one Evidently's rule picks; the dataset drifts when at least half the features do (Evidently's share);
- image and text runs: the representation, by the MMD permutation test on embeddings (an image classifier's pooled
  penultimate features, else its class probabilities; a BERT's mean-pooled sentence embeddings);
- predictions: the predicted class distribution (chi-squared / Jensen-Shannon), or predicted values (KS /
  Wasserstein) for regression.
Fewer than MIN_SAMPLES current rows gives a warning: at that size the statistics are mostly noise (see below).
"""

from __future__ import annotations

import base64
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlforge.errors import DataError, DlforgeError

# Below this many current rows a warning: PSI's expected value with no drift is about (bins - 1) (1/n_ref + 1/n_cur),
# 0.09 at 100 rows, already at the usual 0.1 alarm; KS and MMD then detect only large shifts.
MIN_SAMPLES = 100
MAX_REFERENCE = 2000  # the MMD test's reference: a seeded sample of at most this many rows (its cost is quadratic)
DRIFT_SHARE = 0.5  # Evidently's default: the dataset drifts when this share of its features does
SPLITS = ("train", "val", "test")


@dataclass
class Sample:
    """One side of the comparison: raw feature columns (tabular), embeddings (image, text), predictions."""

    columns: dict[str, list] = field(default_factory=dict)
    embeddings: np.ndarray | None = None
    predictions: list = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        if self.embeddings is not None:
            return len(self.embeddings)
        if self.columns:
            return len(next(iter(self.columns.values())))
        return len(self.predictions)


def monitor(run: str | Path, reference: str = "train", current: str | Path = "", model_id: str | None = None,
            since: float | None = None, n_permutations: int = 500, seed: int = 0, runs_dir: str | Path = "runs",
            out: str | Path | None = None) -> dict[str, Any]:
    """The drift report of `current` against the run's `reference` split (see the module docstring); with `out`, also
    a self-contained HTML report there."""
    from dlforge.artifacts import load_trained
    from dlforge.runs.rundir import resolve_run

    if reference not in SPLITS:
        raise DlforgeError(f"--reference: {reference!r}; expected one of {', '.join(SPLITS)}")
    run_path = resolve_run(str(run), runs_dir)
    model = load_trained(run_path)
    ref = reference_sample(model, run_path, reference)
    if str(current) in SPLITS and not Path(current).exists():  # another split of the run: a no-drift baseline
        cur = reference_sample(model, run_path, str(current))
    else:
        cur = current_sample(model, Path(current), model_id or run_path.name, since)
    report = compare(ref, cur, model, n_permutations, seed)
    report.update(run=str(run_path), model=model_id or run_path.name,
                  reference={"split": reference, "n": len(ref)}, current={"source": cur.source, "n": len(cur)})
    if out is not None:
        from dlforge.deploy.monitor_report import write_html

        report["html"] = str(write_html(report, ref, cur, Path(out)))
    return report


def compare(ref: Sample, cur: Sample, model: Any, n_permutations: int = 500, seed: int = 0) -> dict[str, Any]:
    """Per-feature drift, representation drift, prediction drift, warnings and the verdict of `cur` against `ref`."""
    from dlforge.eval import drift

    pre = _pre(model)
    report: dict[str, Any] = {"kind": pre.get("kind", "tabular"), "task": pre.get("task"), "features": {},
                              "representation": None, "prediction": None, "warnings": []}
    if len(cur) == 0:
        raise DataError(f"{cur.source}: no rows to compare with the reference")
    if len(cur) < MIN_SAMPLES:
        report["warnings"].append(
            f"only {len(cur)} current rows (fewer than {MIN_SAMPLES}): at this size the statistics are mostly noise "
            f"(with no drift at all, PSI on 10 bins averages about 9/n = {9 / len(cur):.2f}) and only large shifts "
            "are detected")
    if len(ref) < MIN_SAMPLES:
        report["warnings"].append(f"the reference has only {len(ref)} rows (fewer than {MIN_SAMPLES}): its "
                                  "statistics are noisy too; a larger split (train) is a steadier reference")
    for name, values in cur.columns.items():
        kind = next((s["kind"] for s in pre.get("features", []) if s["name"] == name), None)
        report["features"][name] = drift.column_drift(ref.columns[name], values,
                                                      categorical=True if kind == "categorical" else None)
    if ref.embeddings is not None and cur.embeddings is not None:
        report["representation"] = representation_drift(ref.embeddings, cur.embeddings, n_permutations, seed)
    if ref.predictions and cur.predictions:
        classes = pre.get("task") != "regression"
        report["prediction"] = drift.column_drift(ref.predictions, cur.predictions, categorical=True if classes
                                                  else None)
    flags = [f["drift"] for f in report["features"].values()]
    report["drifted_features"] = sum(flags)
    report["drifted_share"] = sum(flags) / len(flags) if flags else None
    data_drift = bool(flags) and report["drifted_share"] >= DRIFT_SHARE
    rep_drift = bool(report["representation"] and report["representation"]["drift"])
    report["drift"] = data_drift or rep_drift
    parts = []
    if flags:
        parts.append(f"{sum(flags)} of {len(flags)} features drifted (dataset drift from {DRIFT_SHARE:.0%})")
    if report["representation"] is not None:
        r = report["representation"]
        parts.append(f"representation MMD^2 {r['mmd2']:.4g}, p = {r['p_value']:.3g}")
    if report["prediction"] is not None:
        parts.append(f"predictions {'drifted' if report['prediction']['drift'] else 'stable'} "
                     f"({report['prediction']['test']})")
    report["verdict"] = ("DRIFT: " if report["drift"] else "no drift: ") + "; ".join(parts)
    return report


def representation_drift(ref: np.ndarray, cur: np.ndarray, n_permutations: int, seed: int) -> dict[str, Any]:
    """The MMD permutation test of the current embeddings against (a seeded sample of at most MAX_REFERENCE of) the
    reference's."""
    from dlforge.eval.drift import mmd_test

    if ref.shape[1] != cur.shape[1]:
        raise DataError(f"the current embeddings have {cur.shape[1]} dimensions, the reference's {ref.shape[1]}")
    if len(ref) > MAX_REFERENCE:
        ref = ref[np.random.default_rng(seed).choice(len(ref), MAX_REFERENCE, replace=False)]
    if len(cur) < 2:
        raise DataError("the MMD test needs at least 2 current embeddings")
    return mmd_test(ref, cur, n_permutations, seed)


# --- the reference: a split of the run's data -------------------------------------------------------------------


def reference_sample(model: Any, run_path: Path, split: str) -> Sample:
    """The run's `split`, rebuilt from its config: raw columns (tabular) or embeddings, and the model's predictions."""
    from dlforge.config import load_config
    from dlforge.data.dataset import build_data

    data = build_data(load_config(run_path / "config.yaml"))
    ds = data.split(split)
    if ds is None or len(ds) == 0:
        raise DlforgeError(f"--reference {split}: {run_path.name} has no {split} split")
    rows = range(len(ds))
    if _pre(model).get("kind", "tabular") != "tabular" and len(ds) > MAX_REFERENCE:  # embeddings: a sample is enough
        rows = np.sort(np.random.default_rng(0).choice(len(ds), MAX_REFERENCE, replace=False)).tolist()
    batch = {k: torch.stack([ds[i][k] for i in rows]) for k in ds[0] if k not in ("y", "labels")}
    return _sample_of_batch(model, batch, f"{run_path.name}: {split}")


def _sample_of_batch(model: Any, batch: dict[str, torch.Tensor], source: str) -> Sample:
    pre = _pre(model)
    kind = pre.get("kind", "tabular")
    sample = Sample(source=source)
    logits, feats = _forward(model, batch)
    sample.predictions = _predictions(pre, logits)
    if kind == "tabular":
        sample.columns = decode_columns(pre, batch["x"])
    elif kind in ("image", "bert_text"):
        sample.embeddings = feats
    else:
        raise DlforgeError(f"dlforge monitor: {kind} runs are not monitored (tabular, image and text classifiers are)")
    return sample


@torch.no_grad()
def _forward(model: Any, batch: dict[str, torch.Tensor], size: int = 256) -> tuple[torch.Tensor, np.ndarray]:
    """Logits and embeddings (penultimate features of a CNN, sentence embeddings of a BERT, else the class
    probabilities), `size` rows at a time."""
    logits, feats = [], []
    n = len(next(iter(batch.values())))
    for start in range(0, n, size):
        part = {k: v[start:start + size] for k, v in batch.items()}
        if callable(getattr(type(model), "features", None)) and hasattr(model, "head") and "x" in part:
            f = model.features(part["x"])
            out = model.head[1:](f)
        elif callable(getattr(model, "embed", None)) and "input_ids" in part:
            out = model(part).logits
            f = model.embed(part["input_ids"], part["attention_mask"], normalize=True)
        else:
            out = model(part).logits
            f = torch.softmax(out.float(), dim=-1) if out.ndim == 2 and out.shape[1] > 1 else out
        logits.append(out.float())
        feats.append(f.float().reshape(len(f), -1))
    return torch.cat(logits), torch.cat(feats).numpy()


def _predictions(pre: dict[str, Any], logits: torch.Tensor) -> list:
    """Predicted labels (names) or values (in the target's units)."""
    if pre.get("task") == "regression":
        return (logits.reshape(len(logits), -1)[:, 0] * pre.get("target_std", 1.0) + pre.get("target_mean", 0.0)
                ).tolist()
    names = pre.get("label_names")
    ids = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)  # one logit: a binary BCE model
    return [names[i] if names else str(i) for i in ids.tolist()]


def decode_columns(pre: dict[str, Any], x: torch.Tensor) -> dict[str, list]:
    """Encoded rows (N, F) back to raw columns: numbers unscaled (to float32's 6 digits), one-hot blocks to their
    category ("(unseen)" for an all-zero block: a category training never saw)."""
    x = x.double().numpy()
    out, j = {}, 0
    for spec in pre["features"]:
        if spec["kind"] == "numeric":
            out[spec["name"]] = _float32_digits(x[:, j] * spec["std"] + spec["mean"]).tolist()
            j += 1
            continue
        block = x[:, j:j + len(spec["categories"])]
        j += len(spec["categories"])
        out[spec["name"]] = [spec["categories"][int(b.argmax())] if b.max() > 0 else "(unseen)" for b in block]
    return out


def _float32_digits(values: np.ndarray) -> np.ndarray:
    """Unscaled values rounded to the 6 significant digits (of the column's largest) that float32 keeps, so that a
    0/1 column reads 0 and 1 again, not 1e-9 and 0.9999999."""
    largest = float(np.abs(values).max()) if values.size else 0.0
    if largest == 0 or not np.isfinite(largest):
        return values
    return np.round(values, max(0, 6 - int(np.ceil(np.log10(largest))))) + 0.0  # + 0.0: no -0.0


# --- the current sample: a request store or a file ---------------------------------------------------------------


def current_sample(model: Any, path: Path, model_id: str, since: float | None = None) -> Sample:
    """What `--current` names, prepared as the reference was."""
    if not path.exists():
        raise DataError(f"{path}: --current: no such file or folder")
    if path.is_file() and _head(path) == b"SQLite format 3\x00":
        return store_sample(model, path, model_id, since)
    pre = _pre(model)
    kind, suffix = pre.get("kind", "tabular"), path.suffix.lower()
    if suffix == ".npy":
        return Sample(embeddings=_embeddings_file(path), source=str(path))
    if kind == "tabular":
        from dlforge.data.tabular import prepare_inputs

        x, _, _ = prepare_inputs(pre, path, with_target=False)
        return _sample_of_batch(model, {"x": x}, str(path))
    if kind == "image":
        from dlforge.data.images import input_images, prepare_images

        return _sample_of_batch(model, {"x": prepare_images(pre, input_images(path))}, str(path))
    if kind == "bert_text":
        from dlforge.data.corpus import read_text_lines

        return _text_sample(model, [text for _, text in read_text_lines(path)], str(path))
    raise DlforgeError(f"dlforge monitor: {kind} runs are not monitored (tabular, image and text classifiers are)")


def store_sample(model: Any, path: Path, model_id: str, since: float | None) -> Sample:
    """The stored requests of `model_id` (since `since`): /v1/predict rows and their predictions, image features
    (features_b64), embeddings (embeddings_b64)."""
    from dlforge.deploy.serve.request_store import RequestStore

    records = RequestStore(path).rows(model=model_id, since=since)
    if not records:
        when = f" since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}" if since else ""
        raise DataError(f"{path}: no stored requests of model {model_id!r}{when} (the served id is the run folder's "
                        "name or the registry name; choose it with --model)")
    return records_sample(model, records, f"{path} ({len(records)} requests of {model_id})")


def records_sample(model: Any, records: list[dict[str, Any]], source: str) -> Sample:
    """The current sample in stored requests (`RequestStore.rows`); records cut for size are left out."""
    pre = _pre(model)
    rows, vectors, predictions, texts = [], [], [], []
    for r in records:
        if r["truncated"]:
            continue
        inputs, outputs = r["inputs"], r["outputs"]
        encoded = inputs.get("features_b64") or outputs.get("embeddings_b64") or []
        vectors += [np.frombuffer(base64.b64decode(v), dtype="<f4") for v in encoded]
        if r["route"] == "/v1/predict":
            predictions += [p.get("prediction") for p in outputs.get("predictions", [])]
            if pre.get("kind", "tabular") == "tabular":
                rows += inputs.get("inputs", [])
            elif pre.get("kind") == "bert_text":
                texts += inputs.get("inputs", [])
    if texts:
        sample = _text_sample(model, texts, source)
        sample.predictions = [p for p in predictions if p is not None] or sample.predictions
        return sample
    sample = Sample(source=source, predictions=[p for p in predictions if p is not None])
    if rows:
        with tempfile.TemporaryDirectory(prefix="dlforge-monitor-") as tmp:
            from dlforge.data.tabular import prepare_inputs

            table = Path(tmp) / "rows.csv"
            _write_csv(table, rows)
            x, _, _ = prepare_inputs(pre, table, with_target=False)
        sample.columns = decode_columns(pre, x)
    if not vectors and pre.get("kind") == "image" and pre.get("label_names"):  # no pooled features: probabilities
        names = [f"p({n})" for n in pre["label_names"]]
        vectors = [np.array([p[n] for n in names], dtype=np.float32) for r in records if r["route"] == "/v1/predict"
                   and not r["truncated"] for p in r["outputs"].get("predictions", []) if all(n in p for n in names)]
    if vectors:
        sample.embeddings = np.stack(vectors).astype(np.float32)
    if not sample.columns and sample.embeddings is None and not sample.predictions:
        raise DataError(f"{source}: the requests hold no inputs, features or predictions to compare")
    return sample


def _text_sample(model: Any, texts: list[str], source: str) -> Sample:
    from dlforge.llm.embed import embedder_of

    embedder = embedder_of(model, source)
    batch = dict(zip(("input_ids", "attention_mask"), _pad(embedder, texts), strict=True))
    sample = _sample_of_batch(model, batch, source)
    return sample


def _pad(embedder: Any, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """All texts in one padded batch (sorted by length: their order does not matter to a distribution)."""
    ids, masks = [], []
    for _, input_ids, mask in embedder.padded_batches(texts, len(texts)):
        ids.append(input_ids)
        masks.append(mask)
    return ids[0], masks[0]


def _embeddings_file(path: Path) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a .npy array ({exc})") from None
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.number) or len(a) < 2:
        raise DataError(f"{path}: expected embeddings as a 2-D numeric array (N, D) with N >= 2, got {a.shape}")
    return a.astype(np.float32)


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(16)


def _write_csv(path: Path, rows: list[dict]) -> None:
    import csv

    columns = list(dict.fromkeys(k for r in rows if isinstance(r, dict) for k in r))
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(r for r in rows if isinstance(r, dict))


def _pre(model: Any) -> dict[str, Any]:
    return (model.meta.get("extra") or {}).get("preprocessing.json") or {}
