"""`dlforge serve --rag DB`: POST /v1/rag/ask answers as `dlforge rag ask` does, on the index opened at start."""

from __future__ import annotations

import httpx
import pytest
from ragtools import PETS, minilm, write_files

from dlforge.deploy.serve.app import ServeOptions, create_app
from dlforge.rag.generate import ask
from dlforge.rag.http import RagService, rag_router
from dlforge.rag.ingest import index_folder
from tests.deploy.test_serve import Server, metric


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("rag-http")
    db = root / "pets.db"
    index_folder(write_files(root / "docs", PETS), db, embedder=minilm())
    service = RagService(db)
    s = Server(create_app([], ServeOptions(running=1, waiting=1, log=lambda _: None), [rag_router(service)]))
    yield s, db
    s.stop()
    service.close()


def test_ask_answers_as_the_command_does(served):
    s, db = served
    question = next(iter(PETS.values())).split(".")[0] + "?"
    want = ask(question, db, k=3)
    r = httpx.post(f"{s.url}/v1/rag/ask", json={"question": question, "k": 3, "unknown": 1}, timeout=60)
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["answer"], got["found"], got["citations"]) == (want["answer"], want["found"], want["citations"])
    assert [c["relpath"] for c in got["chunks"]] == [c["relpath"] for c in want["chunks"]]
    filtered = httpx.post(f"{s.url}/v1/rag/ask", json={"question": question, "path": "no-such/*"}, timeout=60).json()
    assert filtered["chunks"] == [] and not filtered["found"]
    assert metric(s.url, "dlforge_requests_total", route="/v1/rag/ask", status="200") == 2


def test_bad_questions_are_400_naming_the_field(served):
    s, _ = served
    for body, words in (({"question": ""}, "question"), ({"question": "x", "k": 0}, "k"),
                        ({"question": "x", "mode": "magic"}, "mode"), ({"question": "x", "types": ["exe"]}, "exe"),
                        ({"k": 3}, "question")):
        r = httpx.post(f"{s.url}/v1/rag/ask", json=body, timeout=60)
        assert r.status_code == 400 and words in r.json()["error"]["message"], (body, r.text)
