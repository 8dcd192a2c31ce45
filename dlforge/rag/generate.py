"""Retrieved chunks -> a cited answer, by one of four generators.

    with Retriever.open("docs.db") as retriever:
        result = answer("How do I upgrade?", retriever, make_generator("extractive", retriever.embedder))
    result["answer"], result["citations"], result["chunks"], result["found"]

Generators (`make_generator(name, embedder, lm=..., ...)`):
- `extractive` (the default; no language model): splits the retrieved chunks into sentences and scores each
  against the question (cosine of the embeddings, plus a bonus for the question's words it contains, plus a little
  for the chunk's rank); the best sentences, in source order, each followed by its citation [n]. Sentences that
  read like instructions to a model are never chosen.
- `gpt`: a dlforge language-model run (or model folder) through `dlforge.llm.generate`.
- `transformers`: any local causal-LM folder (`AutoModelForCausalLM`, `local_files_only=True`), its chat template
  when it has one.
- `openai`: an OpenAI-compatible server's /v1/chat/completions (llama.cpp, vLLM, Ollama, or a hosted API): base URL,
  model name, and the API key read from the environment variable you name (none sent when it is unset).
The local language models (gpt, transformers) get a prompt fitted to their context with room for `max_new_tokens`:
sources that do not fit are left out from the end of the list (the best one cut short when even it does not fit), the
result's `dropped`, `shortened` and `note` say so, and a model too small for the rules and the question is refused.
Language-model answers go through `prompt.sanitize` (see its docstring for what that can and cannot promise).

When no chunk is retrieved, or the best question-chunk cosine similarity is below `min_similarity`, the answer is
NOT_FOUND and no generator runs: the documents are not stretched to answer what they do not contain.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from dlforge.errors import ConfigError, DataError, DlforgeError
from dlforge.rag.embed import RagEmbedder, loading_error, no_loading_bars
from dlforge.rag.prompt import (
    INJECTION,
    build_messages,
    carries,
    citations,
    fit_note,
    fit_sources,
    flat_prompt,
    planted_payloads,
    sanitize,
    split_sentences,
)
from dlforge.rag.retrieve import Retriever, check_search
from dlforge.rag.store import STOPWORDS, Filters

NOT_FOUND = "The documents do not contain an answer to this question."
# all-MiniLM-L6-v2 on the Debian FAQ: the best chunk of each of the 120 FAQ questions scores 0.32 or more (median
# 0.76), that of six off-topic questions (capital of France, sourdough...) 0.05 to 0.17
MIN_SIMILARITY = 0.25
GENERATORS = ("extractive", "gpt", "transformers", "openai")


class Generator:
    name = "generator"
    generative = True  # writes its own text (so its output is sanitized)

    def fit(self, question: str, hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The hits that fit in the generator's input: the first ones, the last of them maybe shortened (all by
        default; see `prompt.fit_sources`)."""
        return hits

    def answer(self, question: str, hits: list[dict[str, Any]]) -> str:
        raise NotImplementedError


class ExtractiveGenerator(Generator):
    name, generative = "extractive", False

    def __init__(self, embedder: RagEmbedder, max_sentences: int = 3, keyword_weight: float = 0.3,
                 keep_ratio: float = 0.85):
        self.embedder = embedder
        self.max_sentences, self.keyword_weight, self.keep_ratio = max_sentences, keyword_weight, keep_ratio

    def answer(self, question: str, hits: list[dict[str, Any]]) -> str:
        candidates = []  # (source number, position in the chunk, sentence)
        seen: set[tuple[Any, int]] = set()  # (document, start in it): overlapping chunks repeat sentences
        payloads = planted_payloads(hits)
        for n, hit in enumerate(hits, 1):
            titles = _heading_lines(hit["text"], hit["heading"])
            for s, e in split_sentences(hit["text"]):
                sentence = " ".join(hit["text"][s:e].split())
                where = (hit.get("doc_id"), hit["start"] + s)
                fragment = (s == 0 and sentence[:1].islower()) or sentence.endswith(":")  # cut by chunking / a lead-in
                if (len(sentence.split()) < 3 or sentence.endswith("?") or fragment or INJECTION.search(sentence)
                        or carries(sentence, payloads) or any(s < te and e > ts for ts, te in titles)
                        or where in seen):
                    continue
                seen.add(where)
                candidates.append((n, s, sentence))
        if not candidates:
            return NOT_FOUND
        vectors = self.embedder.embed([question] + [c[2] for c in candidates])  # (1 + n, dim)
        cosine = vectors[1:] @ vectors[0]  # (n,)
        words = _words(question)
        overlap = np.array([len(words & _words(c[2])) / max(len(words), 1) for c in candidates])
        rank = np.array([1.0 / c[0] for c in candidates])
        score = cosine + self.keyword_weight * overlap + 0.05 * rank
        order = np.argsort(-score, kind="stable")
        best = score[order[0]]
        floor = best - (1 - self.keep_ratio) * abs(best)  # within 15% of the best score (by default)
        chosen = [i for i in order[:self.max_sentences] if score[i] >= floor]
        chosen.sort(key=lambda i: (candidates[i][0], candidates[i][1]))
        return " ".join(f"{candidates[i][2]} [{candidates[i][0]}]" for i in chosen)


UNDERLINE = re.compile(r"\s*([=\-~^\"'`#*+])\1+\s*")  # a reStructuredText or setext heading underline


def _heading_lines(text: str, heading: list[str]) -> list[tuple[int, int]]:
    """Spans of the lines of `text` that are one of its headings (with or without Markdown's #), or underlines."""
    names = {" ".join(h.split()) for h in heading}
    spans = []
    for m in re.finditer(r"[^\n]+", text):
        if " ".join(m.group().lstrip("#").split()) in names or UNDERLINE.fullmatch(m.group()):
            spans.append(m.span())
    return spans


def _words(text: str) -> set[str]:
    """Content words, crudely stemmed (a trailing s dropped), for the keyword overlap."""
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in re.findall(r"\w+", text.lower())
            if w not in STOPWORDS}


class GPTGenerator(Generator):
    """A dlforge language-model run (loaded here, so a wrong --lm is refused before any retrieval): the flat prompt
    continued by `dlforge.llm.generate`, with the sources that fit its context window beside the answer's tokens."""

    name = "gpt"

    def __init__(self, run: str, max_new_tokens: int = 256, temperature: float = 0.0, seed: int | None = 0):
        from dlforge.llm.generate import load_language_model

        self.run, self.max_new_tokens, self.temperature, self.seed = run, max_new_tokens, temperature, seed
        self.model, self.tokenizer = load_language_model(run)

    def _tokens(self, question: str, hits: list[dict[str, Any]]) -> int:
        return len(self.tokenizer.encode(flat_prompt(build_messages(question, hits))))

    def fit(self, question: str, hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from dlforge.llm.generate import context_window

        window = context_window(self.model)
        if window is None:  # a recurrent model reads a prompt of any length
            return hits
        return fit_sources(question, hits, self._tokens, window, self.max_new_tokens, f"--lm {self.run}")

    def answer(self, question: str, hits: list[dict[str, Any]]) -> str:
        from dlforge.llm.generate import generate_stream

        prompt = flat_prompt(build_messages(question, hits))
        return generate_stream(self.model, self.tokenizer, prompt, max_new_tokens=self.max_new_tokens,
                               temperature=self.temperature, seed=self.seed, on_long_prompt="error").read().strip()


class TransformersGenerator(Generator):
    """A local Hugging Face causal language model folder, loaded on first use; greedy decoding."""

    name = "transformers"

    def __init__(self, folder: str | Path, max_new_tokens: int = 256, device: str = "cpu"):
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise ConfigError(f"--lm {folder}: no such folder (expected a local transformers causal-LM folder)")
        self.max_new_tokens, self.device = max_new_tokens, device
        self._model = self._tokenizer = None

    def _load(self) -> None:
        if self._model is not None:
            return
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise ConfigError("the transformers generator needs transformers: pip install transformers") from exc
        from dlforge.artifacts import LOAD_ERRORS

        try:
            with no_loading_bars():
                self._tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
                self._model = AutoModelForCausalLM.from_pretrained(self.folder, local_files_only=True).to(self.device)
        except LOAD_ERRORS as exc:
            raise ConfigError(f"--lm {self.folder}: not a loadable causal language model ({loading_error(exc)})"
                              ) from exc
        self._model.eval()

    def _ids(self, question: str, hits: list[dict[str, Any]]) -> list[int]:
        messages = build_messages(question, hits)
        if getattr(self._tokenizer, "chat_template", None):
            return list(self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                            return_dict=True)["input_ids"])
        return list(self._tokenizer(flat_prompt(messages))["input_ids"])

    def fit(self, question: str, hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self._load()
        config = self._model.config
        context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        if context is None:
            return hits
        return fit_sources(question, hits, lambda q, h: len(self._ids(q, h)), context, self.max_new_tokens,
                           f"--lm {self.folder}")

    def answer(self, question: str, hits: list[dict[str, Any]]) -> str:
        import torch

        self._load()
        ids = torch.tensor([self._ids(question, hits)], device=self.device)  # (1, T)
        pad = self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else \
            self._tokenizer.eos_token_id
        with torch.no_grad():
            out = self._model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=self.max_new_tokens,
                                       do_sample=False, pad_token_id=pad)
        return self._tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


class OpenAIGenerator(Generator):
    """POST {base_url}/chat/completions, as OpenAI-compatible servers implement it; temperature 0."""

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", max_tokens: int = 512,
                 timeout: float = 120.0):
        if not re.match(r"^https?://", base_url or ""):
            raise ConfigError(f"--base-url {base_url!r}: expected an http(s) URL such as http://127.0.0.1:8080/v1")
        if not model:
            raise ConfigError("--lm: the openai generator needs the server's model name")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key_env, self.max_tokens, self.timeout = model, api_key_env, max_tokens, timeout

    def answer(self, question: str, hits: list[dict[str, Any]]) -> str:
        body = {"model": self.model, "messages": build_messages(question, hits), "temperature": 0,
                "max_tokens": self.max_tokens, "stream": False}
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            hint = f" (set the API key in ${self.api_key_env})" if exc.code in (401, 403) else ""
            detail = exc.read().decode("utf-8", "replace")[:200]
            raise DlforgeError(f"{self.url}: HTTP {exc.code} {exc.reason}{hint}: {detail}") from exc
        except (urllib.error.URLError, TimeoutError) as exc:
            raise DlforgeError(f"{self.url}: cannot reach the server ({getattr(exc, 'reason', exc)})") from exc
        except json.JSONDecodeError as exc:
            raise DataError(f"{self.url}: the reply is not JSON ({exc.msg})") from exc
        try:
            return str(reply["choices"][0]["message"]["content"]).strip()
        except (KeyError, IndexError, TypeError) as exc:
            raise DataError(f"{self.url}: unexpected reply, no choices[0].message.content: {str(reply)[:200]}"
                            ) from exc


def make_generator(name: str, embedder: RagEmbedder | None = None, lm: str | None = None, base_url: str | None = None,
                   api_key_env: str = "OPENAI_API_KEY", max_new_tokens: int = 256) -> Generator:
    """A generator by name; `lm` is the run (gpt), the model folder (transformers) or the model name (openai)."""
    if name == "extractive":
        if embedder is None:
            raise ConfigError("the extractive generator needs the index's embedding model")
        return ExtractiveGenerator(embedder)
    if name in ("gpt", "transformers") and not lm:
        raise ConfigError(f"--generator {name} needs --lm ({'a run folder or name' if name == 'gpt' else 'a folder'})")
    if name == "gpt":
        return GPTGenerator(lm, max_new_tokens=max_new_tokens)
    if name == "transformers":
        return TransformersGenerator(lm, max_new_tokens=max_new_tokens)
    if name == "openai":
        return OpenAIGenerator(base_url or "", lm or "", api_key_env, max_tokens=max_new_tokens)
    raise ConfigError(f"--generator {name!r}: expected one of {', '.join(GENERATORS)}")


def check_question(question: str) -> str:
    """The question, unless it is empty (a ConfigError)."""
    if not isinstance(question, str) or not question.strip():
        raise ConfigError("question: empty; ask something, e.g. dlforge rag ask \"How do I upgrade?\" --db docs.db")
    return question


def ask(question: str, db: str | Path, generator: str = "extractive", k: int = 5, mode: str = "hybrid",
        filters: Filters | None = None, min_similarity: float = MIN_SIMILARITY, exact: bool = False,
        model: str | None = None, **generator_options: Any) -> dict[str, Any]:
    """`answer` from the index at `db` (what `dlforge rag ask` runs): the question and every option are checked
    before the index or a model is opened. `model`: where to load the index's embedding model from;
    `generator_options`: lm, base_url, api_key_env, max_new_tokens (see `make_generator`)."""
    check_question(question)
    check_search(mode, k)
    chosen = None if generator == "extractive" else make_generator(generator, **generator_options)
    with Retriever.open(db, model) as retriever:
        chosen = chosen or make_generator("extractive", retriever.embedder)
        return answer(question, retriever, chosen, k, mode, filters, min_similarity, exact)


def answer(question: str, retriever: Retriever, generator: Generator, k: int = 5, mode: str = "hybrid",
           filters: Filters | None = None, min_similarity: float = MIN_SIMILARITY, exact: bool = False
           ) -> dict[str, Any]:
    """Retrieve, check that the documents hold an answer, generate, cite (see the module docstring)."""
    check_question(question)
    hits = retriever.search(question, k, mode, filters, exact)
    retriever.similarity(question, hits)
    for n, hit in enumerate(hits, 1):
        hit["n"] = n
    best = max((h["similarity"] for h in hits), default=None)
    result = {"question": question, "generator": generator.name, "mode": mode, "best_similarity": best,
              "min_similarity": min_similarity, "sanitized": False, "chunks": hits, "dropped": [], "shortened": [],
              "note": None}
    if best is None or best < min_similarity:
        return {**result, "answer": NOT_FOUND, "found": False, "citations": []}
    used = generator.fit(question, hits)
    result["dropped"] = [h["n"] for h in hits[len(used):]]  # the sources left out of the prompt
    result["shortened"] = [n for n, h in enumerate(used, 1) if h.get("shortened")]
    result["note"] = fit_note(hits, used)
    text = generator.answer(question, used)
    if generator.generative:
        text, result["sanitized"] = sanitize(text, used)
    found = text != NOT_FOUND
    return {**result, "answer": text, "found": found, "citations": citations(text, used) if found else []}
