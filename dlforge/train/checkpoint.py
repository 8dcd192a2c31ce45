"""The on-disk formats: training checkpoints and model folders. No other module reads or writes these files.

Nothing is pickled and `torch.load` is never called: tensors go to safetensors, everything else to JSON.

    run/checkpoints/checkpoint-120/   state.safetensors  state.json   manifest.json   (resumable training state)
    run/model/                        model.safetensors  config.json  manifest.json  (+ preprocessing.json, ...)

Every folder is written atomically (a hidden sibling temp folder, fsynced, then renamed into place) and carries a
manifest with the size and sha256 of each file, checked before anything is read back.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import shutil
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from dlforge.errors import CheckpointError, DlforgeError
from dlforge.registry import create_model
from dlforge.runs.rundir import model_dir

CHECKPOINT_FORMAT = "dlforge-checkpoint"
MODEL_FORMAT = "dlforge-model"
VERSION = 1
_RESERVED = frozenset({"manifest.json", "config.json", "model.safetensors"})  # files of a model folder not "extra"
_MARKERS = frozenset({"__tensor__", "__ndarray__", "__npscalar__", "__tuple__", "__dict__", "__float__", "__dtype__"})
_WIDEN = {"uint16": np.int32, "uint32": np.int64}  # numpy dtypes stored widened, cast back on load
_CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")
_SCRATCH_NAME = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old|del)-(?P<pid>\d+)-[0-9a-f]+")


# --- generic state: nested Python/torch/numpy values <-> (tensors, JSON tree) ---------------------------------------


def flatten_state(obj: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state into tensors (keys "t0", "t1", ...) and a JSON-able tree that refers to them.

    Handles dict (any hashable scalar or tuple keys), list, tuple, torch.Tensor, numpy arrays and scalars, int, float
    (nan/inf included), bool, str, None and torch.dtype; `unflatten_state` restores values and types exactly.
    """
    tensors: dict[str, torch.Tensor] = {}
    return tensors, _encode(obj, tensors, "state")


def _encode(obj: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        # a private contiguous CPU copy: tensors that share storage become independent, as safetensors requires
        tensors[key] = obj.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biufc":
            raise TypeError(f"cannot store {path}: numpy arrays of dtype {obj.dtype} are not supported")
        dtype = obj.dtype.name if obj.dtype.isnative else obj.dtype.str
        arr = np.array(obj, dtype=obj.dtype.newbyteorder("="), order="C")  # a native-endian, contiguous copy
        if arr.dtype.name in _WIDEN:
            arr = arr.astype(_WIDEN[arr.dtype.name])
        elif arr.dtype.name == "uint64":
            arr = arr.view(np.int64)  # same bits; viewed back as uint64 on load
        key = f"t{len(tensors)}"
        tensors[key] = torch.from_numpy(arr)
        return {"__ndarray__": key, "dtype": dtype}
    if isinstance(obj, np.generic):
        return {"__npscalar__": _encode(obj.item(), tensors, path), "dtype": obj.dtype.str}
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}  # JSON has no nan/inf; repr round-trips
    if isinstance(obj, torch.dtype):
        return {"__dtype__": str(obj).removeprefix("torch.")}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        items = [(k, _encode(v, tensors, f"{path}[{k!r}]")) for k, v in obj.items()]
        if all(isinstance(k, str) and k not in _MARKERS for k, _ in items):
            return dict(items)
        return {"__dict__": [[_encode(k, tensors, f"{path} key {k!r}"), v] for k, v in items]}
    raise TypeError(f"cannot store {path}: values of type {type(obj).__name__} are not supported")


def unflatten_state(tensors: Mapping[str, torch.Tensor], tree: Any) -> Any:
    """Rebuild the state that `flatten_state` split into `tensors` and `tree`."""
    if isinstance(tree, list):
        return [unflatten_state(tensors, v) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if not _MARKERS.intersection(tree):
        return {k: unflatten_state(tensors, v) for k, v in tree.items()}
    if "__tensor__" in tree:
        return tensors[tree["__tensor__"]]
    if "__ndarray__" in tree:
        arr = tensors[tree["__ndarray__"]].numpy()
        dtype = np.dtype(tree["dtype"])
        return (arr.view(np.uint64) if dtype.name == "uint64" else arr).astype(dtype)
    if "__npscalar__" in tree:
        return np.dtype(tree["dtype"]).type(unflatten_state(tensors, tree["__npscalar__"]))
    if "__tuple__" in tree:
        return tuple(unflatten_state(tensors, v) for v in tree["__tuple__"])
    if "__dict__" in tree:
        return {unflatten_state(tensors, k): unflatten_state(tensors, v) for k, v in tree["__dict__"]}
    if "__float__" in tree:
        return float(tree["__float__"])
    dtype = getattr(torch, tree["__dtype__"], None)
    if not isinstance(dtype, torch.dtype):
        raise CheckpointError(f"state names an unknown torch dtype {tree['__dtype__']!r}")
    return dtype


# --- atomic folders with a manifest ----------------------------------------------------------------------------------


def _write_folder(directory: Path, fmt: str, fill: Callable[[Path], None]) -> Path:
    """Let `fill` write files into a temp sibling, add manifest.json, fsync, then rename the folder into place."""
    directory = Path(directory)
    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = _scratch(directory, "tmp")
    tmp.mkdir()
    old = None
    try:
        fill(tmp)
        files = {p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size} for p in sorted(tmp.iterdir())}
        _write_json(tmp / "manifest.json", {"format": fmt, "version": VERSION, "files": files})
        for p in tmp.iterdir():
            _fsync(p)
        _fsync(tmp)
        if directory.exists():  # the same step written again (after a resume): move the old one aside first
            old = _scratch(directory, "old")
            os.rename(directory, old)
        os.rename(tmp, directory)
        _fsync(parent)
    except BaseException:
        if old is not None and not directory.exists():
            os.rename(old, directory)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return directory


def write_folder_atomically(directory: Path, fmt: str, fill: Callable[[Path], None]) -> Path:
    """A folder of files written all at once, for formats beyond checkpoints (token shards): `fill(tmp)` writes
    plain files into a hidden temp sibling, manifest.json (format `fmt`, each file's size and sha256) is added,
    everything is fsynced and the folder renamed into place, replacing any folder there."""
    return _write_folder(directory, fmt, fill)


def _scratch(directory: Path, kind: str) -> Path:
    return directory.parent / f".{directory.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _fsync(path: Path) -> None:
    if path.is_dir() and not hasattr(os, "O_DIRECTORY"):
        return  # directories cannot be opened for fsync on Windows
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Damaged(CheckpointError):
    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem


def _verify(directory: Path, fmt: str, required: Iterable[str]) -> dict[str, Any]:
    """Check every file against manifest.json; return the manifest's file table."""
    directory = Path(directory)
    if not directory.is_dir():
        raise _Damaged(directory, "no such folder")
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise _Damaged(manifest_path, "missing")
    manifest = _read_json(manifest_path)
    if not isinstance(manifest, dict) or manifest.get("format") != fmt or not isinstance(manifest.get("files"), dict):
        raise _Damaged(manifest_path, f"not a {fmt} manifest (expected format {fmt!r} and a 'files' table)")
    for name in required:
        if name not in manifest["files"]:
            raise _Damaged(manifest_path, f"does not list {name}")
    for name, entry in manifest["files"].items():
        path = directory / name
        if Path(name).name != name or not isinstance(entry, dict):
            raise _Damaged(manifest_path, f"invalid entry {name!r}")
        if not path.is_file():
            raise _Damaged(path, "missing")
        if path.stat().st_size != entry.get("bytes"):
            raise _Damaged(path, f"size mismatch (expected {entry.get('bytes')} bytes, found {path.stat().st_size})")
        if _sha256(path) != entry.get("sha256"):
            raise _Damaged(path, "sha256 mismatch")
    return manifest["files"]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _Damaged(path, "missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Damaged(path, f"invalid JSON ({exc})") from None


def _check_finite(state_dict: Any, name: str) -> None:
    for key, value in (state_dict or {}).items():
        if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
            if not bool(torch.isfinite(value).all()):
                raise CheckpointError(f"refusing to save {name}: model weight {key!r} is not finite")


# --- training checkpoints --------------------------------------------------------------------------------------------


def save_checkpoint(directory: Path, state: dict) -> Path:
    """Write `state` (model/optimizer/scheduler/RNG/callback states...) atomically to `directory`."""
    directory = Path(directory)
    _check_finite(state.get("model"), directory.name)
    tensors, tree = flatten_state(state)

    def fill(tmp: Path) -> None:
        save_file(tensors, tmp / "state.safetensors")
        (tmp / "state.json").write_text(json.dumps(tree, allow_nan=False), encoding="utf-8")

    return _write_folder(directory, CHECKPOINT_FORMAT, fill)


def load_checkpoint(directory: Path) -> dict:
    """Verify `directory` against its manifest and return the saved state (tensors on the CPU)."""
    directory = Path(directory)
    _verify(directory, CHECKPOINT_FORMAT, ["state.safetensors", "state.json"])
    tensors = _load_safetensors(directory / "state.safetensors")
    return unflatten_state(tensors, _read_json(directory / "state.json"))


def find_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """The `checkpoint-<step>` folders in `checkpoints_dir`, oldest step first (temp folders are ignored)."""
    checkpoints_dir = Path(checkpoints_dir)
    if not checkpoints_dir.is_dir():
        return []
    found = [p for p in checkpoints_dir.iterdir() if p.is_dir() and _CHECKPOINT_NAME.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def load_latest_checkpoint(
    checkpoints_dir: Path, warn: Callable[[str], None] = warnings.warn
) -> tuple[Path, dict] | None:
    """Load the newest valid checkpoint, warning about each damaged newer one; None when there is none.

    Leftovers of crashed writers are cleaned first (see `clean_stale_folders`). Raises CheckpointError when every
    checkpoint is damaged.
    """
    clean_stale_folders(checkpoints_dir)
    candidates = find_checkpoints(checkpoints_dir)[::-1]
    problems = []
    for i, directory in enumerate(candidates):
        try:
            return directory, load_checkpoint(directory)
        except CheckpointError as exc:
            reason = f"{exc.path.name}: {exc.problem}" if isinstance(exc, _Damaged) else str(exc)
            problems.append(f"{directory.name} ({reason})")
            if i + 1 < len(candidates):
                warn(f"{directory.name} is damaged ({reason}); falling back to {candidates[i + 1].name}")
    if problems:
        raise CheckpointError(f"every checkpoint in {checkpoints_dir} is damaged: {'; '.join(problems)}")
    return None


def prune_checkpoints(checkpoints_dir: Path, keep: int, protect: Iterable[Path] = frozenset()) -> list[Path]:
    """Remove all but the newest `keep` checkpoints (never one in `protect`) and stale temp folders; return removed."""
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    clean_stale_folders(checkpoints_dir)
    protected = {Path(p).resolve() for p in protect}
    checkpoints = find_checkpoints(checkpoints_dir)
    removed = []
    for directory in checkpoints[: max(len(checkpoints) - keep, 0)]:
        if directory.resolve() not in protected:
            doomed = _scratch(directory, "del")
            os.rename(directory, doomed)  # never leave a half-deleted folder under the final name
            shutil.rmtree(doomed)
            removed.append(directory)
    return removed


def clean_stale_folders(parent: Path) -> None:
    """Tidy up after crashed writers in `parent`: remove their temp folders, and put back a folder that was moved
    aside to be overwritten when its replacement never arrived. Folders of writers still running are left alone."""
    parent = Path(parent)
    if not parent.is_dir():
        return
    for path in parent.iterdir():
        match = _SCRATCH_NAME.fullmatch(path.name)
        if not match or not path.is_dir() or _is_running(int(match["pid"])):
            continue
        final = parent / match["name"]
        if match["kind"] == "old" and not final.exists():
            os.rename(path, final)  # the old folder is complete: it was renamed aside in one step
        else:
            shutil.rmtree(path, ignore_errors=True)


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process, or a pid this OS cannot express
        pass
    return True


# --- model folders ---------------------------------------------------------------------------------------------------


def state_dict_to_safetensors(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
    """Contiguous CPU copies of a state dict, each tied tensor stored once, plus safetensors metadata that lists the
    aliases ({"dlforge_aliases": json of {alias: source}})."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for key, t in state_dict.items():
        # the same view of the same memory is a tie (e.g. embedding and LM head); other overlaps are copied apart
        ident = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), t.shape, t.stride(), t.dtype)
        if t.numel() and ident in seen:
            aliases[key] = seen[ident]
            continue
        seen[ident] = key
        tensors[key] = t.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
    return tensors, {"format": "pt", "dlforge_aliases": json.dumps(aliases)}


def save_model(model: nn.Module, directory: Path, extra_files: dict[str, dict] | None = None) -> Path:
    """Write `model` as a model folder: model.safetensors, config.json, each of `extra_files`, manifest.json."""
    directory = Path(directory)
    name = getattr(model, "registry_name", None)
    if name is None:
        raise CheckpointError(f"cannot save {directory}: the model has no registry name (build it with create_model)")
    extra_files = dict(extra_files or {})
    for filename in extra_files:
        if Path(filename).name != filename or not filename.endswith(".json") or filename in _RESERVED:
            raise ValueError(f"extra file {filename!r}: expected a plain *.json name other than {sorted(_RESERVED)}")
    state_dict = model.state_dict()
    _check_finite(state_dict, directory.name)
    tensors, metadata = state_dict_to_safetensors(state_dict)
    config = pydantic.TypeAdapter(type(model.config)).dump_python(model.config, mode="json")
    meta = {"model": name, "config": config, "format": MODEL_FORMAT, "version": VERSION}

    def fill(tmp: Path) -> None:
        save_file(tensors, tmp / "model.safetensors", metadata=metadata)
        _write_json(tmp / "config.json", meta)
        for filename, content in extra_files.items():
            _write_json(tmp / filename, content)

    return _write_folder(directory, MODEL_FORMAT, fill)


def load_model(directory: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Verify and load a model folder; return (model in eval mode on `device`, meta).

    meta = {"model": registry name, "config": config dict, "extra": {filename: parsed JSON of every other .json}}.
    """
    directory = Path(directory)
    meta = read_model_meta(directory)
    try:
        model = create_model(meta["model"], **meta["config"])
    except DlforgeError as exc:
        raise CheckpointError(f"{directory / 'config.json'}: {exc}") from exc
    load_weights(model, directory / "model.safetensors")
    return model.to(device).eval(), meta


def read_model_meta(directory: Path) -> dict[str, Any]:
    """The meta of a verified model folder (see `load_model`) without building the model: e.g. its tokenizer."""
    directory = Path(directory)
    files = _verify(directory, MODEL_FORMAT, ["model.safetensors", "config.json"])
    config_path = directory / "config.json"
    meta = _read_json(config_path)
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{config_path}: expected a JSON object with format {MODEL_FORMAT!r}")
    name, config = meta.get("model"), meta.get("config")
    if not isinstance(name, str) or not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: expected 'model' (a registered name) and 'config' (an object)")
    extra = {f: _read_json(directory / f) for f in sorted(files) if f.endswith(".json") and f not in _RESERVED}
    return {"config": config, "model": name, "extra": extra}


def save_foreign_folder(directory: Path, fmt: str, json_files: dict[str, dict], weights_name: str,
                        tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """A folder in another library's layout (e.g. transformers' config.json + model.safetensors), written like ours:
    atomically, with a manifest. `tensors` must not share memory (tie them by leaving one out, as that library
    does)."""
    tensors = {k: t.detach().to("cpu", memory_format=torch.contiguous_format, copy=True) for k, t in tensors.items()}
    _check_finite(tensors, Path(directory).name)

    def fill(tmp: Path) -> None:
        save_file(tensors, tmp / weights_name, metadata=metadata)
        for filename, content in json_files.items():
            _write_json(tmp / filename, content)

    return _write_folder(Path(directory), fmt, fill)


def read_foreign_folder(directory: Path, fmt: str, weights_name: str, json_names: Iterable[str]
                        ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a folder in another library's layout: ({name: parsed JSON} of `json_names` present, tensors of
    `weights_name`). One written by `save_foreign_folder` is first checked against its manifest; one written by that
    library itself (no manifest.json) is read as it is. `weights_name` and the first of `json_names` are required."""
    directory = Path(directory)
    json_names = list(json_names)
    required = [weights_name, json_names[0]]
    if (directory / "manifest.json").is_file():
        _verify(directory, fmt, required)
    elif not directory.is_dir():
        raise _Damaged(directory, "no such folder")
    for name in required:
        if not (directory / name).is_file():
            raise _Damaged(directory / name, "missing")
    files = {name: _read_json(directory / name) for name in json_names if (directory / name).is_file()}
    return files, _load_safetensors(directory / weights_name)


def load_weights(model: nn.Module, safetensors_path: Path) -> None:
    """Load a safetensors file into `model`, strictly: every key present on both sides, with the same shape."""
    path = Path(safetensors_path)
    tensors = _load_safetensors(path)
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata() or {}
    try:
        aliases = json.loads(metadata.get("dlforge_aliases", "{}"))
        tensors.update({alias: tensors[source] for alias, source in aliases.items()})
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: invalid 'dlforge_aliases' metadata ({exc!r})") from None
    expected = model.state_dict()
    for key, want in expected.items():
        found = tuple(tensors[key].shape) if key in tensors else "missing"
        if found != tuple(want.shape):
            raise CheckpointError(f"{path}: weight {key!r} expected shape {tuple(want.shape)}, found {found}")
    for key, t in tensors.items():
        if key not in expected:
            raise CheckpointError(f"{path}: weight {key!r} expected none (not in the model), found {tuple(t.shape)}")
    model.load_state_dict(tensors, strict=True)


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except FileNotFoundError:
        raise _Damaged(path, "missing") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise _Damaged(path, f"not a valid safetensors file ({exc})") from None


def load_trained(path: str | Path, device: str = "cpu", runs_dir: str | Path = "runs") -> nn.Module:
    """A trained model, in eval mode, from a model folder or a run; `model.meta` holds its config and preprocessing."""
    model, meta = load_model(model_dir(path, runs_dir), device=device)
    model.meta = meta
    return model
