"""What `dlforge serve` serves: each MODEL argument loaded once, with what it can do.

    served = load_served("runs/gpt-shakespeare-char-...")      # kind "generate": completions and chat
    served = load_served("minilm")                             # kind "embed": /v1/embeddings
    served = load_served("registry:fashion@champion")          # a registry version, by alias

MODEL is a run (folder, name or 'latest'), a model folder, `registry:NAME@ALIAS` (or `@N`) of the model registry in
the runs folder, or `minilm` (the packaged sentence embedder). Its id, the `model` of a request, is the registry
name, the run's folder name, or the model folder's name. A language model (one that can `step` with a state: GPT,
char RNNs) generates; a BERT embeds; any other model predicts (its task's signature says its inputs).

Paths are checked before anything is read: no `file:` or other URL, no `..`, and a model inside the runs folder
may not be a link that leads out of it.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlforge.errors import DlforgeError

KINDS = ("generate", "embed", "predict")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class ModelPathError(DlforgeError):
    """A MODEL argument refused before it is read."""


@dataclass
class Served:
    """A loaded model and what the server needs of it. `lock`: one forward at a time per model."""

    id: str
    kind: str
    source: str
    model: Any = None
    tokenizer: Any = None
    embedder: Any = None
    context: int | None = None
    version: str | None = None  # NAME@N for a registry model
    created: int = field(default_factory=lambda: int(time.time()))
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def card(self) -> dict[str, Any]:
        """The model as GET /v1/models lists it (OpenAI's fields, then dlforge's)."""
        return {"id": self.id, "object": "model", "created": self.created, "owned_by": "dlforge",
                "kind": self.kind, "source": self.source, "context_window": self.context, "version": self.version}


def check_model_path(ref: str, runs_dir: str | Path = "runs") -> None:
    """Refuse a URL, a path with `..`, or a link in the runs folder that leads out of it."""
    if _URL.match(ref) or ref.lower().startswith("file:"):
        raise ModelPathError(f"model {ref!r}: URLs are not served; give a run, a model folder or registry:NAME@ALIAS")
    if ".." in Path(ref).parts:
        raise ModelPathError(f"model {ref!r}: a path with '..' is refused; give the folder itself")
    path = Path(ref) if Path(ref).exists() else Path(runs_dir) / ref
    if not path.exists():
        return  # a run's name or 'latest': found by resolve_run below
    inside = path.absolute().is_relative_to(Path(runs_dir).absolute())  # where it is named, links not followed
    if inside and not path.resolve().is_relative_to(Path(runs_dir).resolve()):
        raise ModelPathError(f"model {ref!r}: {path} is a link out of the runs folder {runs_dir}; refused")


def require_serve() -> None:
    """A one-line error naming the extra when the server's libraries are missing."""
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise DlforgeError(f"dlforge serve needs the serve extra ({exc.name} is not installed): "
                           "pip install 'dlforge[serve]'") from None


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to listen beyond this machine without an API key."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not api_key:
        raise DlforgeError(f"--host {host}: serving beyond this machine needs an API key (--api-key or "
                           "DLFORGE_API_KEY); refused")


def load_served(ref: str, runs_dir: str | Path = "runs", device: str = "cpu") -> Served:
    """Load MODEL (see the module docstring) for serving."""
    from dlforge.deploy.model_registry import PREFIX, ModelRegistry

    version = None
    if ref.startswith(PREFIX):
        record = ModelRegistry(runs_dir, create=False).resolve(ref)
        folder, name, version = Path(record["folder"]), record["name"], record["ref"]
    elif ref == "minilm":
        return _minilm(device)
    else:
        check_model_path(ref, runs_dir)
        from dlforge.runs.rundir import model_dir

        folder = model_dir(ref, runs_dir)
        name = folder.parent.name if folder.name == "model" else folder.name
    return _load_folder(folder, name, ref, version, device)


def _load_folder(folder: Path, name: str, ref: str, version: str | None, device: str) -> Served:
    from dlforge.artifacts import load_trained
    from dlforge.llm.generate import context_window
    from dlforge.models.bert import Bert

    model = load_trained(folder, device=device)
    if isinstance(model, Bert):
        from dlforge.llm.embed import embedder_of

        embedder = embedder_of(model, str(folder))
        return Served(name, "embed", ref, model=model, tokenizer=embedder.tokenizer, embedder=embedder,
                      context=embedder.max_length, version=version)
    if callable(getattr(model, "step", None)) and callable(getattr(model, "init_state", None)):
        from dlforge.text.tokenizer import model_tokenizer

        return Served(name, "generate", ref, model=model, tokenizer=model_tokenizer(model.meta, str(folder)),
                      context=context_window(model), version=version)
    return Served(name, "predict", ref, model=model, version=version)


def _minilm(device: str) -> Served:
    from dlforge.llm.embed import load_sentence_embedder

    embedder = load_sentence_embedder("minilm", device=device)
    return Served("minilm", "embed", "minilm", model=embedder.model, tokenizer=embedder.tokenizer, embedder=embedder,
                  context=embedder.max_length)
