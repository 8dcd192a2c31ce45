"""`dlforge generate`: sample text from a trained language model run."""

from __future__ import annotations

import sys

import typer

from dlforge.cli.output import emit_json


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_cmd)


def generate_cmd(
    run: str = typer.Argument(..., help="run folder, name or 'latest' (or a model folder)"),
    prompt: str = typer.Option("", "--prompt", help="text to continue"),
    max_new_tokens: int = typer.Option(200, "--max-new-tokens", min=0, help="tokens to generate at most"),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0, help="0 = greedy; lower = safer, higher = wilder"),
    top_k: int = typer.Option(0, "--top-k", min=0, help="sample among the k likeliest tokens (0 = all)"),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0, help="nucleus sampling mass (1 = off)"),
    seed: int = typer.Option(None, "--seed", help="fix the random draws"),
    stop: str = typer.Option(None, "--stop", help="stop once the completion contains this text"),
    as_json: bool = typer.Option(False, "--json", help="print {prompt, completion, stop_reason, tokens} at the end"),
) -> None:
    """Generate text: `dlforge generate RUN --prompt "ROMEO:" --temperature 0.8`; streams as it comes."""
    from dlforge.llm.generate import generate_from_run

    stream = generate_from_run(run, prompt, max_new_tokens=max_new_tokens, temperature=temperature,
                               top_k=top_k or None, top_p=top_p, seed=seed, stop=stop)
    if as_json:
        stream.read()
        emit_json({"prompt": prompt, "completion": stream.completion, "stop_reason": stream.stop_reason,
                   "tokens": len(stream.tokens)})
        return
    sys.stdout.write(prompt)
    sys.stdout.flush()
    for piece in stream:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
