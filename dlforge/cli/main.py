"""`dlforge` entry point: the typer app, and the error policy.

A `DlforgeError` (bad config key, broken CSV, damaged checkpoint...) prints one line and exits with code 2; the
traceback is shown only with `--debug`.
"""

from __future__ import annotations

import sys

import typer

from dlforge.cli import embed, finetune, generate, gpt2, image, info, lm, rag, runs, tokenizer, train, translate
from dlforge.errors import DlforgeError

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}  # -h as well, for the app and every subcommand
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings=HELP_OPTIONS)  # the app's help is `_top`'s docstring


def _print_version(value: bool) -> None:
    if value:
        from dlforge import __version__

        typer.echo(f"dlforge {__version__}")
        raise typer.Exit()


@app.callback(no_args_is_help=True)
def _top(version: bool = typer.Option(False, "--version", "-V", help="print dlforge's version and exit",
                                      is_eager=True, callback=_print_version)) -> None:
    """dlforge: deep learning end to end — train, evaluate, predict, compare runs. An error prints one line and exits
    with code 2; add --debug anywhere for the traceback."""


train.register(app)
info.register(app)
generate.register(app)
translate.register(app)
embed.register(app)
app.add_typer(runs.app, name="runs", help="List, show and compare runs.")
app.add_typer(info.config_app, name="config", help="The config schema.")
app.add_typer(image.app, name="image", help="Image files: OpenCV operations, and a ViT's attention over one.")
app.add_typer(tokenizer.app, name="tokenizer", help="Train, use and measure tokenizers (BPE, WordPiece, char).")
gpt2.register(lm.app)
finetune.register(lm.app)
app.add_typer(lm.app, name="lm", help="Language models: token shards, GPT-2 weights, perplexity on corpora, LoRA.")
app.add_typer(rag.app, name="rag", help="Question answering over your documents: index, ask, eval, stats.")


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        app(args=args, prog_name="dlforge")  # usage errors exit with code 2 inside, as click does
    except DlforgeError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        print(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        sys.exit(1)
