"""Text generation for the server: a request's prompts turned into choices, on a worker thread, piece by piece.

The model runs on a thread of the server's pool (torch releases the GIL in its kernels), so the event loop keeps
answering health checks, metrics and refusals while tokens are generated. Each piece of text is handed to the
loop as it comes (`on_piece`), which streams it; a `cancel` event, set when the client goes away, stops the
generation at its next token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dlforge.deploy.serve.openai_api import (
    FINISH,
    MAX_N,
    ApiError,
    ChatRequest,
    CompletionRequest,
    context_exceeded,
)

DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default max_tokens for /v1/completions
UNBOUNDED_MAX_TOKENS = 4096  # the cap for a model without a context window (an RNN)


@dataclass
class Plan:
    """What a generation request will do: its prompts (one per choice) as text and token counts, and the config."""

    prompts: list[str]
    prompt_tokens: list[int]
    max_tokens: int
    config: Any
    chat: bool


@dataclass
class Choice:
    text: str = ""
    finish_reason: str | None = None
    tokens: int = 0
    first_token_s: float | None = None
    gaps: list[float] = field(default_factory=list)


def plan(served: Any, request: CompletionRequest | ChatRequest) -> Plan:
    """Render and count the prompts, and check them against the context window, before any generation."""
    from dlforge.llm.generate import GenerationConfig, prompt_ids

    chat = isinstance(request, ChatRequest)
    if chat:
        texts = [_render(served.tokenizer, [m.model_dump() for m in request.messages])] * request.n
    else:
        prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
        if len(prompts) * request.n > MAX_N:
            raise ApiError(400, f"n: {request.n} choices for each of {len(prompts)} prompts is more than {MAX_N}", "n")
        texts = [p for p in prompts for _ in range(request.n)]
    counts = [len(prompt_ids(served.tokenizer, t)) for t in texts]
    asked = request.max_completion_tokens if chat and request.max_completion_tokens else request.max_tokens
    window = served.context
    longest = max(counts)
    if window is not None:
        if asked is None:
            asked = DEFAULT_COMPLETION_TOKENS if not chat else window - longest
        if longest + asked > window or asked < 1:
            raise context_exceeded(window, longest, max(asked, 0), chat)
    elif asked is None or asked > UNBOUNDED_MAX_TOKENS:
        if asked is not None:
            raise ApiError(400, f"max_tokens: {asked} is more than this model's limit of {UNBOUNDED_MAX_TOKENS}",
                           "max_tokens")
        asked = DEFAULT_COMPLETION_TOKENS if not chat else 256
    eos = getattr(served.tokenizer, "eos_token", None)
    stops = tuple(request.stop) + ((eos,) if chat and eos else ())
    config = GenerationConfig(max_new_tokens=asked, temperature=request.temperature,
                              top_p=None if request.top_p >= 1 else request.top_p, stop=stops, seed=request.seed,
                              on_long_prompt="error")
    return Plan(texts, counts, asked, config, chat)


def _render(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The conversation with the tokenizer's chat template, or dlforge's default one for a model without."""
    from dlforge.text.chat import DEFAULT_CHAT_TEMPLATE, render_template

    template = getattr(tokenizer, "chat_template", None) or DEFAULT_CHAT_TEMPLATE
    return render_template(template, messages, True, getattr(tokenizer, "special_tokens", {}) or {})


@dataclass
class Job:
    """One choice to generate: its prompt, stop sequences and token limit; `on_piece(text)` as its text grows (held
    back where it could begin a stop sequence), `on_end(finish_reason)` once; `cancel` ends it early."""

    prompt: str
    stop: tuple[str, ...]
    limit: int
    cancel: threading.Event
    on_piece: Callable[[str], None] | None = None
    on_end: Callable[[str], None] | None = None


def jobs_of(plan_: Plan, cancel: threading.Event, on_piece: Callable[[int, str], None] | None = None,
            on_end: Callable[[int, str], None] | None = None) -> list[Job]:
    """The plan's choices as jobs; the callbacks get the choice's index."""
    return [Job(prompt, plan_.config.stop, plan_.max_tokens, cancel,
                None if on_piece is None else (lambda text, i=i: on_piece(i, text)),
                None if on_end is None else (lambda reason, i=i: on_end(i, reason)))
            for i, prompt in enumerate(plan_.prompts)]


def sampling_key(plan_: Plan) -> tuple:
    """Jobs with the same key can be generated in one batch: they are sampled alike. A seeded request is batched
    with no other, so that its seed gives the same text whatever else is being served."""
    c = plan_.config
    return (c.temperature, c.top_k, c.top_p, c.repetition_penalty, c.seed if c.seed is None else object())


def run_jobs(served: Any, jobs: list[Job], config: Any) -> list[Choice]:
    """Generate `jobs` together (on a worker thread; `dlforge.llm.generate.generate_rows`), sampled by `config`.
    As with OpenAI, a text never holds the stop sequence that ended it."""
    from dlforge.llm.generate import STOP_STRING, generate_rows

    holds = [max((len(s) for s in job.stop), default=1) - 1 for job in jobs]
    texts, sent = [""] * len(jobs), [0] * len(jobs)
    choices = [Choice() for _ in jobs]
    start = time.perf_counter()
    last = [start] * len(jobs)

    def on_piece(i: int, piece: str) -> None:
        now, choice = time.perf_counter(), choices[i]
        if choice.first_token_s is None:
            choice.first_token_s = now - start
        else:
            choice.gaps.append(now - last[i])
        last[i] = now
        texts[i] += piece
        ready = len(texts[i]) - holds[i]
        if jobs[i].on_piece is not None and ready > sent[i]:
            jobs[i].on_piece(texts[i][sent[i]:ready])
            sent[i] = ready

    results = generate_rows(served.model, served.tokenizer, [j.prompt for j in jobs], config,
                            [j.stop for j in jobs], [j.limit for j in jobs], on_piece,
                            lambda i: jobs[i].cancel.is_set())
    for i, (job, result, choice) in enumerate(zip(jobs, results, choices, strict=True)):
        text = result.completion
        if result.stop_reason == STOP_STRING and result.stop_string and text.endswith(result.stop_string):
            text = text[: len(text) - len(result.stop_string)]
        if job.on_piece is not None and len(text) > sent[i]:
            job.on_piece(text[sent[i]:])
        choice.text, choice.tokens = text, len(result.tokens)
        choice.finish_reason = FINISH.get(result.stop_reason, result.stop_reason)
        if job.on_end is not None:
            job.on_end(choice.finish_reason)
    return choices
