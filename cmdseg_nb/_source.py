"""Any accepted input -> column names, row count and chunks of columns, with flat memory.

::

    pandas.DataFrame ──iloc slices──▶ {column: pyarrow.Array | list (object dtype)}
    pyarrow.Table    ──to_batches───▶ {column: pyarrow.Array}
    DuckDB relation  ──to_arrow_reader (streamed)──▶ {column: pyarrow.Array}
    polars / anything with ``to_arrow()`` or ``__arrow_c_stream__`` ──▶ as a pyarrow.Table

Only one chunk of rows is materialized at a time (a DuckDB relation is never fetched whole).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ._errors import MessageError

#: Rows converted at a time.
CHUNK_ROWS = 20_000
#: Object fields whose dotted column names (``properties.price``, ``context.page.url``, as
#: ``pandas.json_normalize`` writes them) are nested back into the object.
NESTABLE = ("traits", "properties", "context", "integrations")


class Source:
    """Column names, row count, index and chunked columns of any accepted input.

    pandas columns of object dtype stay Python lists (per-value conversion); every other pandas
    column, and all Arrow/DuckDB input, is read as Arrow arrays (bulk conversion).
    """

    def __init__(self, data: Any):
        self._read(data)
        # Dotted columns under an object field are folded into that field, chunk by chunk.
        self.raw_names = list(self.names)
        self.nested: dict[str, list[tuple[str, list[str]]]] = {}
        for name in self.raw_names:
            head, dot, rest = name.partition(".")
            if dot and rest and head in NESTABLE:
                self.nested.setdefault(head, []).append((name, rest.split(".")))
        if self.nested:
            dotted = {c for items in self.nested.values() for c, _ in items}
            self.names = [n for n in self.raw_names if n not in dotted]
            self.names += [h for h in self.nested if h not in self.names]

    def _read(self, data: Any) -> None:
        self.frame: pd.DataFrame | None = None
        self.table: pa.Table | None = None
        self.reader_factory = None
        self.relation = None
        if isinstance(data, pd.DataFrame):
            if not data.columns.is_unique:
                dupes = sorted({str(c) for c in data.columns[data.columns.duplicated()]})
                raise MessageError(f"duplicate column names {dupes}; rename them first")
            self.frame = data
            self.names = [str(c) for c in data.columns]
            self.n_rows: int | None = len(data)
            self.index: pd.Index | None = data.index
            return
        if isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        if not isinstance(data, pa.Table):
            if hasattr(data, "to_arrow_reader") and hasattr(data, "aggregate"):  # DuckDB relation
                self.relation = data
                self.names = list(data.columns)
                self.n_rows = None
                self.index = None
                self._check_names()
                return
            if hasattr(data, "__arrow_c_stream__") or hasattr(data, "to_arrow"):
                data = data.to_arrow() if hasattr(data, "to_arrow") else pa.table(data)
                if isinstance(data, pa.RecordBatchReader):
                    data = data.read_all()
        if not isinstance(data, pa.Table):
            raise MessageError(
                f"cannot read messages from a {type(data).__name__}; pass a pandas.DataFrame, "
                "a pyarrow.Table or a DuckDB relation"
            )
        self.table = data
        self.names = list(data.column_names)
        self.n_rows = data.num_rows
        self.index = None
        self._check_names()

    def _check_names(self) -> None:
        if len(set(self.names)) != len(self.names):
            raise MessageError("duplicate column names; rename them first")

    def chunks(self, size: int = CHUNK_ROWS) -> Iterator[tuple[int, dict[str, Any]]]:
        """(offset, {column: pyarrow.Array | list}) per chunk of at most ``size`` rows."""
        for offset, cols in self._raw_chunks(size):
            yield offset, (self._fold(offset, cols) if self.nested else cols)

    def _fold(self, offset: int, cols: dict[str, Any]) -> dict[str, Any]:
        """Nest dotted columns (``properties.price``) into their object column, per row."""
        def pylist(values: Any) -> list:
            return values.to_pylist() if hasattr(values, "to_pylist") else list(values)

        n = len(next(iter(cols.values())))
        out = dict(cols)
        for head, items in self.nested.items():
            base = pylist(out.pop(head)) if head in out else [None] * n
            rows: list[dict] = []
            for i, b in enumerate(base):
                if isinstance(b, dict):
                    rows.append(dict(b))
                elif _missing(b):
                    rows.append({})
                else:
                    raise MessageError(f"{head!r} must hold objects to nest dotted columns into, "
                                       f"not {type(b).__name__}", row=offset + i, column=head)
            for column, path in items:
                for i, v in enumerate(pylist(out.pop(column))):
                    if _missing(v):
                        continue  # a missing cell is "not sent", as for any other column
                    node = rows[i]
                    for key in path[:-1]:
                        node = node.setdefault(key, {})
                        if not isinstance(node, dict):
                            raise MessageError(f"{column!r} nests under {key!r}, which another "
                                               f"column sets to a value", row=offset + i,
                                               column=column)
                    node[path[-1]] = v
            out[head] = rows
        return out

    def _raw_chunks(self, size: int) -> Iterator[tuple[int, dict[str, Any]]]:
        offset = 0
        if self.frame is not None:
            df = self.frame
            for start in range(0, len(df), size):
                part = df.iloc[start:start + size]
                yield start, {name: _pandas_column(part.iloc[:, j])
                              for j, name in enumerate(self.raw_names)}
            return
        if self.table is not None:
            batches: Iterator[pa.RecordBatch] = iter(self.table.to_batches(max_chunksize=size))
        else:
            batches = iter(self.relation.to_arrow_reader(size))
        for batch in batches:
            if batch.num_rows == 0:
                continue
            yield offset, {name: batch.column(j) for j, name in enumerate(self.raw_names)}
            offset += batch.num_rows

    def duplicate_ids(self, column: str) -> dict[str, int]:
        """Caller messageIds that appear on more than one row, with their counts (whole input)."""
        if self.frame is not None:
            values = self.frame[column].dropna()
            values = values[values.map(lambda v: isinstance(v, (str, int, np.integer)))]
            counts = values.astype(str).value_counts()
            return {str(k): int(v) for k, v in counts[counts > 1].items()}
        if self.table is not None:
            col = self.table.column(column)
            try:
                col = pc.cast(col, pa.string())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return {}
            counts = pc.value_counts(col.drop_null())
            out = {}
            for item in counts.to_pylist():
                if item["counts"] > 1:
                    out[item["values"]] = item["counts"]
            return out
        rel = self.relation
        quoted = '"' + column.replace('"', '""') + '"'
        rows = rel.aggregate(f"CAST({quoted} AS VARCHAR) AS id, count(*) AS n",
                             f"CAST({quoted} AS VARCHAR)").fetchall()
        return {r[0]: int(r[1]) for r in rows if r[0] is not None and r[1] > 1}


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and v != v)


def _pandas_column(series: pd.Series) -> Any:
    if series.dtype == object:
        return series.tolist()
    try:
        return pa.array(series)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError):
        return series.tolist()


