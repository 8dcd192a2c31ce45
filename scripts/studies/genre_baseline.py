"""The Shakespeare genre task: the TF-IDF + logistic-regression baseline beside dlforge runs, on the same passages.

    python scripts/studies/genre_baseline.py                          # the baseline alone
    python scripts/studies/genre_baseline.py latest:genre-minilm latest:genre-bert-small [--json]

Builds the passages of the `genre-minilm` preset's data section (the genre presets share them: same words per
passage, same split by play), fits the baseline on the training passages with C chosen on the validation passages,
and prints macro-F1 and accuracy on the test passages for it and for each run's final model (its eval.json). A run
evaluated on other passages, or on a `data.limit` of them, is refused (see `dlforge.eval.text_baseline`).
"""

from __future__ import annotations

import argparse
import json

from dlforge.cli.main import run_script
from dlforge.eval.text_baseline import genre_comparison


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", help="runs of the genre task (folder, name or latest:NAME)")
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--preset", default="genre-minilm", help="whose data section defines the passages")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = genre_comparison(args.runs, runs_dir=args.runs_dir, preset=args.preset)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    plays, passages = result["plays"], result["passages"]
    print(f"labels {', '.join(result['labels'])}; passages train {passages['train']} ({len(plays['train'])} plays), "
          f"val {passages['val']} ({len(plays['val'])}), test {passages['test']} ({len(plays['test'])} plays: "
          f"{', '.join(plays['test'])})")
    print(f"baseline: TF-IDF (1-2 grams, {result['baseline']['features']} features) + logistic regression, "
          f"C={result['baseline']['C']} chosen on val")
    print(f"{'model':<44} {'test macro-F1':>13} {'test accuracy':>13}")
    for row in result["rows"]:
        print(f"{row['name']:<44} {row['test/f1']:>13.4f} {row['test/accuracy']:>13.4f}")


if __name__ == "__main__":
    run_script(main)  # a DlforgeError: one line and exit code 2, as in the CLI
