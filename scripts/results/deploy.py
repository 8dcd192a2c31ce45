"""Write docs/results/deploy.md: the deployment figures of issue 16 measured so far (2 CPU cores).

    python scripts/results/deploy.py bench                          # bench/onnx_latency.py: onnxruntime vs PyTorch
    python scripts/results/deploy.py quantize RUN [--mode static]   # dlforge quantize RUN: int8 against fp32
    python scripts/results/deploy.py minilm                         # bench/minilm_int8.py: MiniLM embeddings in int8
    python scripts/results/deploy.py prune RUN -- --sparsity 0.9 ... # dlforge prune RUN ... --json: pruned vs source
    python scripts/results/deploy.py sweep RUN -- --sparsity 0.5,0.8,0.9 ...  # a sweep: the curve PNG beside the page
    python scripts/results/deploy.py rag                            # the Debian FAQ indexed with fp32 and int8 MiniLM
    python scripts/results/deploy.py                                # re-render from the records only

`--from-json FILE` records a saved output (of the benchmark, or of `dlforge quantize|prune RUN --json`)
instead of measuring again. Records live in docs/results/deploy.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from dlforge.cli.main import run_script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for resultstools: scripts/README.md
import resultstools  # noqa: E402

RECORDS = resultstools.RESULTS / "deploy.json"
SWEEP_PNG = resultstools.RESULTS / "deploy-prune-sweep.png"
OUT = resultstools.RESULTS / "deploy.md"
NAMES = {"resnet20": "Fashion-MNIST ResNet-20 (1x28x28)", "minilm": "MiniLM-L6 (128 tokens)",
         "gpt": "char GPT (128 tokens)"}


def _latency_table(bench: dict) -> list[str]:
    lines = ["| model | batch | PyTorch ms | onnxruntime ms | ratio median | min | max |",
             "|---|---|---|---|---|---|---|"]
    for name, label in NAMES.items():
        for batch, r in bench.get(name, {}).items():
            lines.append(f"| {label} | {batch.removeprefix('batch ')} | {r['torch_ms']:.2f} "
                         f"| {r['onnxruntime_ms']:.2f} | {r['ratio_median']:.3f} | {r['ratio_min']:.3f} "
                         f"| {r['ratio_max']:.3f} |")
    threads = bench.get("threads", "?")
    return [*lines, "", f"{threads} threads for PyTorch; onnxruntime's default pool (one thread a core)."]


def _quantize_rows(runs: dict) -> list[str]:
    lines = ["| run | mode | test accuracy fp32 -> int8 | file fp32 -> int8 | batch | fp32 ms | int8 ms "
             "| int8 speedup (min, max) |", "|---|---|---|---|---|---|---|---|"]
    for key, r in runs.items():
        acc = f"{r['metrics']['fp32']['accuracy']:.4f} -> {r['metrics']['int8']['accuracy']:.4f}"
        mb = r["size"]
        size = f"{mb['fp32_bytes'] / 1e6:.2f} -> {mb['int8_bytes'] / 1e6:.2f} MB ({mb['ratio']:.2f}x)"
        for row in r["latency"].values():
            lines.append(f"| {key} | {r['mode']} | {acc} | {size} | {row['batch']} | {row['fp32_ms']:.2f} "
                         f"| {row['int8_ms']:.2f} | {row['speedup_median']:.2f} ({row['speedup_min']:.2f}, "
                         f"{row['speedup_max']:.2f}) |")
    notes = [f"- {key}: {note}" for key, r in runs.items() for note in r.get("notes", [])]
    return [*lines, "", *(notes or ["No int8 model was slower than its fp32 export."])]


def _prune_rows(runs: dict) -> list[str]:
    lines = ["| run | pruned | fine-tuning | test accuracy before -> after | parameters (nonzero) | file (sparse) "
             "| batch 1 / 64 speedup (min-max) |", "|---|---|---|---|---|---|---|"]
    for key, r in runs.items():
        kind = f"{r['sparsity']:.0%} of each group's channels" if r["structured"] else \
            f"{r['sparsity']:.0%} of the weights ({r['scope']}, {r['schedule']})"
        f = r["finetune"] or {}
        tune = f"{f.get('steps', '?')} steps, {f.get('seconds', 0) / 60:.1f} min"
        before, after = r["metrics"]["before"]["accuracy"], r["metrics"]["after"]["accuracy"]
        acc = f"{before:.4f} -> {after:.4f} ({100 * (after - before):+.2f} pt)"
        p, b = r["params"], r["file_bytes"]
        params = f"{p['before']['nonzero']:,} -> {p['after']['nonzero']:,}"
        size = f"{b['before'] / 1e6:.2f} -> {b['after'] / 1e6:.2f} MB ({b['after_sparse_csr'] / 1e6:.2f})"
        speed = " / ".join(f"{row['speedup_median']:.2f}x ({row['speedup_min']:.2f}-{row['speedup_max']:.2f})"
                           for row in r["latency"].values())
        lines.append(f"| {key} | {kind} | {tune} | {acc} | {params} | {size} | {speed} |")
    notes = sorted({note for r in runs.values() for note in r.get("notes", [])})
    return [*lines, "", *(f"- {note}" for note in notes)]


def rag_int8() -> dict:
    """The Debian FAQ indexed with the fp32 and the int8 embedder into fresh indexes, and each evaluated on the 120
    FAQ questions, plain and blanked (each question's own heading removed from the documents)."""
    import tempfile

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        dev = Path(tmp) / "dev"
        subprocess_json = resultstools.run_json
        subprocess.run([sys.executable, str(resultstools.ROOT / "scripts" / "datasets" / "debian_faq_devset.py"),
                        str(dev)], check=True, capture_output=True)
        for precision in ("fp32", "int8"):
            row = out[precision] = {}
            for variant, folder, questions in (("plain", "/usr/share/doc/debian/FAQ", dev / "questions.jsonl"),
                                               ("blanked", dev / "blanked", dev / "questions-blanked.jsonl")):
                db = Path(tmp) / f"{precision}-{variant}.db"
                index = subprocess_json(["-m", "dlforge", "rag", "index", str(folder), "--db", str(db), "--embedder",
                                         precision, "--progress-every", "0", "--json"])
                evaluated = subprocess_json(["-m", "dlforge", "rag", "eval", str(questions), "--db", str(db),
                                             "--mode", "all", "--json"])
                row[variant] = {"chunks": index["chunks_added"], "chunks_per_s": index["chunks_per_s"],
                                "model_seconds": index["model_seconds"],
                                "recall@5": {m: r["recall@5"] for m, r in evaluated["modes"].items()}}
    return out


def _rag_rows(r: dict) -> list[str]:
    lines = ["| embedder | FAQ | chunks/s indexing | recall@5 dense | keyword | hybrid |", "|---|---|---|---|---|---|"]
    for precision, variants in r.items():
        for variant, v in variants.items():
            rec = v["recall@5"]
            lines.append(f"| {precision} | {variant} | {v['chunks_per_s']:.1f} ({v['chunks']} chunks) "
                         f"| {rec.get('dense', 0):.3f} | {rec.get('keyword', 0):.3f} | {rec.get('hybrid', 0):.3f} |")
    return lines


def render(records: dict) -> str:
    lines = ["# Results: deployment", "",
             "Written by `scripts/results/deploy.py` (`make results-deploy`); do not edit by hand.", "",
             f"Machine: {records.get('machine', resultstools.machine())}.", ""]
    if records.get("onnx_latency"):
        lines += ["## ONNX in onnxruntime against PyTorch eager", "",
                  "`python bench/onnx_latency.py --json`: each model exported by `dlforge.deploy.onnx_export` (checked",
                  "within 1e-4 of PyTorch first), then onnxruntime (fp32, CPUExecutionProvider) and PyTorch eager",
                  "(eval, inference_mode) timed in paired, interleaved rounds in one process. The ratio is PyTorch's",
                  "time over onnxruntime's (above 1: onnxruntime is faster; target >= 1); median, min and max over the",
                  "rounds.", "", *_latency_table(records["onnx_latency"]), ""]
    if records.get("quantize"):
        lines += ["## int8", "",
                  "`dlforge quantize RUN --mode MODE --json` on a finished run's export: onnxruntime's quantizer, then",
                  "the test split through the fp32 and the int8 graph, the file sizes, and the latency of each in",
                  "onnxruntime at batch 1 and 64 in paired rounds (speedup: fp32 time over int8 time).", "",
                  *_quantize_rows(records["quantize"]), ""]
    if records.get("prune"):
        lines += ["## Pruning", "",
                  "`dlforge prune RUN --sparsity S [--structured] --finetune-steps N --json`: the pruned run",
                  "fine-tuned by the Trainer from the source's weights, then both models' test metrics, parameters,",
                  "file (and its size stored sparse: CSR) and PyTorch latency at batch 1 and 64 in paired rounds",
                  "(speedup: source time over pruned time). Fine-tuning time is the training loop's.", "",
                  *_prune_rows(records["prune"]), ""]
    if records.get("rag_int8"):
        lines += ["## The RAG embedder in int8", "",
                  "`dlforge rag index /usr/share/doc/debian/FAQ --db DB --embedder fp32|int8`, each into a fresh",
                  "index, then `dlforge rag eval` on the 120 FAQ questions (`scripts/datasets/debian_faq_devset.py`),",
                  "plain and blanked. Indexing speed counts reading, chunking, embedding and writing (the int8 graph's",
                  "one-time export and quantization is in the model's loading time, not in it).", "",
                  *_rag_rows(records["rag_int8"]), ""]
    sweep = records.get("prune_sweep")
    if sweep:
        first = sweep[0]
        lines += [f"### Sparsity against accuracy: {first['source']}", "",
                  f"![sweep]({SWEEP_PNG.name})", "",
                  "| sparsity | test accuracy | nonzero parameters | fine-tuning |", "|---|---|---|---|",
                  f"| 0 (source) | {first['metrics']['before']['accuracy']:.4f} "
                  f"| {first['params']['before']['nonzero']:,} | |",
                  *(f"| {r['sparsity']:.0%} ({r['scope']}, {r['schedule']}) | {r['metrics']['after']['accuracy']:.4f} "
                    f"| {r['params']['after']['nonzero']:,} | {r['finetune']['steps']} steps, "
                    f"{r['finetune']['seconds'] / 60:.1f} min |" for r in sweep), ""]
    m = records.get("minilm_int8")
    if m:
        lines += ["## MiniLM sentence embeddings in int8", "",
                  "`python bench/minilm_int8.py --json`: all-MiniLM-L6-v2 (the RAG embedder) exported, then",
                  "onnxruntime's dynamic int8 as `rag index --embedder int8` builds it (per-channel weights; one",
                  "MatMul kept fp32, `dlforge.deploy.quantize.least_harmed`), on the first "
                  f"{m['passages']} paragraphs of the Debian FAQ.", "", *_kept_line(m.get("kept_fp32")),
                  "| figure | measured | target |", "|---|---|---|",
                  f"| cosine int8 to fp32, mean (min) | {m['cosine_mean']:.4f} ({m['cosine_min']:.4f}) | >= 0.99 |",
                  f"| file fp32 -> int8 | {m['fp32_bytes'] / 1e6:.1f} -> {m['int8_bytes'] / 1e6:.1f} MB "
                  f"({m['size_ratio']:.2f}x) | >= 3.5x |",
                  f"| {m['batch']}, fp32 -> int8 | {m['fp32_ms']:.0f} -> {m['int8_ms']:.0f} ms, "
                  f"{m['speedup_median']:.2f}x ({m['speedup_min']:.2f}-{m['speedup_max']:.2f}, {m['rounds']} rounds) "
                  f"| >= 1.5x |", ""]
    return "\n".join(lines)


def _kept_line(kept: dict | None) -> list[str]:
    """Which MatMul stayed fp32, and the output error on the calibration text with each candidate kept."""
    if not kept:
        return []
    tried = ", ".join(f"{node} {err:.4f}" for node, err in kept["errors"].items())
    return [f"Kept fp32: {kept['keep']} (relative squared error of the embeddings on the calibration text: "
            f"all int8 {kept['all_int8']:.4f}; with one kept: {tried}).", ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", nargs="?", choices=["bench", "quantize", "minilm", "prune", "sweep", "rag"])
    ap.add_argument("run", nargs="?", help="quantize: the run (its preset names the row)")
    ap.add_argument("--mode", default="static", help="quantize: dynamic or static")
    ap.add_argument("--from-json", help="record this saved output instead of measuring again")
    args, rest = ap.parse_known_args()  # prune: the rest goes to `dlforge prune`
    records = resultstools.load(RECORDS, {})
    saved = json.loads(Path(args.from_json).read_text()) if args.from_json else None
    if args.action == "bench":
        records["onnx_latency"] = saved or resultstools.run_bench("onnx_latency")
    elif args.action == "minilm":
        records["minilm_int8"] = saved or resultstools.run_bench("minilm_int8")
    elif args.action == "quantize":
        if not args.run and saved is None:
            raise SystemExit("quantize: name the run, or give --from-json")
        report = saved or resultstools.run_json(["-m", "dlforge", "quantize", args.run, "--mode", args.mode, "--json"])
        preset = report["run"].rsplit("-", 2)[0]  # NAME-YYYYMMDD-HHMMSS
        records.setdefault("quantize", {})[f"{preset} ({report['mode']})"] = report
    elif args.action == "sweep":
        if not args.run and saved is None:
            raise SystemExit("sweep: name the run, or give --from-json")
        reports = saved or resultstools.run_json(["-m", "dlforge", "prune", args.run, *rest, "--json"])
        records["prune_sweep"] = reports
        from dlforge.deploy.prune_report import sweep_plot

        sweep_plot(reports, "accuracy", SWEEP_PNG)
    elif args.action == "rag":
        records["rag_int8"] = saved or rag_int8()
    elif args.action == "prune":
        if not args.run and saved is None:
            raise SystemExit("prune: name the run, or give --from-json")
        reports = saved or resultstools.run_json(["-m", "dlforge", "prune", args.run, *rest, "--json"])
        for report in reports:
            records.setdefault("prune", {})[report["run"].rsplit("-", 2)[0]] = report
    resultstools.finish(RECORDS, OUT, records, render)


if __name__ == "__main__":
    run_script(main)  # a DlforgeError: one line and exit code 2, as in the CLI
