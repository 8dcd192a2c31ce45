"""Write docs/results/serve.md: `dlforge serve` against the reference libraries behind FastAPI (issue 17's bench).

    python scripts/results/serve.py generate [--from-json FILE]   # bench/serve_http.py generate: char GPT streaming
    python scripts/results/serve.py embed [--from-json FILE]      # bench/serve_http.py embed: MiniLM embeddings
    python scripts/results/serve.py                               # re-render from the records only

Records live in docs/results/serve.json; `--from-json` records a saved output of the benchmark instead of running it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dlforge.cli.main import run_script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for resultstools: scripts/README.md
import resultstools  # noqa: E402

RECORDS = resultstools.RESULTS / "serve.json"
OUT = resultstools.RESULTS / "serve.md"


def render(records: dict) -> str:
    lines = ["# Results: serving", "", "Written by `scripts/results/serve.py`; do not edit by hand.", "",
             f"Machine: {records.get('machine', resultstools.machine())}.", ""]
    g = records.get("generate")
    if g:
        lines += ["## Char GPT, streamed: `dlforge serve` against transformers' pipeline", "",
                  "`python bench/serve_http.py generate --json`: the same char GPT weights (a `gpt` run with the",
                  "`gpt-shakespeare-char` recipe, exported to GPT-2 format for transformers) behind each server,",
                  f"greedy, {g['tokens']} new tokens from \"ROMEO:\", streamed over loopback HTTP;",
                  f"{g['rounds']} paired rounds, the order alternating. Tokens per second: all clients' tokens",
                  "over the round's wall time; time to first token: the median over the round's clients. Ratios:",
                  "dlforge over the pipeline (for time to first token, the pipeline's time over dlforge's); above 1,",
                  "dlforge is better.", "",
                  "| clients | dlforge tokens/s | pipeline tokens/s | ratio median (min-max) | target | "
                  "dlforge TTFT ms | pipeline TTFT ms |", "|---|---|---|---|---|---|---|"]
        for c, row in g["clients"].items():
            target = ">= 1.5" if c == "4" else "reported"
            lines.append(f"| {c} | {row['dlforge_tokens_per_s']:.0f} | {row['baseline_tokens_per_s']:.0f} | "
                         f"{row['tokens_per_s_ratio']:.2f} ({row['tokens_per_s_ratio_min']:.2f}-"
                         f"{row['tokens_per_s_ratio_max']:.2f}) | {target} | {row['dlforge_ttft_ms']:.1f} | "
                         f"{row['baseline_ttft_ms']:.1f} |")
        lines += ["", "dlforge runs the concurrent streams as one left-padded batch (requests sampled alike share a",
                  "forward per token); the pipeline runs each request on its own thread, so 4 clients split 2 cores.",
                  ""]
    e = records.get("embed")
    if e:
        lines += ["## MiniLM embeddings: `dlforge serve` against sentence-transformers", "",
                  f"`python bench/serve_http.py embed --json`: {e['clients']} clients at once, each sending "
                  f"{e['requests_each']} requests of one",
                  "Debian FAQ paragraph to `/v1/embeddings` (float); the baseline calls sentence-transformers'",
                  f"`encode` per request in FastAPI's thread pool. {e['rounds']} paired rounds.", "",
                  "| figure | dlforge | sentence-transformers | ratio median (min-max) | target |",
                  "|---|---|---|---|---|",
                  f"| requests/s | {e['dlforge_requests_per_s']:.1f} | {e['baseline_requests_per_s']:.1f} | "
                  f"{e['ratio']:.2f} ({e['ratio_min']:.2f}-{e['ratio_max']:.2f}) | >= 1.0 |", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", nargs="?", choices=["generate", "embed"])
    ap.add_argument("--from-json", help="record this saved output of the benchmark instead of running it")
    args = ap.parse_args()
    records = resultstools.load(RECORDS, {})
    if args.action:
        records[args.action] = (json.loads(Path(args.from_json).read_text()) if args.from_json
                                else resultstools.run_bench("serve_http", [args.action]))
    resultstools.finish(RECORDS, OUT, records, render)


if __name__ == "__main__":
    run_script(main)
