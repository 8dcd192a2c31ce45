"""COCO run-length encoding of binary masks, as pycocotools' `mask` module writes and reads it, in numpy.

    rle = encode(mask)            # {"size": [h, w], "counts": "a1b2..."}: mask (H, W), nonzero = 1
    decode(rle), area(rle), to_bbox(rle)                  # (H, W) uint8, int, [x, y, w, h]
    to_rle(ann["segmentation"], h, w)                     # polygons, uncompressed or compressed RLE -> compressed
    iou(detections, truths, iscrowd), box_iou(...)        # (D, G), COCOeval's IoU for masks and for boxes

A mask is read column by column (Fortran order) into runs that alternate 0s and 1s, starting with 0s (so the first
run is 0 when the mask starts with a 1). An uncompressed RLE keeps the runs as a list (`counts: [3, 2, ...]`); the
compressed one writes them as a string the way pycocotools' maskApi.c does: from the fourth run on, each run is
stored as its difference from the run two before it, and each number as 5-bit groups, least significant first,
6 bits a character (bit 5: more groups follow; bit 4 of the last group: the sign), each character offset by 48.

Polygons are rasterised exactly as pycocotools' `frPoly` does (points 5x upsampled along the boundary, then the
crossings of pixel centres per column), not as OpenCV's fillPoly, whose pixels differ along the edges. The IoU of a
crowd region is the intersection over the detection's area, as in COCOeval.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dlforge.errors import DataError

RLE = dict[str, Any]  # {"size": [height, width], "counts": str (compressed) or list[int] (uncompressed)}
POLY_SCALE = 5  # frPoly upsamples the boundary 5x before finding pixel-centre crossings
INT_MIN = -(2**31)  # what C's (int) cast of NaN gives on x86 (frPoly on a repeated vertex)
POPCOUNT_BITS = 2**27  # mask IoU by packed-bit popcount up to a 16 MB intermediate, by matmul beyond


# --- runs <-> masks ---------------------------------------------------------------------------------------------


def mask_runs(mask: np.ndarray) -> np.ndarray:
    """The run lengths of a 2-D mask (nonzero = 1) read column-major, starting with a run of 0s; uint32."""
    flat = np.asarray(mask).T.reshape(-1) != 0  # column-major
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(edges)
    if flat.size and flat[0]:
        runs = np.concatenate([[0], runs])
    return runs.astype(np.uint32)


def runs_to_mask(runs: np.ndarray, height: int, width: int) -> np.ndarray:
    """The (height, width) uint8 mask of column-major runs (0s first)."""
    runs = np.asarray(runs, dtype=np.int64)
    if runs.sum() != height * width or (runs < 0).any():
        raise DataError(f"invalid RLE: runs sum to {int(runs.sum())} pixels, the size {height}x{width} has "
                        f"{height * width}")
    values = (np.arange(len(runs)) % 2).astype(np.uint8)
    return np.repeat(values, runs).reshape(width, height).T


def runs_to_columns(runs: Sequence[np.ndarray]) -> np.ndarray:
    """Masks of one size from their runs, flattened column-major: (n, H*W) bool, decoded in one pass."""
    if not runs:
        return np.zeros((0, 0), dtype=bool)
    lengths = np.array([len(r) for r in runs])
    flat = np.concatenate(runs).astype(np.int64)
    values = (np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)) % 2 == 1
    return np.repeat(values, flat).reshape(len(runs), -1)


# --- the compressed string --------------------------------------------------------------------------------------


def runs_to_string(runs: np.ndarray) -> str:
    """pycocotools' rleToString: deltas against the run two before (from the fourth run on), LEB128-like 5-bit
    groups in characters 48..111."""
    x = np.asarray(runs, dtype=np.int64).copy()
    if len(x) == 0:
        return ""
    if len(x) > 3:
        x[3:] -= np.asarray(runs, dtype=np.int64)[1:-2]
    groups, active = [], np.ones(len(x), dtype=bool)
    while active.any():
        c = x & 0x1F
        x = x >> 5  # arithmetic shift: negative deltas keep their sign
        more = np.where(c & 0x10, x != -1, x != 0) & active
        groups.append(np.where(active, (c | (more << 5)) + 48, 0))
        active = more
    chars = np.stack(groups, axis=1)  # (runs, groups), 0 where a run had fewer groups
    return chars[chars > 0].astype(np.uint8).tobytes().decode("ascii")


def string_to_runs(counts: str | bytes) -> np.ndarray:
    """pycocotools' rleFrString: the runs of a compressed `counts` string; uint32."""
    return strings_to_runs([counts])[0]


def strings_to_runs(strings: Sequence[str | bytes]) -> list[np.ndarray]:
    """The runs of many compressed `counts` strings, decoded in one vectorised pass (a Python loop over the
    characters, or a numpy pass per string, is what would make reading thousands of masks slow)."""
    raws = [s.encode("ascii") if isinstance(s, str) else bytes(s) for s in strings]
    c = np.frombuffer(b"".join(raws), dtype=np.uint8).astype(np.int64) - 48
    ends = np.cumsum([len(r) for r in raws])
    if len(c) and (c.min() < 0 or c.max() > 63 or (c[ends[ends > 0] - 1] & 0x20).any()):
        bad = next(r for r in raws if r and (min(r) < 48 or max(r) > 111 or r[-1] - 48 & 0x20))
        raise DataError(f"invalid RLE counts string {bad[:40]!r}: characters must be in '0'..'o' and end a number")
    last = (c & 0x20) == 0  # the last character (group) of a number; no number spans two strings
    starts = np.concatenate([[0], np.flatnonzero(last)[:-1] + 1]) if len(c) else np.zeros(0, dtype=np.int64)
    n_groups = np.diff(np.append(starts, len(c)))
    if len(c) and n_groups.max() > 12:
        raise DataError(f"invalid RLE counts string: a number of {n_groups.max()} characters (at most 12)")
    k = np.arange(len(c)) - np.repeat(starts, n_groups)
    x = np.add.reduceat((c & 0x1F) << (5 * k), starts) if len(c) else np.zeros(0, dtype=np.int64)
    x -= np.where(c[last] & 0x10, 1 << (5 * n_groups), 0)  # the sign of the last group
    per_string = np.diff(np.searchsorted(np.flatnonzero(last), np.append(0, ends), side="left"))
    string = np.repeat(np.arange(len(raws)), per_string)
    pos = np.arange(len(x)) - np.repeat(np.cumsum(per_string) - per_string, per_string)
    # undo the deltas: run i (i >= 3) = x[i] + run i-2, i.e. a running sum along the odd runs (from run 1) and along
    # the even runs from run 2 on, within each string
    runs = x.copy()
    for chain in ((pos % 2 == 1), (pos % 2 == 0) & (pos >= 2)):
        runs[chain] = _segmented_cumsum(x[chain], string[chain])
    return np.split(runs.astype(np.uint32), np.cumsum(per_string)[:-1])


def _segmented_cumsum(values: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Running sums of `values` restarting wherever the (sorted) `segment` id changes."""
    total = np.cumsum(values)
    if len(values) == 0:
        return total
    first = np.flatnonzero(np.r_[True, segment[1:] != segment[:-1]])
    before = total[first] - values[first]
    return total - np.repeat(before, np.diff(np.append(first, len(values))))


# --- RLE dicts --------------------------------------------------------------------------------------------------


def encode(mask: np.ndarray) -> RLE:
    """The compressed RLE of a 2-D mask (nonzero = 1), counts as a str (pycocotools' are the same bytes)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"encode takes one (H, W) mask, got shape {mask.shape}")
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": runs_to_string(mask_runs(mask))}


def rle_runs(rle: RLE) -> np.ndarray:
    """The runs of a compressed (str or bytes counts) or uncompressed (list counts) RLE."""
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        return string_to_runs(counts)
    return np.asarray(counts, dtype=np.int64).astype(np.uint32)


def rle_size(rle: RLE) -> tuple[int, int]:
    h, w = rle["size"]
    return int(h), int(w)


def compress(rle: RLE) -> RLE:
    """A compressed RLE (str counts) from a compressed or uncompressed one."""
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if not isinstance(counts, str):
        counts = runs_to_string(rle_runs(rle))
    return {"size": list(rle_size(rle)), "counts": counts}


def decode(rle: RLE) -> np.ndarray:
    """The (H, W) uint8 mask of an RLE (compressed or not)."""
    return runs_to_mask(rle_runs(rle), *rle_size(rle))


def area(rle: RLE) -> int:
    """Pixels set in the mask: the sum of the odd runs."""
    return int(rle_runs(rle)[1::2].sum(dtype=np.int64))


def to_bbox(rle: RLE) -> np.ndarray:
    """The tight box [x, y, w, h] (float64) of an RLE, as pycocotools' rleToBbox computes it; zeros when empty."""
    runs = rle_runs(rle).astype(np.int64)
    h, _ = rle_size(rle)
    m = len(runs) // 2 * 2  # a trailing run of 0s adds nothing
    if m == 0:
        return np.zeros(4)
    ends = np.cumsum(runs[:m]) - np.arange(m) % 2  # first pixel of each run of 1s, last pixel of it
    y, x = ends % h, ends // h
    ys, ye = y.min(), y.max()
    if (x[1::2] > x[0::2]).any():  # a run of 1s crossing into a later column covers the column's last and first row
        ys, ye = 0, h - 1
    return np.array([x.min(), ys, x.max() - x.min() + 1, ye - ys + 1], dtype=np.float64)


def merge(rles: Sequence[RLE], intersect: bool = False) -> RLE:
    """The union (or intersection) of RLEs of one size, as one compressed RLE."""
    if not rles:
        raise ValueError("merge needs at least one RLE")
    sizes = {rle_size(r) for r in rles}
    if len(sizes) != 1:
        raise DataError(f"cannot merge RLEs of different sizes {sorted(sizes)}")
    masks = np.stack([decode(r) for r in rles]).astype(bool)
    return encode(masks.all(axis=0) if intersect else masks.any(axis=0))


# --- polygons ---------------------------------------------------------------------------------------------------


def polygon_runs(xy: Sequence[float], height: int, width: int) -> np.ndarray:
    """pycocotools' rleFrPoly: the runs of one polygon [x0, y0, x1, y1, ...] in pixel coordinates."""
    return polygons_runs_many([xy], [(height, width)])[0]


def polygons_runs_many(polygons: Sequence[Sequence[float]], sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """rleFrPoly for many polygons at once (polygon i in an image of sizes[i] = (height, width)): the boundary is
    walked in 5x upsampled integer steps; where it moves to another column, the crossing of a pixel centre column
    starts or ends a run of that column."""
    for xy in polygons:
        if len(xy) < 6 or len(xy) % 2:
            raise DataError(f"a polygon needs x, y pairs of at least 3 points, got {len(xy)} numbers")
    n_points = np.array([len(xy) // 2 for xy in polygons])
    pts = np.concatenate([np.asarray(xy, dtype=np.float64).reshape(-1, 2) for xy in polygons])
    x = np.trunc(POLY_SCALE * pts[:, 0] + 0.5).astype(np.int64)  # C's (int) cast truncates toward zero
    y = np.trunc(POLY_SCALE * pts[:, 1] + 0.5).astype(np.int64)
    first = np.cumsum(n_points) - n_points
    after = np.arange(len(x)) + 1  # each vertex's edge goes to the next vertex, the last one back to the first
    after[first + n_points - 1] = first
    u, v, edge = _boundary_points(x, x[after], y, y[after])
    poly = np.repeat(np.arange(len(polygons)), n_points)[edge]
    height, width = (np.array([s[i] for s in sizes], dtype=np.int64) for i in (0, 1))
    j = np.flatnonzero((u[1:] != u[:-1]) & (poly[1:] == poly[:-1])) + 1
    h, w = height[poly[j]], width[poly[j]]
    xd = (np.where(u[j] < u[j - 1], u[j], u[j] - 1) + 0.5) / POLY_SCALE - 0.5
    keep = (np.floor(xd) == xd) & (xd >= 0) & (xd <= w - 1)
    yd = np.ceil(np.minimum(np.maximum((np.minimum(v[j], v[j - 1]) + 0.5) / POLY_SCALE - 0.5, 0), h))
    # run boundaries as pixel indices (column-major), each polygon closed by its pixel count
    where = np.concatenate([xd[keep].astype(np.int64) * h[keep] + yd[keep].astype(np.int64), height * width])
    owner = np.concatenate([poly[j][keep], np.arange(len(polygons))])
    order = np.lexsort((where, owner))
    where, owner = where[order], owner[order]
    runs = np.diff(where, prepend=0)
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    runs[starts] = where[starts]
    empty = runs == 0
    empty[starts] = False  # a leading 0 is how a mask starting with a 1 begins
    cancel = set(owner[empty].tolist())  # polygons with crossings that cancel: few
    pieces = np.split(runs.astype(np.uint32), starts[1:])
    return [_collapse_zero_runs(r) if i in cancel else r for i, r in enumerate(pieces)]


def _boundary_points(xs: np.ndarray, xe: np.ndarray, ys: np.ndarray, ye: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer points (u, v) along every edge (xs, ys) -> (xe, ye), and the edge of each: one unit step at a time
    along the edge's longer axis (walked from its lower end, listed in the edge's direction), the other coordinate
    rounded as frPoly rounds it."""
    dx, dy = np.abs(xe - xs), np.abs(ys - ye)
    along_x = dx >= dy
    flip = (along_x & (xs > xe)) | (~along_x & (ys > ye))
    xs, xe, ys, ye = np.where(flip, xe, xs), np.where(flip, xs, xe), np.where(flip, ye, ys), np.where(flip, ys, ye)
    steps = np.where(along_x, dx, dy)
    edge = np.repeat(np.arange(len(xs)), steps + 1)
    d = np.arange(len(edge)) - np.repeat(np.cumsum(steps + 1) - (steps + 1), steps + 1)
    t = np.where(flip[edge], steps[edge] - d, d)
    rise = np.where(along_x, ye - ys, xe - xs).astype(np.float64)
    slope = np.divide(rise, steps, out=np.full(len(steps), np.nan), where=steps > 0)[edge]
    other = np.trunc(np.where(along_x, ys, xs)[edge] + slope * t + 0.5)
    # a repeated vertex: C divides 0 by 0 and casts the NaN to int, which x86 makes INT_MIN
    other = np.where(np.isnan(other), INT_MIN, other).astype(np.int64)
    u = np.where(along_x[edge], t + xs[edge], other)
    v = np.where(along_x[edge], other, t + ys[edge])
    return u, v, edge


def _collapse_zero_runs(a: np.ndarray) -> np.ndarray:
    """frPoly's last step: a zero-length run between two others joins them (two crossings at one pixel cancel)."""
    out = [int(a[0])]
    j = 1
    while j < len(a):
        if a[j] > 0:
            out.append(int(a[j]))
            j += 1
        else:
            j += 1
            if j < len(a):
                out[-1] += int(a[j])
                j += 1
    return np.asarray(out, dtype=np.uint32)


def polygons_runs(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """The runs of the union of one or more polygons (one object in parts)."""
    return segmentations_runs([polygons], [(height, width)])[0][0]


def from_polygons(polygons: Sequence[Sequence[float]], height: int, width: int) -> RLE:
    """One compressed RLE for an object made of one or more polygons (their union), as COCO's annToRLE."""
    return {"size": [height, width], "counts": runs_to_string(polygons_runs(polygons, height, width))}


def segmentation_runs(segmentation: Any, height: int, width: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The runs and (height, width) of a COCO `segmentation`: polygons (in an image of height x width), or an
    uncompressed or compressed RLE (of its own size)."""
    return segmentations_runs([segmentation], [(height, width)])[0]


def segmentations_runs(segmentations: Sequence[Any], sizes: Sequence[tuple[int, int]]
                       ) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """`segmentation_runs` of many segmentations (in images of `sizes`), their polygons and compressed strings
    each decoded in one vectorised pass."""
    polygons, polygon_sizes, strings, out = [], [], [], []
    for seg, (h, w) in zip(segmentations, sizes, strict=True):
        if isinstance(seg, list):
            if not seg:
                raise DataError("a polygon segmentation needs at least one polygon")
            out.append(("polygons", len(polygons), len(seg), (int(h), int(w))))
            polygons.extend(seg)
            polygon_sizes.extend([(h, w)] * len(seg))
        elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
            if isinstance(seg["counts"], (str, bytes)):
                out.append(("string", len(strings), 1, rle_size(seg)))
                strings.append(seg["counts"])
            else:
                out.append(("runs", rle_runs(seg), 1, rle_size(seg)))
        else:
            raise DataError(f"a segmentation must be a list of polygons or an RLE {{size, counts}}, got "
                            f"{type(seg).__name__}")
    polygon_runs_ = polygons_runs_many(polygons, polygon_sizes) if polygons else []
    string_runs = strings_to_runs(strings)
    result = []
    for kind, at, n, size in out:
        if kind == "string":
            result.append((string_runs[at], size))
        elif kind == "runs":
            result.append((at, size))
        elif n == 1:
            result.append((polygon_runs_[at], size))
        else:  # an object in parts: the union of its polygons
            parts = [runs_to_mask(r, *size) for r in polygon_runs_[at:at + n]]
            result.append((mask_runs(np.logical_or.reduce(parts)), size))
    _check_sums([r for r, (kind, *_) in zip(result, out, strict=True) if kind != "polygons"])
    return result


def _check_sums(rles: list[tuple[np.ndarray, tuple[int, int]]]) -> None:
    """Every RLE's runs must cover its height x width pixels exactly (polygons do by construction)."""
    if not rles:
        return
    runs, sizes = [r for r, _ in rles], [size for _, size in rles]
    lengths = np.array([len(r) for r in runs])
    sums = np.bincount(np.repeat(np.arange(len(runs)), lengths), weights=np.concatenate(runs), minlength=len(runs))
    pixels = np.array([h * w for h, w in sizes])
    bad = np.flatnonzero(sums != pixels)
    if len(bad):
        (h, w), total = sizes[bad[0]], int(sums[bad[0]])
        raise DataError(f"invalid RLE: runs sum to {total} pixels, the size {h}x{w} has {h * w}")


def to_rle(segmentation: Any, height: int, width: int) -> RLE:
    """A COCO `segmentation` (polygons, uncompressed or compressed RLE) as one compressed RLE (COCO's annToRLE)."""
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (str, bytes)):
        return compress(segmentation)
    runs, size = segmentation_runs(segmentation, height, width)
    return {"size": list(size), "counts": runs_to_string(runs)}


# --- IoU --------------------------------------------------------------------------------------------------------


def mask_iou(detections: np.ndarray, truths: np.ndarray, iscrowd: Sequence[bool] | np.ndarray) -> np.ndarray:
    """IoU (D, G) of masks (D, H, W) and (G, H, W); for a crowd truth, the intersection over the detection's area."""
    d = np.asarray(detections).reshape(len(detections), -1) != 0
    g = np.asarray(truths).reshape(len(truths), -1) != 0
    inter = _intersections(d, g)
    area_d, area_g = d.sum(axis=1), g.sum(axis=1)
    crowd = np.asarray(iscrowd, dtype=bool).reshape(1, -1)
    union = np.where(crowd, area_d[:, None], area_d[:, None] + area_g[None, :] - inter)
    return np.divide(inter, union, out=np.zeros(inter.shape, dtype=np.float64), where=inter > 0)


def _intersections(d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Pixels in common (D, G) of flat bool masks (D, L) and (G, L), as int64."""
    if hasattr(np, "bitwise_count") and d.shape[0] * g.shape[0] * d.shape[1] <= POPCOUNT_BITS:
        # numpy >= 2: a popcount of the ANDed packed bits, ~10x a float matmul on the few masks of an image
        both = np.packbits(d, axis=1)[:, None, :] & np.packbits(g, axis=1)[None, :, :]
        return np.bitwise_count(both).sum(axis=2, dtype=np.int64)
    dtype = np.float32 if d.shape[1] < 2**24 else np.float64  # integer sums stay exact
    return (d.astype(dtype) @ g.astype(dtype).T).astype(np.int64)


def iou(detections: Sequence[RLE], truths: Sequence[RLE], iscrowd: Sequence[bool] | np.ndarray) -> np.ndarray:
    """pycocotools' mask.iou for RLEs: (D, G) float64."""
    if not detections or not truths:
        return np.zeros((len(detections), len(truths)))
    sizes = {rle_size(r) for r in [*detections, *truths]}
    if len(sizes) != 1:
        raise DataError(f"IoU of masks of different sizes {sorted(sizes)}")
    return mask_iou(np.stack([decode(r) for r in detections]), np.stack([decode(r) for r in truths]), iscrowd)


def box_iou(detections: np.ndarray, truths: np.ndarray, iscrowd: Sequence[bool] | np.ndarray) -> np.ndarray:
    """pycocotools' bbIou: IoU (D, G) of [x, y, w, h] boxes; a crowd truth divides by the detection's area.

    `dlforge.layers.boxes.box_iou` is the torch one, on xyxy boxes, for training and NMS."""
    d = np.asarray(detections, dtype=np.float64).reshape(-1, 4)[:, None, :]
    g = np.asarray(truths, dtype=np.float64).reshape(-1, 4)[None, :, :]
    return box_overlaps(d, g, np.asarray(iscrowd, dtype=bool).reshape(1, -1))


def box_overlaps(detections: np.ndarray, truths: np.ndarray, iscrowd: np.ndarray) -> np.ndarray:
    """COCO's IoU of broadcastable [x, y, w, h] boxes (..., 4) and crowd flags (...): float64, the operations of
    pycocotools' bbIou in its order, so that a value on a threshold falls on the same side."""
    d, g = detections, truths
    w = np.minimum(d[..., 2] + d[..., 0], g[..., 2] + g[..., 0]) - np.maximum(d[..., 0], g[..., 0])
    h = np.minimum(d[..., 3] + d[..., 1], g[..., 3] + g[..., 1]) - np.maximum(d[..., 1], g[..., 1])
    inter = w * h
    area_d, area_g = d[..., 2] * d[..., 3], g[..., 2] * g[..., 3]
    union = np.where(iscrowd, area_d, area_d + area_g - inter)
    return np.divide(inter, union, out=np.zeros(inter.shape), where=(w > 0) & (h > 0))
