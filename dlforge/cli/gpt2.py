"""`dlforge lm import-gpt2 | export-gpt2`: GPT-2 weights (transformers' layout, a local folder) in and out.

`register(lm_app)` adds the two commands to the `lm` command group, whichever module creates that group."""

from __future__ import annotations

import typer

from dlforge.cli.output import emit_json


def register(lm_app: typer.Typer) -> None:
    lm_app.command("import-gpt2")(import_cmd)
    lm_app.command("export-gpt2")(export_cmd)


def import_cmd(
    folder: str = typer.Argument(..., help="a local transformers GPT-2 folder: config.json + model.safetensors "
                                           "(or pytorch_model.bin)"),
    out: str = typer.Option(None, "--out", help="the dlforge model folder to write (default: runs/models/FOLDER)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace --out if it exists"),
    as_json: bool = typer.Option(False, "--json", help="print {model_dir, parameters} as JSON"),
) -> None:
    """Convert GPT-2 weights into a dlforge model folder (dlforge.load, dlforge generate read it)."""
    from dlforge.paths import existing_dir, refuse_existing

    existing_dir(folder, "a transformers GPT-2 folder (config.json, model.safetensors)")
    if out is not None:  # the default under runs/ is checked where it is named
        refuse_existing(out, overwrite)
    from dlforge.llm.gpt2 import import_gpt2, load_gpt2

    path = import_gpt2(folder, out, overwrite)
    report = {"model_dir": str(path), "parameters": load_gpt2(folder).num_params(non_embedding=False)}
    if as_json:
        emit_json(report)
    else:
        print(f"{report['parameters']:,} parameters -> {path}")


def export_cmd(
    run: str = typer.Argument(..., help="run folder, name or 'latest' (or a model folder) of a GPT-2-style gpt"),
    out: str = typer.Option(None, "--out", help="the folder to write (GPT2LMHeadModel.from_pretrained reads it; "
                                                "default: runs/exports/RUN-gpt2)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace --out if it exists"),
    as_json: bool = typer.Option(False, "--json", help="print {folder, tokenizer} as JSON"),
) -> None:
    """Write a GPT (learned positions, LayerNorm, GELU MLP, biases) and its tokenizer as a transformers GPT-2 folder
    (AutoTokenizer and AutoModelForCausalLM load it)."""
    from dlforge.paths import refuse_existing

    if out is not None:  # the default under runs/ is checked where it is named
        refuse_existing(out, overwrite)
    from dlforge.llm.gpt2 import export_gpt2

    path = export_gpt2(run, out, overwrite)
    tokenizer = (path / "tokenizer.json").is_file()
    if as_json:
        emit_json({"folder": str(path), "tokenizer": tokenizer})
    else:
        print(f"GPT-2 folder -> {path}" + ("" if tokenizer else " (weights only: the model folder has no tokenizer)"))
