"""The HTML page of `dlforge monitor --out report.html`: one self-contained file (inline PNG figures, inline CSS, no
link to anything outside it), readable offline.

    write_html(report, reference_sample, current_sample, Path("drift.html"))

It shows the verdict and warnings, a table of the features (every statistic, the one Evidently's rule picks, drift
yes/no) with the reference and current histograms of each, the representation test with a histogram of both samples
along the reference's first principal component, and the predictions' distribution side by side.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

STYLE = """body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}
td,th{border:1px solid #bbb;padding:.25em .5em;text-align:right}th{background:#eee}td:first-child{text-align:left}
.drift{color:#b00;font-weight:bold}.ok{color:#070}.warn{background:#fff3cd;padding:.5em}img{max-width:32em}"""


def write_html(report: dict[str, Any], ref: Any, cur: Any, path: Path) -> Path:
    """Write the page (atomically) and return its path."""
    from dlforge.paths import output_file
    from dlforge.runs.rundir import atomic_write_text

    path = output_file(path, "the HTML report (--out)", suffixes=(".html", ".htm"), parents=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, render(report, ref, cur))
    return path


def render(report: dict[str, Any], ref: Any, cur: Any) -> str:
    """The page's HTML."""
    e = html.escape
    verdict_class = "drift" if report["drift"] else "ok"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Drift report: {e(report['model'])}</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>Drift report: {e(report['model'])}</h1>",
             f"<p>Run <code>{e(report['run'])}</code>; reference: its {e(report['reference']['split'])} split "
             f"({report['reference']['n']} rows); current: {e(report['current']['source'])} "
             f"({report['current']['n']} rows).</p>",
             f"<p class='{verdict_class}'>{e(report['verdict'])}</p>"]
    parts += [f"<p class='warn'>warning: {e(w)}</p>" for w in report["warnings"]]
    if report["features"]:
        parts.append("<h2>Features</h2><table><tr><th>feature</th><th>kind</th><th>test (Evidently's rule)</th>"
                     "<th>score (p or distance)</th><th>drift</th><th>other statistics</th>"
                     "<th>reference / current</th></tr>")
        for name, f in report["features"].items():
            others = "; ".join(f"{k} {_fmt(v)}" for k, v in f["statistics"].items() if k != f["test"])
            figure = _histogram(ref.columns[name], cur.columns[name], f["kind"] == "categorical", name)
            parts.append(f"<tr><td>{e(name)}</td><td>{f['kind']}</td><td>{f['test']}</td><td>{f['score']:.4g}</td>"
                         f"<td class='{'drift' if f['drift'] else 'ok'}'>{'yes' if f['drift'] else 'no'}</td>"
                         f"<td>{e(others)}</td><td>{figure}</td></tr>")
        parts.append(f"</table><p>{report['drifted_features']} of {len(report['features'])} features drifted "
                     f"({report['drifted_share']:.0%}).</p>")
    r = report["representation"]
    if r is not None:
        parts.append(f"<h2>Representation</h2><p>MMD<sup>2</sup> {r['mmd2']:.4g} (Gaussian kernel, sigma "
                     f"{r['sigma']:.4g}), permutation p = {r['p_value']:.4g} over {r['n_permutations']} "
                     f"permutations: <span class='{'drift' if r['drift'] else 'ok'}'>"
                     f"{'drift' if r['drift'] else 'no drift'}</span> at alpha {r['threshold']}.</p>")
        a, b = _first_component(ref.embeddings, cur.embeddings)
        parts.append(_histogram(a, b, False, "along the reference's first principal component"))
    p = report["prediction"]
    if p is not None:
        parts.append(f"<h2>Predictions</h2><p>{p['test']}: {p['score']:.4g} (drift "
                     f"{'yes' if p['drift'] else 'no'}); "
                     + "; ".join(f"{k} {_fmt(v)}" for k, v in p["statistics"].items()) + "</p>")
        parts.append(_histogram(ref.predictions, cur.predictions, p["kind"] == "categorical", "predictions"))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return f"{value['statistic']:.4g} (p {value['p_value']:.3g})"
    return f"{value:.4g}"


def _first_component(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    center = ref.mean(0)
    _, _, vt = np.linalg.svd(ref - center, full_matrices=False)
    return (ref - center) @ vt[0], (cur - center) @ vt[0]


def _histogram(ref: Any, cur: Any, categorical: bool, title: str) -> str:
    """An inline PNG (an <img> with a data: URL) of the two samples' distributions, as shares."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2, 2.4), dpi=80)
    ax = fig.add_subplot()
    if categorical:
        labels = sorted({str(v) for v in ref} | {str(v) for v in cur})
        x = np.arange(len(labels))
        for offset, values, name in ((-0.2, ref, "reference"), (0.2, cur, "current")):
            counts = np.array([sum(str(v) == label for v in values) for label in labels], dtype=float)
            ax.bar(x + offset, counts / max(counts.sum(), 1), width=0.4, label=name)
        ax.set_xticks(x, labels, rotation=30 if len(labels) > 4 else 0, fontsize=7)
    else:
        a, b = np.asarray(ref, dtype=float), np.asarray(cur, dtype=float)
        edges = np.histogram_bin_edges(np.concatenate([a, b]), bins=20)
        ax.hist(a, edges, weights=np.full(len(a), 1 / len(a)), alpha=0.6, label="reference")
        ax.hist(b, edges, weights=np.full(len(b), 1 / len(b)), alpha=0.6, label="current")
    ax.set_title(title, fontsize=8)
    ax.set_ylabel("share", fontsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return f"<img alt='{html.escape(title)}' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"
