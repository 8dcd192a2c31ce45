"""`dlforge serve`: one FastAPI app over the loaded models, safe by default.

    app = create_app([load_served("runs/gpt-..."), load_served("minilm")], ServeOptions(api_key="..."))
    serve(app, host="127.0.0.1", port=8000)

Routes: the OpenAI-compatible API (`openai_api`), KServe's health routes (`/v2/health/live`, `/v2/health/ready`,
`/v2/models/{name}/ready`) and Prometheus' `/metrics`. In front of every route, before a body is parsed (`Guard`):
a bearer token when one is set (health excepted), a cap on the body's size, one JSON log line per request, and the
request metrics. Work that runs a model is admitted by `Admission`: `running` at once, `waiting` more queued, and
beyond that an immediate 429 with Retry-After, so that a burst is refused quickly rather than served slowly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from dlforge.deploy.serve import classic
from dlforge.deploy.serve import openai_api as oa
from dlforge.deploy.serve.admission import Admission, Busy, busy, enter
from dlforge.deploy.serve.batching import Batcher
from dlforge.deploy.serve.generation import Choice, Job, jobs_of, plan, run_jobs, sampling_key
from dlforge.deploy.serve.guard import Guard
from dlforge.deploy.serve.metrics import Metrics
from dlforge.errors import DlforgeError


@dataclass
class ServeOptions:
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    running: int = 2  # requests running a model at once
    waiting: int = 8  # requests queued behind them; more are answered 429
    retry_after_s: int = 1
    max_embedding_inputs: int = 256
    batch_items: int = 64  # dynamic batching: the most items in one forward
    batch_wait_s: float = 0.005  # ... and how long a request waits for others
    batch_rows: int = 8  # generation: the most rows (choices of requests sampled alike) in one batch
    store: Any = None  # a RequestStore: each request's inputs and predictions, kept for monitoring
    log: Callable[[str], None] | None = None  # one JSON line per request; default stderr
    runs_dir: str = "runs"  # where registry:NAME@ALIAS models are looked up
    watch_s: float = 2.0  # how often a registry alias is checked for a move (0: never)
    monitor_every: float = 0.0  # with a store: seconds between drift checks of the stored requests (0: none)
    monitor_reference: str = "train"  # ... against this split of each model's run (dlforge.deploy.monitor)


def create_app(models: list[Any], options: ServeOptions | None = None, routers: list[Any] = ()) -> FastAPI:
    """The app over `models` (`served.Served`); `routers`: more routes (FastAPI APIRouters, e.g. RAG's), which run
    their work through `app.state.admitted(executor, fn, *args)` to be admitted like the models' work."""
    options = options or ServeOptions()
    metrics = Metrics()
    served = {m.id: m for m in models}
    if len(served) != len(models):
        raise DlforgeError(f"two models would be served under one id: {', '.join(m.id for m in models)}")
    for m in models:
        metrics.model_info.labels(m.id, m.kind, m.source, m.version or "").set(1)
    log = options.log or (lambda line: print(line, file=sys.stderr, flush=True))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        watcher = (asyncio.create_task(_watch_aliases(served, options, metrics, log, forget))
                   if options.watch_s > 0 else None)
        drift = None
        if options.monitor_every > 0 and options.store is not None:
            from dlforge.deploy.monitor_gauges import watch_drift

            drift = asyncio.create_task(watch_drift(served, options, metrics, log))
        try:
            yield
        finally:
            for task in (watcher, drift):
                if task is not None:
                    task.cancel()

    app = FastAPI(title="dlforge serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    pool = ThreadPoolExecutor(max_workers=options.running, thread_name_prefix="dlforge-model")
    admission: dict[str, Admission] = {}

    def admit() -> Admission:  # made on the server's loop, at the first request
        if "a" not in admission:
            admission["a"] = Admission(options.running, options.waiting, metrics)
        return admission["a"]

    def find(model_id: str, kind: str, route: str) -> Any:
        m = served.get(model_id)
        if m is None:
            raise oa.ApiError(404, f"The model `{model_id}` does not exist (served: {', '.join(served)})", "model",
                              "model_not_found")
        if m.kind != kind:
            raise oa.ApiError(400, f"model {model_id} is a {m.kind} model; {route} needs a {kind} model", "model")
        return m

    async def admitted(executor: Any, fn: Callable, *args: Any) -> Any:
        """`fn(*args)` on `executor` (None: the model pool), once admitted."""
        gate = admit()
        await enter(gate, options)
        try:
            return await asyncio.get_running_loop().run_in_executor(executor or pool, fn, *args)
        finally:
            gate.leave()

    async def run(fn: Callable, *args: Any) -> Any:
        return await admitted(None, fn, *args)

    batchers: dict[tuple, Batcher] = {}

    def forget(old: Any) -> None:
        """A model swapped out: its batchers go (a batch still running keeps it until it ends)."""
        for key in [k for k in batchers if k[0] == id(old)]:
            del batchers[key]

    async def batched(model: Any, key: Any, fn: Callable, items: list[Any]) -> list[Any]:
        """`fn` over `items` in a dynamic batch with other requests' for the same model (and `key`), once admitted."""
        gate = admit()
        try:
            gate.enter_batched()
        except Busy:
            raise busy(gate, options) from None
        batcher = batchers.get((id(model), key))
        if batcher is None:
            batcher = batchers[(id(model), key)] = Batcher(fn, pool, options.batch_items, options.batch_wait_s,
                                                           metrics.batch_size.labels(model.id).observe)
        try:
            return await batcher.submit(items)
        finally:
            gate.leave_batched()

    def keep(route: str, model_id: str | None, record: tuple[Any, Any]) -> None:
        """A request's inputs and predictions, into the request store when there is one."""
        if options.store is not None:
            options.store.add(route, model_id, *record)

    app.state.admitted = admitted
    app.state.keep = keep
    for router in routers:
        app.include_router(router)

    @app.exception_handler(oa.ApiError)
    async def _api_error(_: Request, exc: oa.ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(oa.ApiError(exc.status_code, str(exc.detail)).body(), exc.status_code)

    @app.exception_handler(DlforgeError)
    async def _dlforge_error(_: Request, exc: DlforgeError) -> JSONResponse:
        return JSONResponse(oa.ApiError(400, str(exc)).body(), 400)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:  # logged by uvicorn with its traceback
        return JSONResponse(oa.ApiError(500, f"internal error: {type(exc).__name__}", kind="server_error").body(), 500)

    @app.get("/v2/health/live")
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> dict:
        return {"ready": bool(served)}

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> dict:
        if name not in served:
            raise oa.ApiError(404, f"The model `{name}` does not exist", "name", "model_not_found")
        return {"name": name, "ready": True}

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"object": "list", "data": [m.card() for m in served.values()]}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str) -> dict:
        if model_id not in served:
            raise oa.ApiError(404, f"The model `{model_id}` does not exist", "model", "model_not_found")
        return served[model_id].card()

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    async def generate(request: Request, cls: type, route: str) -> Any:
        body = oa.parse(cls, await request.body())
        model = find(body.model, "generate", route)
        job = plan(model, body)  # counted and checked before any wait
        gate = admit()
        try:
            gate.enter_batched()  # checked now, so that a refusal is a 429 and not a broken stream
        except Busy:
            raise busy(gate, options) from None

        async def choices_of(jobs: list[Job]) -> list[Choice]:
            try:
                key = sampling_key(job)
                if key[-1] is not None:  # seeded: alone, so that the seed gives the same text whatever is served
                    return await loop.run_in_executor(pool, run_jobs, model, jobs, job.config)
                batcher = batchers.get((id(model), key))
                if batcher is None:
                    batcher = batchers[(id(model), key)] = Batcher(
                        lambda items, config=job.config: run_jobs(model, items, config), pool, options.batch_rows,
                        options.batch_wait_s, metrics.batch_size.labels(model.id).observe)
                return await batcher.submit(jobs)
            finally:
                gate.leave_batched()

        loop = asyncio.get_running_loop()
        if body.stream:
            return StreamingResponse(_stream(model, body, job, choices_of, metrics,
                                             lambda choices: keep(route, model.id, _generation_record(job, choices))),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        choices = await choices_of(jobs_of(job, threading.Event()))
        _count_tokens(metrics, model.id, job, choices)
        keep(route, model.id, _generation_record(job, choices))
        tokens = oa.usage(sum(job.prompt_tokens), sum(c.tokens for c in choices))
        return oa.completion_body(oa.new_id("chatcmpl" if job.chat else "cmpl"), model.id,
                                  [{"text": c.text, "finish_reason": c.finish_reason} for c in choices], job.chat,
                                  tokens)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await generate(request, oa.CompletionRequest, "/v1/completions")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await generate(request, oa.ChatRequest, "/v1/chat/completions")

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Any:
        body = oa.parse(oa.EmbeddingRequest, await request.body())
        model = find(body.model, "embed", "/v1/embeddings")
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not 1 <= len(texts) <= options.max_embedding_inputs:
            raise oa.ApiError(400, f"input: expected 1 to {options.max_embedding_inputs} texts, got {len(texts)}",
                              "input")
        if body.dimensions is not None and body.dimensions != model.embedder.dim:
            raise oa.ApiError(400, f"dimensions: this model's embeddings have {model.embedder.dim}, got "
                                   f"{body.dimensions}", "dimensions")
        vectors = np.stack(await batched(model, "embed", lambda items: model.embedder.embed(items), texts))
        tokens = sum(min(len(t) + 2, model.embedder.max_length) for t in model.tokenizer.encode_batch(texts))
        metrics.prompt_tokens.labels(model.id).inc(tokens)
        keep("/v1/embeddings", model.id, ({"texts": texts}, {"embeddings_b64": [oa.b64_floats(v) for v in vectors]}))
        return oa.embedding_body(model.id, vectors, body.encoding_format, tokens)

    @app.get("/v2/models/{name}")
    async def model_metadata(name: str) -> dict:
        if name not in served:
            raise oa.ApiError(404, f"The model `{name}` does not exist", "name", "model_not_found")
        if served[name].kind != "predict":
            return {"name": name, "versions": [served[name].version] if served[name].version else [],
                    "platform": "pytorch", "kind": served[name].kind, "inputs": [], "outputs": []}
        return classic.metadata(served[name])

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> dict:
        model = find(name, "predict", "/v2/models/{name}/infer")
        body = oa.read_json(await request.body())
        tensors = classic.infer_inputs(model, body)
        rows = [{k: v[i] for k, v in tensors.items()} for i in range(len(next(iter(tensors.values()))))]
        shapes = tuple((k, tuple(v.shape[1:]), str(v.dtype)) for k, v in tensors.items())
        results = await batched(model, shapes, lambda items: classic.forward_rows(model, items), rows)
        outputs = {k: np.stack([r[k] for r in results]) for k in results[0]}
        answer = classic.outputs_body(model, outputs, body.get("id"))
        keep("/v2/models/{name}/infer", model.id, ({"inputs": body["inputs"]}, {"outputs": answer["outputs"]}))
        return answer

    @app.post("/v1/predict")
    async def predict(request: Request) -> dict:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form(max_files=classic.MAX_ROWS)
            model = find(str(form.get("model", "")), "predict", "/v1/predict")
            uploads = [await f.read() for f in form.getlist("files") if hasattr(f, "read")]
            rows, features = await run(classic.predict_with_features, model, [], uploads)
            body = {}
        else:
            body, uploads = oa.read_json(await request.body()), None
            model = find(str(body.get("model", "")), "predict", "/v1/predict")
            if not isinstance(body.get("inputs"), list):
                raise oa.ApiError(400, "inputs: expected a list of inputs", "inputs")
            rows, features = await run(classic.predict_with_features, model, body["inputs"])
        if features is not None:  # an image model: its penultimate features stand for the images
            count = len(uploads) if uploads is not None else len(body["inputs"])
            kept = {"inputs": [f"image {i}" for i in range(count)], "features_b64": features}
        else:
            kept = {"inputs": body["inputs"] if uploads is None else [f"upload of {len(u)} bytes" for u in uploads]}
        keep("/v1/predict", model.id, (kept, {"predictions": rows}))
        return {"model": model.id, "predictions": rows}

    guarded = Guard(app, options, metrics)
    guarded.state = app.state
    return guarded  # type: ignore[return-value]


async def _watch_aliases(served: dict[str, Any], options: ServeOptions, metrics: Metrics,
                         log: Callable[[str], None], forget: Callable[[Any], None]) -> None:
    """Every `watch_s`, look up where each registry alias served now points; when it has moved, load that version
    beside the one serving and swap them. A request holds the model it started with, so none in flight is dropped."""
    from dlforge.deploy.model_registry import ModelRegistry, parse_ref
    from dlforge.deploy.serve.served import load_served

    loop = asyncio.get_running_loop()
    registry = None  # opened once (opening one checks its schema in a write transaction)
    while True:
        await asyncio.sleep(options.watch_s)
        for model_id, current in list(served.items()):
            name, which = parse_ref(current.source) if current.source.startswith("registry:") else (None, None)
            if name is None or isinstance(which, int):
                continue
            try:
                registry = registry or ModelRegistry(options.runs_dir, create=False)
                now = registry.version(name, which)["ref"]
                if now == current.version:
                    continue
                fresh = await loop.run_in_executor(None, load_served, current.source, options.runs_dir)
            except Exception as exc:  # noqa: BLE001 - a failed reload keeps the model serving, and says why
                log(json.dumps({"time": round(time.time(), 3), "event": "reload failed", "model": model_id,
                                "error": f"{type(exc).__name__}: {exc}"}))
                continue
            fresh.id = model_id
            served[model_id] = fresh
            forget(current)
            metrics.model_info.labels(model_id, current.kind, current.source, current.version or "").set(0)
            metrics.model_info.labels(model_id, fresh.kind, fresh.source, fresh.version or "").set(1)
            log(json.dumps({"time": round(time.time(), 3), "event": "reloaded", "model": model_id,
                            "from": current.version, "to": fresh.version}))


async def _stream(model: Any, body: Any, job: Any, choices_of: Callable, metrics: Metrics,
                  keep: Callable[[list[Choice]], None]) -> AsyncIterator[str]:
    """The server-sent events of one streamed response. Its choices are generated by `choices_of` (with other
    requests' in a batch), their text handed over as it comes; a client that goes away cancels its rows at the next
    token (the batch goes on for the others)."""
    rid, created = oa.new_id("chatcmpl" if job.chat else "cmpl"), int(time.time())
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    cancel = threading.Event()
    put = lambda *event: loop.call_soon_threadsafe(queue.put_nowait, event)  # noqa: E731 - from the worker thread
    task = asyncio.ensure_future(choices_of(jobs_of(job, cancel, lambda i, text: put("piece", i, text),
                                                    lambda i, reason: put("end", i, reason))))
    task.add_done_callback(lambda _: queue.put_nowait(("done", 0, None)))
    try:
        if job.chat:
            for i in range(len(job.prompts)):
                yield oa.chunk(rid, model.id, created, True, i, role=True)
        while True:
            what, index, value = await queue.get()
            if what == "piece":
                yield oa.chunk(rid, model.id, created, job.chat, index, text=value)
            elif what == "end":
                yield oa.chunk(rid, model.id, created, job.chat, index, finish_reason=value)
            else:
                break
        if task.exception() is not None:
            yield f"data: {json.dumps(oa.ApiError(500, str(task.exception()), kind='server_error').body())}\n\n"
            return
        choices = task.result()
        _count_tokens(metrics, model.id, job, choices)
        keep(choices)
        if body.wants_usage():
            yield oa.chunk(rid, model.id, created, job.chat, tokens=oa.usage(
                sum(job.prompt_tokens), sum(c.tokens for c in choices)))
        yield oa.DONE
    finally:
        cancel.set()  # the client left (or all is sent): its rows end at the next token


def _generation_record(job: Any, choices: list[Choice]) -> tuple[dict, dict]:
    return ({"prompts": job.prompts, "max_tokens": job.max_tokens, "temperature": job.config.temperature},
            {"texts": [c.text for c in choices], "finish_reasons": [c.finish_reason for c in choices]})


def _count_tokens(metrics: Metrics, model_id: str, job: Any, choices: list[Choice]) -> None:
    metrics.prompt_tokens.labels(model_id).inc(sum(job.prompt_tokens))
    metrics.generated_tokens.labels(model_id).inc(sum(c.tokens for c in choices))
    for c in choices:
        if c.first_token_s is not None:
            metrics.ttft.labels(model_id).observe(c.first_token_s)
        for gap in c.gaps:
            metrics.inter_token.labels(model_id).observe(gap)


def serve(app: Any, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None) -> None:
    import uvicorn

    from dlforge.deploy.serve.served import check_bind

    check_bind(host, api_key)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
