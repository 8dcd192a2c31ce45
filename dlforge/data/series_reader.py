"""A time series read from a file, and put on a regular time grid.

`read_series` reads the time, value and target columns of a CSV or Parquet file (every bad cell named with its file
and line); `regularize` puts the observations on a regular grid of the series' step (given, or inferred): gaps --
missing values and missing time steps -- and off-grid time stamps are filled by linear interpolation in time,
reported as errors naming the first bad line, or left for the windows to skip (`fill`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlforge.data.table_reader import Table, finite32, is_missing, not_finite32, read_table, to_number
from dlforge.errors import ConfigError, DataError

MAX_GRID_GROWTH = 10  # a grid more than 10x the rows (plus 1000) means a wrong freq, not gaps


@dataclass
class Series:
    """Raw observations: times (N,) (datetime64[ns], float, or None for row order), values (N, F) with NaN gaps."""

    source: str
    times: np.ndarray | None
    values: np.ndarray
    columns: list[str]
    targets: list[str]
    time_column: str | None = None
    lines: list[int] | None = None  # where each row came from (file lines); default rows 1..N
    unit: str = "row"

    def where(self, i: int) -> str:
        if self.lines is not None and self.unit == "line":
            return f"{self.source}:{self.lines[i]}"
        return f"{self.source}: row {self.lines[i] if self.lines is not None else i + 1}"


# --- reading a file ----------------------------------------------------------------------------------------------


def read_series(path: str | Path, config: Any) -> Series:
    """The time, value and target columns of a CSV / Parquet file, as `config` (a TimeSeriesConfig) names them;
    missing values become NaN."""
    return series_of_table(read_table(path), config.time_column, config.value_columns, config.target_columns)


def series_of_table(table: Table, time_column: str | None, value_columns: list[str] | None,
                    target_columns: list[str] | None) -> Series:
    """The named columns of a table as a series (value columns default: every numeric one; targets default: the
    value columns); missing values become NaN."""
    if time_column is not None:
        table.require(time_column, "time")
    rest = [c for c in table.columns if c != time_column]
    if value_columns is None:
        values = [c for c in rest if _mostly_numbers(table.columns[c])]
        if not values:
            raise DataError(f"{table.source}: no numeric columns besides the time column; columns: {', '.join(rest)}")
    else:
        values = list(dict.fromkeys(value_columns))
        for name in values:
            table.require(name, "value")
            if name == time_column:
                raise DataError(f"{table.source}: data.value_columns includes the time column {name!r}")
    targets = list(dict.fromkeys(target_columns or values))
    for name in targets:
        table.require(name, "target")
        if name not in values:
            raise DataError(f"{table.source}: target column {name!r} is not among data.value_columns")
    ordered = targets + [c for c in values if c not in targets]  # x holds the targets first
    matrix = np.stack([_numbers(table, c) for c in ordered], axis=1)
    times = time_values(table, time_column) if time_column else None
    return Series(table.source, times, matrix, ordered, targets, time_column, table.lines, table.unit)


def _mostly_numbers(cells: list[Any]) -> bool:
    # a column of numbers with a typo is a value column (reading it names the bad cell); one of words is not
    present = [c for c in cells if not is_missing(c)]
    return bool(present) and 2 * sum(to_number(c) is not None for c in present) >= len(present)


def _numbers(table: Table, name: str) -> np.ndarray:
    """The column as float64 (N,), NaN where a value is missing; a DataError at a cell that is not a number, or not
    finite as float32."""
    out = np.empty(len(table), dtype=np.float64)
    for i, cell in enumerate(table.columns[name]):
        if is_missing(cell):
            out[i] = np.nan
            continue
        number = to_number(cell)
        if number is None:
            raise DataError(f"{table.where(i)}: column {name!r}: expected a number, found {cell!r}")
        if not finite32(number):
            raise DataError(f"{table.where(i)}: column {name!r}: {not_finite32(cell)}")
        out[i] = number
    return out


def time_values(table: Table, name: str) -> np.ndarray:
    """The column's times: numbers (float64) when every cell is one, else dates/times (datetime64[ns]; time zones
    converted to UTC)."""
    cells = table.columns[name]
    for i, cell in enumerate(cells):
        if is_missing(cell):
            raise DataError(f"{table.where(i)}: column {name!r}: missing time; every row needs one")
    numbers = [to_number(c) for c in cells]
    if all(n is not None and math.isfinite(n) for n in numbers):
        return np.asarray(numbers, dtype=np.float64)
    try:
        import pandas as pd
    except ImportError:
        raise DataError(f"{table.source}: reading dates in column {name!r} needs pandas; pip install pandas") from None
    texts = pd.Series([str(c).strip() for c in cells])
    try:
        parsed = pd.to_datetime(texts, format="ISO8601", errors="coerce", utc=True)
    except (ValueError, TypeError):
        parsed = pd.Series(pd.NaT, index=texts.index)
    if parsed.isna().any():  # not all ISO 8601: let pandas infer one format for the column
        try:
            parsed = pd.to_datetime(texts, errors="coerce", utc=True)
        except (ValueError, TypeError):
            pass
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if len(bad):
        i = int(bad[0])
        raise DataError(f"{table.where(i)}: column {name!r}: expected a date/time such as 2024-01-31 or "
                        f"2024-01-31T13:00, found {cells[i]!r}")
    return parsed.dt.tz_convert(None).to_numpy().astype("datetime64[ns]")


# --- a regular grid ----------------------------------------------------------------------------------------------


@dataclass
class Grid:
    times: np.ndarray | None  # (G,) datetime64[ns] or float; None: row order
    values: np.ndarray  # (G, F) float64; NaN where nothing is known (fill 'drop')
    freq: str
    filled: int  # cells interpolated
    dropped: int  # off-grid rows left out (fill 'drop')


def regularize(series: Series, freq: str | None, fill: str) -> Grid:
    """Put the observations on a regular grid from the first to the last time, every `freq` (default: inferred).

    Without a time column the rows are the steps: only missing values can be gaps.
    """
    row_order = series.times is None
    times = np.arange(len(series.values), dtype=np.float64) if row_order else series.times
    order = np.argsort(times, kind="stable")
    times, values = times[order], series.values[order]
    same = np.flatnonzero(times[1:] == times[:-1])
    if len(same):
        i = int(same[0])
        raise DataError(f"{series.where(int(order[i + 1]))}: duplicate time {_fmt(times[i])} "
                        f"(also at {series.where(int(order[i]))}); expected one row per time")
    grid, step_text, position = _grid(series, times, None if row_order else freq)
    step_text = "1 row" if row_order else step_text
    on_grid = position >= 0
    gridded = np.full((len(grid), values.shape[1]), np.nan)
    gridded[position[on_grid]] = values[on_grid]
    if fill == "error":
        _check_regular(series, order, times, values, grid, position, step_text)
    if fill == "drop":
        result, filled = gridded, 0
    else:
        result, filled = _interpolate(series, _as_float(times), values, _as_float(grid)), int(np.isnan(gridded).sum())
    return Grid(None if row_order else grid, result, step_text, filled, int((~on_grid).sum()) if fill == "drop" else 0)


def _grid(series: Series, times: np.ndarray, freq: str | None) -> tuple[np.ndarray, str, np.ndarray]:
    """(grid times, the step as text, each observation's grid position or -1 when it is off the grid)."""
    if times.dtype.kind == "f":  # numeric times, e.g. years
        if freq is None:
            step = float(np.median(np.diff(times))) if len(times) > 1 else 1.0
        else:
            step = to_number(freq)
            if step is None or not step > 0:
                raise ConfigError(f"data.freq: time column {series.time_column!r} holds numbers; expected a positive "
                                  f"number of them per step, got {freq!r}")
        count = int(round((times[-1] - times[0]) / step)) + 1
        _check_size(series, count, len(times), f"{step:g}")
        grid = times[0] + step * np.arange(count)
        k = (times - times[0]) / step
        on = np.abs(k - np.round(k)) < 1e-6
        return grid, f"{step:g}", np.where(on, np.round(k).astype(np.int64), -1)
    import pandas as pd

    index = pd.DatetimeIndex(times)
    if freq is None:
        with warnings.catch_warnings():  # pandas 3 warns that infer_freq will return an offset; both work below
            warnings.simplefilter("ignore")
            inferred = pd.infer_freq(index) if len(index) >= 3 else None
        median = pd.Timedelta(int(np.median(np.diff(times.astype(np.int64)))), unit="ns")
        if median % pd.Timedelta(days=1) == pd.Timedelta(0):  # "2D" reads better than "48h"
            median = f"{median.days}D"
        offset = pd.tseries.frequencies.to_offset(inferred or median)
    else:
        try:
            offset = pd.tseries.frequencies.to_offset(freq)
        except ValueError:
            raise ConfigError(f"data.freq: expected a pandas frequency such as 1h, 15min, D, W-SAT or MS, "
                              f"got {freq!r}") from None
    start, end = index[0], index[-1]
    approx = (end - start) / pd.Timedelta(offset.nanos) if _fixed(offset) else len(index)
    _check_size(series, int(approx) + 1, len(times), offset.freqstr)
    grid = pd.date_range(start, end, freq=offset)
    if len(grid) == 0 or grid[0] != start:  # an anchored offset (W-SAT, MS) that the first time is not on
        grid = pd.date_range(offset.rollback(start), end, freq=offset)
    _check_size(series, len(grid), len(times), offset.freqstr)
    return grid.to_numpy().astype("datetime64[ns]"), offset.freqstr, grid.get_indexer(index).astype(np.int64)


def _fixed(offset) -> bool:
    try:
        _ = offset.nanos
    except ValueError:  # calendar offsets (months, years) have no fixed length
        return False
    return True


def _check_size(series: Series, grid_size: int, rows: int, step: str) -> None:
    if grid_size > MAX_GRID_GROWTH * rows + 1000:
        raise DataError(f"{series.source}: a step of {step} makes {grid_size} time steps from {rows} rows; "
                        f"check data.freq")


def _check_regular(series: Series, order: np.ndarray, times: np.ndarray, values: np.ndarray, grid: np.ndarray,
                   position: np.ndarray, step: str) -> None:
    """fill 'error': raise at the first row (in time order) that is off the grid, after a gap, or has a hole."""
    expected = np.zeros(len(grid), dtype=bool)
    expected[position[position >= 0]] = True
    problems: list[tuple[int, str]] = []
    off = np.flatnonzero(position < 0)
    if len(off):
        i = int(off[0])
        problems.append((i, f"time {_fmt(times[i])} is not on the regular grid (freq {step!r} from {_fmt(grid[0])}); "
                            f"set data.freq, or data.fill: interpolate to resample"))
    gaps = np.flatnonzero(~expected)
    if len(gaps):
        g = int(gaps[0])
        i = int(np.searchsorted(times, grid[g]))  # the first row after the gap
        problems.append((i, f"gap before this row: no row for {_fmt(grid[g])} (freq {step!r}); "
                            f"set data.fill: interpolate or drop"))
    holes = np.flatnonzero(np.isnan(values).any(axis=1))
    if len(holes):
        i = int(holes[0])
        column = series.columns[int(np.flatnonzero(np.isnan(values[i]))[0])]
        problems.append((i, f"column {column!r}: missing value; set data.fill: interpolate or drop"))
    if problems:
        i, message = min(problems, key=lambda p: p[0])
        raise DataError(f"{series.where(int(order[i]))}: {message}")


def _interpolate(series: Series, at: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Each column linearly interpolated in time onto `grid` from its finite observations (ends held flat)."""
    out = np.empty((len(grid), values.shape[1]))
    for j, name in enumerate(series.columns):
        known = np.isfinite(values[:, j])
        if known.sum() < 2:
            raise DataError(f"{series.source}: column {name!r} has {int(known.sum())} values; cannot interpolate")
        out[:, j] = np.interp(grid, at[known], values[known, j])
    return out


def _as_float(times: np.ndarray) -> np.ndarray:
    return times.astype("datetime64[ns]").astype(np.int64).astype(np.float64) if times.dtype.kind == "M" else times


def _fmt(t: Any) -> str:
    if isinstance(t, np.datetime64):
        return str(np.datetime_as_string(t, unit="s")).removesuffix("T00:00:00").replace("T", " ")
    return f"{float(t):g}"


def times_after(grid: Grid, steps: int) -> list[str] | None:
    """The times of the `steps` grid steps after the grid's last one, as text (None for a grid in row order)."""
    if grid.times is None:
        return None
    last = grid.times[-1]
    if grid.times.dtype.kind == "f":
        step = float(grid.times[-1] - grid.times[-2]) if len(grid.times) > 1 else 1.0
        return [_fmt(last + step * (h + 1)) for h in range(steps)]
    import pandas as pd

    following = pd.date_range(pd.Timestamp(last), periods=steps + 1, freq=grid.freq)[1:]
    return [_fmt(t) for t in following.to_numpy().astype("datetime64[ns]")]


def when(grid: Grid, i: int) -> str:
    """Step `i` of the grid as a person reads it: its time, or its row number for a grid in row order."""
    return f"row {i + 1}" if grid.times is None else _fmt(grid.times[i])
