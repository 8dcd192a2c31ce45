"""`dlforge` entry point: the typer app, and the error policy.

A `DlforgeError` (bad config key, broken CSV, damaged checkpoint...) prints one line and exits with code 2; the
traceback is shown only with `--debug`. A Python warning prints one line, `warning: ...`, without its source
line. SIGINT and SIGTERM print one line and exit 130 and 143. The scripts in scripts/ follow the same policy through
`run_script`.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import NoReturn

import typer

from dlforge.cli import (
    embed,
    export,
    fairness,
    finetune,
    generate,
    gpt2,
    image,
    info,
    lm,
    lr_find,
    monitor,
    prune,
    rag,
    registry,
    runs,
    sample,
    serve,
    tokenizer,
    train,
    translate,
    ui,
)
from dlforge.errors import DlforgeError, Interrupted, clip, raising_on_signals

LINE_LIMIT = 1000  # characters of an error line; what a message repeats of its input is cut shorter where it is made
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
lr_find.register(app)
info.register(app)
generate.register(app)
translate.register(app)
embed.register(app)
sample.register(app)
export.register(app)
prune.register(app)
serve.register(app)
ui.register(app)
monitor.register(app)
fairness.register(app)
app.add_typer(runs.app, name="runs", help="List, show and compare runs.")
app.add_typer(info.config_app, name="config", help="The config schema.")
app.add_typer(image.app, name="image", help="Image files: OpenCV operations, and a ViT's attention over one.")
app.add_typer(tokenizer.app, name="tokenizer", help="Train, use and measure tokenizers (BPE, WordPiece, char).")
gpt2.register(lm.app)
finetune.register(lm.app)
app.add_typer(lm.app, name="lm", help="Language models: token shards, GPT-2 weights, perplexity on corpora, LoRA.")
app.add_typer(rag.app, name="rag", help="Question answering over your documents: index, ask, eval, stats.")
app.add_typer(registry.app, name="registry", help="Versions of trained models and their aliases: add, list, show, "
                                                  "alias, rollback, history.")


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A Python warning (dlforge's or a library's) as one line on stderr, without its source line."""
    text = str(message).strip()
    print(f"warning: {text.splitlines()[0] if text else category.__name__}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    if not debug:  # with --debug, warnings keep their category and source line
        warnings.showwarning = _warning_line
    try:
        with raising_on_signals():  # Ctrl-C and kill end any command with a line and the shell's exit code
            app(args=args, prog_name="dlforge")  # usage errors exit with code 2 inside, as click does
    except DlforgeError as exc:
        if debug:
            raise
        fail(exc)
    except Interrupted as exc:
        print(f"aborted ({exc.signal.name})", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Exception as exc:
        if debug:
            raise
        print(f"error: {_one_line(f'{type(exc).__name__}: {exc}')} (run with --debug for the traceback)",
              file=sys.stderr)
        sys.exit(1)


def fail(exc: DlforgeError) -> NoReturn:
    """The error policy for a person's mistake: `error: MESSAGE` on stderr, one line, and the error's exit code."""
    print(f"error: {_one_line(str(exc))}", file=sys.stderr)
    sys.exit(exc.exit_code)


def run_script(script_main: Callable[[], None]) -> None:
    """Run a script's `main()` (scripts/) under the CLI's error policy: a `DlforgeError` is one line and exit code 2,
    the traceback only with `--debug` among the arguments."""
    debug = "--debug" in sys.argv
    sys.argv = [a for a in sys.argv if a != "--debug"]
    try:
        script_main()
    except DlforgeError as exc:
        if debug:
            raise
        fail(exc)


def _one_line(text: str) -> str:
    return clip(" ".join(text.splitlines()), LINE_LIMIT)
