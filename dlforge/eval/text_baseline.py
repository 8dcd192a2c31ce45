"""The classical baseline for text classification: TF-IDF features and logistic regression (scikit-learn).

    result = tfidf_logreg(train_texts, train_labels, val_texts, val_labels, test_texts, test_labels)
    result["test"]["f1"]   # macro-F1 on the test texts

Word unigrams and bigrams, sublinear term frequency, terms in at least 2 training texts; multinomial logistic
regression whose inverse regularization strength C is chosen among `C_GRID` by macro-F1 on the validation texts, then
refitted on the training texts alone (as the neural models train on the training split alone). Metrics per split:
accuracy and macro precision, recall and F1, named as dlforge's classification metrics are.

`genre_comparison` puts it beside dlforge runs of the Shakespeare genre task, after checking that every run was
evaluated on the very passages the baseline is (`passages_sha256`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dlforge.errors import DlforgeError

C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def tfidf_logreg(train_texts: list[str], train_labels: list[int], val_texts: list[str], val_labels: list[int],
                 test_texts: list[str], test_labels: list[int], seed: int = 0) -> dict[str, Any]:
    """Fit TF-IDF + logistic regression on train, pick C on val; metrics on every split, the chosen C."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    x_train = vectorizer.fit_transform(train_texts)
    x_val, x_test = vectorizer.transform(val_texts), vectorizer.transform(test_texts)

    def fit(c: float) -> LogisticRegression:
        return LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x_train, train_labels)

    scores = {c: classification_metrics(val_labels, fit(c).predict(x_val))["f1"] for c in C_GRID}
    best = max(C_GRID, key=lambda c: (scores[c], -c))  # ties: the stronger regularization
    model = fit(best)
    result: dict[str, Any] = {"model": "tfidf_logreg", "C": best, "val_f1_by_C": scores,
                              "features": len(vectorizer.vocabulary_)}
    for split, x, y in (("train", x_train, train_labels), ("val", x_val, val_labels), ("test", x_test, test_labels)):
        result[split] = classification_metrics(y, model.predict(x))
    return result


def classification_metrics(y_true: list[int], y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro precision, recall and F1 (the mean over the labels present in y_true or y_pred)."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    return {"accuracy": float(accuracy_score(y_true, y_pred)), "precision": float(p), "recall": float(r),
            "f1": float(f)}


def genre_comparison(runs: list[str], runs_dir: str | Path = "runs", preset: str = "genre-minilm") -> dict[str, Any]:
    """The TF-IDF baseline on the genre task's passages (those of `preset`'s data config), beside the test metrics
    of each run in `runs`. A run evaluated on other passages (or on a `data.limit` of them) is an error."""
    from dlforge.config import load_config
    from dlforge.data.genre import GenreConfig, genre_passages, passages_sha256
    from dlforge.runs.rundir import resolve_run
    from dlforge.safe_yaml import read_yaml

    data_cfg = GenreConfig.model_validate(load_config(preset).data)
    data, names, plays = genre_passages(data_cfg)
    fingerprint = passages_sha256(data)
    rows = []
    for ref in runs:  # checked before the baseline is fitted: a wrong run fails fast
        run = resolve_run(ref, runs_dir)
        info = _read(run / "model" / "data_info.json")
        if info.get("passages_sha256") != fingerprint:
            raise DlforgeError(f"{run}: was not evaluated on the passages of {preset!r} (passages_sha256 differs); "
                               "compare runs of the same genre data")
        limit = read_yaml(run / "config.yaml").get("data", {}).get("limit")
        if limit is not None:
            raise DlforgeError(f"{run}: ran with data.limit={limit}, on part of the passages only")
        test = _read(run / "eval.json").get("test", {})
        rows.append({"name": run.name, **{f"test/{k}": test.get(k) for k in ("accuracy", "precision", "recall", "f1")}})
    baseline = tfidf_logreg(data["train"]["texts"], data["train"]["labels"], data["val"]["texts"],
                            data["val"]["labels"], data["test"]["texts"], data["test"]["labels"])
    rows.insert(0, {"name": "tfidf_logreg", **{f"test/{k}": v for k, v in baseline["test"].items()}})
    return {"labels": names, "plays": plays, "passages": {s: len(data[s]["texts"]) for s in data},
            "passages_sha256": fingerprint, "baseline": baseline, "rows": rows}


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DlforgeError(f"{path}: not found (did the run finish?)")
    return json.loads(path.read_text(encoding="utf-8"))
