"""`dlforge lm prepare`: a corpus as token shards for language-model training."""

from __future__ import annotations

from pathlib import Path

import typer

from dlforge.cli.output import emit_json, table

app = typer.Typer(no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})


@app.callback()
def lm() -> None:
    """Language-model data."""


@app.command("prepare")
def prepare_cmd(
    corpus: str = typer.Argument(..., help="a built-in corpus (shakespeare, bible_web, ...) or a text file / folder"),
    tokenizer: str = typer.Option(..., "--tokenizer", help="char, bpe:N, wordpiece:N (trained here) or a folder"),
    out: Path = typer.Option(None, "--out", help="the shard folder to write (default: runs/shards/CORPUS-TOKENIZER)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace --out if it exists"),
    text_field: str = typer.Option("text", "--text-field", help="the field holding the text in .jsonl files"),
    val_fraction: float = typer.Option(0.05, "--val-fraction", help="a file / folder: share of characters for val"),
    test_fraction: float = typer.Option(0.05, "--test-fraction", help="a file / folder: share for test"),
    as_json: bool = typer.Option(False, "--json", help="print meta.json and timings as JSON"),
) -> None:
    """Tokenize a corpus into train.bin / val.bin / test.bin (uint16 or uint32) with meta.json and the tokenizer."""
    from dlforge.paths import refuse_existing
    from dlforge.text.tokenizer import tokenizer_spec

    if out is not None:  # the default under runs/ is checked where it is named
        refuse_existing(out, overwrite)
    tokenizer_spec(tokenizer)  # a wrong spec is told before torch loads
    from dlforge.llm.prepare import prepare_shards

    meta = prepare_shards(corpus, tokenizer, out, overwrite, text_field, val_fraction, test_fraction)
    if as_json:
        emit_json(meta)
        return
    rows = [[s, m["tokens"], m["documents"], m["chars"], m["chars_per_token"]] for s, m in meta["splits"].items()]
    table(f"{meta['out']}: {meta['tokenizer']['type']} tokenizer, vocabulary {meta['vocab_size']}, {meta['dtype']}",
          ["split", "tokens", "documents", "chars", "chars/token"], rows)
