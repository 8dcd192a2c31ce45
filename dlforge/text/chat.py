"""Chat templates: conversations as text for a language model, rendered with the tokenizer's Jinja template exactly
as transformers' `apply_chat_template` renders them (tested); `dlforge.llm.chat.chat` answers them with a model.

    text = render_chat(tokenizer, [{"role": "user", "content": "Who speaks first in Hamlet?"}],
                       add_generation_prompt=True)      # "Question: Who speaks first in Hamlet?\nAnswer:"
    pieces = chat_segments(tokenizer, messages)         # [(text, learned?)]: the assistant turns are learned

Hugging Face's conventions: the template sees `messages` (a list of {"role", "content"}, roles system, user and
assistant), `add_generation_prompt` (end with what opens an assistant turn) and the tokenizer's special tokens
(`eos_token`, `bos_token`, `pad_token`, ...); it runs in Jinja's sandbox with `trim_blocks` and `lstrip_blocks`,
the loop controls, transformers' `tojson` filter and `raise_exception`, and `{% generation %}` blocks render their
content. The template is stored with the tokenizer (`tokenizer_config.json`'s `chat_template`, part of its hash).

`DEFAULT_CHAT_TEMPLATE`, for models that had none: a system message on its own lines, then `Question: ...` and
`Answer: ...<|endoftext|>` turns; the generation prompt is `Answer:`, and an answer ends with the end-of-text token,
so generation stops there. Plain words rather than new special tokens, because a base model pretrained on plays has
no embedding for a token it never saw, and it has seen `<|endoftext|>` end every play.

Which tokens are learned (instruction tuning): for each assistant turn, the conversation up to it with the generation
prompt must be a prefix of the conversation through it; the difference is the turn's own text, end-of-turn token
included, and it is learned, everything else (system, user, the generation prompts) is not. Each piece is encoded
on its own, so the prompt's tokens are exactly those `chat` feeds the model: a template should put a piece boundary
where a token cannot straddle it (the default's `Answer:` then ` Romeo`: byte-level BPE splits before the space).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from dlforge.errors import ConfigError, DataError

ROLES = ("system", "user", "assistant")
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'Question: ' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Answer: ' + message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('unknown role ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Answer:' }}{% endif %}"
)


# --- rendering -----------------------------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _compile(template: str) -> Any:
    try:
        import jinja2
        from jinja2.ext import Extension, loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:  # a dependency of dlforge (and of torch): only a broken install lacks it
        raise ConfigError("chat templates need jinja2: pip install 'jinja2>=3.1'") from None

    class Generation(Extension):
        """`{% generation %}...{% endgeneration %}` (transformers marks assistant text with it): the content."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_content"), [], [], body).set_lineno(lineno)

        def _content(self, caller):
            return caller()

    def raise_exception(message: str):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):  # transformers' (no escaping)
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise ConfigError(f"chat_template: not a valid Jinja template (line {exc.lineno}: {exc.message})") from None


def render_template(template: str, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False,
                    special_tokens: dict[str, str] | None = None) -> str:
    """`messages` rendered by the Jinja `template`; `special_tokens` maps role -> token ({"eos": "<|endoftext|>"}),
    seen by the template as `eos_token`, ...."""
    import jinja2

    tokens = {f"{role}_token": token for role, token in (special_tokens or {}).items()}
    try:
        return _compile(template).render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                         **tokens)
    except jinja2.exceptions.TemplateError as exc:
        raise DataError(f"chat_template: {exc}") from None


def render_chat(tokenizer: Any, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False) -> str:
    """`messages` rendered with the tokenizer's chat template and special tokens."""
    return render_template(template_of(tokenizer), messages, add_generation_prompt, tokenizer.special_tokens)


def template_of(tokenizer: Any) -> str:
    """The tokenizer's chat template; a DataError when it has none."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise DataError("the tokenizer has no chat template: this model was not instruction-tuned (train it with "
                        "data sft_jsonl, which stores one with the tokenizer)")
    return template


def read_template(value: str | None) -> str:
    """A chat template from a config value: `default` (DEFAULT_CHAT_TEMPLATE), a file (.jinja, .j2, .txt) or the
    template itself."""
    if value is None or value == "default":
        return DEFAULT_CHAT_TEMPLATE
    path = Path(value)
    if path.suffix in (".jinja", ".j2", ".txt") and "{" not in value:
        if not path.is_file():
            raise ConfigError(f"data.chat_template: {value}: no such file")
        value = path.read_text(encoding="utf-8")
    _compile(value)  # a syntax error names the line now, not at the first record
    return value


# --- conversations -------------------------------------------------------------------------------------------------


def check_messages(messages: Any, where: str) -> list[dict[str, str]]:
    """`messages` as a list of {"role", "content"} with known roles and string contents; a DataError naming the
    message and field otherwise."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: messages: expected a non-empty list of {{\"role\", \"content\"}} objects")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise DataError(f"{where}: messages[{i}]: expected an object with role and content")
        if m.get("role") not in ROLES:
            raise DataError(f"{where}: messages[{i}].role: expected {', '.join(ROLES)}, got {m.get('role')!r}")
        if not isinstance(m.get("content"), str):
            raise DataError(f"{where}: messages[{i}].content: expected a string, got {type(m.get('content')).__name__}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def chat_segments(tokenizer: Any, messages: Sequence[dict[str, Any]]) -> list[tuple[str, bool]]:
    """The rendered conversation cut into pieces, each with whether it is learned: every assistant turn (its text
    after the generation prompt, end-of-turn token included) is; everything else is not."""
    pieces: list[tuple[str, bool]] = []
    done = ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = render_chat(tokenizer, messages[:i], add_generation_prompt=True)
        through = render_chat(tokenizer, messages[: i + 1])
        if not prompt.startswith(done) or not through.startswith(prompt):
            raise DataError(f"chat_template: the conversation up to message {i} (with the generation prompt) is not "
                            "a prefix of the conversation through it; the template must render turn by turn")
        pieces += [(prompt[len(done):], False), (through[len(prompt):], True)]
        done = through
    whole = render_chat(tokenizer, messages)
    if not whole.startswith(done):
        raise DataError("chat_template: the whole conversation does not start with its rendered turns")
    if len(whole) > len(done):
        pieces.append((whole[len(done):], False))
    return [(text, learned) for text, learned in pieces if text]


def encode_chat(tokenizer: Any, messages: Sequence[dict[str, Any]]) -> tuple[list[int], list[bool]]:
    """Token ids of the rendered conversation and, per token, whether it is learned (see `chat_segments`)."""
    ids: list[int] = []
    learned: list[bool] = []
    for text, trained in chat_segments(tokenizer, messages):
        piece = tokenizer.encode(text)
        ids += piece
        learned += [trained] * len(piece)
    return ids, learned


# --- answering -----------------------------------------------------------------------------------------------------


def as_messages(message: str | Sequence[dict[str, Any]], system: str | None = None) -> list[dict[str, str]]:
    """A user message (a string) or a conversation, with an optional system message first."""
    messages = [{"role": "user", "content": message}] if isinstance(message, str) else list(message)
    if system is not None:
        messages = [{"role": "system", "content": system}, *messages]
    return check_messages(messages, "chat")
