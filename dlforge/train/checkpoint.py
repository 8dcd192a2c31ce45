"""Training checkpoints: the resumable training state. The model folder is `dlforge.artifacts`.

Nothing is pickled and `torch.load` is never called: tensors go to safetensors, everything else to JSON.

    run/checkpoints/checkpoint-120/   state.safetensors  state.json   manifest.json   (resumable training state)

Folders are written atomically with a manifest, as model folders are (`dlforge.artifacts.write_folder`).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from dlforge.artifacts import (
    DamagedFile,
    check_finite,
    clean_stale_folders,
    load_safetensors,
    read_json,
    scratch_path,
    tensor_bytes,
    verify_folder,
    write_folder,
)
from dlforge.errors import CheckpointError

CHECKPOINT_FORMAT = "dlforge-checkpoint"
_MARKERS = frozenset({"__tensor__", "__ndarray__", "__npscalar__", "__tuple__", "__dict__", "__float__", "__dtype__"})
_WIDEN = {"uint16": np.int32, "uint32": np.int64}  # numpy dtypes stored widened, cast back on load
_CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")


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


# --- training checkpoints --------------------------------------------------------------------------------------------


def save_checkpoint(directory: Path, state: dict) -> Path:
    """Write `state` (model/optimizer/scheduler/RNG/callback states...) atomically to `directory`."""
    directory = Path(directory)
    check_finite(state.get("model"), directory.name)
    tensors, tree = flatten_state(state)

    text = json.dumps(tree, allow_nan=False)

    def fill(tmp: Path) -> None:
        save_file(tensors, tmp / "state.safetensors")
        (tmp / "state.json").write_text(text, encoding="utf-8")

    return write_folder(directory, CHECKPOINT_FORMAT, fill, size=tensor_bytes(tensors) + len(text))


def load_checkpoint(directory: Path) -> dict:
    """Verify `directory` against its manifest and return the saved state (tensors on the CPU)."""
    directory = Path(directory)
    verify_folder(directory, CHECKPOINT_FORMAT, ["state.safetensors", "state.json"])
    tensors = load_safetensors(directory / "state.safetensors")
    return unflatten_state(tensors, read_json(directory / "state.json"))


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
            reason = f"{exc.path.name}: {exc.problem}" if isinstance(exc, DamagedFile) else str(exc)
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
            doomed = scratch_path(directory, "del")
            os.rename(directory, doomed)  # never leave a half-deleted folder under the final name
            shutil.rmtree(doomed)
            removed.append(directory)
    return removed
