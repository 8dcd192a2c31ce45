"""`dlforge generate`: sample text from a trained language model run."""

from __future__ import annotations

import sys

import typer

from dlforge.cli.output import emit_json


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_cmd)


def generate_cmd(
    run: str = typer.Argument(..., help="run folder, name or 'latest' (or a model folder)"),
    prompt: list[str] = typer.Option(None, "--prompt", help="text to continue; several --prompt: one padded batch"),
    max_new_tokens: int = typer.Option(200, "--max-new-tokens", min=0, help="tokens to generate at most"),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0, help="0 = greedy; lower = safer, higher = wilder"),
    top_k: int = typer.Option(0, "--top-k", min=0, help="sample among the k likeliest tokens (0 = all)"),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0, help="nucleus sampling mass (1 = off)"),
    repetition_penalty: float = typer.Option(1.0, "--repetition-penalty", min=0.0,
                                             help="divide the logits of tokens already seen (CTRL; 1 = off)"),
    stop: list[str] = typer.Option(None, "--stop", help="stop once the completion contains this text (repeatable)"),
    seed: int = typer.Option(None, "--seed", help="fix the random draws"),
    on_long_prompt: str = typer.Option("truncate", "--on-long-prompt",
                                       help="a prompt longer than the context window: truncate (from the left, with "
                                            "a warning) or error"),
    chat: list[str] = typer.Option(None, "--chat", help="a message to an instruction-tuned model, rendered with its "
                                                          "chat template; it answers until its end-of-turn token "
                                                          "(several --chat: one batch)"),
    system: str = typer.Option(None, "--system", help="with --chat: a system message first"),
    as_json: bool = typer.Option(False, "--json", help="print {prompt, completion, stop_reason, tokens} at the end"),
) -> None:
    """Generate text: `dlforge generate RUN --prompt "ROMEO:" --temperature 0.8`; streams as it comes, then says on
    stderr what ended it (max_new_tokens, stop or eos). `--chat "Who speaks first in Hamlet?"` asks an
    instruction-tuned model."""
    from dlforge.errors import DlforgeError

    if chat and prompt:
        raise DlforgeError("--chat and --prompt: give one (--chat renders the message with the chat template)")
    if system is not None and not chat:
        raise DlforgeError("--system: only with --chat")
    from dlforge.llm.generate import GenerationConfig, generate_batch, generate_stream, load_language_model
    from dlforge.text.chat import as_messages, render_chat

    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k or None,
                              top_p=top_p, repetition_penalty=repetition_penalty, stop=tuple(stop or ()), seed=seed,
                              on_long_prompt=on_long_prompt)
    model, tokenizer = load_language_model(run)
    if chat:
        prompts = [render_chat(tokenizer, as_messages(m, system), add_generation_prompt=True) for m in chat]
        _answer(model, tokenizer, list(chat), prompts, config, as_json)
        return
    prompts = list(prompt or [""])
    if len(prompts) > 1:
        results = generate_batch(model, tokenizer, prompts, config)
        if as_json:
            emit_json([_summary(r) for r in results])
            return
        for r in results:
            sys.stdout.write(f"{r.prompt}{r.completion}\n")
            sys.stderr.write(f"[{_why(r)}]\n")
        return
    stream = generate_stream(model, tokenizer, prompts[0], config)
    if as_json:
        emit_json(_summary(stream.result()))
        return
    sys.stdout.write(prompts[0])
    sys.stdout.flush()
    for piece in stream:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    sys.stderr.write(f"[{_why(stream.result())}]\n")


def _answer(model, tokenizer, messages: list[str], prompts: list[str], config, as_json: bool) -> None:
    """Replies to chat messages: the reply alone, without the rendered prompt or the space after it."""
    from dlforge.llm.generate import generate_batch, generate_stream

    if as_json or len(prompts) > 1:
        results = generate_batch(model, tokenizer, prompts, config)
        summaries = [{**_summary(r), "message": m, "completion": r.completion.strip()}
                     for m, r in zip(messages, results, strict=True)]
        if as_json:
            emit_json(summaries[0] if len(summaries) == 1 else summaries)
            return
        for s, r in zip(summaries, results, strict=True):
            sys.stdout.write(f"{s['message']}\n{s['completion']}\n")
            sys.stderr.write(f"[{_why(r)}]\n")
        return
    stream = generate_stream(model, tokenizer, prompts[0], config)
    started = False
    for piece in stream:
        if not started:
            piece = piece.lstrip()
            started = bool(piece)
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stderr.write(f"[{_why(stream.result())}]\n")


def _summary(r) -> dict:
    return {"prompt": r.prompt, "completion": r.completion, "stop_reason": r.stop_reason, "tokens": len(r.tokens)}


def _why(r) -> str:
    detail = f" {r.stop_string!r}" if r.stop_string is not None else ""
    return f"stopped: {r.stop_reason}{detail} after {len(r.tokens)} tokens"
