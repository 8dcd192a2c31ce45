"""Write docs/results/deploy.md: the deployment figures of issue 16 measured so far (2 CPU cores).

    python scripts/results/deploy.py bench       # bench/onnx_latency.py: onnxruntime against PyTorch eager
    python scripts/results/deploy.py             # re-render from the records only

Records live in docs/results/deploy.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dlforge.cli.main import run_script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for resultstools: scripts/README.md
import resultstools  # noqa: E402

RECORDS = resultstools.RESULTS / "deploy.json"
OUT = resultstools.RESULTS / "deploy.md"
NAMES = {"resnet20": "Fashion-MNIST ResNet-20 (1x28x28)", "minilm": "MiniLM-L6 (128 tokens)",
         "gpt": "char GPT (128 tokens)"}


def render(records: dict) -> str:
    lines = ["# Results: deployment", "",
             "Written by `scripts/results/deploy.py` (`make results-deploy`); do not edit by hand.", "",
             f"Machine: {records.get('machine', resultstools.machine())}.", "",
             "## ONNX in onnxruntime against PyTorch eager", "",
             "`python bench/onnx_latency.py --json`: each model exported by `dlforge.deploy.onnx_export` (checked within",
             "1e-4 of PyTorch first), then onnxruntime (fp32, CPUExecutionProvider) and PyTorch eager (eval,",
             "inference_mode) timed in paired, interleaved rounds in one process. The ratio is PyTorch's time over",
             "onnxruntime's (above 1: onnxruntime is faster; target >= 1); median, min and max over the rounds.", "",
             "| model | batch | PyTorch ms | onnxruntime ms | ratio median | min | max |", "|---|---|---|---|---|---|---|"]
    bench = records.get("onnx_latency", {})
    for name, label in NAMES.items():
        for batch, r in bench.get(name, {}).items():
            lines.append(f"| {label} | {batch.removeprefix('batch ')} | {r['torch_ms']:.2f} | {r['onnxruntime_ms']:.2f} "
                         f"| {r['ratio_median']:.3f} | {r['ratio_min']:.3f} | {r['ratio_max']:.3f} |")
    if bench:
        lines += ["", f"{bench.get('threads', '?')} threads for PyTorch; onnxruntime's default pool (one thread a core)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", nargs="?", choices=["bench"])
    ap.add_argument("--from-json", help="bench: record this saved output of bench/onnx_latency.py --json instead")
    args = ap.parse_args()
    records = resultstools.load(RECORDS, {})
    if args.action == "bench":
        records["onnx_latency"] = (json.loads(Path(args.from_json).read_text()) if args.from_json
                                   else resultstools.run_bench("onnx_latency"))
    records["machine"] = resultstools.machine()
    resultstools.save(RECORDS, records)
    OUT.write_text(render(records))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    run_script(main)  # a DlforgeError: one line and exit code 2, as in the CLI
