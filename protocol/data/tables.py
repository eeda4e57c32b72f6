"""Reading a party's own tables (CSV or Parquet files, or SQL sources) with errors naming file, column and row.

Rows are numbered from 1 over the data rows (a CSV's header is line 1, so row r is
on line r + 1; a query's rows in its result's order). Everything here runs before any
network traffic.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from protocol.data.sql import SqlSource
from protocol.errors import DataError
from protocol.settings.config import Table

T = TypeVar("T")

log = logging.getLogger(__name__)

# Numeric columns are centred on the median and divided by the interquartile range, then clipped to ±CLIP. One
# extreme cell (a typo, 1e300) can then neither dominate a tower's input nor, through a scale it inflates, squeeze
# the column's other values together. Five IQRs keep every ordinary value of a skewed column distinct.
CLIP = 5.0
# A categorical level seen in fewer than RARE_ROWS rows, and in fewer than RARE_SHARE of the table's rows, is folded
# into the column's "other" level at fitting (`rare_below`), so that "other" is trained whenever such rows exist.
RARE_ROWS = 5
RARE_SHARE = 0.001


@dataclass(frozen=True)
class TableSpec:
    """A table named in a config: where it is, its key column and its feature columns."""

    path: Path | SqlSource  # a file, or a database query's result
    id_column: str
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)  # numeric columns taken log1p before scaling

    @classmethod
    def from_config(cls, t: Table, id_key: str = "id_column") -> "TableSpec":
        spec = cls(path=take_source(t), id_column=t.take(id_key, str), numeric=t.take_list("numeric", []),
                   categorical=t.take_list("categorical", []), log=t.take_list("log", []))
        stray = [c for c in spec.log if c not in spec.numeric]
        if stray:
            raise t.error("log", f"{stray[0]!r} is not one of the numeric columns")
        return spec


def take_source(t: Table, key: str = "table") -> Path | SqlSource:
    """`key` as a file path, or as a SQL source when it is a table (`protocol.data.sql.SqlSource.from_config`)."""
    return SqlSource.from_config(t.sub(key)) if isinstance(t.data.get(key), dict) else t.take_path(key)


def _columns_of(path: Path) -> list[str]:
    """The table's column names, read from its header or schema only."""
    if path.suffix.lower() in (".parquet", ".pq"):
        return list(pq.read_schema(path).names)
    return list(pd.read_csv(path, nrows=0).columns)


def _check_columns(path: Path | SqlSource, columns: list[str]) -> None:
    """A missing table or column stops the run naming it (and the table's columns)."""
    if isinstance(path, SqlSource):
        present = path.columns()
    elif not path.is_file():
        raise DataError(f"table {path} not found")
    else:
        try:
            present = _columns_of(path)
        except (OSError, ValueError, pd.errors.ParserError, pa.ArrowException) as exc:
            raise DataError(f"table {path} cannot be read: {exc}") from None
    missing = [c for c in columns if c not in present]
    if missing:
        raise DataError(f"{path}: column {missing[0]!r} not found; the table has columns "
                        f"{', '.join(map(repr, present))}")


def read_table(path: Path | SqlSource, columns: list[str], text_columns: list[str]) -> pd.DataFrame:
    """Read `columns` (and only them) of a CSV or Parquet file or a SQL source; `text_columns` are read as strings,
    never parsed."""
    return next(read_table_chunks(path, columns, text_columns, None))


def read_table_chunks(path: Path | SqlSource, columns: list[str], text_columns: list[str],
                      rows: int | None) -> Iterator[pd.DataFrame]:
    """`read_table` `rows` rows at a time (the whole table at once when None), never more in memory (a SQL source:
    as the server's batches come, whatever their size); each frame's index holds the rows' positions in the table,
    so an error can name the row."""
    _check_columns(path, columns)
    wanted = list(dict.fromkeys(columns))
    first = 0
    try:
        if isinstance(path, SqlSource):
            frames = (_to_frame(b) for b in path.batches(wanted))
            if rows is None:
                parts = list(frames)
                frames = iter([pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=wanted)])
        elif path.suffix.lower() in (".parquet", ".pq"):
            parquet = pq.ParquetFile(path, pre_buffer=False)  # pre-buffering kept every row group read so far
            frames = (_to_frame(b) for b in parquet.iter_batches(batch_size=rows, columns=wanted)) if rows else \
                iter([_to_frame(parquet.read(columns=wanted))])
        else:
            frames = pd.read_csv(path, usecols=wanted, dtype={c: str for c in text_columns}, keep_default_na=False,
                                 na_values=[""], low_memory=False, chunksize=rows)
            frames = iter([frames]) if rows is None else frames
        for frame in _read_ahead(frames) if rows else frames:
            frame = frame[wanted].copy()
            for c in text_columns:
                frame[c] = frame[c].astype("string").fillna("").astype(str)
            frame.index = pd.RangeIndex(first, first + len(frame))
            first += len(frame)
            yield frame
    except (OSError, ValueError, pd.errors.ParserError, pa.ArrowException) as exc:
        raise DataError(f"table {path} cannot be read: {exc}") from None


def _read_ahead(items: Iterator[T]) -> Iterator[T]:
    """`items` in order, the next one read on a thread while the caller works on this one: Arrow decodes Parquet and
    CSV, and the server's batches arrive, outside the GIL. One item ahead at most."""
    end = object()
    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as reader:
        coming = reader.submit(next, items, end)
        while (item := coming.result()) is not end:
            coming = reader.submit(next, items, end)
            yield item


def _to_frame(data: pa.RecordBatch | pa.Table) -> pd.DataFrame:
    """Arrow data as a frame; a timestamp or date column becomes seconds since 1970 (UTC when without a zone), as
    a date in a CSV file is read, and a missing one stays missing (NaN)."""
    columns = {}
    for name, column in zip(data.schema.names, data.columns):
        if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
            micros = column.cast(pa.timestamp("us", tz=getattr(column.type, "tz", None))).cast(pa.int64())
            column = pa.compute.divide(micros.cast(pa.float64()), 1e6)
        columns[name] = column
    return pa.table(columns).to_pandas()


def read_text_column(path: Path | SqlSource, column: str, rows: int) -> Iterator[list[str]]:
    """One text column of a CSV or Parquet file or a SQL source, `rows` rows at a time (a SQL source: a server's
    batch at a time), never the whole table in memory."""
    for frame in read_table_chunks(path, [column], [column], rows):
        yield frame[column].tolist()


class NotPlainText(Exception):
    """A table whose column Arrow may read otherwise than pandas (whose rows and strings are the ones messages name
    and PSI matches): in a CSV file a line of blanks (pandas skips it, Arrow reads a value) or one Arrow cannot
    parse; in a Parquet file or from a SQL source a column that is not text (Arrow writes 5.0 as "5", pandas as
    "5.0"). `read_text_column` reads it."""


def read_text_arrays(path: Path | SqlSource, column: str, rows: int) -> Iterator[pa.Array]:
    """`read_text_column` as Arrow strings (a missing value is ""), at most `rows` at a time: the same values, read
    without a Python string per cell. A table where that may not hold raises NotPlainText, possibly after some
    chunks: read it with `read_text_column` from the start."""
    _check_columns(path, [column])
    csv = isinstance(path, Path) and path.suffix.lower() not in (".parquet", ".pq")
    try:
        if isinstance(path, SqlSource):
            batches = path.batches([column])
        elif not csv:
            batches = pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=rows, columns=[column])
        else:
            convert = pacsv.ConvertOptions(include_columns=[column], column_types={column: pa.string()},
                                           strings_can_be_null=False, quoted_strings_can_be_null=False)
            batches = pacsv.open_csv(path, read_options=pacsv.ReadOptions(use_threads=False),
                                     convert_options=convert)
        for batch in batches:
            values = batch.column(0)
            if not _is_text(values.type):
                raise NotPlainText(path)
            values = pa.compute.fill_null(values.cast(pa.string()), "")
            if csv and pa.compute.any(pa.compute.match_substring_regex(values, r"^[\s\x0b]+$")).as_py():
                raise NotPlainText(path)
            for start in range(0, len(values), rows):
                yield values.slice(start, rows)
    except (OSError, ValueError, pa.ArrowException) as exc:
        if csv and isinstance(exc, pa.ArrowException):
            raise NotPlainText(path) from None
        raise DataError(f"table {path} cannot be read: {exc}") from None


def _is_text(kind: pa.DataType) -> bool:
    """Strings, or a dictionary of them: what Arrow and pandas turn into the same Python strings."""
    kind = kind.value_type if pa.types.is_dictionary(kind) else kind
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def row_label(index: int) -> str:
    """A row by its 0-based position in its table, as messages name it."""
    return f"row {int(index) + 1}"


def plain(value: object) -> object:
    """A cell as a plain Python value, so a message shows `inf` or `'x'`, never `np.float64(inf)`."""
    return value.item() if isinstance(value, np.generic) else value


def numeric_column(frame: pd.DataFrame, column: str, path: Path | SqlSource) -> np.ndarray:
    """The column as float64; a value that is empty or not a number stops the run naming its row."""
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce")
    bad = np.flatnonzero(values.isna().to_numpy() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan)))
    if bad.size:
        i = int(bad[0])
        shown = plain(raw.iloc[i])
        what = "is empty" if pd.isna(shown) or str(shown).strip() == "" else f"holds {shown!r}, not a finite number"
        raise DataError(f"{path}: column {column!r} {row_label(frame.index[i])} {what} ({bad.size} such rows)")
    return values.to_numpy(dtype=np.float64)


def categorical_column(frame: pd.DataFrame, column: str, path: Path | SqlSource) -> np.ndarray:
    """The column as strings; an empty value stops the run naming its row."""
    raw = frame[column]
    empty = np.flatnonzero(raw.isna().to_numpy() | (raw.astype(str).str.strip() == "").to_numpy())
    if empty.size:
        raise DataError(f"{path}: column {column!r} {row_label(frame.index[int(empty[0])])} is empty "
                        f"({empty.size} such rows); fill missing categories with an explicit value such as 'unknown'")
    return raw.astype(str).to_numpy()


@dataclass(frozen=True)
class Features:
    """A table's feature columns ready for a tower: scaled numbers and category codes."""

    numeric: np.ndarray  # float32 (rows, len(spec.numeric)), median 0, IQR 1, within ±Encoding.clip
    categorical: np.ndarray  # int64 (rows, len(spec.categorical)), codes 0..cardinality-1
    cardinalities: list[int]  # per categorical column its number of codes, the "other" level's included
    other: list[bool] | None = None  # per categorical column: its last code is the "other" level (None: none is)

    def take(self, rows: np.ndarray) -> "Features":
        return Features(self.numeric[rows], self.categorical[rows], self.cardinalities, self.other)

    def has_other(self, column: int) -> bool:
        """Whether categorical column `column` (by position) has an "other" level, its last code."""
        return bool(self.other and self.other[column])


@dataclass(frozen=True)
class Encoding:
    """How a table's feature columns become numbers, fitted once (at training) and kept with the model, so a
    later table (a refresh) is encoded exactly as the model learnt it: per numeric column its centre and scale
    (after log1p for `log` columns) and the clip applied after scaling, per categorical column its levels in
    code order. With `other`, each categorical column has one more code after its levels, "other": the levels
    too rare at fitting to have their own (`rare_below`), and any value seen since that the model never saw.
    Encodings stored before "other" existed have none, and an unseen value is an error there."""

    numeric: dict[str, tuple[float, float]]  # column: (centre, scale)
    categories: dict[str, list[str]]
    clip: float = CLIP
    other: bool = False

    def to_json(self) -> dict:
        return {"numeric": {c: {"center": m, "scale": s} for c, (m, s) in self.numeric.items()}, "clip": self.clip,
                "categories": self.categories, "other": self.other}

    @classmethod
    def from_json(cls, data: dict) -> "Encoding":
        return cls({c: (float(v["center"]), float(v["scale"])) for c, v in data["numeric"].items()},
                   {c: [str(v) for v in values] for c, values in data["categories"].items()}, float(data["clip"]),
                   bool(data.get("other", False)))

    def scaled(self, values: np.ndarray, column: str) -> np.ndarray:
        """`values` of `column` centred and scaled, before clipping."""
        center, scale = self.numeric[column]
        return (values - center) / scale

    def apply(self, frame: pd.DataFrame, spec: TableSpec) -> Features:
        """Encode the spec's columns; a bad value names its row. Numbers beyond the clip are clipped (a warning
        names the column); a category outside a column's levels is encoded as its "other" level (a warning per
        column counts such rows, never showing a value), or, in an encoding without one, names its row."""
        numeric = np.zeros((len(frame), len(spec.numeric)), dtype=np.float32)
        for j, column in enumerate(spec.numeric):
            raw = numeric_column(frame, column, spec.path)
            scaled = self.scaled(_log1p_if_log(raw, column, spec), column)
            _warn_clipped(raw, scaled, self, column, spec.path)
            numeric[:, j] = np.clip(scaled, -self.clip, self.clip)
        categorical = np.zeros((len(frame), len(spec.categorical)), dtype=np.int64)
        for j, column in enumerate(spec.categorical):
            known = self.categories[column]
            values = categorical_column(frame, column, spec.path)
            codes = pd.Index(known).get_indexer(values)
            outside = np.flatnonzero(codes < 0)
            if outside.size and not self.other:
                i = int(outside[0])
                raise DataError(f"{spec.path}: column {column!r} {row_label(i)} holds {plain(values[i])!r}, a "
                                f"category the model never saw (it knows {len(known)}); the model was stored "
                                f"without an 'other' level for such values: train a new model to use it")
            if outside.size:
                log.warning("%s: column %r: %d values outside its %d levels (too rare at training, or never seen "
                            "then), encoded as its 'other' level", spec.path, column, outside.size, len(known))
                codes[outside] = len(known)
            categorical[:, j] = codes
        cardinalities = [len(self.categories[c]) + self.other for c in spec.categorical]
        return Features(numeric, categorical, cardinalities, [self.other] * len(spec.categorical))


def _log1p_if_log(values: np.ndarray, column: str, spec: TableSpec) -> np.ndarray:
    if column in spec.log:
        if values.min() < 0:
            i = int(np.argmin(values))
            raise DataError(f"{spec.path}: column {column!r} {row_label(i)} is negative ({plain(values[i])!r}); "
                            f"log1p needs values >= 0")
        return np.log1p(values)
    return values


def robust_scale(values: np.ndarray) -> tuple[float, float]:
    """The median and the interquartile range of `values`. When the IQR is 0 (half the column or more holds one
    value), the standard deviation of the values clipped to their 5th and 95th percentiles, so a few extreme values
    cannot inflate it; when that is 0 too, 1."""
    center = float(np.median(values))
    q1, q3 = np.percentile(values, [25, 75])
    if q3 > q1:
        return center, float(q3 - q1)
    low, high = np.percentile(values, [5, 95], method="nearest")
    spread = float(np.clip(values, low, high).std())
    return center, spread if spread > 0 else 1.0


def _warn_clipped(raw: np.ndarray, scaled: np.ndarray, encoding: Encoding, column: str,
                  path: Path | SqlSource) -> None:
    beyond = np.flatnonzero(np.abs(scaled) > encoding.clip)
    if beyond.size:
        i = int(beyond[0])
        center, scale = encoding.numeric[column]
        log.warning("%s: column %r: %d rows lie beyond median %g ± %g × scale %g and are clipped there; the first, "
                    "%s, holds %r", path, column, beyond.size, center, encoding.clip, scale, row_label(i),
                    plain(raw[i]))


def rare_below(rows: int) -> int:
    """A level seen in fewer rows than this, of a table of `rows` rows, goes to its column's "other" level at
    fitting: fewer than RARE_ROWS, and fewer than RARE_SHARE of the rows (so a table under 1,000 rows folds no
    level, and one of 5,000 rows or more folds levels under 5 rows)."""
    return min(RARE_ROWS, math.ceil(RARE_SHARE * rows))


def fit_encoding(frame: pd.DataFrame, spec: TableSpec) -> Encoding:
    """The encoding of the spec's feature columns fitted on `frame`: robustly scaled numbers, and per categorical
    column its levels seen in at least `rare_below` rows, sorted, then "other"."""
    values = {c: _log1p_if_log(numeric_column(frame, c, spec.path), c, spec) for c in spec.numeric}
    least = rare_below(len(frame))
    categories = {c: sorted(level for level, count in Counter(categorical_column(frame, c, spec.path)).items()
                            if count >= least) for c in spec.categorical}
    return Encoding({c: robust_scale(v) for c, v in values.items()}, categories, other=True)


def encode_features(frame: pd.DataFrame, spec: TableSpec) -> Features:
    """Validate and encode the spec's feature columns, fitted on this frame; a bad value names its row."""
    return fit_encoding(frame, spec).apply(frame, spec)
