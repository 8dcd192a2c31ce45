"""The model folder: the one artifact format of dlforge, written and read here and nowhere else.

    run/model/   model.safetensors  config.json  manifest.json  (+ preprocessing.json, tokenizer.json, ...)

`config.json` names the registered model and its config, so `load_model` rebuilds it through the registry; the
other JSON files (preprocessing, data info, the tokenizer) travel with it. Nothing is pickled, and `torch.load` is
called only on another library's pytorch_model.bin, with weights_only=True (`read_foreign_weights`). Every folder
is written atomically (a hidden sibling temp folder, fsynced, then renamed into place) and carries a manifest with
the size and sha256 of each file, checked before anything is read back; training checkpoints
(`dlforge.train.checkpoint`) and token shards use the same folders.

Anything that only loads a trained model (generation, embedding, export, serving) imports this module, not the
training floor.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import secrets
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pydantic
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from dlforge.aliases import model_keys
from dlforge.errors import CheckpointError, DlforgeError
from dlforge.registry import config_fields, create_model, model_entry
from dlforge.runs.rundir import model_dir, pid_running, reporting_full_disk

MODEL_FORMAT = "dlforge-model"
VERSION = 1
_SCRATCH_NAME = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old|del)-(?P<pid>\d+)-[0-9a-f]+")  # scratch_path's
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # ours (and transformers'), then transformers' older one
_RESERVED = frozenset({"manifest.json", "config.json", "model.safetensors"})  # files of a model folder not "extra"


# --- atomic folders with a manifest ----------------------------------------------------------------------------------


def write_folder(directory: Path, fmt: str, fill: Callable[[Path], None], size: int | None = None) -> Path:
    """A folder of files written all at once (model folders, checkpoints, token shards): `fill(tmp)` writes plain
    files into a hidden temp sibling, manifest.json (format `fmt`, each file's size and sha256) is added, everything
    is fsynced and the folder renamed into place, replacing any folder there. `size` (bytes, about) is what a full
    disk's error says the folder needed."""
    directory = Path(directory)
    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    with reporting_full_disk(directory, size):
        return _write_folder(directory, fmt, fill)


def _write_folder(directory: Path, fmt: str, fill: Callable[[Path], None]) -> Path:
    parent = directory.parent
    tmp = scratch_path(directory, "tmp")
    tmp.mkdir()
    old = None
    try:
        fill(tmp)
        mode = _file_mode()
        for p in tmp.iterdir():  # safetensors writes its files 0600: give every file the mode a new file gets
            os.chmod(p, mode)
        files = {p.name: {"sha256": file_sha256(p), "bytes": p.stat().st_size} for p in sorted(tmp.iterdir())}
        write_json(tmp / "manifest.json", {"format": fmt, "version": VERSION, "files": files})
        for p in tmp.iterdir():
            _fsync(p)
        _fsync(tmp)
        if directory.exists():  # the same step written again (after a resume): move the old one aside first
            old = scratch_path(directory, "old")
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


def tensor_bytes(tensors: Mapping[str, torch.Tensor]) -> int:
    """What `tensors` take in a safetensors file, headers aside."""
    return sum(t.numel() * t.element_size() for t in tensors.values())


def scratch_path(directory: Path, kind: str) -> Path:
    return directory.parent / f".{directory.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def clean_stale_folders(parent: Path) -> None:
    """Tidy up after crashed writers in `parent`: remove their temp folders, and put back a folder that was moved
    aside to be overwritten when its replacement never arrived. Folders of writers still running are left alone."""
    parent = Path(parent)
    if not parent.is_dir():
        return
    for path in parent.iterdir():
        match = _SCRATCH_NAME.fullmatch(path.name)
        if not match or not path.is_dir() or pid_running(int(match["pid"])):
            continue
        final = parent / match["name"]
        if match["kind"] == "old" and not final.exists():
            os.rename(path, final)  # the old folder is complete: it was renamed aside in one step
        else:
            shutil.rmtree(path, ignore_errors=True)


def _file_mode() -> int:
    """The mode a newly created file gets here: 0666 less the process's umask (e.g. 0644)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def file_sha256(path: Path) -> str:
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


class DamagedFile(CheckpointError):
    """A file of a folder that is missing or does not match its manifest; `path` and `problem` say which and how."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem


def verify_folder(directory: Path, fmt: str, required: Iterable[str]) -> dict[str, Any]:
    """Check every file against manifest.json; return the manifest's file table."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DamagedFile(directory, "no such folder")
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise DamagedFile(manifest_path, "missing")
    manifest = read_json(manifest_path)
    if not isinstance(manifest, dict) or manifest.get("format") != fmt or not isinstance(manifest.get("files"), dict):
        raise DamagedFile(manifest_path, f"not a {fmt} manifest (expected format {fmt!r} and a 'files' table)")
    for name in required:
        if name not in manifest["files"]:
            raise DamagedFile(manifest_path, f"does not list {name}")
    for name, entry in manifest["files"].items():
        path = directory / name
        if Path(name).name != name or not isinstance(entry, dict):
            raise DamagedFile(manifest_path, f"invalid entry {name!r}")
        if not path.is_file():
            raise DamagedFile(path, "missing")
        if path.stat().st_size != entry.get("bytes"):
            raise DamagedFile(path, f"size mismatch (expected {entry.get('bytes')} bytes, found {path.stat().st_size})")
        if file_sha256(path) != entry.get("sha256"):
            raise DamagedFile(path, "sha256 mismatch")
    return manifest["files"]


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DamagedFile(path, "missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DamagedFile(path, f"invalid JSON ({exc})") from None


def check_finite(state_dict: Any, name: str) -> None:
    for key, value in (state_dict or {}).items():
        if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
            if not bool(torch.isfinite(value).all()):
                raise CheckpointError(f"refusing to save {name}: model weight {key!r} is not finite")


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
    check_finite(state_dict, directory.name)
    tensors, metadata = state_dict_to_safetensors(state_dict)
    config = pydantic.TypeAdapter(type(model.config)).dump_python(model.config, mode="json")
    meta = {"model": name, "config": config, "format": MODEL_FORMAT, "version": VERSION}

    def fill(tmp: Path) -> None:
        save_file(tensors, tmp / "model.safetensors", metadata=metadata)
        write_json(tmp / "config.json", meta)
        for filename, content in extra_files.items():
            write_json(tmp / filename, content)

    return write_folder(directory, MODEL_FORMAT, fill, size=tensor_bytes(tensors))


def load_model(directory: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Verify and load a model folder; return (model in eval mode on `device`, meta).

    meta = {"model": registry name, "config": config dict, "extra": {filename: parsed JSON of every other .json}}.
    """
    directory = Path(directory)
    meta = read_model_meta(directory)
    config_path = directory / "config.json"
    try:
        # a folder written by an older dlforge may use old config keys: read them as the new ones
        fields = config_fields(model_entry(meta["model"]).config_cls)
        meta["config"] = model_keys(meta["config"], fields, where=f"{config_path}: ")
        model = create_model(meta["model"], **meta["config"])
    except DlforgeError as exc:
        raise CheckpointError(f"{config_path}: {exc}") from exc
    if (meta["extra"].get("pruning.json") or {}).get("structured"):  # channels removed: the layers as saved
        with safe_open(directory / "model.safetensors", framework="pt") as f:
            resize_to(model, {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})
    load_weights(model, directory / "model.safetensors")
    return model.to(device).eval(), meta


def read_model_meta(directory: Path) -> dict[str, Any]:
    """The meta of a verified model folder (see `load_model`) without building the model: e.g. its tokenizer."""
    directory = Path(directory)
    files = verify_folder(directory, MODEL_FORMAT, ["model.safetensors", "config.json"])
    config_path = directory / "config.json"
    meta = read_json(config_path)
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{config_path}: expected a JSON object with format {MODEL_FORMAT!r}")
    name, config = meta.get("model"), meta.get("config")
    if not isinstance(name, str) or not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: expected 'model' (a registered name) and 'config' (an object)")
    extra = {f: read_json(directory / f) for f in sorted(files) if f.endswith(".json") and f not in _RESERVED}
    return {"config": config, "model": name, "extra": extra}


def save_foreign_folder(directory: Path, fmt: str, json_files: dict[str, dict], weights_name: str,
                        tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """A folder in another library's layout (e.g. transformers' config.json + model.safetensors), written like ours:
    atomically, with a manifest. `tensors` must not share memory (tie them by leaving one out, as that library
    does)."""
    tensors = {k: t.detach().to("cpu", memory_format=torch.contiguous_format, copy=True) for k, t in tensors.items()}
    check_finite(tensors, Path(directory).name)

    def fill(tmp: Path) -> None:
        save_file(tensors, tmp / weights_name, metadata=metadata)
        for filename, content in json_files.items():
            write_json(tmp / filename, content)

    return write_folder(Path(directory), fmt, fill)


def read_foreign_folder(directory: Path, fmt: str, weights_name: str, json_names: Iterable[str]
                        ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a folder in another library's layout: ({name: parsed JSON} of `json_names` present, tensors of
    `weights_name`). One written by `save_foreign_folder` is first checked against its manifest; one written by that
    library itself (no manifest.json) is read as it is. `weights_name` and the first of `json_names` are required."""
    directory = Path(directory)
    json_names = list(json_names)
    required = [weights_name, json_names[0]]
    if (directory / "manifest.json").is_file():
        verify_folder(directory, fmt, required)
    elif not directory.is_dir():
        raise DamagedFile(directory, "no such folder")
    for name in required:
        if not (directory / name).is_file():
            raise DamagedFile(directory / name, "missing")
    files = {name: read_json(directory / name) for name in json_names if (directory / name).is_file()}
    return files, load_safetensors(directory / weights_name)


def read_foreign_weights(folder: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The tensors of another library's model folder (transformers' BERT and GPT-2), and the file they came from:
    model.safetensors, else pytorch_model.bin read with torch.load(weights_only=True), which unpickles tensors and
    nothing else. A file holding anything more, or that is not a PyTorch file at all, is a one-line CheckpointError."""
    folder = Path(folder)
    safetensors_path, bin_path = folder / "model.safetensors", folder / "pytorch_model.bin"
    if safetensors_path.is_file():
        return load_safetensors(safetensors_path), safetensors_path
    if not bin_path.is_file():
        raise CheckpointError(f"{folder}: no model.safetensors or pytorch_model.bin (sharded checkpoints are not "
                              "read)")
    try:
        state = torch.load(bin_path, map_location="cpu", weights_only=True)  # tensors only: nothing is executed
    except Exception as exc:  # a pickle of more than tensors, a truncated zip, another kind of file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(f"{bin_path}: {unpickling_refusal(exc) or f'not a PyTorch file of tensors ({first})'}"
                              ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{bin_path}: expected a state dict of tensors, found {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{bin_path}: expected a state dict of tensors, found {key!r}: a "
                                  f"{type(value).__name__}")
    return state, bin_path


# What loading another library's model folder (transformers, sentence-transformers) raises for a folder it can't
# read: a missing or broken file, a bad config, a pytorch_model.bin that torch.load(weights_only=True) refuses.
LOAD_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, pickle.UnpicklingError)


def unpickling_refusal(exc: BaseException) -> str | None:
    """torch.load(weights_only=True)'s refusal, whose message runs to many lines and advises weights_only=False, as
    one line saying what the file holds; None for any other error."""
    message = str(exc)
    if not (isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in message):
        return None
    refused = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    if refused:
        return (f"holds Python objects besides tensors ({refused[1]}); dlforge reads tensors only: save the weights as "
                "model.safetensors (save_pretrained does)")
    detail = message.partition("WeightsUnpickler error:")[2]  # the unpickler's own complaint comes after the advice
    first = next((line.strip() for line in detail.splitlines() if line.strip()), "unreadable")
    return f"not a PyTorch file of tensors ({first[:200]})"


def load_weights(model: nn.Module, safetensors_path: Path) -> None:
    """Load a safetensors file into `model`, strictly: every key present on both sides, with the same shape."""
    path = Path(safetensors_path)
    tensors = load_safetensors(path)
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata() or {}
    try:
        aliases = json.loads(metadata.get("dlforge_aliases", "{}"))
        tensors.update({alias: tensors[source] for alias, source in aliases.items()})
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: invalid 'dlforge_aliases' metadata ({exc!r})") from None
    check_shapes(model.state_dict(), tensors, str(path))
    model.load_state_dict(tensors, strict=True)


def check_shapes(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], where: str,
                 hint: str = "") -> None:
    """Raise a CheckpointError at the first weight of `found` (read from `where`) that is missing, extra, or of
    another shape than in `expected` (a model's state dict), naming both shapes; `hint` is added after them."""
    tail = f"; {hint}" if hint else ""
    for key, want in expected.items():
        got = tuple(found[key].shape) if key in found else "missing"
        if got != tuple(want.shape):
            raise CheckpointError(f"{where}: weight {key!r} expected shape {tuple(want.shape)}, found {got}{tail}")
    for key, t in found.items():
        if key not in expected:
            raise CheckpointError(f"{where}: weight {key!r} expected none (not in the model), found "
                                  f"{tuple(t.shape)}{tail}")


def weights_sha256(folder: Path) -> str:
    """The SHA-256 of a model folder's weights: model.safetensors, or a transformers folder's pytorch_model.bin."""
    folder = Path(folder)
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return file_sha256(folder / name)
    raise DamagedFile(folder / WEIGHT_FILES[0], "missing")


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except FileNotFoundError:
        raise DamagedFile(path, "missing") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise DamagedFile(path, f"not a valid safetensors file ({exc})") from None


def load_trained(path: str | Path, device: str = "cpu", runs_dir: str | Path = "runs") -> nn.Module:
    """A trained model, in eval mode, from a model folder or a run; `model.meta` holds its config and preprocessing,
    and the model folder it was loaded from (`folder`)."""
    folder = model_dir(path, runs_dir)
    model, meta = load_model(folder, device=device)
    model.meta = {**meta, "folder": str(folder)}
    return model


# --- a structurally pruned model's layers (dlforge.deploy.channels): its config builds them larger -----------


def resize_to(model: nn.Module, shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Resize every Conv2d, Linear, BatchNorm and LayerNorm of `model` whose weights have other shapes in `shapes`
    (state-dict key -> shape); return the names of the layers resized. Values are left uninitialized: load them."""
    resized = []
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        own = dict([*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)])
        if not own or all(tuple(shapes.get(prefix + k, v.shape)) == tuple(v.shape) for k, v in own.items()):
            continue
        if not isinstance(module, nn.Conv2d | nn.Linear | nn.BatchNorm2d | nn.BatchNorm1d | nn.LayerNorm):
            continue  # load_weights names the mismatch
        for key, value in own.items():
            shape = tuple(shapes.get(prefix + key, value.shape))
            fresh = torch.empty(shape, dtype=value.dtype, device=value.device)
            if isinstance(value, nn.Parameter):
                setattr(module, key, nn.Parameter(fresh, requires_grad=value.requires_grad))
            else:
                module.register_buffer(key, fresh)
        layer_sizes(module)
        resized.append(name)
    return resized


def layer_sizes(module: nn.Module) -> None:
    """Set a layer's size attributes from its (new) weight."""
    w = module.weight
    if isinstance(module, nn.Conv2d):
        depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
        module.out_channels = w.shape[0]
        module.groups = w.shape[0] if depthwise else module.groups
        module.in_channels = w.shape[1] * module.groups
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = w.shape
    elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
        module.num_features = w.shape[0]
    elif isinstance(module, nn.LayerNorm):
        module.normalized_shape = tuple(w.shape)
