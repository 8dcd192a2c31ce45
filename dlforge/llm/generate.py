"""Sampling text from a language model, token by token, without recomputing the prefix.

    stream = generate_stream(model, tokenizer, "ROMEO:", max_new_tokens=300, temperature=0.8, seed=0)
    for piece in stream:
        print(piece, end="", flush=True)
    stream.stop_reason, stream.completion, stream.tokens

The model is any language model with `init_state(batch_size, device)` and `step(input_ids, state) -> (logits,
state)` (e.g. `dlforge.models.char_rnn`): the prompt is read once, then each new token alone, carrying the state.
Sampling (`sample_next`): logits / temperature, then top-k (keep the k likeliest tokens), then top-p (nucleus:
keep the smallest set of likeliest tokens whose probabilities add up to p; Holtzman et al. 2020), then a draw from
the renormalized distribution; temperature 0 is greedy (argmax).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from dlforge.errors import ConfigError, DlforgeError
from dlforge.llm.tokenizer import model_tokenizer

STOP_MAX_TOKENS = "max_new_tokens"
STOP_STRING = "stop"


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """One token id per row of logits (B, V) -> (B,). temperature 0: argmax; top_k 0 or None, top_p None or 1: off."""
    _check_sampling(temperature, top_k, top_p)
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
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


def _check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not temperature >= 0:
        raise ConfigError(f"temperature: expected a number >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 0:
        raise ConfigError(f"top_k: expected an integer >= 0 (0 = off), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"top_p: expected a number in (0, 1], got {top_p}")


class TextStream(Iterator[str]):
    """Iterate for the text as it is generated; afterwards `completion`, `tokens` (new ids) and `stop_reason`
    ("max_new_tokens", or "stop" when the stop string appeared) tell how it went."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, prompt: str, max_new_tokens: int,
                 temperature: float, top_k: int | None, top_p: float | None, seed: int | None, stop: str | None):
        _check_sampling(temperature, top_k, top_p)
        if max_new_tokens < 0:
            raise ConfigError(f"max_new_tokens: expected an integer >= 0, got {max_new_tokens}")
        for method in ("init_state", "step"):
            if not callable(getattr(model, method, None)):
                raise DlforgeError(f"{type(model).__name__} cannot generate text: it has no {method}() "
                                   f"(expected a language model such as char_lstm)")
        self.model, self.tokenizer, self.prompt = model, tokenizer, prompt
        self.max_new_tokens, self.temperature, self.top_k, self.top_p = max_new_tokens, temperature, top_k, top_p
        self.stop = stop or None
        self.seed = seed
        self.completion = ""
        self.tokens: list[int] = []
        self.stop_reason: str | None = None
        self._run = self._generate()

    def __next__(self) -> str:
        return next(self._run)

    def _generate(self) -> Iterator[str]:
        model = self.model
        device = next(model.parameters()).device
        generator = None
        if self.seed is not None:
            generator = torch.Generator(device=device).manual_seed(self.seed)
        was_training = model.training
        model.eval()
        try:
            # an empty prompt starts after a line break (the usual start of a text), when the vocabulary has one
            prefix = self.tokenizer.encode(self.prompt or "\n")
            decoder = self.tokenizer.decode_stream()  # holds back a character until all its bytes are there
            ids = torch.tensor([prefix], dtype=torch.long, device=device)  # (1, P)
            with torch.no_grad():
                logits, state = model.step(ids, model.init_state(1, device))
            for _ in range(self.max_new_tokens):
                with torch.no_grad():
                    token = sample_next(logits[:, -1], self.temperature, self.top_k, self.top_p, generator)  # (1,)
                    logits, state = model.step(token[:, None], state)  # feed only the new token
                self.tokens.append(int(token))
                piece = decoder.step(int(token))
                self.completion += piece
                if self.stop is not None and self.stop in self.completion:
                    self.stop_reason = STOP_STRING
                    yield piece
                    return
                yield piece
            self.stop_reason = STOP_MAX_TOKENS
        finally:
            model.train(was_training)

    def read(self) -> str:
        """Run to the end; the whole completion."""
        for _ in self:
            pass
        return self.completion


def generate_stream(model: torch.nn.Module, tokenizer: Any, prompt: str, max_new_tokens: int = 200,
                    temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                    seed: int | None = None, stop: str | None = None) -> TextStream:
    """Text after `prompt`, piece by piece (see the module docstring). `seed` fixes the draws (None: torch's global
    RNG); `stop` ends generation once the completion contains it (it is included)."""
    return TextStream(model, tokenizer, prompt, max_new_tokens, temperature, top_k, top_p, seed, stop)


def generate_from_run(run: str | Path, prompt: str, max_new_tokens: int = 200, temperature: float = 1.0,
                      top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                      stop: str | None = None, device: str = "cpu") -> TextStream:
    """`generate_stream` with a run's model (or a model folder) and the tokenizer saved with it (checked against
    the hash the model was trained with)."""
    from dlforge.api import load

    model = load(run, device=device)
    tokenizer = model_tokenizer(model.meta, where=str(run))
    return generate_stream(model, tokenizer, prompt, max_new_tokens, temperature, top_k, top_p, seed, stop)
