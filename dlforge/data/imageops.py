"""OpenCV image operations by name: one table, checked parameters, applied in order.

    ops = [{"op": "grayscale"}, {"op": "gaussian_blur", "ksize": 5}, {"op": "canny", "low": 50, "high": 150}]
    edges = apply_ops(image, ops)   # uint8 (H, W) or (H, W, 3) in, uint8 out

Images are uint8 arrays, (H, W) for one channel or (H, W, 3) in RGB order (as Pillow reads them). Every op returns
(H, W) or (H, W, 3) again, so ops chain. The image datasets apply `data.ops` to every image before normalization and
save the list with the model, and `dlforge image ops` applies them to one file. OpenCV comes from the pip package
`opencv-python-headless`, imported when an op runs; checking a list of ops needs no OpenCV.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dlforge.errors import ConfigError, DataError, clip, clip_repr
from dlforge.paths import existing_file, output_file
from dlforge.safe_yaml import load_yaml


def _cv2():
    try:
        import cv2
    except ImportError:
        raise DataError("image ops need OpenCV; pip install opencv-python-headless") from None
    return cv2


# --- parameters of each op -------------------------------------------------------------------------------------


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoParams(_Params):
    pass


INTERPOLATIONS = Literal["nearest", "linear", "area", "cubic", "lanczos"]


class ResizeParams(_Params):
    size: int | list[int] = Field(..., description="side of a square, or [height, width]")
    interpolation: INTERPOLATIONS = "area"

    @field_validator("size")
    @classmethod
    def _size(cls, v: int | list[int]) -> int | list[int]:
        sides = [v] if isinstance(v, int) else v
        if len(sides) not in (1, 2) or any(s < 1 for s in sides):
            raise ValueError("expected a positive side or [height, width]")
        return v


class GaussianBlurParams(_Params):
    ksize: int = Field(3, ge=1, description="kernel side, odd")
    sigma: float = Field(0.0, ge=0, description="standard deviation; 0 derives it from ksize")

    @field_validator("ksize")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("must be odd")
        return v


class CannyParams(_Params):
    low: float = Field(50.0, ge=0, description="lower hysteresis threshold")
    high: float = Field(150.0, ge=0, description="upper hysteresis threshold")
    aperture: Literal[3, 5, 7] = Field(3, description="Sobel kernel size")
    l2_gradient: bool = Field(False, description="use the L2 gradient norm instead of L1")


class ThresholdParams(_Params):
    value: float | Literal["otsu"] = Field(127.0, description="threshold, or 'otsu' to pick it (Otsu 1979)")
    mode: Literal["binary", "binary_inv"] = "binary"
    max_value: float = Field(255.0, ge=0, le=255, description="value of the pixels above the threshold")


# --- the ops ---------------------------------------------------------------------------------------------------


def grayscale(img: np.ndarray, p: NoParams) -> np.ndarray:
    """RGB -> one channel (ITU-R BT.601 luma); a one-channel image stays as it is."""
    if img.ndim == 2:
        return img
    cv2 = _cv2()
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def resize(img: np.ndarray, p: ResizeParams) -> np.ndarray:
    """Resize to `size` (a square side or [height, width]) with the given interpolation."""
    cv2 = _cv2()
    h, w = (p.size, p.size) if isinstance(p.size, int) else (p.size[0], p.size[-1])
    flags = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA,
             "cubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4}
    return cv2.resize(img, (w, h), interpolation=flags[p.interpolation])  # OpenCV sizes are (width, height)


def gaussian_blur(img: np.ndarray, p: GaussianBlurParams) -> np.ndarray:
    """Gaussian blur with a ksize x ksize kernel."""
    return _cv2().GaussianBlur(img, (p.ksize, p.ksize), p.sigma)


def canny(img: np.ndarray, p: CannyParams) -> np.ndarray:
    """Canny edges (Canny 1986): 255 on edges, 0 elsewhere; always one channel."""
    return _cv2().Canny(img, p.low, p.high, apertureSize=p.aperture, L2gradient=p.l2_gradient)


def threshold(img: np.ndarray, p: ThresholdParams) -> np.ndarray:
    """Binary threshold at `value`, or at Otsu's threshold (one-channel images only)."""
    cv2 = _cv2()
    kind = cv2.THRESH_BINARY if p.mode == "binary" else cv2.THRESH_BINARY_INV
    if p.value == "otsu":
        if img.ndim != 2:
            raise DataError("threshold: value 'otsu' needs a one-channel image; put a grayscale op before it")
        return cv2.threshold(img, 0, p.max_value, kind | cv2.THRESH_OTSU)[1]
    return cv2.threshold(img, p.value, p.max_value, kind)[1]


def equalize(img: np.ndarray, p: NoParams) -> np.ndarray:
    """Histogram equalization; an RGB image is equalized on its luma (Y of YCrCb), keeping the colours."""
    cv2 = _cv2()
    if img.ndim == 2:
        return cv2.equalizeHist(img)
    ycc = cv2.cvtColor(img, cv2.COLOR_RGB2YCrCb)
    ycc[:, :, 0] = cv2.equalizeHist(np.ascontiguousarray(ycc[:, :, 0]))
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)


@dataclass(frozen=True)
class Op:
    fn: Callable[[np.ndarray, Any], np.ndarray]
    params: type[_Params]


OPS: dict[str, Op] = {
    "grayscale": Op(grayscale, NoParams),
    "resize": Op(resize, ResizeParams),
    "gaussian_blur": Op(gaussian_blur, GaussianBlurParams),
    "canny": Op(canny, CannyParams),
    "threshold": Op(threshold, ThresholdParams),
    "equalize": Op(equalize, NoParams),
}


# --- checking and applying -------------------------------------------------------------------------------------


def validate_ops(ops: list[dict[str, Any]], where: str = "ops") -> list[tuple[Op, _Params]]:
    """Each `{"op": name, **params}` checked against the table; errors name `where[i]` and list what is known."""
    if not isinstance(ops, list):
        raise ConfigError(f"{where}: expected a list of {{op: name, ...}} mappings, got {clip_repr(ops)}")
    checked = []
    for i, spec in enumerate(ops):
        key = f"{where}[{i}]"
        if not isinstance(spec, dict) or "op" not in spec:
            raise ConfigError(f"{key}: expected a mapping with 'op' (one of {', '.join(OPS)}), got {clip_repr(spec)}")
        name = spec["op"]
        if name not in OPS:
            raise ConfigError(f"{key}.op: unknown image op {clip_repr(name)}; known: {', '.join(OPS)}")
        op = OPS[name]
        params = {k: v for k, v in spec.items() if k != "op"}
        known = list(op.params.model_fields)
        for k in params:
            if k not in known:
                listing = ", ".join(known) if known else "none"
                raise ConfigError(f"{key}.{clip(str(k))}: unknown parameter of {name!r}; known: {listing}")
        try:
            checked.append((op, op.params.model_validate(params)))
        except ValidationError as exc:
            e = exc.errors()[0]
            field = ".".join(str(p) for p in e["loc"][:1])
            msg = e["msg"].removeprefix("Value error, ")
            raise ConfigError(f"{key}.{field}: {msg}, got {clip_repr(e.get('input'))}") from None
    return checked


def apply_ops(img: np.ndarray, ops: list[dict[str, Any]], where: str = "ops") -> np.ndarray:
    """Apply `ops` in order to a uint8 image (H, W) or (H, W, 3); returns uint8 (H, W) or (H, W, 3)."""
    return run_ops(img, validate_ops(ops, where))


def run_ops(img: np.ndarray, checked: list[tuple[Op, _Params]]) -> np.ndarray:
    """`apply_ops` for ops already checked by `validate_ops` (the datasets check once, apply to every image)."""
    img = _as_image(img)
    for op, params in checked:
        img = _as_image(op.fn(img, params))
    return img


def _as_image(img: np.ndarray) -> np.ndarray:
    if img.dtype != np.uint8:
        raise DataError(f"image ops: expected a uint8 image, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise DataError(f"image ops: expected an image (H, W) or (H, W, 3), got shape {img.shape}")
    return np.ascontiguousarray(img)


# --- files -----------------------------------------------------------------------------------------------------


def read_image(path: str | Path) -> np.ndarray:
    """An image file as uint8 (H, W) or RGB (H, W, 3) through OpenCV; alpha is dropped, 16-bit scaled to 8."""
    path = existing_file(path, "an image file")
    cv2 = _cv2()
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(f"{path}: OpenCV cannot read this file as an image")
    if img.dtype == np.uint16:
        img = np.round(img / 257.0).astype(np.uint8)  # 65535 -> 255
    if img.dtype != np.uint8:
        raise DataError(f"{path}: expected an 8- or 16-bit image, got {img.dtype} pixels")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3:
        code = cv2.COLOR_BGRA2RGB if img.shape[2] == 4 else cv2.COLOR_BGR2RGB
        img = cv2.cvtColor(img, code)  # OpenCV stores BGR(A); the ops work on RGB
    return img


def write_image(path: str | Path, img: np.ndarray) -> Path:
    """Write a uint8 (H, W) or RGB (H, W, 3) image; the extension picks the format (.png, .jpg, .bmp, ...)."""
    path = output_file(path, "an image file to write")
    cv2 = _cv2()
    img = _as_image(img)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    try:
        written = cv2.imwrite(str(path), img)
    except cv2.error:
        written = False
    if not written:
        raise DataError(f"{path}: OpenCV cannot write this file; use an image extension such as .png, .jpg or .bmp")
    return path


# --- the command line ------------------------------------------------------------------------------------------


def parse_op(text: str) -> dict[str, Any]:
    """`"gaussian_blur:ksize=5,sigma=1.5"` -> `{"op": "gaussian_blur", "ksize": 5, "sigma": 1.5}` (values as YAML).

    A first value without a key is the op's first parameter: `threshold:otsu` is `threshold:value=otsu`, `resize:64`
    is `resize:size=64`. A bracketed value may hold commas: `resize:size=[32,48]`.
    """
    name, _, rest = text.partition(":")
    spec: dict[str, Any] = {"op": name.strip()}
    first = next(iter(OPS[spec["op"]].params.model_fields), None) if spec["op"] in OPS else None
    for i, item in enumerate(_split_top_level(rest)):
        if not item.strip():
            continue
        if "=" not in item:
            if i > 0 or first is None:
                raise ConfigError(f"--op {clip(text)}: expected name:key=value,key=value, got {clip_repr(item)}")
            item = f"{first}={item}"
        key, _, value = item.partition("=")
        try:
            spec[key.strip()] = load_yaml(value, f"--op {clip(text)}") if value.strip() else ""
        except yaml.YAMLError:
            spec[key.strip()] = value
    return spec


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts
