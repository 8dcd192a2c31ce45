"""Chatting with a language model: a reply to a message rendered with the tokenizer's chat template
(`dlforge.text.chat`), and the exact-match report of instruction tuning.

    reply = chat(model, tokenizer, "Who speaks first in Hamlet?", temperature=0)   # a Generation
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from dlforge.llm.generate import generate_batch
from dlforge.runs.progress import Progress
from dlforge.text.chat import as_messages, render_chat


def chat(model: Any, tokenizer: Any, message: str | Sequence[dict[str, Any]], config: Any = None,
         system: str | None = None, **options: Any) -> Any:
    """The model's reply to a user message (or to a conversation ending with a user turn): the conversation rendered
    with the generation prompt, generated until the end-of-turn (end-of-text) token. Returns a
    `dlforge.llm.generate.Generation` whose `completion` is the reply, stripped of surrounding spaces."""
    return chat_batch(model, tokenizer, [message], config, system, **options)[0]


def chat_batch(model: Any, tokenizer: Any, messages: Sequence[str | Sequence[dict[str, Any]]], config: Any = None,
               system: str | None = None, **options: Any) -> list[Any]:
    """Replies to several messages or conversations, generated as one left-padded batch (see `chat`)."""
    prompts = [render_chat(tokenizer, as_messages(m, system), add_generation_prompt=True) for m in messages]
    results = generate_batch(model, tokenizer, prompts, config, **options)
    return [replace(r, completion=r.completion.strip()) for r in results]


# --- judging answers -----------------------------------------------------------------------------------------------

GROUP_FIELDS = ("template", "holdout")  # record fields that answer reports break the figures down by


def normalize_answer(text: str) -> str:
    """Lowercase, single spaces, no surrounding spaces, quotes or final full stop: what exact match compares."""
    text = " ".join(text.lower().split())
    return text.strip(" \"'").rstrip(".!").strip()


def answer_report(model: Any, tokenizer: Any, records: Sequence[dict[str, Any]], batch_size: int = 64,
                  samples: int = 8) -> tuple[dict[str, float], dict[str, Any]]:
    """Greedy replies to each record's conversation up to its last assistant turn, compared with that turn:
    ({"exact_match": share}, a report with the share per `template` and `holdout` field and a few samples spread
    over the records)."""
    items = []
    for r in records:
        last = max(i for i, m in enumerate(r["messages"]) if m["role"] == "assistant")
        items.append((r["messages"][:last], r["messages"][last]["content"], r))
    if not items:
        return {}, {}
    longest = max(len(tokenizer.encode(" " + ref)) for _, ref, _ in items)
    replies = []
    with Progress("exact match", total=len(items), unit="replies") as shown:  # on stderr: a split takes a while
        for start in range(0, len(items), batch_size):
            chunk = [conv for conv, _, _ in items[start:start + batch_size]]
            replies += chat_batch(model, tokenizer, chunk, temperature=0.0, max_new_tokens=longest + 4)
            shown.update(start + len(chunk))
    hits = [normalize_answer(g.completion) == normalize_answer(ref) for g, (_, ref, _) in zip(replies, items,
                                                                                              strict=True)]
    report: dict[str, Any] = {"n": len(hits), "exact_match": sum(hits) / len(hits)}
    for field in GROUP_FIELDS:
        groups: dict[str, list[bool]] = {}
        for hit, (_, _, r) in zip(hits, items, strict=True):
            if field in r:
                groups.setdefault(str(r[field]), []).append(hit)
        if groups:
            report[f"by_{field}"] = {k: {"n": len(v), "exact_match": sum(v) / len(v)}
                                     for k, v in sorted(groups.items())}
    rows = list(zip(replies, items, hits, strict=True))
    report["samples"] = [{"question": conv[-1]["content"], "reference": ref, "reply": g.completion, "exact": hit}
                         for g, (conv, ref, _), hit in rows[:: max(len(rows) // samples, 1)][:samples]]  # spread
    return {"exact_match": report["exact_match"]}, report
