"""`dlforge translate`: translate sentences with a trained encoder-decoder run."""

from __future__ import annotations

from pathlib import Path

import typer

from dlforge.cli.output import emit_json


def register(app: typer.Typer) -> None:
    app.command("translate")(translate_cmd)


def translate_cmd(
    run: str = typer.Argument(..., help="run folder, name or 'latest' (or a model folder)"),
    texts: list[str] = typer.Argument(None, help="sentences to translate"),
    file: Path = typer.Option(None, "--file", help="a UTF-8 text file: one sentence per line (blank lines skipped)"),
    beam: int = typer.Option(4, "--beam", min=1, help="beam size (1 = greedy)"),
    length_penalty: float = typer.Option(0.6, "--length-penalty", min=0.0,
                                         help="GNMT alpha: 0 ranks by log-probability, higher favours longer output"),
    max_len: int = typer.Option(None, "--max-len", min=1,
                                help="most tokens per translation (default 2 x source + 10)"),
    as_json: bool = typer.Option(False, "--json", help="print [{source, translation, logprob, score, finished}]"),
) -> None:
    """Translate: `dlforge translate RUN "In the beginning was the Word." --beam 4`, or --file sentences.txt."""
    from dlforge.data.corpus import read_utf8
    from dlforge.errors import ConfigError
    from dlforge.paths import existing_file

    sentences = list(texts or [])
    blank = next((i for i, text in enumerate(sentences, 1) if not text.strip()), None)
    if blank is not None:
        raise ConfigError(f"translate: sentence {blank} is empty; give the text to translate")
    if file is not None:
        file = existing_file(file, "a text file of sentences, one per line (--file)")
        sentences += [line.strip() for line in read_utf8(file).splitlines() if line.strip()]
    if not sentences:
        raise ConfigError("translate: give sentences as arguments or --file FILE")
    from dlforge.llm.translate import translate_from_run

    rows = translate_from_run(run, sentences, beam_size=beam, length_penalty=length_penalty, max_len=max_len)
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        print(row["translation"], flush=True)
