"""`dlforge serve MODEL... [--host 127.0.0.1] [--port 8000] [--api-key KEY]`: the HTTP server
(dlforge.deploy.serve)."""

from __future__ import annotations

from pathlib import Path

import typer

from dlforge.cli.output import console


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)


def serve_cmd(
    models: list[str] = typer.Argument(None, help="runs, model folders, registry:NAME@ALIAS, or minilm"),
    host: str = typer.Option("127.0.0.1", "--host", help="the address to listen on (beyond loopback: needs a key)"),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    api_key: str = typer.Option(None, "--api-key", envvar="DLFORGE_API_KEY",
                                help="a bearer token every route but health requires (or DLFORGE_API_KEY)"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="where runs and the model registry are"),
    max_body_bytes: int = typer.Option(1 << 20, "--max-body-bytes", min=1, help="larger request bodies: 413"),
    running: int = typer.Option(2, "--running", min=1, help="requests running a model at once"),
    waiting: int = typer.Option(8, "--waiting", min=0, help="requests queued behind them; more are answered 429"),
    rag: Path = typer.Option(None, "--rag", help="an index (dlforge rag index) to answer POST /v1/rag/ask from"),
    rag_generator: str = typer.Option("extractive", "--rag-generator", help="extractive | gpt | transformers"),
    rag_lm: str = typer.Option(None, "--rag-lm", help="the language model of a gpt or transformers generator"),
    store: Path = typer.Option(None, "--store", help="keep each request's inputs and predictions in this SQLite "
                                                     "file, for monitoring"),
    store_max_mb: float = typer.Option(64, "--store-max-mb", min=1, help="the store's cap: the oldest go first"),
    monitor_every: float = typer.Option(0, "--monitor-every", min=0, help="with --store: every this many seconds, "
                                        "the drift of the stored requests as Prometheus gauges (0: never)"),
    monitor_reference: str = typer.Option("train", "--monitor-reference", help="the run's split drift is measured "
                                          "against: train, val or test"),
) -> None:
    """Serve models over HTTP: an OpenAI-compatible API (completions, chat, embeddings, models), health routes,
    Prometheus metrics and the web page at / (as `dlforge ui`); bound to 127.0.0.1 unless told otherwise."""
    from dlforge.deploy.serve.served import check_bind, check_model_path, require_serve
    from dlforge.errors import DlforgeError

    models = list(models or [])
    if not models and rag is None:
        raise DlforgeError("dlforge serve: give a model to serve (a run, a model folder, registry:NAME@ALIAS, "
                           "minilm) or an index with --rag")
    check_bind(host, api_key)
    if monitor_every > 0 and store is None:
        raise DlforgeError("--monitor-every: needs --store FILE (drift is measured on the stored requests)")
    if monitor_reference not in ("train", "val", "test"):
        raise DlforgeError(f"--monitor-reference: {monitor_reference!r}; expected train, val or test")
    if rag is not None:
        from dlforge.paths import existing_file

        existing_file(rag, "the index (--rag)")
    for ref in models:
        if not ref.startswith("registry:") and ref != "minilm":
            check_model_path(ref, runs_dir)
            from dlforge.runs.rundir import model_dir

            model_dir(ref, runs_dir)  # a wrong path is said before torch loads
    require_serve()
    from dlforge.deploy.serve.app import ServeOptions, create_app, serve
    from dlforge.deploy.serve.served import load_served

    loaded = [load_served(ref, runs_dir) for ref in models]
    from dlforge.deploy.serve.ui import ui_router

    routers = [ui_router(runs_dir)]  # the web page at /
    if rag is not None:
        from dlforge.rag.http import RagService, rag_router

        routers.append(rag_router(RagService(rag, rag_generator, lm=rag_lm)))
        console.print(f"rag: POST /v1/rag/ask over {rag} ({rag_generator})", soft_wrap=True)
    kept = None
    if store is not None:
        from dlforge.deploy.serve.request_store import RequestStore
        from dlforge.paths import output_file

        kept = RequestStore(output_file(store, "the request store (--store)", parents=True),
                            int(store_max_mb * (1 << 20)))
    app = create_app(loaded, ServeOptions(api_key=api_key, max_body_bytes=max_body_bytes, running=running,
                                          waiting=waiting, runs_dir=str(runs_dir), store=kept,
                                          monitor_every=monitor_every, monitor_reference=monitor_reference), routers)
    for m in loaded:
        console.print(f"{m.id}: {m.kind} ({m.source})", soft_wrap=True)
    console.print(f"serving on http://{host}:{port} (the page at /, OpenAI API under /v1, metrics at /metrics)",
                  soft_wrap=True)
    serve(app, host, port, api_key)
