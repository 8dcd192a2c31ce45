"""The web page of `dlforge serve` and `dlforge ui`: one static page (package data beside this module, no build step,
nothing fetched from outside) and the read-only JSON routes it draws from.

    app = create_app(models, options, [ui_router("runs")])   # GET / is the page

    GET /                                  the page (index.html), and /ui/page.js, /ui/page.css beside it
    GET /ui/api/server                     what this server offers the page: the runs folder, RAG or not
    GET /ui/api/runs                       the run registry, newest first, with final metrics (`dlforge runs list`)
    GET /ui/api/runs/{run}                 one run: record, final metrics, curves (metrics.jsonl), plots, model card
    GET /ui/api/runs/{run}/plots/{file}    one PNG of the run's plots/ folder (and nothing outside it)
    GET /ui/api/compare?run=A&run=B        final metrics side by side and every run's curves (`dlforge runs compare`)
    GET /ui/api/registry                   the model registry: names, versions and aliases (`dlforge registry list`)

The page's files need no key (they hold no data: `guard.PAGE`); the JSON routes go through the Guard like any other
route, and the page sends the key it is given as `Authorization: Bearer`. A run is named by its folder's name in
the runs folder, nothing else (no path, no `latest`, no prefix); a bad name or file is a 404 with a message.
"""

from __future__ import annotations

import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response
from starlette.routing import Match

from dlforge.deploy.serve import openai_api as oa
from dlforge.deploy.serve.guard import PAGE

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")  # a run folder's name: no separator, no leading dot
_PLOT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}\.png")
_STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/ui/page.js": ("page.js", "text/javascript"),
           "/ui/page.css": ("page.css", "text/css")}
_AXES = ("step", "epoch", "split")  # the columns of metrics.jsonl that are not series
MAX_COMPARED = 8


def ui_router(runs_dir: str | Path = "runs") -> APIRouter:
    """The page and its JSON routes over the runs (and the model registry) in `runs_dir`."""
    root = Path(runs_dir)
    router = APIRouter()
    for path in PAGE:
        file, media_type = _STATIC[path]
        router.add_api_route(path, _static(file, media_type), methods=["GET"], include_in_schema=False)

    @router.get("/ui/api/server")
    def server(request: Request) -> dict:
        return {"runs_dir": str(root), "rag": _routed(request.app, "POST", "/v1/rag/ask")}

    @router.get("/ui/api/runs")
    def runs() -> dict:
        from dlforge.runs.history import list_runs

        if not root.is_dir():
            return {"runs": [], "note": f"no runs folder {root} yet"}
        rows = list_runs(root)
        keep = ("name", "preset", "status", "started", "finished", "metrics", "headline")
        return {"runs": [_finite({k: r.get(k) for k in keep}) for r in rows]}

    @router.get("/ui/api/runs/{run}")
    def run(run: str) -> dict:
        return _finite(run_detail(root, run))

    @router.get("/ui/api/runs/{run}/plots/{file}")
    def plot(run: str, file: str) -> FileResponse:
        return FileResponse(plot_path(root, run, file), media_type="image/png")

    @router.get("/ui/api/compare")
    def compare(run: list[str] = Query(default=[])) -> dict:
        return _finite(compare_detail(root, run))

    @router.get("/ui/api/registry")
    def registry() -> dict:
        return _finite(registry_detail(root))

    return router


def ui_app(runs_dir: str | Path = "runs", api_key: str | None = None) -> Any:
    """The server of `dlforge ui`: the page over `runs_dir` alone, no model, behind the same Guard as `dlforge
    serve` (the bearer token, the body cap, the request log and metrics)."""
    from dlforge.deploy.serve.app import ServeOptions, create_app

    return create_app([], ServeOptions(api_key=api_key, runs_dir=str(runs_dir), watch_s=0), [ui_router(runs_dir)])


def _routed(app: Any, method: str, path: str) -> bool:
    """Whether `app` has a route for `method path` (asked of the router: included routers are not listed flat)."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": [], "query_string": b""}
    return any(route.matches(scope)[0] == Match.FULL for route in app.router.routes)


def _static(file: str, media_type: str) -> Any:
    def page() -> Response:
        text = resources.files("dlforge.deploy.serve").joinpath("ui", file).read_bytes()
        return Response(text, media_type=media_type, headers={"Cache-Control": "no-cache"})

    return page


# --- what the routes read (plain functions, tested without a server) -------------------------------------------


def run_folder(root: Path, name: str) -> Path:
    """The run folder `root/name`, for a bare folder name that is a run directly inside `root`; else a 404."""
    from dlforge.runs.rundir import is_run_dir

    if not _NAME.fullmatch(name):
        raise oa.ApiError(404, f"run {name[:80]!r}: not a run name (a run folder's name in the runs folder)", "run",
                          "run_not_found")
    folder = root / name
    if not is_run_dir(folder) or folder.resolve().parent != root.resolve():  # a link out of the folder is no run
        raise oa.ApiError(404, f"run {name!r}: no such run in {root}", "run", "run_not_found")
    return folder


def run_detail(root: Path, name: str) -> dict[str, Any]:
    """One run as the page shows it: its registry record and eval.json (`dlforge runs show`), its curves, the
    names of its plots and its model card's text."""
    from dlforge.runs.history import flat_metrics, run_files, show_run

    folder = run_folder(root, name)
    record = show_run(str(folder), root)
    files = run_files(str(folder), root)
    card = Path(files["card"]).read_text(encoding="utf-8", errors="replace") if files["card"] else None
    return {**record, "final": flat_metrics(record), "series": series(folder), "card": card,
            "plots": [Path(p).name for p in files["plots"]]}


def plot_path(root: Path, name: str, file: str) -> Path:
    """The PNG `file` of the run's plots/ folder; a 404 for any other name, or a file that leads out of it."""
    folder = (run_folder(root, name) / "plots").resolve()
    path = (folder / file).resolve() if _PLOT.fullmatch(file) else None
    if path is None or path.parent != folder or not path.is_file():
        raise oa.ApiError(404, f"plot {file[:80]!r}: no such PNG in the plots of run {name}", "file", "plot_not_found")
    return path


def series(folder: Path) -> dict[str, list[list[float]]]:
    """metrics.jsonl as one [[step, value], ...] series per numeric column (a NaN kept as a gap: None)."""
    from dlforge.errors import DlforgeError
    from dlforge.runs.rundir import read_metrics

    path = folder / "metrics.jsonl"
    if not path.is_file():
        return {}
    try:
        rows = read_metrics(path)
    except DlforgeError:  # a damaged log: the rest of the run is still worth seeing
        return {}
    out: dict[str, list[list[float]]] = {}
    for row in rows:
        step = row.get("step")
        if not isinstance(step, int | float) or isinstance(step, bool):
            continue
        for key, value in row.items():
            if key not in _AXES and isinstance(value, int | float) and not isinstance(value, bool):
                out.setdefault(key, []).append([step, value])
    return out


def compare_detail(root: Path, names: list[str]) -> dict[str, Any]:
    """Several runs side by side: each one's final metrics and curves, and the union of their metric names."""
    if not 2 <= len(names) <= MAX_COMPARED or len(set(names)) != len(names):
        raise oa.ApiError(400, f"run: give 2 to {MAX_COMPARED} different runs (run=A&run=B), got {len(names)}",
                          "run")
    runs = [run_detail(root, name) for name in names]
    items = [{"name": r["name"], "metrics": r["final"], "series": r["series"]} for r in runs]
    return {"runs": items, "metrics": sorted({k for r in items for k in r["metrics"]})}


def registry_detail(root: Path) -> dict[str, Any]:
    """The model registry's names, each with its versions (newest first) and aliases; empty, with a note, when
    there is none (reading never creates one)."""
    from dlforge.deploy.model_registry import DB_FILE, ModelRegistry

    if not (root / DB_FILE).is_file():
        return {"names": [], "note": f"no model registry in {root} (dlforge registry add RUN --name NAME)"}
    registry = ModelRegistry(root, create=False)
    keep = ("version", "created", "description", "model", "task", "run", "preset", "metrics", "aliases", "ref")
    return {"names": [{**n, "versions": [{k: v.get(k) for k in keep} for v in registry.versions(n["name"])]}
                      for n in registry.names()]}


def _finite(value: Any) -> Any:
    """`value` with every NaN or infinity made None: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
