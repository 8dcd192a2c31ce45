"""Question answering over an index in `dlforge serve --rag DB`: POST /v1/rag/ask.

    {"question": "How do I upgrade?", "k": 5, "mode": "hybrid", "path": "guides/*", "types": ["md"]}
    -> {"answer", "found", "citations": [...], "chunks": [...], "note", ...}   (as `dlforge rag ask --json`)

The index and its embedding model are opened once, at start, on a thread of their own that then answers every
question (an SQLite connection belongs to the thread that opened it); each question is admitted like the server's
other work, so a burst gets 429 rather than a long wait.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from dlforge.deploy.serve.openai_api import parse


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    question: str = Field(min_length=1, max_length=4000)
    k: int = Field(5, ge=1, le=50)
    mode: Literal["hybrid", "dense", "keyword"] = "hybrid"
    min_similarity: float | None = Field(None, ge=-1, le=1, allow_inf_nan=False)
    path: str | None = Field(None, max_length=500)
    types: list[str] | None = Field(None, max_length=20)


class RagService:
    """An index opened for answering, with its generator, on one thread."""

    def __init__(self, db: str | Path, generator: str = "extractive", model: str | None = None,
                 **generator_options: Any):
        from dlforge.rag.generate import make_generator
        from dlforge.rag.retrieve import Retriever

        self.db = Path(db)
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlforge-rag")
        self.retriever = self.thread.submit(Retriever.open, db, model).result()
        chosen = None if generator == "extractive" else make_generator(generator, **generator_options)
        self.generator = chosen or make_generator("extractive", self.retriever.embedder)

    def answer(self, request: AskRequest) -> dict[str, Any]:
        from dlforge.rag.generate import MIN_SIMILARITY, answer
        from dlforge.rag.store import Filters

        filters = Filters(path=request.path, types=tuple(request.types) if request.types else None)
        threshold = MIN_SIMILARITY if request.min_similarity is None else request.min_similarity
        return answer(request.question, self.retriever, self.generator, request.k, request.mode, filters, threshold)

    def close(self) -> None:
        self.thread.submit(self.retriever.close).result()
        self.thread.shutdown()


def rag_router(service: RagService) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/rag/ask")
    async def ask(request: Request) -> dict:
        body = parse(AskRequest, await request.body())
        result = await request.app.state.admitted(service.thread, service.answer, body)
        request.app.state.keep("/v1/rag/ask", None, (body.model_dump(), {
            "answer": result["answer"], "found": result["found"], "citations": result["citations"]}))
        return result

    return router
