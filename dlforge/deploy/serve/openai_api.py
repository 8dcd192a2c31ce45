"""The OpenAI-compatible part of `dlforge serve`: requests checked field by field, and responses in OpenAI's shapes.

    POST /v1/completions, /v1/chat/completions   GPT runs (chat: the tokenizer's chat template, else dlforge's default)
    POST /v1/embeddings                           BERT / MiniLM; encoding_format float or base64 (the client's default)
    GET  /v1/models

Requests are read as vLLM and llama.cpp's servers read them: fields they don't know are ignored, fields they know
are checked, and a bad one is answered 400 in OpenAI's error shape naming it (`param`). A prompt plus max_tokens
over the context window is 400 `context_length_exceeded` with OpenAI's own message. Streaming answers are
server-sent events: one `id` for every chunk of a response, the role first, text deltas, a last chunk with the
finish reason, a usage chunk when `stream_options.include_usage` asks for it, then `data: [DONE]`.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_N = 8  # choices per request
MAX_STOP = 4  # stop sequences, as OpenAI
MAX_STOP_CHARS = 64
FINISH = {"eos": "stop", "stop": "stop", "max_new_tokens": "length"}


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}} with `status`."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")  # unknown fields are ignored, as vLLM and llama.cpp do

    model: str
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer name of max_tokens for chat
    temperature: float = Field(1.0, ge=0, le=2, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = Field(None, validate_default=True)
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences, got {len(stops)}")
        if any(len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"each stop sequence at most {MAX_STOP_CHARS} characters")
        return stops

    def wants_usage(self) -> bool:
        return bool(self.stream and (self.stream_options or {}).get("include_usage"))


class CompletionRequest(_Request):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not 1 <= len(value) <= MAX_N:
            raise ValueError(f"expected 1 to {MAX_N} prompts, got {len(value)}")
        return value


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_Request):
    messages: list[Message] = Field(min_length=1, max_length=256)


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | list[str] = Field(union_mode="left_to_right")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)


def read_json(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or an ApiError 400 saying why not."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise ApiError(400, "the request body nests too deeply to be read") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def parse(cls: type[BaseModel], raw: bytes) -> Any:
    """The request body as `cls`, or an ApiError 400 naming the field and what was expected."""
    body = read_json(raw)
    try:
        return cls.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if not (isinstance(p, str) and p in ("str", "list[str]")))
        value = first.get("input")
        shown = json.dumps(value)[:60] if not isinstance(value, float) or math.isfinite(value) else str(value)
        message = first["msg"].removeprefix("Value error, ")
        raise ApiError(400, f"{where}: {message} (got {shown})" if "input" in first and where else
                       f"{where or 'body'}: {message}", param=where or None) from None


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def context_exceeded(window: int, prompt_tokens: int, max_tokens: int, chat: bool) -> ApiError:
    where = "messages" if chat else "prompt"
    return ApiError(400, f"This model's maximum context length is {window} tokens. However, you requested "
                         f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {where}, {max_tokens} in the "
                         f"completion). Please reduce the length of the {where} or completion.",
                    param=where, code="context_length_exceeded")


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_body(rid: str, model: str, choices: list[dict[str, Any]], chat: bool, tokens: dict[str, int]
                    ) -> dict[str, Any]:
    """A whole (not streamed) response: `choices` are {"text", "finish_reason"} in order."""
    shaped = [{"index": i, "message": {"role": "assistant", "content": c["text"]}, "logprobs": None,
               "finish_reason": c["finish_reason"]} if chat else
              {"index": i, "text": c["text"], "logprobs": None, "finish_reason": c["finish_reason"]}
              for i, c in enumerate(choices)]
    return {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": model, "choices": shaped, "usage": tokens}


def chunk(rid: str, model: str, created: int, chat: bool, index: int = 0, text: str | None = None,
          finish_reason: str | None = None, role: bool = False, tokens: dict[str, int] | None = None) -> str:
    """One server-sent event of a streamed response."""
    if tokens is not None:
        choices: list[dict[str, Any]] = []
    elif chat:
        delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
        if text:
            delta["content"] = text
        choices = [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    else:
        choices = [{"index": index, "text": text or "", "logprobs": None, "finish_reason": finish_reason}]
    body = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
            "model": model, "choices": choices}
    if tokens is not None:
        body["usage"] = tokens
    return f"data: {json.dumps(body)}\n\n"


DONE = "data: [DONE]\n\n"


def b64_floats(vector: np.ndarray) -> str:
    """A vector as OpenAI's base64 encoding_format sends it: little-endian float32 bytes, base64."""
    return base64.b64encode(vector.astype("<f4").tobytes()).decode()


def embedding_body(model: str, vectors: np.ndarray, encoding: str, prompt_tokens: int) -> dict[str, Any]:
    data = [{"object": "embedding", "index": i,
             "embedding": b64_floats(v) if encoding == "base64" else [float(x) for x in v]}
            for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": prompt_tokens,
                                                                      "total_tokens": prompt_tokens}}
