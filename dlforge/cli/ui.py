"""`dlforge ui [--runs-dir runs] [--host 127.0.0.1] [--port 8000] [--api-key KEY]`: the web page over the runs
folder alone, no model loaded (dlforge.deploy.serve.ui). `dlforge serve` serves the same page at / beside its
models."""

from __future__ import annotations

from pathlib import Path

import typer

from dlforge.cli.output import console


def register(app: typer.Typer) -> None:
    app.command("ui")(ui_cmd)


def ui_cmd(
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="the folder of runs (and of the model registry)"),
    host: str = typer.Option("127.0.0.1", "--host", help="the address to listen on (beyond loopback: needs a key)"),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    api_key: str = typer.Option(None, "--api-key", envvar="DLFORGE_API_KEY",
                                help="a bearer token the page's data routes require (or DLFORGE_API_KEY)"),
) -> None:
    """Serve the web page over a runs folder: the runs with their metrics, curves, plots and model cards, run
    comparison, and the model registry; read-only, bound to 127.0.0.1 unless told otherwise."""
    from dlforge.deploy.serve.served import check_bind, require_serve
    from dlforge.paths import existing_dir

    existing_dir(runs_dir, "the folder of runs (--runs-dir)")
    check_bind(host, api_key)
    require_serve()
    from dlforge.deploy.serve.ui import ui_app

    app = ui_app(runs_dir, api_key)
    console.print(f"the runs of {runs_dir} on http://{host}:{port}/", soft_wrap=True)
    from dlforge.deploy.serve.app import serve

    serve(app, host, port, api_key)
