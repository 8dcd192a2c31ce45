"""`dlforge serve` (dlforge.deploy.serve), run for real: uvicorn on a loopback port, the official `openai` client and
raw HTTP as a hostile client would send it."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import re
import select
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from dlforge.deploy.serve.app import ServeOptions, create_app
from dlforge.deploy.serve.served import ModelPathError, check_bind, check_model_path, load_served
from dlforge.errors import DlforgeError

KEY = "test-key-123"


class Server:
    """An app under uvicorn on a free loopback port, in a thread."""

    def __init__(self, app):
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert time.time() < deadline, "the server did not start"
            time.sleep(0.02)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def char_gpt(tmp_path_factory) -> Path:
    """The char GPT (the gpt-shakespeare-char preset: rotary GPT, a character tokenizer), tiny: 1 layer, 2 steps."""
    from dlforge.api import train

    small = ["model.dim=32", "model.n_layers=1", "model.n_heads=2", "model.context=64", "data.context=64",
             "data.limit=64", "train.max_steps=2", "train.max_epochs=null", "train.warmup_steps=0",
             "train.progress=false", "train.tensorboard=false", "train.eval_every=2", "train.checkpoint_every=null"]
    return train("gpt-shakespeare-char", small, run_dir=tmp_path_factory.mktemp("char") / "runs" / "char").run_dir


@pytest.fixture(scope="module")
def models(char_gpt):
    gpt = load_served(str(char_gpt))
    calls = {"n": 0}
    import torch

    embedding = next(m for m in gpt.model.modules() if isinstance(m, torch.nn.Embedding))  # every step reads it
    embedding.register_forward_pre_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    return {"gpt": gpt, "minilm": load_served("minilm"), "calls": calls}


@pytest.fixture(scope="module")
def server(models):
    lines: list[str] = []
    s = Server(create_app([models["gpt"], models["minilm"]], ServeOptions(log=lines.append)))
    s.lines = lines
    yield s
    s.stop()


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus series (over the label values not given) in the server's /metrics."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        m = re.match(rf"^{name}(?:{{(.*)}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


def test_the_openai_client_round_trips_every_route(server, models):
    from openai import BadRequestError, OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    gpt = models["gpt"].id
    assert {m.id for m in client.models.list().data} == {gpt, "minilm"}
    done = client.completions.create(model=gpt, prompt="the cat", max_tokens=5, temperature=0)
    assert done.choices[0].finish_reason in ("length", "stop") and done.usage.completion_tokens <= 5
    assert done.usage.prompt_tokens == len(models["gpt"].tokenizer.encode("the cat"))
    again = client.completions.create(model=gpt, prompt="the cat", max_tokens=5, temperature=0)
    assert again.choices[0].text == done.choices[0].text  # greedy is deterministic
    chat = client.chat.completions.create(model=gpt, messages=[{"role": "user", "content": "hello"}], max_tokens=4,
                                          seed=1)
    assert chat.object == "chat.completion" and chat.choices[0].message.role == "assistant"
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens
    stream = client.chat.completions.create(model=gpt, messages=[{"role": "user", "content": "hi"}], max_tokens=6,
                                            stream=True, stream_options={"include_usage": True}, temperature=0)
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
    assert chunks[-2].choices[0].finish_reason in ("length", "stop")
    plain = client.chat.completions.create(model=gpt, messages=[{"role": "user", "content": "hi"}], max_tokens=6,
                                           temperature=0)
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == plain.choices[0].message.content
    texts = ["a first sentence", "and another one"]
    want = models["minilm"].embedder.embed(texts)
    b64 = client.embeddings.create(model="minilm", input=texts)  # the client asks for base64 by default
    floats = client.embeddings.create(model="minilm", input=texts, encoding_format="float")
    for got in (b64, floats):
        assert np.allclose(np.array([d.embedding for d in got.data]), want, atol=1e-5)
    assert floats.usage.prompt_tokens == sum(len(t) + 2 for t in models["minilm"].tokenizer.encode_batch(texts))
    with pytest.raises(BadRequestError) as exc:
        client.completions.create(model=gpt, prompt="the cat " * 40, max_tokens=10)
    error = exc.value.body
    assert error["code"] == "context_length_exceeded"
    assert error["message"].startswith("This model's maximum context length is 64 tokens. However, you requested")


def test_a_stream_is_server_sent_events_ending_with_done(server, models):
    body = {"model": models["gpt"].id, "prompt": "the", "max_tokens": 3, "stream": True,
            "stream_options": {"include_usage": True}, "an_unknown_field": {"ignored": True}}
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert payloads[-1]["usage"]["completion_tokens"] == 3 and payloads[-1]["choices"] == []
    assert all(p["object"] == "text_completion" for p in payloads)


HOSTILE = {  # name -> (body bytes, status, the field the message names)
    "10 MB body": (b'{"model": "x", "prompt": "' + b"a" * 10_000_000 + b'"}', 413, "larger than"),
    "invalid JSON": (b'{"model": ', 400, "not valid JSON"),
    "deep nesting": (b'{"model": "gpt", "prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "nests"),
    "max_tokens -1": ({"max_tokens": -1}, 400, "max_tokens"),
    "max_tokens 0": ({"max_tokens": 0}, 400, "max_tokens"),
    "max_tokens 1e9": ({"max_tokens": 10**9}, 400, "context length"),
    "n 1e6": ({"n": 10**6}, 400, "n:"),
    "temperature NaN": (b'{"model": "GPT", "prompt": "a", "temperature": NaN}', 400, "temperature"),
    "top_p 2": ({"top_p": 2}, 400, "top_p"),
    "stop list of 5": ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    "unknown model": ({"model": "no-such-model"}, 404, "no-such-model"),
    "prompt not a string": ({"prompt": 7}, 400, "prompt"),
}


def raw_post(url: str, path: str, body: bytes) -> tuple[int, dict, float]:
    """POST as a bare client does: the whole request in one write on a fresh connection, then read to the end.
    (status, JSON body, seconds). httpx is not used for timing: its requests here wait ~40 ms on delayed ACKs."""
    host, port = url.removeprefix("http://").split(":")
    start = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        request = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
        for at in range(0, len(request), 1 << 16):  # as a browser does: stop sending once the answer has come
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(request[at:at + (1 << 16)])
            except (BrokenPipeError, ConnectionResetError):
                break
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(1 << 16):
                data += chunk
    took = time.perf_counter() - start
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload), took


def test_hostile_requests_are_refused_fast_naming_the_field_and_the_model_never_runs(server, models):
    calls = models["calls"]["n"]
    for name, (change, status, words) in HOSTILE.items():
        if isinstance(change, bytes):
            content = change.replace(b'"GPT"', json.dumps(models["gpt"].id).encode())
        else:
            content = json.dumps({"model": models["gpt"].id, "prompt": "the", **change}).encode()
        code, answer, took = raw_post(server.url, "/v1/completions", content)
        assert code == status, (name, answer)
        error = answer["error"]
        assert words.lower() in error["message"].lower(), (name, error)
        assert set(error) == {"message", "type", "param", "code"}
        assert took < 0.2, (name, took)
    assert models["calls"]["n"] == calls  # the model never ran
    r = httpx.post(f"{server.url}/v1/completions", json={"model": models["gpt"].id, "prompt": "the", "max_tokens": 2})
    assert r.status_code == 200 and models["calls"]["n"] > calls


def test_metrics_count_each_request_once_and_the_log_has_a_line_each(server, models):
    before = metric(server.url, "dlforge_requests_total")  # this /metrics request is counted once it has ended
    lines = len(server.lines)
    for _ in range(3):
        httpx.get(f"{server.url}/v2/health/live")
    httpx.post(f"{server.url}/v1/embeddings", json={"model": "minilm", "input": "x"})
    httpx.post(f"{server.url}/v1/embeddings", json={"model": "nope", "input": "x"})
    after = metric(server.url, "dlforge_requests_total")
    assert after - before == 1 + 5  # the first /metrics, then five
    assert metric(server.url, "dlforge_requests_total", route="/v2/health/live", status="200") >= 3
    assert metric(server.url, "dlforge_requests_total", route="/v1/embeddings", status="404") >= 1
    logged = [json.loads(line) for line in server.lines[lines:]]
    assert [(e["route"], e["status"]) for e in logged if e["route"] != "/metrics"] == [
        ("/v2/health/live", 200)] * 3 + [("/v1/embeddings", 200), ("/v1/embeddings", 404)]
    assert metric(server.url, "dlforge_model_info", model="minilm", kind="embed") == 1


def test_a_client_that_goes_away_mid_stream_cancels_its_generation(models):
    s = Server(create_app([models["gpt"]], ServeOptions(log=lambda _: None)))
    try:
        body = {"model": models["gpt"].id, "prompt": "the", "max_tokens": 60, "stream": True}
        client = httpx.Client(timeout=30)
        with client.stream("POST", f"{s.url}/v1/completions", json=body) as r:
            next(r.iter_lines())
        client.close()  # gone after the first event
        deadline = time.time() + 1.0
        while metric(s.url, "dlforge_requests_running") != 0:
            assert time.time() < deadline, "the generation went on after the client left"
            time.sleep(0.05)
        assert metric(s.url, "dlforge_generated_tokens_total") < 60
    finally:
        s.stop()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_a_burst_of_64_streaming_clients_ends_in_200_or_429_and_is_counted_once(models):
    """The default queue, 2 running + 8 waiting: beyond them, 429 with Retry-After at once; no stream hangs (each
    within 60 s), memory is back within 10% after the burst, and /metrics counts every request exactly once."""
    from concurrent.futures import ThreadPoolExecutor

    s = Server(create_app([models["gpt"]], ServeOptions(retry_after_s=3, log=lambda _: None)))
    assert (ServeOptions().running, ServeOptions().waiting) == (2, 8)
    body = {"model": models["gpt"].id, "prompt": "the", "max_tokens": 40, "stream": True}

    def client(_: int) -> tuple[int, str | None, bool]:
        with httpx.stream("POST", f"{s.url}/v1/completions", json=body, timeout=60) as r:
            events = [line for line in r.iter_lines() if line]
            return r.status_code, r.headers.get("retry-after"), bool(events) and events[-1] == "data: [DONE]"

    try:
        client(0)  # warm
        rss = _rss_bytes()
        before = metric(s.url, "dlforge_requests_total", route="/v1/completions")
        with ThreadPoolExecutor(64) as pool:
            results = list(pool.map(client, range(64), timeout=120))
        statuses = [r[0] for r in results]
        assert set(statuses) <= {200, 429} and statuses.count(200) >= 6 and 429 in statuses
        assert all(done for status, _, done in results if status == 200)  # every admitted stream ended
        assert all(after == "3" for status, after, _ in results if status == 429)
        assert metric(s.url, "dlforge_requests_total", route="/v1/completions") - before == 64
        assert metric(s.url, "dlforge_requests_total", route="/v1/completions", status="429") == statuses.count(429)
        assert metric(s.url, "dlforge_requests_running") == 0 and metric(s.url, "dlforge_requests_waiting") == 0
        assert _rss_bytes() < 1.1 * rss
        assert httpx.get(f"{s.url}/v2/health/ready").json() == {"ready": True}
    finally:
        s.stop()


def test_an_api_key_guards_every_route_but_health(models):
    s = Server(create_app([models["minilm"]], ServeOptions(api_key=KEY, log=lambda _: None)))
    try:
        assert httpx.get(f"{s.url}/v2/health/live").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            r = httpx.get(f"{s.url}/v1/models", headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = httpx.get(f"{s.url}/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 200 and r.json()["data"][0]["id"] == "minilm"
    finally:
        s.stop()


def test_binding_and_model_paths_are_checked(tmp_path):
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    with pytest.raises(DlforgeError, match="needs an API key"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", KEY)
    runs = tmp_path / "runs"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    runs.mkdir()
    (runs / "sneaky").symlink_to(outside)
    for ref, words in (("file:///etc/passwd", "URL"), ("http://x/model", "URL"), ("runs/../../etc", "'..'"),
                       ("sneaky", "link out of the runs folder")):
        with pytest.raises(ModelPathError, match=re.escape(words)):
            check_model_path(ref, runs)
    check_model_path(str(outside), runs)  # a folder given outright, outside the runs folder, is the user's choice


def test_serve_refuses_in_one_line_before_loading(tmp_path, capsys):
    from tests.clitools import run_here

    for args, words in ((["serve", "file:///x"], "URLs are not served"),
                        (["serve", "minilm", "--host", "0.0.0.0"], "needs an API key"),
                        (["serve", str(tmp_path / "missing")], "missing")):
        r = run_here(capsys, *args)
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_base64_embeddings_are_little_endian_float32(server):
    r = httpx.post(f"{server.url}/v1/embeddings", json={"model": "minilm", "input": ["x"],
                                                        "encoding_format": "base64"}).json()
    vector = np.frombuffer(base64.b64decode(r["data"][0]["embedding"]), dtype="<f4")
    assert vector.shape == (384,) and math.isclose(float(np.linalg.norm(vector)), 1.0, rel_tol=1e-4)


def test_concurrent_embedding_requests_are_batched_and_each_gets_its_own_rows(models):
    from concurrent.futures import ThreadPoolExecutor

    s = Server(create_app([models["minilm"]], ServeOptions(running=2, waiting=30, batch_wait_s=0.05,
                                                           log=lambda _: None)))
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'the weather'}" for i in range(24)]
    want = models["minilm"].embedder.embed(texts)

    def one(i: int) -> list[float]:
        r = httpx.post(f"{s.url}/v1/embeddings", json={"model": "minilm", "input": texts[i], "encoding_format":
                                                       "float"}, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()["data"][0]["embedding"]

    try:
        with ThreadPoolExecutor(24) as pool:
            got = np.array(list(pool.map(one, range(24))))
        assert np.allclose(got, want, atol=1e-5)  # each request its own rows, whatever the batch
        batches = metric(s.url, "dlforge_batch_items_count", model="minilm")
        assert metric(s.url, "dlforge_batch_items_sum", model="minilm") == 24
        assert batches < 24  # some requests shared a forward pass
    finally:
        s.stop()


def test_concurrent_generations_sampled_alike_share_a_batch_and_give_what_they_give_alone(models):
    from concurrent.futures import ThreadPoolExecutor

    gpt = models["gpt"].id
    s = Server(create_app([models["gpt"]], ServeOptions(batch_wait_s=0.1, log=lambda _: None)))
    prompts = ["the cat", "a dog and", "once upon", "the"]

    def complete(prompt: str, stream: bool = False) -> str:
        body = {"model": gpt, "prompt": prompt, "max_tokens": 12, "temperature": 0, "stream": stream}
        if not stream:
            return httpx.post(f"{s.url}/v1/completions", json=body, timeout=60).json()["choices"][0]["text"]
        with httpx.stream("POST", f"{s.url}/v1/completions", json=body, timeout=60) as r:
            events = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: {")]
        return "".join(e["choices"][0]["text"] for e in events if e["choices"])

    try:
        alone = [complete(p) for p in prompts]
        solo_batches = metric(s.url, "dlforge_batch_items_count", model=gpt)
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(complete, prompts, [True, False, True, False]))
        assert together == alone
        assert metric(s.url, "dlforge_batch_items_count", model=gpt) - solo_batches < 4
        assert metric(s.url, "dlforge_batch_items_sum", model=gpt) == 8
    finally:
        s.stop()


def test_the_request_store_keeps_inputs_and_predictions_within_its_cap(models, tmp_path):
    from dlforge.deploy.serve.request_store import RequestStore

    store = RequestStore(tmp_path / "requests.db", max_bytes=100_000)
    s = Server(create_app([models["gpt"], models["minilm"]], ServeOptions(store=store, log=lambda _: None)))
    try:
        done = httpx.post(f"{s.url}/v1/completions", json={"model": models["gpt"].id, "prompt": "the cat",
                                                           "max_tokens": 4, "temperature": 0}).json()
        with httpx.stream("POST", f"{s.url}/v1/completions", json={"model": models["gpt"].id, "prompt": "a",
                                                                   "max_tokens": 3, "stream": True}) as r:
            list(r.iter_lines())
        httpx.post(f"{s.url}/v1/embeddings", json={"model": "minilm", "input": ["x", "y"]})
        rows = store.rows()
        assert [r["route"] for r in rows] == ["/v1/completions", "/v1/completions", "/v1/embeddings"]
        assert rows[0]["inputs"]["prompts"] == ["the cat"] and rows[0]["outputs"]["texts"] == [
            done["choices"][0]["text"]]
        assert rows[1]["inputs"]["prompts"] == ["a"] and len(rows[1]["outputs"]["texts"]) == 1
        vectors = [np.frombuffer(base64.b64decode(v), "<f4") for v in rows[2]["outputs"]["embeddings_b64"]]
        assert np.allclose(np.stack(vectors), models["minilm"].embedder.embed(["x", "y"]), atol=1e-5)
        for i in range(40):  # ~4 KB each: past the cap, the oldest go
            httpx.post(f"{s.url}/v1/embeddings", json={"model": "minilm", "input": [f"text {i}", "more"]})
        kept = store.rows()
        assert kept[0]["id"] > 1 and kept[-1]["inputs"]["texts"] == ["text 39", "more"]
        assert store._bytes() <= 100_000
    finally:
        s.stop()
        store.close()
