"""Generating text from a language model, token by token, without recomputing the prefix.

    stream = generate_stream(model, tokenizer, "ROMEO:", max_new_tokens=300, temperature=0.8, seed=0)
    for piece in stream:                                     # text as it comes
        print(piece, end="", flush=True)
    stream.stop_reason, stream.completion, stream.tokens    # "max_new_tokens" | "stop" | "eos"

    results = generate_batch(model, tokenizer, ["ROMEO:", "JULIET:\nO"], temperature=0)   # one batch, left-padded

The model reads the prompt once and then each new token alone, carrying a state: any model with
`init_state(batch_size, device)` and `step(input_ids, state, [attention_mask]) -> (logits, state)`. For a char RNN
the state is its hidden state; for a GPT it is a KV cache (`dlforge.layers.attention.KVCache`), every layer's keys
and values so far, so a new token costs one position's work instead of the whole prefix's.

Each step: logits of the last position -> repetition penalty (CTRL, Keskar et al. 2019: a logit of a token already
in the prompt or the completion is divided by the penalty when positive, multiplied when negative; as transformers'
RepetitionPenaltyLogitsProcessor) -> temperature -> top-k (the k likeliest tokens) -> top-p (nucleus: the smallest
set of likeliest tokens whose probabilities add up to p; Holtzman et al. 2020) -> a draw; temperature 0 is greedy.

Every generation ends with a reason: `max_new_tokens`, `stop` (a stop sequence appeared in the completion, which
then ends with it) or `eos` (the tokenizer's end-of-text token, which is not part of the text).

Context window (models with `config.context`, e.g. GPT): a prompt longer than the window is truncated from the left
with a warning, or refused (`on_long_prompt="error"`). Generation past the window slides it: when the cache is
full, the newest half of the window is read again into a fresh cache (positions renumbered from 0) and decoding
goes on. Sliding, rather than stopping, because a character model's window is a few lines of text; by half a window
at a time, rather than token by token, so that a new token costs one cached step plus, amortized, about one more
(recomputing the window at every token would cost as much as having no cache). Each token is thus predicted from
between half a window and a whole window of the tokens before it.

Batches of prompts of different lengths are left-padded; the attention mask hides the padding and every row's
positions count from its first real token, so each row generates what it would alone (until a window slides).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from dlforge.artifacts import load_trained
from dlforge.errors import ConfigError, DataError, DlforgeError
from dlforge.text.tokenizer import model_tokenizer

STOP_MAX_TOKENS = "max_new_tokens"
STOP_STRING = "stop"
STOP_EOS = "eos"
STOP_CANCELLED = "cancelled"  # generate_rows: the caller gave up on the row (a client that went away)


@dataclass(frozen=True)
class GenerationConfig:
    """How to generate. `top_k` 0 or None and `top_p` None or 1 are off; `seed` None draws from torch's global RNG;
    `stop`: sequences that end generation once the completion contains one of them."""

    max_new_tokens: int = 200
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    on_long_prompt: Literal["truncate", "error"] = "truncate"

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(s for s in (self.stop or ()) if s))
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0:
            raise ConfigError(f"max_new_tokens: expected an integer >= 0, got {self.max_new_tokens!r}")
        _check_sampling(self.temperature, self.top_k, self.top_p)
        if not self.repetition_penalty > 0:
            raise ConfigError(f"repetition_penalty: expected a number > 0 (1 = off), got {self.repetition_penalty}")
        if self.on_long_prompt not in ("truncate", "error"):
            raise ConfigError(f"on_long_prompt: expected 'truncate' or 'error', got {self.on_long_prompt!r}")


def _check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not temperature >= 0:
        raise ConfigError(f"temperature: expected a number >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 0:
        raise ConfigError(f"top_k: expected an integer >= 0 (0 = off), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"top_p: expected a number in (0, 1], got {top_p}")


# --- one step: logits -> next token ----------------------------------------------------------------------------


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits (B, V), seen (B, V) bool: the tokens already in each row -> their logits penalized (CTRL)."""
    penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalized, logits)


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """One token id per row of logits (B, V) -> (B,). temperature 0: argmax; top_k 0 or None, top_p None or 1: off."""
    _check_sampling(temperature, top_k, top_p)
    return _sample(logits, temperature, top_k, top_p, generator)


def _sample(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
            generator: torch.Generator | None) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
        drop_sorted = before >= top_p  # the likeliest token always stays (before == 0)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# --- the decode loop -------------------------------------------------------------------------------------------


def context_window(model: torch.nn.Module) -> int | None:
    """The model's context window (`config.context`), or None for a model without one (a recurrent one)."""
    return getattr(getattr(model, "config", None), "context", None)


def fit_prompt(ids: list[int], model: torch.nn.Module, on_long_prompt: str = "truncate") -> list[int]:
    """The prompt's token ids, cut to the model's context window from the left (with a warning) or refused."""
    window = context_window(model)
    if window is None or len(ids) <= window:
        return ids
    if on_long_prompt == "error":
        raise DataError(f"prompt: {len(ids)} tokens, more than the model's context window of {window}; shorten it "
                        "or let it be truncated from the left (on_long_prompt=truncate, --on-long-prompt truncate)")
    warnings.warn(f"prompt: {len(ids)} tokens, more than the model's context window of {window}; keeping the last "
                  f"{window}", stacklevel=3)
    return ids[-window:]


@torch.inference_mode()
def generate_tokens(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    config: GenerationConfig = GenerationConfig(), generator: torch.Generator | None = None
                    ) -> Iterator[torch.Tensor]:
    """Yield the next token of every row, (B,), up to `config.max_new_tokens` times; stop iterating to stop early.

    input_ids (B, P): the prompts, left-padded, each within the context window (see `fit_prompt`); attention_mask
    (B, P): 1 for real tokens, 0 for padding (None: no padding). The model must be in eval mode; `generator` seeds
    the draws (the config's seed is for the text-level functions)."""
    c = config
    b, p = input_ids.shape
    device = input_ids.device
    window = context_window(model)
    if window is not None and p > window:
        raise DataError(f"prompt: {p} tokens, more than the model's context window of {window}")
    if c.max_new_tokens == 0:
        return
    n_max = p + c.max_new_tokens
    ids = torch.empty(b, n_max, dtype=torch.long, device=device)  # every token so far, written in place
    ids[:, :p] = input_ids
    mask = None
    if attention_mask is not None:
        mask = torch.ones(b, n_max, dtype=torch.long, device=device)
        mask[:, :p] = attention_mask

    def read(first: int, start: int, end: int, state: Any) -> tuple[torch.Tensor, Any]:
        # tokens start..end after those in `state`, which holds first..start; the mask covers first..end
        if mask is None:
            return model.step(ids[:, start:end], state)
        return model.step(ids[:, start:end], state, attention_mask=mask[:, first:end])

    first = 0  # the window's first token: the state holds ids[:, first:n]
    logits, state = read(0, 0, p, model.init_state(b, device))
    seen = None
    if c.repetition_penalty != 1.0:
        real = torch.ones(b, p, device=device) if mask is None else mask[:, :p].float()  # padding counts 0
        seen = torch.zeros(b, logits.shape[-1], device=device).scatter_add_(1, input_ids, real) > 0  # (B, V)
    for n in range(p, n_max):
        scores = logits[:, -1]  # (B, V)
        if seen is not None:
            scores = apply_repetition_penalty(scores, seen, c.repetition_penalty)
        token = _sample(scores, c.temperature, c.top_k, c.top_p, generator)  # (B,)
        ids[:, n] = token
        if seen is not None:
            seen.scatter_(1, token[:, None], True)
        yield token
        if n + 1 == n_max:
            break
        if window is not None and n + 1 - first > window:  # the window is full: slide it by half
            first = n + 1 - max(window // 2, 1)
            logits, state = read(first, first, n + 1, model.init_state(b, device))
        else:
            logits, state = read(first, n, n + 1, state)


# --- text: incremental decoding, stop sequences, reasons -------------------------------------------------------


class _Row:
    """One prompt's completion as it grows: text, tokens, stop sequences, end-of-text, and why it ended."""

    def __init__(self, tokenizer: Any, stop: tuple[str, ...], eos_id: int | None):
        self.decoder = tokenizer.decode_stream()  # holds back a character until all its bytes are there
        self.stop, self.eos_id = stop, eos_id
        self.completion = ""
        self.tokens: list[int] = []
        self.stop_reason: str | None = None
        self.stop_string: str | None = None
        self.prompt_tokens = 0

    def push(self, token: int) -> str:
        """Add a token; return the text it completes (maybe ''), cut after a stop sequence; sets stop_reason."""
        self.tokens.append(token)
        if token == self.eos_id:
            self.end(STOP_EOS)
            return ""
        return self._add(self.decoder.step(token))

    def _add(self, piece: str) -> str:
        if not piece:
            return ""
        before = len(self.completion)
        self.completion += piece
        if self.stop:
            tail = before - max(len(s) for s in self.stop) + 1  # a stop sequence may begin in earlier text
            hits = [(self.completion.find(s, max(tail, 0)), s) for s in self.stop]
            hits = [(i + len(s), s) for i, s in hits if i >= 0]
            if hits:
                end, self.stop_string = min(hits)
                self.completion = self.completion[:end]
                self.stop_reason = STOP_STRING
                return self.completion[before:]
        return piece

    def end(self, reason: str) -> None:
        """Finish with `reason`, unless already finished (an incomplete last character is dropped)."""
        if self.stop_reason is None:
            self.stop_reason = reason


@dataclass
class Generation:
    """One prompt's result. `tokens`: the new token ids (an end-of-text token included); `prompt_tokens`: how many
    the model read (after truncation)."""

    prompt: str
    completion: str
    stop_reason: str
    tokens: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    stop_string: str | None = None


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """The prompt's token ids; an empty prompt starts at the tokenizer's begin- or end-of-text token when it has one
    (GPT-2's <|endoftext|>), else after a line break (the usual start of a text)."""
    if prompt:
        return list(tokenizer.encode(prompt))
    for name in ("bos_id", "eos_id"):
        special = getattr(tokenizer, name, None)
        if special is not None:
            return [special]
    return list(tokenizer.encode("\n"))


def _generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    return None if seed is None else torch.Generator(device=device).manual_seed(seed)


def _left_pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token lists -> input_ids (B, P) left-padded, attention_mask (B, P) (None when all are equally long)."""
    p = max(len(r) for r in rows)
    ids = torch.full((len(rows), p), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), p, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, p - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, p - len(r):] = 1
    return ids.to(device), (None if bool(mask.all()) else mask.to(device))


class _Batch:
    """Prompts generated together in one left-padded batch: `pieces()` yields the new text of every row after each
    step; `rows` hold the completions, `results()` returns them. Prompts are encoded (and fitted to the context
    window) at once, so a prompt that is refused is refused before anything is generated."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str], config: GenerationConfig,
                 stops: Sequence[tuple[str, ...]] | None = None, limits: Sequence[int] | None = None):
        _check_generator_model(model)
        self.model, self.prompts, self.config = model, list(prompts), config
        self.token_rows = [fit_prompt(prompt_ids(tokenizer, p), model, config.on_long_prompt) for p in prompts]
        eos_id = getattr(tokenizer, "eos_id", None)
        self.pad_id = getattr(tokenizer, "pad_id", None) or 0
        self.rows = [_Row(tokenizer, stops[i] if stops else config.stop, eos_id) for i in range(len(prompts))]
        self.limits = list(limits) if limits else [config.max_new_tokens] * len(prompts)  # new tokens per row
        for row, ids in zip(self.rows, self.token_rows, strict=True):
            row.prompt_tokens = len(ids)

    def pieces(self) -> Iterator[list[str]]:
        model, rows = self.model, self.rows
        device = next(model.parameters()).device
        input_ids, mask = _left_pad(self.token_rows, self.pad_id, device)
        was_training = model.training
        model.eval()
        try:
            tokens = generate_tokens(model, input_ids, mask, self.config, _generator(self.config.seed, device))
            for step in tokens:
                yield [row.push(t) if row.stop_reason is None else "" for row, t in zip(rows, step.tolist(),
                                                                                       strict=True)]
                for row, limit in zip(rows, self.limits, strict=True):
                    if len(row.tokens) >= limit:
                        row.end(STOP_MAX_TOKENS)
                if all(row.stop_reason is not None for row in rows):
                    tokens.close()
                    break
            for row in rows:
                row.end(STOP_MAX_TOKENS)
        finally:
            model.train(was_training)

    def results(self) -> list[Generation]:
        return [Generation(p, r.completion, r.stop_reason, r.tokens, r.prompt_tokens, r.stop_string)
                for p, r in zip(self.prompts, self.rows, strict=True)]


class TextStream(Iterator[str]):
    """Iterate for the text as it is generated; afterwards `completion`, `tokens` (new ids), `stop_reason`
    ("max_new_tokens", "stop" or "eos") and `stop_string` tell how it went."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, prompt: str, config: GenerationConfig):
        self.prompt, self.config = prompt, config
        self._batch = _Batch(model, tokenizer, [prompt], config)
        self._row = self._batch.rows[0]
        self._run = (piece for (piece,) in self._batch.pieces() if piece)

    def __next__(self) -> str:
        return next(self._run)

    @property
    def completion(self) -> str:
        return self._row.completion

    @property
    def tokens(self) -> list[int]:
        return self._row.tokens

    @property
    def stop_reason(self) -> str | None:
        return self._row.stop_reason

    @property
    def stop_string(self) -> str | None:
        return self._row.stop_string

    def read(self) -> str:
        """Run to the end; the whole completion."""
        for _ in self:
            pass
        return self.completion

    def result(self) -> Generation:
        """Run to the end; the completion with its reason."""
        self.read()
        return self._batch.results()[0]


def _check_generator_model(model: torch.nn.Module) -> None:
    for method in ("init_state", "step"):
        if not callable(getattr(model, method, None)):
            raise DlforgeError(f"{type(model).__name__} cannot generate text: it has no {method}() "
                               f"(expected a language model such as gpt or char_lstm)")


def _config(config: GenerationConfig | None, options: dict[str, Any]) -> GenerationConfig:
    if "top_k" in options and options["top_k"] == 0:
        options["top_k"] = None
    if "stop" in options and options["stop"] is None:
        options["stop"] = ()
    try:
        return replace(config or GenerationConfig(), **options)
    except TypeError as exc:
        raise ConfigError(f"generation: {exc}") from None


def generate_stream(model: torch.nn.Module, tokenizer: Any, prompt: str, config: GenerationConfig | None = None,
                    **options: Any) -> TextStream:
    """Text after `prompt`, piece by piece, as it is generated (see the module docstring). `options` are fields of
    `GenerationConfig` (max_new_tokens, temperature, top_k, top_p, repetition_penalty, stop, seed, on_long_prompt),
    over `config`."""
    return TextStream(model, tokenizer, prompt, _config(config, options))


def generate_batch(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str],
                   config: GenerationConfig | None = None, **options: Any) -> list[Generation]:
    """Completions of several prompts, generated together in one left-padded batch (one at a time for a model that
    cannot read padding, such as an RNN). Options as for `generate_stream`."""
    cfg = _config(config, options)
    if not prompts:
        return []
    if not getattr(model, "supports_padding", False) and len(prompts) > 1:
        return [TextStream(model, tokenizer, p, cfg).result() for p in prompts]
    batch = _Batch(model, tokenizer, prompts, cfg)
    for _ in batch.pieces():
        pass
    return batch.results()


def generate_rows(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str], config: GenerationConfig,
                  stops: Sequence[tuple[str, ...]], limits: Sequence[int],
                  on_piece: Callable[[int, str], None] | None = None,
                  cancelled: Callable[[int], bool] | None = None) -> list[Generation]:
    """Prompts generated together in one left-padded batch, each with its own stop sequences and limit of new
    tokens, all sampled alike (`config`'s temperature, top-k, top-p, repetition penalty and seed): what a server
    batches from several requests. `on_piece(i, text)` as row i grows; a row for which `cancelled(i)` turns true
    ends there, with stop_reason "cancelled"."""
    config = replace(config, max_new_tokens=max(limits))
    batch = _Batch(model, tokenizer, prompts, config, stops, limits)
    for pieces in batch.pieces():
        for i, (row, piece) in enumerate(zip(batch.rows, pieces, strict=True)):
            if row.stop_reason is None and cancelled is not None and cancelled(i):
                row.end(STOP_CANCELLED)
            if piece and on_piece is not None:
                on_piece(i, piece)
    return batch.results()


# --- from a run ------------------------------------------------------------------------------------------------


def load_language_model(run: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, Any]:
    """A run's model (or a model folder's), in eval mode, and the tokenizer saved with it."""

    model = load_trained(run, device=device)
    return model, model_tokenizer(model.meta, where=str(run))  # checked against the hash it was trained with


def generate_from_run(run: str | Path, prompt: str, config: GenerationConfig | None = None, device: str = "cpu",
                      **options: Any) -> TextStream:
    """`generate_stream` with a run's model (or a model folder) and its tokenizer."""
    model, tokenizer = load_language_model(run, device)
    return generate_stream(model, tokenizer, prompt, config, **options)
