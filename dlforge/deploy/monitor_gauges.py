"""Drift inside `dlforge serve --store FILE --monitor-every S`: the newest stored requests of each served classic model
against its run's reference split, every S seconds, as Prometheus gauges (`dlforge_drift_score{model, feature,
statistic}`, `dlforge_drift_detected{model, feature}`). The statistics and the report are `dlforge.deploy.monitor`'s.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from dlforge.deploy.monitor import Sample, compare, records_sample, reference_sample


class ServedDrift:
    """`dlforge serve --store FILE --monitor-every S`: the drift of each served classic model's newest stored
    requests (at most `window`) against its run's `reference` split, as (feature, statistic, value) scores and
    (feature, 0/1) flags for the Prometheus gauges. A model's reference is built once, at its first check."""

    def __init__(self, store: Any, reference: str = "train", window: int = 2000, n_permutations: int = 200):
        self.store, self.reference, self.window, self.n_permutations = store, reference, window, n_permutations
        self._references: dict[int, Sample | None] = {}

    def check(self, served: Any) -> dict[str, list] | None:
        """The gauges' values for one served model; None when it has no run to compare with or too few requests."""
        key = id(served.model)
        if key not in self._references:
            folder = Path(served.model.meta["folder"])
            run = folder.parent if folder.name == "model" else folder
            self._references[key] = (reference_sample(served.model, run, self.reference)
                                     if (run / "config.yaml").is_file() else None)
        ref = self._references[key]
        records = self.store.rows(model=served.id)[-self.window:]
        if ref is None or len(records) == 0:
            return None
        cur = records_sample(served.model, records, f"the stored requests of {served.id}")
        if len(cur) < 2:
            return None
        return gauges(compare(ref, cur, served.model, self.n_permutations))


def gauges(report: dict[str, Any]) -> dict[str, list]:
    """A report as gauge values: every statistic of every feature (a test's statistic and its p-value), the
    representation's MMD^2 and p-value ("embedding"), the predictions' ("prediction"); and the flags."""
    scores, detected = [], []
    columns = dict(report["features"])
    if report["prediction"] is not None:
        columns["prediction"] = report["prediction"]
    for name, f in columns.items():
        for statistic, value in f["statistics"].items():
            if isinstance(value, dict):
                scores += [(name, statistic, value["statistic"]), (name, f"{statistic}_p_value", value["p_value"])]
            else:
                scores.append((name, statistic, value))
        detected.append((name, int(f["drift"])))
    r = report["representation"]
    if r is not None:
        scores += [("embedding", "mmd2", r["mmd2"]), ("embedding", "mmd_p_value", r["p_value"])]
        detected.append(("embedding", int(r["drift"])))
    return {"scores": scores, "detected": detected}


async def watch_drift(served: dict[str, Any], options: Any, metrics: Any, log: Any) -> None:
    """Every `options.monitor_every` seconds, the drift of each classic model's stored requests, into
    `dlforge_drift_score` and `dlforge_drift_detected`; the work runs in a thread, off the event loop."""
    import asyncio

    checker = ServedDrift(options.store, options.monitor_reference)
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(options.monitor_every)
        for model_id, m in list(served.items()):
            if m.kind != "predict":
                continue
            try:
                values = await loop.run_in_executor(None, checker.check, m)
            except Exception as exc:  # noqa: BLE001 - a failed check keeps the server serving, and says why
                log(json.dumps({"time": round(time.time(), 3), "event": "drift check failed", "model": model_id,
                                "error": f"{type(exc).__name__}: {exc}"}))
                continue
            if values is None:
                continue
            for feature, statistic, value in values["scores"]:
                metrics.drift_score.labels(model_id, feature, statistic).set(value)
            for feature, flag in values["detected"]:
                metrics.drift_detected.labels(model_id, feature).set(flag)
