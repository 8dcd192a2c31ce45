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

from dlforge.deploy.serve.openai_api import FINISH, ApiError, ChatRequest, CompletionRequest, context_exceeded

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
        if len(prompts) * request.n > 8:
            raise ApiError(400, f"n: {request.n} choices for each of {len(prompts)} prompts is more than 8", "n")
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


def run_choice(served: Any, plan_: Plan, index: int, cancel: threading.Event,
               on_piece: Callable[[int, str], None] | None = None) -> Choice:
    """Generate choice `index` of `plan_` (on a worker thread); `on_piece(index, text)` as the text grows. As with
    OpenAI, the text never holds the stop sequence that ended it: the last characters that could begin one are held
    back until the next token shows they don't."""
    from dataclasses import replace

    from dlforge.llm.generate import STOP_STRING, TextStream

    config = plan_.config
    if config.seed is not None:
        config = replace(config, seed=config.seed + index)
    stream = TextStream(served.model, served.tokenizer, plan_.prompts[index], config)
    hold = max((len(s) for s in config.stop), default=1) - 1
    choice, sent = Choice(), 0
    start = last = time.perf_counter()
    for _ in stream:
        now = time.perf_counter()
        if choice.first_token_s is None:
            choice.first_token_s = now - start
        else:
            choice.gaps.append(now - last)
        last = now
        ready = len(stream.completion) - hold
        if on_piece is not None and ready > sent:
            on_piece(index, stream.completion[sent:ready])
            sent = ready
        if cancel.is_set():
            break
    text = stream.completion
    if stream.stop_reason == STOP_STRING and stream.stop_string and text.endswith(stream.stop_string):
        text = text[: len(text) - len(stream.stop_string)]
    if on_piece is not None and len(text) > sent:
        on_piece(index, text[sent:])
    choice.text, choice.tokens = text, len(stream.tokens)
    choice.finish_reason = "cancelled" if cancel.is_set() else FINISH.get(stream.stop_reason or "", "length")
    return choice
