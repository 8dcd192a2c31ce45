"""Reading tables: CSV and Parquet files and the bundled real data sets, as named columns of raw values.

Every source becomes a `Table`: column name -> list of raw values (strings from a CSV, numbers or strings from Parquet
and the bundled sets), plus where each row came from (a CSV line, a Parquet row), so that an error can say
`data.csv:17: column 'age': expected a number, found 'abc'`. Reading those values as numbers or as category texts is
here too; what is done with them (encoding, splitting, scaling) lives in `dlforge.data.tabular`.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlforge.errors import DataError
from dlforge.paths import existing_file

# Cell texts that mean "no value" in a numeric column. A text column keeps them as categories ("none" may be one).
MISSING_MARKERS = frozenset({"", "na", "n/a", "nan", "null", "none"})
PARQUET_SUFFIXES = (".parquet", ".pq")
# Values become float32 tensors: a number past this (1e200, finite as float64) would be inf there.
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class Table:
    """Named columns of equally many raw values; `lines[i]` says where row i came from."""

    source: str  # the file path or the data set's name, as errors show it
    columns: dict[str, list[Any]]
    lines: list[int]  # CSV: 1-based file line (the header is line 1); otherwise 1-based row number
    unit: str = "line"  # "line" or "row"
    default_target: str | None = None  # the bundled sets know their target column

    def __len__(self) -> int:
        return len(self.lines)

    def where(self, i: int) -> str:
        """`data.csv:17` for a CSV line, `data.parquet: row 16` for a row."""
        if self.unit == "line":
            return f"{self.source}:{self.lines[i]}"
        return f"{self.source}: row {self.lines[i]}"

    def take(self, rows: Any) -> Table:
        """The rows at indices `rows` (in that order), every column kept, each row still saying where it came from."""
        rows = [int(i) for i in rows]
        columns = {name: [values[i] for i in rows] for name, values in self.columns.items()}
        return Table(self.source, columns, [self.lines[i] for i in rows], self.unit, self.default_target)

    def require(self, name: str, role: str) -> None:
        """Raise a DataError naming the closest column if there is no column `name` ("target column 'lable' ...")."""
        if name in self.columns:
            return
        close = difflib.get_close_matches(name, list(self.columns), n=1)
        if close:
            hint = f"did you mean {close[0]!r}?"
        else:
            names = list(self.columns)
            hint = "columns: " + ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
        raise DataError(f"{self.source}: {role} column {name!r} not found; {hint}")


# --- reading files ---------------------------------------------------------------------------------------------


def read_table(path: str | Path) -> Table:
    """A CSV file, or a Parquet file when the name ends in .parquet or .pq."""
    return read_parquet(path) if Path(path).suffix.lower() in PARQUET_SUFFIXES else read_csv(path)


def read_csv(path: str | Path) -> Table:
    """Read a UTF-8 CSV (a BOM and quoted fields are fine) with a header line; every cell stays a stripped string."""
    path = existing_file(path, "a CSV file")
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{path}: empty file; expected a header line and data rows")
    text = _decode_utf8(path, data)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(path, text), strict=True)
    header: list[str] | None = None
    header_line, rows, lines = 0, [], []
    start = 1  # the line the next record starts on (a quoted field may span lines)
    try:
        for record in reader:
            line, start = start, reader.line_num + 1
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # a blank line
            if header is None:
                header, header_line = _header(path, line, record), line
            elif len(record) != len(header):
                raise DataError(f"{path}:{line}: expected {len(header)} fields (as in the header), found {len(record)}")
            else:
                rows.append([cell.strip() for cell in record])
                lines.append(line)
    except csv.Error as exc:
        problem = "a quote opened on this line is never closed" if "end of data" in str(exc) else str(exc)
        raise DataError(f"{path}:{start}: malformed CSV: {problem}") from None
    if header is None:
        raise DataError(f"{path}: empty file; expected a header line and data rows")
    if not rows:
        raise DataError(f"{path}: no data rows after the header (line {header_line})")
    columns = {name: list(values) for name, values in zip(header, zip(*rows, strict=True), strict=True)}
    return Table(str(path), columns, lines, unit="line")


def read_parquet(path: str | Path) -> Table:
    """Read a Parquet file with pyarrow (the `parquet` extra); rows are numbered from 1 in errors."""
    path = existing_file(path, "a Parquet file")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow; pip install 'dlforge[parquet]'") from None
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file; expected a Parquet file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    names = table.column_names
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f"{path}: column {duplicates[0]!r} appears more than once")
    if table.num_rows == 0:
        raise DataError(f"{path}: no data rows")
    return Table(str(path), table.to_pydict(), list(range(1, table.num_rows + 1)), unit="row")


def _decode_utf8(path: Path, data: bytes) -> str:
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        line = data.count(b"\n", 0, offset) + 1
        raise DataError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[offset]:02x} at byte offset {offset}); save the file as UTF-8"
        ) from None


def _delimiter(path: Path, text: str) -> str:
    # A .tsv is tab-separated; otherwise the header decides between comma, semicolon and tab (comma on a tie).
    if path.suffix.lower() == ".tsv":
        return "\t"
    first = text.lstrip("\r\n").split("\n", 1)[0]
    return max([",", ";", "\t"], key=first.count)


def _header(path: Path, line: int, record: list[str]) -> list[str]:
    names = [name.strip() for name in record]
    for i, name in enumerate(names):
        if not name:
            raise DataError(f"{path}:{line}: column {i + 1} has no name in the header (an index written by pandas?)")
        if name in names[:i]:
            raise DataError(f"{path}:{line}: column {name!r} appears twice in the header")
    return names


# --- bundled data sets -----------------------------------------------------------------------------------------


def load_sklearn(name: str) -> Table:
    """One of scikit-learn's bundled tables (iris, wine, breast_cancer, diabetes), with the target column 'target'.

    Class targets are stored as their names ('setosa', 'malignant'), so label ids are the sorted names, as they are
    for a CSV. Diabetes comes unscaled: dlforge scales with train statistics itself.
    """
    from sklearn import datasets

    if name == "diabetes":
        bunch = datasets.load_diabetes(scaled=False)
        target = bunch.target.tolist()
    else:
        bunch = getattr(datasets, f"load_{name}")()
        target = [str(bunch.target_names[t]) for t in bunch.target]
    columns = {str(f): bunch.data[:, j].tolist() for j, f in enumerate(bunch.feature_names)}
    columns["target"] = target
    return Table(name, columns, list(range(1, len(target) + 1)), unit="row", default_target="target")


def load_affairs() -> Table:
    """statsmodels' affairs survey, its data set 'fair' (6366 rows); the target column is 'affairs'."""
    try:
        from statsmodels.datasets import fair
    except ImportError:
        raise DataError("dataset 'affairs' needs statsmodels; pip install 'dlforge[datasets]'") from None
    frame = fair.load_pandas().data
    columns = {str(c): frame[c].tolist() for c in frame.columns}
    return Table("affairs", columns, list(range(1, len(frame) + 1)), unit="row", default_target="affairs")


# The RAND Health Insurance Experiment's person-years (statsmodels' raw file; its processed loader drops the
# demographics). Kept: the plan each person was assigned to, demographics, baseline health, and one outcome, mdvis;
# the other use and expense columns are outcomes of the same year (they would leak into a model of mdvis), zper is a
# person id, ghindx is mostly missing (xghindx is its imputed version) and plan is a code (coins, idp, lpi, fmde
# describe it). The descriptions: statsmodels/datasets/randhie/src/randdesc.txt.
RANDHIE_COLUMNS = ("site", "year", "coins", "idp", "lpi", "fmde", "xage", "female", "black", "income", "educdec",
                   "num", "child", "fchild", "time", "mhi", "disea", "physlm", "xghindx", "hlthg", "hlthf", "hlthp",
                   "mdvis")


def load_randhie() -> Table:
    """RAND HIE (statsmodels' raw `randhie/src/randhie.csv`): 19,935 person-years, demographics (`female`, `black`,
    `xage`, `income`, `educdec`), plan and baseline health, and the target `mdvis` (face-to-face doctor visits that
    year). Left out: the 4 rows with no education recorded, and the 251 whose race was not recorded (the file gives
    them a fraction, their site's share of black participants, not 0 or 1). A row keeps its line number."""
    from importlib.util import find_spec

    spec = find_spec("statsmodels")  # located, not imported: importing statsmodels.datasets takes a second
    if spec is None or not spec.submodule_search_locations:
        raise DataError("dataset 'randhie' needs statsmodels; pip install 'dlforge[datasets]'")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "randhie" / "src" / "randhie.csv"
    if not path.is_file():
        raise DataError(f"dataset 'randhie': {path} not found; this statsmodels does not ship the raw file")
    raw = read_csv(path)
    keep = [i for i, (educ, black) in enumerate(zip(raw.columns["educdec"], raw.columns["black"], strict=True))
            if not is_missing(educ) and float(black) in (0.0, 1.0)]
    columns = {name: [raw.columns[name][i] for i in keep] for name in RANDHIE_COLUMNS}
    return Table("randhie", columns, [raw.lines[i] for i in keep], unit="line", default_target="mdvis")


# --- reading values --------------------------------------------------------------------------------------------


def is_missing(value: Any) -> bool:
    """None, NaN, an empty cell or a marker such as 'NA' or 'null'."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in MISSING_MARKERS


def to_number(value: Any) -> float | None:
    """The value as a float, or None when it is not a number."""
    if isinstance(value, bool | int | float | np.number):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def finite32(number: float) -> bool:
    """Whether a number stays finite as float32: not NaN or infinite, and within +-3.4e38."""
    return math.isfinite(number) and abs(number) <= FLOAT32_MAX


def not_finite32(value: Any) -> str:
    """What is wrong with a cell whose number is not `finite32`: "expected a finite number ..., found '1e200'"."""
    return f"expected a finite number within float32's range (±{FLOAT32_MAX:.2g}), found {value!r}"


def as_text(value: Any) -> str:
    """A value as a category or label text; an integral number reads the same from CSV and Parquet (3.0 -> '3')."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def column_kind(table: Table, name: str, mixed_ok: bool = False) -> str:
    """'numeric' if every present value of the column is a number, 'text' if none is.

    A column that mixes both is an error that points at the odd cell, unless `mixed_ok` (class labels), where it is
    'text'. Missing values (see `is_missing`) do not count either way.
    """
    values = table.columns[name]
    if _fast_numbers(values) is not None:
        return "numeric"
    first_number = first_text = None
    n_numbers = n_texts = 0
    for i, value in enumerate(values):
        if is_missing(value):
            continue
        if to_number(value) is None:
            n_texts += 1
            first_text = i if first_text is None else first_text
        else:
            n_numbers += 1
            first_number = i if first_number is None else first_number
    if n_numbers == 0 and n_texts == 0:
        raise DataError(f"{table.source}: column {name!r} has no values; fill it or leave it out")
    if n_texts == 0:
        return "numeric"
    if n_numbers == 0 or mixed_ok:
        return "text"
    if n_numbers >= n_texts:  # mostly numbers: the text is the odd one out
        raise DataError(f"{table.where(first_text)}: column {name!r}: expected a number, found {values[first_text]!r}")
    raise DataError(
        f"{table.where(first_number)}: column {name!r}: found the number {values[first_number]!r} among text values; "
        f"list the column in data.categorical to read it all as text"
    )


def numeric_values(table: Table, name: str) -> np.ndarray:
    """The column as float64, (N,); a DataError at the first missing or non-numeric cell, or one that is not finite
    as float32 (see `finite32`)."""
    values = table.columns[name]
    fast = _fast_numbers(values)
    if fast is not None:
        return fast
    out = np.empty(len(values), dtype=np.float64)
    for i, value in enumerate(values):
        if is_missing(value):
            raise DataError(f"{table.where(i)}: column {name!r}: {_missing_what(value)}; fill or drop missing values")
        number = to_number(value)
        if number is None:
            raise DataError(f"{table.where(i)}: column {name!r}: expected a number, found {value!r}")
        if not finite32(number):
            raise DataError(f"{table.where(i)}: column {name!r}: {not_finite32(value)}")
        out[i] = number
    return out


def text_values(table: Table, name: str) -> list[str]:
    """The column as category texts (see `as_text`); a DataError at the first empty cell."""
    out = []
    for i, value in enumerate(table.columns[name]):
        text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else as_text(value)
        if not text:
            raise DataError(f"{table.where(i)}: column {name!r}: {_missing_what(value)}; fill or drop missing values")
        out.append(text)
    return out


def _missing_what(value: Any) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        return "empty value"
    return f"missing value ({value!r})"


def _fast_numbers(values: list[Any]) -> np.ndarray | None:
    # The common case in one numpy call; None sends the caller to the cell-by-cell path that finds the bad cell.
    try:
        array = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError):
        return None
    return array if array.ndim == 1 and (np.abs(array) <= FLOAT32_MAX).all() else None  # NaN compares False
