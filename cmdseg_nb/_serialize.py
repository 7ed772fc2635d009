"""Cell values -> JSON-safe values, one value at a time or a whole Arrow column at once.

::

    pyarrow.Array ──convert_arrow──▶ [JSON-safe value | None] + {position: reason}   (bulk, per type)
    Python list   ──convert_python─▶ [JSON-safe value | None] + {position: reason}   (per value)

``None`` in a converted column means "missing: leave the field out" (``None``, ``NaN``, ``NaT``,
``pd.NA``, and ``±inf`` with a warning). Everything else is a plain ``str``/``int``/``float``/
``bool``/``dict``/``list`` or an ``orjson.Fragment`` holding exact number text, all finite, so
orjson can never write NaN into a body (case B15).

Value rules (cases B14, B15; spec "Identity, dedup and time"):

* ``Decimal`` is written from its digits (``19.99`` stays ``19.99``), integers of any size exact;
* float16/float32 are written as their shortest text (``0.1``, not ``0.10000000149011612``);
* dates become ``YYYY-MM-DD``; datetimes become ISO-8601 UTC with ``Z``, milliseconds, or more
  digits only when they are not zero (naive ones are taken as UTC, or as ``tz``, with a warning);
* ``bytes`` is a per-row error naming the column (or base64 with ``binary="base64"``).

Arrow columns of flat types (numbers, strings, decimals, dates, timestamps) are converted in
bulk with Arrow/numpy kernels; nested and odd types fall back to the per-value path.
"""
from __future__ import annotations

import base64
import hashlib
import datetime as dt
import decimal
import enum
import math
import re
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_JSON_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_MAX_DEPTH = 64
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson writes natively


class _Missing(enum.Enum):
    """Marker returned by the normalizer for a value that is left out."""

    MISSING = "missing"
    INF = "inf"


_MISSING = _Missing.MISSING
_INF = _Missing.INF


class CellError(Exception):
    """A value that cannot be turned into JSON; becomes a MessageError with row and column."""


def is_missing(value: Any) -> bool:
    """True for None, NaN, NaT and pd.NA (scalars only)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, (np.floating, np.datetime64, np.timedelta64)):
        return bool(np.isnan(value))
    if isinstance(value, decimal.Decimal):
        return value.is_nan()
    return False


def iso_utc(ts: pd.Timestamp) -> str:
    """ISO-8601 UTC with ``Z``: milliseconds, or more digits only when they are not zero."""
    base = ts.strftime("%Y-%m-%dT%H:%M:%S")
    micro, nano = ts.microsecond, ts.nanosecond
    if nano:
        frac = f"{micro:06d}{nano:03d}"
    elif micro % 1000:
        frac = f"{micro:06d}"
    else:
        frac = f"{micro // 1000:03d}"
    return f"{base}.{frac}Z"


class Serializer:
    """Turns cell values into orjson-safe values; counts what it had to assume, per send.

    Parameters
    ----------
    tz : str | datetime.tzinfo | None
        Zone of naive datetimes. ``None`` takes them as UTC and records a warning.
    binary : {"error", "base64"}
        What to do with ``bytes`` values.
    """

    def __init__(self, *, tz: Any = None, binary: str = "error"):
        if binary not in ("error", "base64"):
            raise ValueError(f"binary must be 'error' or 'base64', not {binary!r}")
        self.tz = tz
        self.binary = binary
        self.naive_columns: Counter[str] = Counter()
        self.inf_cells: list[tuple[int, str]] = []
        self.row = -1  # position of the row being serialized, for the warnings

    def inf(self, column: str) -> _Missing:
        self.inf_cells.append((self.row, column))
        return _INF

    # -- times ---------------------------------------------------------------------------
    def timestamp(self, value: Any, column: str) -> str:
        ts = pd.Timestamp(value)
        if ts.tzinfo is None:
            if self.tz is None:
                self.naive_columns[column] += 1
                ts = ts.tz_localize("UTC")
            else:
                ts = ts.tz_localize(self.tz)
        return iso_utc(ts.tz_convert("UTC"))

    # -- any value -----------------------------------------------------------------------
    def value(self, v: Any, column: str, depth: int = 0) -> Any:
        """Return a JSON-safe value, ``_MISSING``/``_INF`` for a value to leave out."""
        t = type(v)
        if t is str or t is bool or v is None:
            return v
        if t is int:
            return v if _INT_MIN <= v <= _INT_MAX else orjson.Fragment(str(v).encode())
        if t is float:
            if math.isfinite(v):
                return v
            return _MISSING if math.isnan(v) else self.inf(column)
        if depth > _MAX_DEPTH:
            raise CellError(f"nested deeper than {_MAX_DEPTH} levels")
        if isinstance(v, Mapping):
            out = {}
            for key, item in v.items():
                if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
                    key = str(int(key))
                elif not isinstance(key, str):
                    raise CellError(f"object key {key!r} is not a string")
                norm = self.value(item, column, depth + 1)
                if isinstance(norm, _Missing):
                    continue  # a missing nested value is left out, like at the top level
                out[str(key)] = norm
            return out
        if isinstance(v, (list, tuple, np.ndarray, pd.api.extensions.ExtensionArray)):
            out_list = []
            for item in v:
                norm = self.value(item, column, depth + 1)
                out_list.append(None if isinstance(norm, _Missing) else norm)  # keep positions
            return out_list
        if is_missing(v):
            return _MISSING
        if isinstance(v, str):
            return str(v)
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        if isinstance(v, (int, np.integer)):
            return self.value(int(v), column, depth)
        if isinstance(v, decimal.Decimal):
            if v.is_infinite():
                return self.inf(column)
            text = str(v).encode()
            if not _JSON_NUMBER.fullmatch(text):  # pragma: no cover - str(Decimal) always fits
                raise CellError(f"Decimal {v} has no JSON number form")
            return orjson.Fragment(text)
        if isinstance(v, (np.float16, np.float32)):
            if not np.isfinite(v):
                return self.inf(column)
            text = str(v).encode()  # shortest text of the narrow float: 0.1, not 0.100000001
            return orjson.Fragment(text) if _JSON_NUMBER.fullmatch(text) else float(v)
        if isinstance(v, (float, np.floating)):
            return self.value(float(v), column, depth)
        if isinstance(v, (dt.datetime, np.datetime64)):
            return self.timestamp(v, column)
        if isinstance(v, dt.date):
            return v.isoformat()
        if isinstance(v, dt.time):
            return v.isoformat()
        if isinstance(v, uuid.UUID):
            return str(v)
        if isinstance(v, (bytes, bytearray, memoryview)):
            if self.binary == "base64":
                return base64.b64encode(bytes(v)).decode("ascii")
            raise CellError(
                "bytes cannot be sent as JSON; decode them to text first, "
                "or pass binary='base64' to send them base64-encoded"
            )
        if isinstance(v, (dt.timedelta, np.timedelta64)):
            raise CellError(
                "a duration has no JSON form; convert it to a number "
                "(e.g. Series.dt.total_seconds()) first"
            )
        if isinstance(v, enum.Enum):
            return self.value(v.value, column, depth)
        if hasattr(v, "as_py"):  # a pyarrow scalar
            return self.value(v.as_py(), column, depth)
        raise CellError(f"values of type {type(v).__name__} cannot be sent as JSON")

    # -- whole columns -------------------------------------------------------------------
    def convert_python(
        self, values: list, column: str, offset: int
    ) -> tuple[list, dict[int, str]]:
        """Per-value conversion of a column of Python objects; (values, {position: reason})."""
        out: list = [None] * len(values)
        errors: dict[int, str] = {}
        value = self.value
        for i, v in enumerate(values):
            if v is None:
                continue
            self.row = offset + i
            try:
                norm = value(v, column)
            except CellError as exc:
                errors[i] = str(exc)
                continue
            if not isinstance(norm, _Missing):
                out[i] = norm
        return out, errors

    def convert_arrow(
        self, arr: pa.Array, column: str, offset: int
    ) -> tuple[list, dict[int, str]]:
        """Bulk conversion of one Arrow column; (values, {position: reason})."""
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        t = arr.type
        if pa.types.is_dictionary(t):
            return self.convert_arrow(arr.dictionary_decode(), column, offset)
        if pa.types.is_null(t):
            return [None] * len(arr), {}
        if (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t)
                or pa.types.is_integer(t) or getattr(pa.types, "is_string_view", lambda _: False)(t)):
            return arr.to_pylist(), {}
        if pa.types.is_floating(t):
            return self._floats(arr, column, offset), {}
        if pa.types.is_decimal(t):
            texts = pc.cast(arr, pa.string()).to_pylist()
            return [None if s is None else orjson.Fragment(s.encode()) for s in texts], {}
        if pa.types.is_timestamp(t):
            return self._timestamps(arr, column), {}
        if pa.types.is_date(t):
            days = arr.cast(pa.date32()).cast(pa.int32()).to_numpy(zero_copy_only=False)
            texts = np.datetime_as_string(days.astype("datetime64[D]"), unit="D")
            valid = arr.is_valid().to_numpy(zero_copy_only=False)
            return [s if ok else None for s, ok in zip(texts.tolist(), valid.tolist())], {}
        return self.convert_python(arr.to_pylist(), column, offset)

    def _floats(self, arr: pa.Array, column: str, offset: int) -> list:
        narrow = arr.type.bit_width < 64
        values = arr.to_numpy(zero_copy_only=False)  # nulls become NaN
        if arr.null_count:
            values = values.copy()
        finite = np.isfinite(values)
        if not finite.all():
            inf = np.isinf(values)
            for i in np.flatnonzero(inf).tolist():
                self.inf_cells.append((offset + i, column))
        if narrow:
            # shortest text of the narrow float, read back as a double: 0.1, not 0.100000001
            texts = values.astype(str).tolist()
            out = [float(s) for s in texts]
        else:
            out = values.tolist()
        if not finite.all():
            for i in np.flatnonzero(~finite).tolist():
                out[i] = None
        return out

    def _timestamps(self, arr: pa.Array, column: str) -> list:
        t = arr.type
        unit = t.unit
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        if t.tz is None:
            n_valid = int(valid.sum())
            if self.tz is None:
                if n_valid:
                    self.naive_columns[column] += n_valid
            else:
                local = pd.Series(arr.to_pandas(), copy=True)
                utc = local.dt.tz_localize(self.tz).dt.tz_convert("UTC")
                arr = pa.array(utc, type=pa.timestamp(unit, tz="UTC"))
        ints = arr.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
        stamps = ints.astype(f"datetime64[{unit}]")
        out = np.datetime_as_string(stamps, unit="ms", timezone="UTC").astype(object)
        per_ms = {"s": 0, "ms": 1, "us": 1_000, "ns": 1_000_000}[unit]
        if per_ms > 1:
            finer = np.flatnonzero(ints % per_ms != 0)
            if len(finer):
                sub = stamps[finer]
                if unit == "ns":
                    nano = ints[finer] % 1_000 != 0
                    us = np.datetime_as_string(sub, unit="us", timezone="UTC")
                    ns = np.datetime_as_string(sub, unit="ns", timezone="UTC")
                    out[finer] = np.where(nano, ns, us)
                else:
                    out[finer] = np.datetime_as_string(sub, unit="us", timezone="UTC")
        result = out.tolist()
        if not valid.all():
            for i in np.flatnonzero(~valid).tolist():
                result[i] = None
        return result


def _raw_list(col: Any) -> list:
    return col if isinstance(col, list) else col.to_pylist()


def id_column(col: Any, column: str) -> tuple[list, dict[int, str]]:
    """An identifier column as text (``None`` when missing or blank) and per-row errors."""
    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        t = col.type
        if pa.types.is_dictionary(t):
            col, t = col.dictionary_decode(), t.value_type
        if pa.types.is_integer(t):
            col = pc.cast(col, pa.string())
            t = pa.string()
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return [v if v and not v.isspace() else None for v in col.to_pylist()], {}
    out: list = []
    errors: dict[int, str] = {}
    for i, value in enumerate(_raw_list(col)):
        try:
            out.append(_id_text(value))
        except CellError as exc:
            out.append(None)
            errors[i] = str(exc)
    return out, errors


def _id_text(value: Any) -> str | None:
    if is_missing(value):
        return None
    if isinstance(value, (str, np.str_)):
        text = str(value)
    elif isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        text = str(int(value))
    elif hasattr(value, "hex") and type(value).__name__ == "UUID":
        text = str(value)
    else:
        raise CellError(
            f"an id must be text or an integer, not {type(value).__name__} "
            "(a float id usually means missing values turned an integer column into float; "
            "cast the column to str or Int64)"
        )
    return text if text.strip() else None


def text_column(col: Any, field: str) -> tuple[list, dict[int, str]]:
    """A text field (``type``, ``event``, ...): ``None`` when missing or blank; non-text errors."""
    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        t = col.type
        if pa.types.is_dictionary(t):
            col, t = col.dictionary_decode(), t.value_type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return [v if v and not v.isspace() else None for v in col.to_pylist()], {}
    out: list = []
    errors: dict[int, str] = {}
    for i, value in enumerate(_raw_list(col)):
        if value is None or (not isinstance(value, str) and is_missing(value)):
            out.append(None)
        elif not isinstance(value, str):
            out.append(None)
            errors[i] = f"{field} must be text, not {type(value).__name__}"
        else:
            out.append(str(value) if value.strip() else None)
    return out, errors


def object_column(col: Any, ser: Serializer, column: str, offset: int):
    out: list = []
    errors: dict[int, str] = {}
    for i, value in enumerate(_raw_list(col)):
        if value is None or (not isinstance(value, (Mapping, str, bytes, list))
                             and is_missing(value)):
            out.append(None)
            continue
        ser.row = offset + i
        try:
            if isinstance(value, (str, bytes)):
                try:
                    value = orjson.loads(value)
                except orjson.JSONDecodeError as exc:
                    raise CellError(f"text is not valid JSON ({exc})") from None
            if isinstance(value, list) and all(isinstance(p, tuple) and len(p) == 2
                                               for p in value):
                value = dict(value)  # an Arrow map column
            if not isinstance(value, Mapping):
                raise CellError(f"must be an object (dict), not {type(value).__name__}")
            out.append(ser.value(value, column))
        except CellError as exc:
            out.append(None)
            errors[i] = str(exc)
    return out, errors


def timestamp_column(col: Any, ser: Serializer, column: str, offset: int):
    if isinstance(col, (pa.Array, pa.ChunkedArray)) and (
        pa.types.is_timestamp(col.type) or pa.types.is_date(col.type)
    ):
        return ser.convert_arrow(col, column, offset)
    out: list = []
    errors: dict[int, str] = {}
    for i, value in enumerate(_raw_list(col)):
        if value is None or is_missing(value):
            out.append(None)
            continue
        ser.row = offset + i
        try:
            if isinstance(value, str):
                try:
                    value = pd.Timestamp(value)
                except ValueError:
                    raise CellError(f"timestamp {value!r} is not ISO-8601") from None
                if value is pd.NaT:
                    raise CellError("timestamp is not ISO-8601")
            if not hasattr(value, "year"):
                if not isinstance(value, np.datetime64):
                    raise CellError(f"timestamp must be a datetime, not {type(value).__name__}")
            out.append(ser.timestamp(value, column))
        except CellError as exc:
            out.append(None)
            errors[i] = str(exc)
    return out, errors


def value_column(col: Any, ser: Serializer, column: str, offset: int):
    if isinstance(col, list):
        return ser.convert_python(col, column, offset)
    return ser.convert_arrow(col, column, offset)


# -- messageIds derived from content -------------------------------------------------------------
def derive_message_id(canonical: bytes, run_key: bytes = b"", occurrence: int = 0) -> str:
    """A deterministic messageId (UUID-shaped, 36 characters) from a message's canonical JSON.

    The same content (and run name, whose hash is ``run_key``) always gives the same id, so
    re-sending the same rows is de-duplicated by Segment (it de-duplicates on messageId for about
    24 hours). ``occurrence`` tells apart identical rows within one send, so they are not merged.
    """
    return format_id(digest_of(canonical, run_key, occurrence))


def digest_of(canonical: bytes, run_key: bytes, occurrence: int) -> bytes:
    data = canonical if not occurrence else canonical + b"\x00#%d" % occurrence
    return hashlib.blake2b(data, digest_size=16, key=run_key).digest()


def format_id(digest: bytes) -> str:
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class SeenKeys:
    """A set of 64-bit message digests in sorted numpy runs (8 bytes each, not ~64 in a set)."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def contains(self, keys: np.ndarray) -> np.ndarray:
        found = np.zeros(len(keys), dtype=bool)
        for run in self.runs:
            idx = np.searchsorted(run, keys)
            idx[idx == len(run)] = 0
            found |= run[idx] == keys
        return found

    def add(self, keys: np.ndarray) -> None:
        """Add sorted, unique keys not yet in the set."""
        if not len(keys):
            return
        self.runs.append(keys)
        while len(self.runs) > 1 and len(self.runs[-2]) <= 2 * len(self.runs[-1]):
            b, a = self.runs.pop(), self.runs.pop()
            merged = np.concatenate((a, b))
            merged.sort(kind="stable")  # two sorted runs: a linear merge (timsort)
            self.runs.append(merged)
