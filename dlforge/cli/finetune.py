"""`dlforge lm perplexity | merge-lora`: language models measured on corpora; LoRA adapters merged into their base.

`register(lm_app)` adds the commands to the `lm` command group."""

from __future__ import annotations

import typer

from dlforge.cli.output import emit_json, table


def register(lm_app: typer.Typer) -> None:
    lm_app.command("perplexity")(perplexity_cmd)
    lm_app.command("merge-lora")(merge_lora_cmd)


def perplexity_cmd(
    runs: list[str] = typer.Argument(..., help="runs (folder, name, latest, latest:NAME) or model folders"),
    corpus: list[str] = typer.Option(..., "--corpus", help="shakespeare, bible_web, ... or a text file / folder "
                                                            "(repeatable)"),
    split: str = typer.Option("val", "--split", help="train, val or test"),
    context: int = typer.Option(None, "--context", min=1, help="tokens per window (default: the model's training "
                                                                 "context)"),
    as_json: bool = typer.Option(False, "--json", help="print the results as JSON"),
) -> None:
    """Perplexity per token and bits per character of each model on each corpus' split, on side-by-side windows."""
    from dlforge.llm.perplexity import perplexity_report

    report = perplexity_report(runs, corpus, split, context)
    if as_json:
        emit_json(report)
        return
    rows = [[r["run"], r["corpus"], r["tokens"], r["loss"], r["perplexity"], r["bits_per_char"]]
            for r in report["results"]]
    table(f"{split} split", ["model", "corpus", "tokens", "loss", "perplexity", "bits/char"], rows)


def merge_lora_cmd(
    base: str = typer.Argument(..., help="the base model: a run (folder, name, latest:NAME) or model folder"),
    adapter: str = typer.Argument(..., help="the adapter folder (adapter_config.json, adapter_model.safetensors); "
                                            "a LoRA run's is RUN/adapter"),
    out: str = typer.Option(None, "--out", help="the model folder to write (default: runs/merged/ADAPTER'S RUN)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace --out if it exists"),
    as_json: bool = typer.Option(False, "--json", help="print {model_dir, merged} as JSON"),
) -> None:
    """Merge a LoRA adapter into its base model (W + alpha/r B A): a plain model folder that generates, evaluates
    and exports like any other. An adapter trained over another base is refused."""
    from dlforge.paths import existing_dir, refuse_existing

    existing_dir(adapter, "a LoRA adapter folder (adapter_config.json, adapter_model.safetensors)")
    if out is not None:  # the default under runs/ is checked where it is named
        refuse_existing(out, overwrite)
    from dlforge.llm.lora import merge_adapter, read_adapter

    config = read_adapter(adapter)[0]
    path = merge_adapter(base, adapter, out, overwrite)
    report = {"model_dir": str(path), "rank": config.rank, "alpha": config.alpha, "targets": config.targets}
    if as_json:
        emit_json(report)
    else:
        print(f"merged rank-{config.rank} adapter into {base} -> {path}")
