"""`dlforge embed`: sentence embeddings of the lines of a text file or the records of a JSONL file."""

from __future__ import annotations

from pathlib import Path

import typer

from dlforge.cli.output import console, emit_json

# dlforge.data.imagefiles' suffixes, not imported here: a command loads its heavy modules after checking arguments
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def register(app: typer.Typer) -> None:
    app.command("embed")(embed_cmd)


def embed_cmd(
    model: str = typer.Argument("minilm", help="minilm, a transformers BERT / sentence-transformers folder, a "
                                               "dlforge BERT run or model folder, or an autoencoder/VAE run"),
    input_path: Path = typer.Option(..., "--input", help=".txt (one text per non-empty line) or .jsonl file; for "
                                                         "an autoencoder or VAE run an image file or folder"),
    out: Path = typer.Option(..., "--out", help=".npy (float32, one row per text) or .jsonl"),
    text_field: str = typer.Option("text", "--text-field", help="the field of each .jsonl record holding its text"),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    as_json: bool = typer.Option(False, "--json", help="print a summary as JSON"),
) -> None:
    """Embed texts: `dlforge embed minilm --input questions.txt --out questions.npy` (mean pooled, normalized), or
    images with an autoencoder or VAE run: `dlforge embed latest:fashion-ae --input photos/ --out codes.npy`."""
    from dlforge.paths import existing_file, output_file

    if model != "minilm" and (input_path.is_dir() or input_path.suffix.lower() in IMAGE_SUFFIXES):  # images
        from dlforge.eval.image_embed import embed_images

        summary = embed_images(model, input_path, out, batch_size=max(batch_size, 256))
        if as_json:
            emit_json(summary)
        else:
            console.print(f"{summary['images']} codes of {summary['dim']} dimensions written to {summary['out']} "
                          f"({summary['seconds']:.1f} s)")
        return

    existing_file(input_path, "a .txt or .jsonl file of texts (--input)")
    output_file(out, "the file to write the embeddings to (--out)", suffixes=(".npy", ".jsonl"))
    from dlforge.llm.embed import embed_file

    summary = embed_file(model, input_path, out, text_field=text_field, batch_size=batch_size)
    if as_json:
        emit_json(summary)
    else:
        console.print(f"{summary['texts']} embeddings of {summary['dim']} dimensions written to {summary['out']} "
                      f"({summary['seconds']:.1f} s)")
