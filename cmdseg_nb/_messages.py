"""DataFrame / Arrow table -> validated, serialized Segment messages.

::

    frame ──_columns──▶ {column: [values]} ──_build_row──▶ message dict ──_Serializer──▶ exact JSON bytes
                                                                         └──▶ per-row MessageError

Everything here is pure (no HTTP). ``_send`` takes the :class:`Prepared` result and only batches
and posts bytes, so a message is serialized exactly once and every retry resends the same bytes.

Value rules (Segment wants valid JSON; see ``/work/shared/spec`` and cases B14, B15, B21):

* missing cells (``None``, ``NaN``, ``NaT``, ``pd.NA``) at the top level of a row are left out,
  never sent as ``null`` (an explicit ``null`` trait clears it downstream);
* ``±inf`` is left out too, with one :class:`CmdsegWarning` per send naming the rows;
* ``Decimal`` is written from its digits (``19.99`` stays ``19.99``), integers of any size are exact;
* dates become ``YYYY-MM-DD``; datetimes become ISO-8601 UTC with ``Z`` (naive ones are taken as
  UTC, or as ``tz``, with one warning per send);
* ``bytes`` is a per-row error naming the column (or base64 with ``binary="base64"``);
* orjson only ever sees plain ``str``/``int``/``float``/``bool``/``None``/``dict``/``list`` values
  and pre-rendered number fragments, all of them finite, so NaN can never reach a body.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import math
import re
import uuid
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
import pandas as pd

from ._errors import CmdsegWarning, MessageError

__all__ = ["identify_frame", "track_frame"]

#: Largest serialized message Segment accepts (bytes of UTF-8 JSON).
MAX_MESSAGE_BYTES = 32_768
#: messageId must be shorter than this many characters.
MAX_MESSAGE_ID_CHARS = 100

MESSAGE_TYPES = ("identify", "track", "page", "screen", "group", "alias")

# Segment Spec name -> accepted column names (Spec name first, then warehouse snake_case).
_FIELD_COLUMNS: dict[str, tuple[str, ...]] = {
    "type": ("type",),
    "userId": ("userId", "user_id"),
    "anonymousId": ("anonymousId", "anonymous_id"),
    "event": ("event",),
    "name": ("name",),
    "category": ("category",),
    "groupId": ("groupId", "group_id"),
    "previousId": ("previousId", "previous_id"),
    "traits": ("traits",),
    "properties": ("properties",),
    "context": ("context",),
    "integrations": ("integrations",),
    "timestamp": ("timestamp",),
    "messageId": ("messageId", "message_id"),
}
# Set by the sender or by Segment itself; never taken from a frame.
_IGNORED_COLUMNS = frozenset(
    {"sentAt", "sent_at", "receivedAt", "received_at", "uuid_ts", "loaded_at", "writeKey"}
)
_ID_FIELDS = ("userId", "anonymousId", "groupId", "previousId", "messageId")
_OBJECT_FIELDS = ("traits", "properties", "context", "integrations")
# Where columns that are not Spec fields go, by message type.
_EXTRA_TARGET = {
    "identify": "traits",
    "group": "traits",
    "track": "properties",
    "page": "properties",
    "screen": "properties",
    "alias": None,
}
_NAMESPACE = uuid.UUID("6f0c8a52-2a4e-5b7e-9d0e-636d64736567")  # fixed: ids stay stable
_JSON_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_MAX_DEPTH = 64
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson writes natively


class _Missing(enum.Enum):
    """Marker returned by the normalizer for a value that is left out."""

    MISSING = "missing"
    INF = "inf"


_MISSING = _Missing.MISSING
_INF = _Missing.INF


class _CellError(Exception):
    """A value that cannot be turned into JSON; becomes a MessageError with row and column."""


def _is_missing(value: Any) -> bool:
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


def _iso_utc(ts: pd.Timestamp) -> str:
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


class _Serializer:
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
        return _iso_utc(ts.tz_convert("UTC"))

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
            raise _CellError(f"nested deeper than {_MAX_DEPTH} levels")
        if isinstance(v, Mapping):
            out = {}
            for key, item in v.items():
                if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
                    key = str(int(key))
                elif not isinstance(key, str):
                    raise _CellError(f"object key {key!r} is not a string")
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
        if _is_missing(v):
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
                raise _CellError(f"Decimal {v} has no JSON number form")
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
            raise _CellError(
                "bytes cannot be sent as JSON; decode them to text first, "
                "or pass binary='base64' to send them base64-encoded"
            )
        if isinstance(v, (dt.timedelta, np.timedelta64)):
            raise _CellError(
                "a duration has no JSON form; convert it to a number "
                "(e.g. Series.dt.total_seconds()) first"
            )
        if isinstance(v, enum.Enum):
            return self.value(v.value, column, depth)
        if hasattr(v, "as_py"):  # a pyarrow scalar
            return self.value(v.as_py(), column, depth)
        raise _CellError(f"values of type {type(v).__name__} cannot be sent as JSON")


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` returns: messages ready to batch, and rows that cannot go.

    Attributes
    ----------
    n_rows : int
        Rows in the input.
    index : pandas.Index
        Labels of the input rows (a RangeIndex for Arrow input).
    rows : list[int]
        0-based positions of the valid rows, in input order.
    message_ids : list[str]
        messageId of each valid row.
    bodies : list[bytes]
        Serialized message of each valid row (exact UTF-8 JSON bytes, sent as they are).
    errors : list[MessageError]
        One per invalid row, with ``row`` and ``column``.
    warnings : list[str]
        Texts of the warnings issued.
    """

    n_rows: int
    index: pd.Index
    rows: list[int]
    message_ids: list[str]
    bodies: list[bytes]
    errors: list[MessageError]
    warnings: list[str]


def _columns(data: Any) -> tuple[int, pd.Index, dict[str, list]]:
    """Column name -> list of Python-level cell values, for every accepted frame flavour."""
    if isinstance(data, pd.DataFrame):
        if not data.columns.is_unique:
            dupes = sorted({str(c) for c in data.columns[data.columns.duplicated()]})
            raise MessageError(f"duplicate column names {dupes}; rename them first")
        cols = {str(name): data[name].tolist() for name in data.columns}
        return len(data), data.index, cols
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        pa = None
    if pa is not None and isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if pa is not None and isinstance(data, pa.Table):
        if len(set(data.column_names)) != len(data.column_names):
            raise MessageError("duplicate column names; rename them first")
        cols = {name: data.column(name).to_pylist() for name in data.column_names}
        return data.num_rows, pd.RangeIndex(data.num_rows), cols
    for attr in ("to_arrow", "arrow", "fetch_arrow_table"):  # polars, DuckDB relations
        method = getattr(data, attr, None)
        if callable(method):
            table = method()
            if hasattr(table, "read_all"):
                table = table.read_all()
            return _columns(table)
    raise MessageError(
        f"cannot read messages from a {type(data).__name__}; "
        "pass a pandas.DataFrame or a pyarrow.Table"
    )


def _resolve_columns(names: Sequence[str]) -> tuple[dict[str, str], list[str], list[str]]:
    """(Spec field -> column name, extra columns, ignored columns); both spellings is an error."""
    fields: dict[str, str] = {}
    for field, spellings in _FIELD_COLUMNS.items():
        present = [s for s in spellings if s in names]
        if len(present) > 1:
            raise MessageError(
                f"both {present[0]!r} and {present[1]!r} are present; keep one of them",
                column=present[1],
            )
        if present:
            fields[field] = present[0]
    taken = set(fields.values())
    ignored = [n for n in names if n in _IGNORED_COLUMNS]
    extra = [n for n in names if n not in taken and n not in _IGNORED_COLUMNS]
    return fields, extra, ignored


def _id_text(value: Any, column: str) -> str | None:
    """An identifier cell as text; ``None`` when missing or empty."""
    if _is_missing(value):
        return None
    if isinstance(value, (str, np.str_)):
        text = str(value)
    elif isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        text = str(int(value))
    elif isinstance(value, uuid.UUID):
        text = str(value)
    else:
        raise _CellError(
            f"an id must be text or an integer, not {type(value).__name__} "
            "(a float id usually means missing values turned an integer column into float; "
            "cast the column to str or Int64)"
        )
    return text if text.strip() else None


def _object_cell(value: Any) -> Any:
    """traits/properties/context/integrations: a mapping, or a JSON object in a string."""
    if isinstance(value, (str, bytes)):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise _CellError(f"text is not valid JSON ({exc})") from None
    if not isinstance(value, Mapping):
        raise _CellError(f"must be an object (dict), not {type(value).__name__}")
    return value


def _build_row(
    pos: int,
    cols: dict[str, list],
    fields: dict[str, str],
    extra: list[str],
    default_type: str | None,
    ser: _Serializer,
) -> tuple[dict, str | None]:
    """One message dict (without library context) and the caller's messageId, or raise."""
    column = fields.get("type", "type")
    try:
        if "type" in fields:
            raw_type = cols[fields["type"]][pos]
            if _is_missing(raw_type):
                raise _CellError("type is missing")
            mtype = str(raw_type)
        else:
            mtype = default_type  # type: ignore[assignment]
        if mtype not in MESSAGE_TYPES:
            raise _CellError(f"type {mtype!r} is not one of {', '.join(MESSAGE_TYPES)}")
        msg: dict[str, Any] = {"type": mtype}
        given_id = None
        for field in _ID_FIELDS:
            if field in fields:
                column = fields[field]
                text = _id_text(cols[column][pos], column)
                if text is None:
                    continue
                if field == "messageId":
                    if len(text) >= MAX_MESSAGE_ID_CHARS:
                        raise _CellError(
                            f"messageId has {len(text)} characters; Segment needs fewer than "
                            f"{MAX_MESSAGE_ID_CHARS}"
                        )
                    given_id = text
                else:
                    msg[field] = text
        for field in ("event", "name", "category"):
            if field in fields:
                column = fields[field]
                value = cols[column][pos]
                if _is_missing(value):
                    continue
                if not isinstance(value, str):
                    raise _CellError(f"{field} must be text, not {type(value).__name__}")
                if value.strip():
                    msg[field] = str(value)
        for field in _OBJECT_FIELDS:
            if field in fields:
                column = fields[field]
                value = cols[column][pos]
                if _is_missing(value):
                    continue
                norm = ser.value(_object_cell(value), column)
                msg[field] = norm
        target = _EXTRA_TARGET[mtype]
        for name in extra:
            column = name
            value = cols[name][pos]
            if value is None:
                continue  # a missing top-level cell is left out, never sent as null (B01)
            norm = ser.value(value, name)
            if isinstance(norm, _Missing):
                continue
            if target is None:
                raise _CellError(f"an {mtype} message has no properties or traits for this column")
            msg.setdefault(target, {})
            msg[target] = {**msg[target], name: norm}  # the column wins over a same-named key
        if "timestamp" in fields:
            column = fields["timestamp"]
            value = cols[column][pos]
            if not _is_missing(value):
                if isinstance(value, str):
                    try:
                        value = dt.datetime.fromisoformat(value)
                    except ValueError:
                        raise _CellError(f"timestamp {value!r} is not ISO-8601") from None
                if not isinstance(value, (dt.datetime, np.datetime64, dt.date)):
                    raise _CellError(f"timestamp must be a datetime, not {type(value).__name__}")
                msg["timestamp"] = ser.timestamp(value, column)
        # Segment's required fields, per type.
        column = fields.get("userId", "userId")
        if "userId" not in msg and "anonymousId" not in msg:
            raise _CellError("needs a userId or an anonymousId (both are missing or empty)")
        required = {"track": "event", "group": "groupId", "alias": "previousId"}.get(mtype)
        if mtype == "alias" and "userId" not in msg:
            raise _CellError("an alias message needs a userId")
        if required and required not in msg:
            column = fields.get(required, required)
            raise _CellError(f"a {mtype} message needs {required}")
        return msg, given_id
    except _CellError as exc:
        raise MessageError(str(exc), row=pos, column=column) from None


def _library_context() -> dict:
    try:
        from importlib.metadata import version

        ver = version("cmdseg_nb")
    except Exception:  # pragma: no cover - running from a source tree without metadata
        ver = "0.0.0"
    return {"name": "cmdseg_nb", "version": ver}


def derive_message_id(canonical: bytes, run_name: str | None, occurrence: int) -> str:
    """A deterministic messageId (UUID text, 36 characters) from a message's canonical JSON.

    The same content (and ``run_name``) always gives the same id, so re-sending the same rows
    is de-duplicated by Segment (it de-duplicates on messageId for about 24 hours).
    ``occurrence`` tells apart identical rows within one send, so they are not merged.
    """
    seed = f"{run_name or ''}\x00{occurrence}\x00{canonical.decode('utf-8')}"
    return str(uuid.uuid5(_NAMESPACE, seed))


def prepare(
    data: Any,
    *,
    tz: Any = None,
    run_name: str | None = None,
    allow_duplicate_message_ids: bool = False,
    binary: str = "error",
    library: bool = True,
) -> Prepared:
    """Validate and serialize every row of ``data``; see :func:`cmdseg_nb.send` for the rules.

    Raises
    ------
    MessageError
        Only for problems of the whole frame (unknown type, no ``type`` nor ``event`` column,
        a column under two spellings). Row problems are collected in ``Prepared.errors``.
    """
    n_rows, index, cols = _columns(data)
    fields, extra, ignored = _resolve_columns(list(cols))
    default_type = None
    if "type" not in fields:
        if "event" not in fields:
            raise MessageError(
                "no 'type' column and no 'event' column: add a type column "
                "(identify, track, page, screen, group, alias), or use identify_frame/track_frame",
                column="type",
            )
        default_type = "track"  # a frame of events without a type is a frame of tracks
    ser = _Serializer(tz=tz, binary=binary)
    lib = _library_context() if library else None
    built: list[tuple[int, dict, str | None]] = []
    errors: list[MessageError] = []
    for pos in range(n_rows):
        ser.row = pos
        try:
            msg, given = _build_row(pos, cols, fields, extra, default_type, ser)
        except MessageError as exc:
            errors.append(exc)
            continue
        built.append((pos, msg, given))

    # messageIds: the caller's as given; duplicates are an error unless allowed (case B21).
    given_counts = Counter(g for _, _, g in built if g is not None)
    dupes = {g for g, n in given_counts.items() if n > 1}
    id_column = fields.get("messageId", "messageId")
    occurrences: Counter[bytes] = Counter()
    rows, ids, bodies = [], [], []
    for pos, msg, given in built:
        if given is not None and given in dupes and not allow_duplicate_message_ids:
            others = given_counts[given] - 1
            errors.append(
                MessageError(
                    f"messageId {given!r} is shared with {others} other row(s); Segment would "
                    "keep only one of them. Give each event its own id, or pass "
                    "allow_duplicate_message_ids=True if they really are the same event",
                    row=pos,
                    column=id_column,
                )
            )
            continue
        if given is None:
            canonical = orjson.dumps(msg, option=orjson.OPT_SORT_KEYS)
            occurrences[canonical] += 1
            given = derive_message_id(canonical, run_name, occurrences[canonical] - 1)
        if lib is not None:
            ctx = msg.get("context") or {}
            if "library" not in ctx:
                msg["context"] = {**ctx, "library": lib}
        msg["messageId"] = given
        body = orjson.dumps(msg)
        if len(body) > MAX_MESSAGE_BYTES:
            errors.append(
                MessageError(
                    f"message is {len(body):,} bytes serialized; Segment accepts at most "
                    f"{MAX_MESSAGE_BYTES:,} bytes per message",
                    row=pos,
                    column=_largest_column(msg),
                )
            )
            continue
        rows.append(pos)
        ids.append(given)
        bodies.append(body)
    errors.sort(key=lambda e: e.row if e.row is not None else -1)
    return Prepared(n_rows, index, rows, ids, bodies, errors, _emit_warnings(ser, ignored))


def _largest_column(msg: dict) -> str:
    sizes = {k: len(orjson.dumps(v)) for k, v in msg.items()}
    return max(sizes, key=sizes.__getitem__)


def _emit_warnings(ser: _Serializer, ignored: list[str]) -> list[str]:
    texts = []
    if ser.naive_columns:
        n = sum(ser.naive_columns.values())
        texts.append(
            f"{n} datetime value(s) without a time zone in column(s) "
            f"{sorted(ser.naive_columns)} were taken as UTC; pass tz=... to say otherwise"
        )
    if ser.inf_cells:
        rows = sorted({r for r, _ in ser.inf_cells})
        columns = sorted({c for _, c in ser.inf_cells})
        shown = ", ".join(map(str, rows[:20])) + (" ..." if len(rows) > 20 else "")
        texts.append(
            f"{len(ser.inf_cells)} infinite value(s) were left out (JSON has no infinity): "
            f"column(s) {columns}" + (f", row(s) {shown}" if rows else "")
        )
    if ignored:
        texts.append(
            f"column(s) {ignored} are set by the sender or by Segment and were not sent"
        )
    for text in texts:
        warnings.warn(text, CmdsegWarning, stacklevel=4)
    return texts


def identify_frame(wide: pd.DataFrame, *, user_id_column: str = "user_id") -> pd.DataFrame:
    """Turn a wide user-property table into identify messages, ready for :func:`send`.

    Parameters
    ----------
    wide : pandas.DataFrame
        One row per user: a ``user_id_column`` (str or integer; or the index so named, as
        :func:`cmdseg_nb.to_wide` returns) and one column per user property. Cells are Python values as parsed from JSON (str, int, float, bool, list,
        dict, None), or any value :func:`send` can serialize. Use ``dtype=object`` columns to
        keep ``None`` apart from missing (pandas turns ``None`` into ``NaN`` in float columns).
    user_id_column : str
        Column holding the Segment ``userId``.

    Returns
    -------
    pandas.DataFrame
        Same index as ``wide``; columns ``type`` (str, always ``"identify"``), ``userId``
        (the user id cell, unchanged) and ``traits`` (object: a dict per row).

    Notes
    -----
    Null versus missing follows Segment's behaviour downstream (case B01): a trait sent as
    ``null`` clears the user's value, a trait left out keeps it. So a cell that **is None**
    means the property is an explicit JSON ``null`` and is sent as ``null``; a cell that is
    ``pd.NA``, ``NaN`` or ``NaT`` means the user does not have the property, and it is left out.
    Rows without a user id are kept, so :func:`send` reports them as invalid rows.

    Raises
    ------
    MessageError
        When ``user_id_column`` is not a column of ``wide``.
    """
    if not isinstance(wide, pd.DataFrame):
        raise MessageError(f"identify_frame takes a pandas.DataFrame, not {type(wide).__name__}")
    if user_id_column not in wide.columns and wide.index.name == user_id_column:
        wide = wide.reset_index()  # the index of to_wide(); a new frame, the input is untouched
    if user_id_column not in wide.columns:
        raise MessageError(f"no column or index {user_id_column!r} with the user ids",
                           column=user_id_column)
    props = [c for c in wide.columns if c != user_id_column]
    values = {c: wide[c].tolist() for c in props}
    traits = []
    for i in range(len(wide)):
        row = {}
        for c in props:
            v = values[c][i]
            if v is None:
                row[str(c)] = None  # explicit JSON null: clears the trait downstream
            elif isinstance(v, (Mapping, list, tuple, np.ndarray)) or not _is_missing(v):
                row[str(c)] = v
        traits.append(row)
    return pd.DataFrame(
        {
            "type": pd.Series(["identify"] * len(wide), index=wide.index, dtype=object),
            "userId": pd.Series(wide[user_id_column].tolist(), index=wide.index, dtype=object),
            "traits": pd.Series(traits, index=wide.index, dtype=object),
        }
    )


def track_frame(
    df: pd.DataFrame,
    *,
    event: str,
    user_id_column: str = "user_id",
    timestamp_column: str | None = None,
    properties: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Turn a table of facts into track messages named ``event``, ready for :func:`send`.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per event, with a ``user_id_column``.
    event : str
        Event name of every row (Segment's ``event`` field, case-sensitive).
    user_id_column : str
        Column holding the ``userId``.
    timestamp_column : str | None
        Column with the event time (datetime64 or ISO text), sent as ``timestamp``.
    properties : sequence of str | None
        Columns to send as properties; default every other column. Missing cells are left out.

    Returns
    -------
    pandas.DataFrame
        Same index as ``df``; columns ``type`` (``"track"``), ``event``, ``userId``,
        ``properties`` (dict per row) and, when given, ``timestamp``.

    Raises
    ------
    MessageError
        When a named column is missing or ``event`` is empty.
    """
    if not isinstance(event, str) or not event.strip():
        raise MessageError("event must be a non-empty name", column="event")
    for col in [user_id_column, timestamp_column, *(properties or [])]:
        if col is not None and col not in df.columns:
            raise MessageError(f"no column {col!r}", column=col)
    skip = {user_id_column, timestamp_column}
    props = list(properties) if properties is not None else [c for c in df.columns if c not in skip]
    values = {c: df[c].tolist() for c in props}
    rows = []
    for i in range(len(df)):
        rows.append({str(c): values[c][i] for c in props if not _is_missing_scalar(values[c][i])})
    out = {
        "type": pd.Series(["track"] * len(df), index=df.index, dtype=object),
        "event": pd.Series([event] * len(df), index=df.index, dtype=object),
        "userId": pd.Series(df[user_id_column].tolist(), index=df.index, dtype=object),
        "properties": pd.Series(rows, index=df.index, dtype=object),
    }
    if timestamp_column is not None:
        out["timestamp"] = df[timestamp_column]
    return pd.DataFrame(out)


def _is_missing_scalar(v: Any) -> bool:
    if isinstance(v, (Mapping, list, tuple, np.ndarray)):
        return False
    return _is_missing(v)
