"""`dlforge tokenizer train|encode|decode|report`: train, use and measure tokenizers."""

from __future__ import annotations

from pathlib import Path

import typer

from dlforge.cli.output import emit_json, table

app = typer.Typer(no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})


def _report(title: str, report: dict, as_json: bool) -> None:
    if as_json:
        emit_json(report)
    else:
        table(title, ["", "value"], [[k, v] for k, v in report.items()])


@app.command("train")
def train_cmd(
    corpus: str = typer.Argument(..., help="a built-in corpus (shakespeare, bible_web, ...) or a text file / folder"),
    out: Path = typer.Option(None, "--out", help="folder to write tokenizer.json and tokenizer_config.json into "
                                                 "(default: runs/tokenizers/CORPUS-TYPEVOCAB)"),
    kind: str = typer.Option("bpe", "--type", help="bpe (byte-level), wordpiece (BERT) or char"),
    vocab_size: int = typer.Option(None, "--vocab-size", help="vocabulary size, special tokens included"),
    special: list[str] = typer.Option(None, "--special", help="a special token (repeat); default by --type"),
    lowercase: bool = typer.Option(None, "--lowercase/--cased", help="default: cased for bpe, lowercase for wordpiece"),
    min_frequency: int = typer.Option(2, "--min-frequency", min=1, help="merges seen fewer times are not learned"),
    text_field: str = typer.Option("text", "--text-field", help="the field holding the text in .jsonl files"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace --out if it exists"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Train a tokenizer on a corpus's training split; report it on the validation split."""
    from dlforge.paths import refuse_existing

    if out is not None:  # the default under runs/ is checked where it is named
        refuse_existing(out, overwrite)
    from dlforge.llm.prepare import train_corpus_tokenizer

    report = train_corpus_tokenizer(corpus, kind, vocab_size, out, special or None, lowercase, min_frequency,
                                    text_field, overwrite)
    _report(f"tokenizer {report['out']}", report, as_json)


@app.command("encode")
def encode_cmd(
    tokenizer: Path = typer.Argument(..., help="a tokenizer folder (or tokenizer.json / vocab.txt)"),
    text: str = typer.Argument(..., help="the text to encode"),
    special: bool = typer.Option(False, "--special", help="add the tokenizer's template (e.g. [CLS] ... [SEP])"),
    as_json: bool = typer.Option(False, "--json", help="print {ids, tokens} as JSON"),
) -> None:
    """Token ids of a text."""
    from dlforge.text.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer)
    ids = tok.encode(text, add_special_tokens=special)
    if as_json:
        emit_json({"ids": ids, "tokens": tok.tokens(ids)})
    else:
        print(" ".join(map(str, ids)))


@app.command("decode")
def decode_cmd(
    tokenizer: Path = typer.Argument(..., help="a tokenizer folder (or tokenizer.json / vocab.txt)"),
    ids: list[int] = typer.Argument(..., help="token ids"),
    as_json: bool = typer.Option(False, "--json", help="print {text} as JSON"),
) -> None:
    """The text of token ids."""
    from dlforge.text.tokenizer import load_tokenizer

    text = load_tokenizer(tokenizer).decode(ids)
    if as_json:
        emit_json({"text": text})
    else:
        print(text)


@app.command("report")
def report_cmd(
    tokenizer: Path = typer.Argument(..., help="a tokenizer folder (or tokenizer.json / vocab.txt)"),
    corpus: str = typer.Argument(..., help="a built-in corpus or a text file / folder (held-out text)"),
    split: str = typer.Option(None, "--split", help="train, val, test or all; default val (built-in), all (path)"),
    text_field: str = typer.Option("text", "--text-field", help="the field holding the text in .jsonl files"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Vocabulary size, characters per token and the share of unknown tokens on held-out text."""
    from dlforge.paths import existing

    existing(tokenizer, "a tokenizer folder (or tokenizer.json / vocab.txt)")
    from dlforge.llm.prepare import tokenizer_report

    _report(f"tokenizer {tokenizer} on {corpus}", tokenizer_report(tokenizer, corpus, split, text_field), as_json)
