"""DataFrame / Arrow table / DuckDB relation -> validated, serialized Segment messages, in chunks.

::

    input ──Source.chunks──▶ Arrow arrays / Python lists per column (a few thousand rows at a time)
          ──Serializer.convert_*──▶ JSON-safe column values (bulk, per column)
          ──Preparer.chunk──▶ Chunk: exact message bytes + messageIds of valid rows, MessageError per bad row

Everything here is pure (no HTTP). ``_send`` batches and posts the bytes of each :class:`Chunk`,
so a message is serialized exactly once and every retry resends the same bytes. Memory stays
flat: only one chunk of rows is converted at a time. Value rules live in ``_serialize``.

messageIds (case B21): a ``messageId``/``message_id`` column is used as given (duplicates in it
are found over the whole input before anything is sent); otherwise the id is derived from the
message's canonical JSON (sorted keys, without ``context.library``), the ``run_name`` and the
occurrence of identical messages, so the same rows always get the same ids.
"""
from __future__ import annotations

import dataclasses
import hashlib
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pandas as pd

from ._errors import CmdsegWarning, MessageError
from ._frames import identify_frame, track_frame
from ._rowjson import track_canonicals
from ._serialize import (
    SeenKeys,
    Serializer,
    digest_of,
    id_column,
    object_column,
    text_column,
    timestamp_column,
    value_column,
)
from ._source import CHUNK_ROWS, Source

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
_ID_FIELDS = ("userId", "anonymousId", "groupId", "previousId")
_TEXT_FIELDS = ("event", "name", "category")
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
_REQUIRED = {"track": "event", "group": "groupId", "alias": "previousId"}


# -- layout: which column is which field ------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Layout:
    """Spec field -> column name, the extra (property/trait) columns and the ignored ones."""

    fields: dict[str, str]
    extra: list[str]
    ignored: list[str]
    default_type: str | None

    @classmethod
    def of(cls, names: Sequence[str]) -> Layout:
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
        default_type = None
        if "type" not in fields:
            if "event" not in fields:
                raise MessageError(
                    "no 'type' column and no 'event' column: add a type column (identify, "
                    "track, page, screen, group, alias), or use identify_frame/track_frame",
                    column="type",
                )
            default_type = "track"  # a frame of events without a type is a frame of tracks
        return cls(fields, extra, ignored, default_type)




# -- building the messages of one chunk -------------------------------------------------------
@dataclasses.dataclass
class Chunk:
    """The prepared rows of one chunk.

    Attributes
    ----------
    offset, n_rows : int
        Position of the chunk's first row in the input, and its number of rows.
    rows : list[int]
        Input positions (0-based, global) of the valid rows, in input order.
    message_ids : list[str]
        messageId of each valid row.
    bodies : list[bytes]
        Exact serialized message of each valid row (UTF-8 JSON, sent as is).
    errors : list[MessageError]
        One per invalid row, with its global ``row`` and the ``column`` at fault.
    """

    offset: int
    n_rows: int
    rows: list[int]
    message_ids: list[str]
    bodies: list[bytes]
    errors: list[MessageError]


def _library_context() -> dict:
    try:
        from importlib.metadata import version

        ver = version("cmdseg_nb")
    except Exception:  # pragma: no cover - running from a source tree without metadata
        ver = "0.0.0"
    return {"name": "cmdseg_nb", "version": ver}


def _too_big(body: bytes, msg: dict, fields: dict[str, str], row: int) -> MessageError:
    return MessageError(
        f"message is {len(body):,} bytes serialized; Segment accepts at most "
        f"{MAX_MESSAGE_BYTES:,} bytes per message",
        row=row, column=_largest_column(msg, fields))


class Preparer:
    """Validates and serializes chunks of one input; keeps what spans chunks (ids, warnings).

    Parameters are those of :func:`prepare`; ``duplicate_ids`` are the caller's messageIds that
    appear on several rows of the whole input, with their counts.
    """

    def __init__(self, layout: Layout, *, tz: Any = None, run_name: str | None = None,
                 binary: str = "error", library: bool = True,
                 duplicate_ids: dict[str, int] | None = None,
                 allow_duplicate_message_ids: bool = False):
        self.layout = layout
        self.ser = Serializer(tz=tz, binary=binary)
        self.run_key = hashlib.blake2b(run_name.encode(), digest_size=32).digest() if run_name else b""
        self.library = _library_context() if library else None
        self._ctx_tail = (b',"context":' + orjson.dumps({"library": self.library})
                          if library else b"")
        self.duplicate_ids = {} if allow_duplicate_message_ids else (duplicate_ids or {})
        self._seen = SeenKeys()
        self._repeats: dict[int, int] = {}
        self.fast = True  # column-wise JSON for plain track chunks (tests turn it off to compare)

    def _add_library(self, msg: dict) -> None:
        if self.library is not None:
            ctx = msg.get("context") or {}
            if "library" not in ctx:
                msg["context"] = {**ctx, "library": self.library}

    def _derive_bulk(self, canonicals: list[bytes], digests: list[bytes],
                     id_head: bytes) -> tuple[list[str], list[bytes]] | None:
        """Ids and bodies of a column-wise chunk whose messages are all new (occurrence 0), in
        bulk; None (nothing recorded) when some content repeats: then :meth:`_derive` runs."""
        n = len(digests)
        blob = b"".join(digests)
        keys = np.frombuffer(blob, dtype="<u8")[::2]  # the first 8 bytes of each digest
        ordered = np.sort(keys)
        if (ordered[1:] == ordered[:-1]).any() or self._seen.contains(ordered).any():
            return None
        self._seen.add(ordered)
        # 8-4-4-4-12 hex digits of each digest, formatted for the whole chunk at once
        hexed = np.frombuffer(blob.hex().encode("ascii"), dtype=np.uint8).reshape(n, 32)
        out = np.empty((n, 36), dtype=np.uint8)
        out[:, [8, 13, 18, 23]] = ord("-")
        out[:, :8], out[:, 9:13], out[:, 14:18] = hexed[:, :8], hexed[:, 8:12], hexed[:, 12:16]
        out[:, 19:23], out[:, 24:] = hexed[:, 16:20], hexed[:, 20:]
        raw = out.view("S36").ravel().tolist()
        text = out.tobytes().decode("ascii")
        ids = [text[k:k + 36] for k in range(0, 36 * n, 36)]
        tail = b'"}'
        bodies = [c[:-1] + id_head + m + tail for c, m in zip(canonicals, raw)]
        return ids, bodies

    def _derive(self, derived, out_ids: list, out_bodies: list, id_head: bytes) -> None:
        """Ids and bodies of a chunk's rows without a given messageId, in input order.

        The first message with given content gets occurrence 0; identical ones later in the
        send (this chunk or an earlier one) get 1, 2, ... so they are not merged by Segment.
        """
        keys = np.frombuffer(b"".join(d[:8] for _, _, d, _ in derived), dtype="<u8")
        earlier = self._seen.contains(keys)
        unique = _sorted_unique(keys)
        if len(unique) == len(keys) and not earlier.any() and all(m is None for *_, m in derived):
            # the common case: every message new, no library to merge: in bulk
            for (j, canonical, digest, _) in derived:
                h = digest.hex()
                mid = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
                out_ids[j] = mid
                out_bodies[j] = canonical[:-1] + id_head + mid.encode() + b'"}'
            self._seen.add(unique)
            return
        hit = set(keys[earlier].tolist()) if earlier.any() else set()
        local: set[int] = set()
        dumps = orjson.dumps
        for (j, canonical, digest, msg), key in zip(derived, keys.tolist()):
            if key in local or key in hit:
                occurrence = self._repeats.get(key, 0) + 1
                self._repeats[key] = occurrence
                digest = digest_of(canonical, self.run_key, occurrence)
            else:
                local.add(key)
            h = digest.hex()
            mid = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
            out_ids[j] = mid
            if msg is None:  # hex digits: no JSON escaping to do
                out_bodies[j] = b"".join((canonical[:-1], id_head, mid.encode(), b'"}'))
            else:
                self._add_library(msg)
                msg["messageId"] = mid
                out_bodies[j] = dumps(msg)
        self._seen.add(_sorted_unique(keys[~earlier]))

    def chunk(self, offset: int, cols: dict[str, Any]) -> Chunk:
        """Prepare one chunk of rows; ``cols`` maps every input column to its cells."""
        lay, ser = self.layout, self.ser
        fields = lay.fields
        n = len(next(iter(cols.values()))) if cols else 0
        # Per-column conversion, in the order errors are reported (first bad column wins).
        problems: list[tuple[str, dict[int, str]]] = []
        types = None
        if "type" in fields:
            types, errs = text_column(cols[fields["type"]], "type")
            problems.append((fields["type"], errs))
        ids = []
        for field in _ID_FIELDS:
            if field in fields:
                values, errs = id_column(cols[fields[field]], fields[field])
                ids.append((field, values))
                problems.append((fields[field], errs))
        given = None
        if "messageId" in fields:
            column = fields["messageId"]
            given, errs = id_column(cols[column], column)
            errs = dict(errs)
            for i, text in enumerate(given):
                if text is None:
                    continue
                if len(text) >= MAX_MESSAGE_ID_CHARS:
                    errs[i] = (f"messageId has {len(text)} characters; Segment needs fewer "
                               f"than {MAX_MESSAGE_ID_CHARS}")
                elif text in self.duplicate_ids:
                    others = self.duplicate_ids[text] - 1
                    errs[i] = (
                        f"messageId {text!r} is shared with {others} other row(s); Segment "
                        "would keep only one of them. Give each event its own id, or pass "
                        "allow_duplicate_message_ids=True if they really are the same event")
            problems.append((column, errs))
        texts = []
        for field in _TEXT_FIELDS:
            if field in fields:
                values, errs = text_column(cols[fields[field]], field)
                texts.append((field, values))
                problems.append((fields[field], errs))
        objects = []
        for field in _OBJECT_FIELDS:
            if field in fields:
                values, errs = object_column(cols[fields[field]], ser, fields[field], offset)
                objects.append((field, values))
                problems.append((fields[field], errs))
        extra_values = []
        for name in lay.extra:
            values, errs = value_column(cols[name], ser, name, offset)
            extra_values.append(values)
            problems.append((name, errs))
        stamps = None
        if "timestamp" in fields:
            stamps, errs = timestamp_column(cols[fields["timestamp"]], ser,
                                             fields["timestamp"], offset)
            problems.append((fields["timestamp"], errs))
        bad: dict[int, tuple[str, str]] = {}
        for column, errs in reversed(problems):
            for i, reason in errs.items():
                bad[i] = (column, reason)

        extra_names = lay.extra
        extra_rows = list(zip(*extra_values)) if extra_values else None
        default_type = lay.default_type
        dumps, sort = orjson.dumps, orjson.OPT_SORT_KEYS
        ctx_tail = self._ctx_tail
        id_head = ctx_tail + b',"messageId":"'
        blake2b, run_key = hashlib.blake2b, self.run_key
        derived: list[tuple[int, bytes, bytes, dict | None]] = []
        out_rows, out_ids, out_bodies, errors = [], [], [], []
        fast = None
        if (self.fast and not bad and types is None and default_type == "track" and not objects
                and given is None and ctx_tail and [f for f, _ in texts] == ["event"]):
            fast = track_canonicals(n, ids, texts[0][1], stamps, extra_names, extra_values)
        if fast is not None:  # column-wise: the same bytes as the loop below would make
            out_rows = list(range(offset, offset + n))
            if run_key:
                digests = [blake2b(c, digest_size=16, key=run_key).digest() for c in fast]
            else:  # an empty key is no key (same digests), and the call is cheaper
                digests = [blake2b(c, digest_size=16).digest() for c in fast]
            done = self._derive_bulk(fast, digests, id_head)
            if done is not None and max(map(len, done[1])) <= MAX_MESSAGE_BYTES:
                return Chunk(offset, n, out_rows, done[0], done[1], [])
            derived = [(i, canonical, digest, None)
                       for i, (canonical, digest) in enumerate(zip(fast, digests))]
            out_ids, out_bodies = [""] * n, [b""] * n
        for i in range(n if fast is None else 0):
            if i in bad:
                column, reason = bad[i]
                errors.append(MessageError(reason, row=offset + i, column=column))
                continue
            mtype = types[i] if types is not None else default_type
            if mtype not in _EXTRA_TARGET:
                errors.append(MessageError(
                    f"type {mtype!r} is not one of {', '.join(MESSAGE_TYPES)}"
                    if mtype is not None else "type is missing",
                    row=offset + i, column=fields.get("type", "type")))
                continue
            msg: dict[str, Any] = {"type": mtype}
            for field, values in ids:
                v = values[i]
                if v is not None:
                    msg[field] = v
            for field, values in texts:
                v = values[i]
                if v is not None:
                    msg[field] = v
            for field, values in objects:
                v = values[i]
                if v is not None:
                    msg[field] = v
            if extra_rows is not None:
                props = {k: v for k, v in zip(extra_names, extra_rows[i]) if v is not None}
                if props:
                    target = _EXTRA_TARGET[mtype]
                    if target is None:
                        errors.append(MessageError(
                            f"an {mtype} message has no properties or traits for this column",
                            row=offset + i, column=next(iter(props))))
                        continue
                    have = msg.get(target)
                    msg[target] = {**have, **props} if have else props
            if stamps is not None:
                v = stamps[i]
                if v is not None:
                    msg["timestamp"] = v
            need = _REQUIRED.get(mtype)
            if (("userId" not in msg and "anonymousId" not in msg)
                    or (need is not None and (need not in msg or "userId" not in msg
                                              and mtype == "alias"))):
                problem = self._missing_required(msg, mtype)
                if problem is not None:
                    errors.append(MessageError(problem[1], row=offset + i, column=problem[0]))
                    continue
            mid = given[i] if given is not None else None
            slow = "context" in msg or not ctx_tail
            if mid is None:  # derived: decided for the whole chunk below, in input order
                canonical = dumps(msg, option=sort)
                digest = blake2b(canonical, digest_size=16, key=run_key).digest()
                derived.append((len(out_rows), canonical, digest, msg if slow else None))
                out_rows.append(offset + i)
                out_ids.append("")
                out_bodies.append(b"")
                continue
            if slow:
                self._add_library(msg)
                msg["messageId"] = mid
                body = dumps(msg)
            else:
                canonical = dumps(msg, option=sort)
                body = b"".join((canonical[:-1], ctx_tail, b',"messageId":', dumps(mid), b"}"))
            if len(body) > MAX_MESSAGE_BYTES:
                errors.append(_too_big(body, msg, fields, offset + i))
                continue
            out_rows.append(offset + i)
            out_ids.append(mid)
            out_bodies.append(body)
        if derived:
            self._derive(derived, out_ids, out_bodies, id_head)
            keep = []
            for j, body in enumerate(out_bodies):
                if len(body) > MAX_MESSAGE_BYTES:
                    errors.append(_too_big(body, orjson.loads(body), fields, out_rows[j]))
                else:
                    keep.append(j)
            if len(keep) < len(out_rows):
                out_rows = [out_rows[j] for j in keep]
                out_ids = [out_ids[j] for j in keep]
                out_bodies = [out_bodies[j] for j in keep]
        errors.sort(key=lambda e: e.row)
        return Chunk(offset, n, out_rows, out_ids, out_bodies, errors)

    def release(self) -> None:
        """Free what spans chunks (seen message digests) once no chunk is left to prepare."""
        self._seen = SeenKeys()
        self._repeats = {}

    def _missing_required(self, msg: dict, mtype: str) -> tuple[str, str] | None:
        fields = self.layout.fields
        if "userId" not in msg and "anonymousId" not in msg:
            return (fields.get("userId", "userId"),
                    "needs a userId or an anonymousId (both are missing or empty)")
        if mtype == "alias" and "userId" not in msg:
            return fields.get("userId", "userId"), "an alias message needs a userId"
        required = _REQUIRED.get(mtype)
        if required and required not in msg:
            return fields.get(required, required), f"a {mtype} message needs {required}"
        return None

    def warnings(self) -> list[str]:
        """Texts of this send's warnings, each issued once as a :class:`CmdsegWarning`."""
        ser, texts = self.ser, []
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
        if self.layout.ignored:
            texts.append(f"column(s) {self.layout.ignored} are set by the sender or by Segment "
                         "and were not sent")
        return texts


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """``np.unique`` of 64-bit keys by sorting (numpy's hash-based unique is slower here)."""
    ordered = np.sort(keys)
    if len(ordered) > 1:
        ordered = ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]
    return ordered


def _largest_column(msg: dict, fields: dict[str, str]) -> str:
    sizes = {k: len(orjson.dumps(v)) for k, v in msg.items()}
    key = max(sizes, key=sizes.__getitem__)
    return fields.get(key, key)


def emit_warnings(texts: list[str], stacklevel: int = 3) -> None:
    for text in texts:
        warnings.warn(text, CmdsegWarning, stacklevel=stacklevel)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` returns: all chunks of an input joined (for small inputs and tests).

    Attributes
    ----------
    n_rows : int
    index : pandas.Index
        Labels of the input rows (a RangeIndex for Arrow input).
    rows, message_ids, bodies : list
        As in :class:`Chunk`, for the whole input.
    errors : list[MessageError]
    warnings : list[str]
    """

    n_rows: int
    index: pd.Index
    rows: list[int]
    message_ids: list[str]
    bodies: list[bytes]
    errors: list[MessageError]
    warnings: list[str]


def start(data: Any, *, tz: Any = None, run_name: str | None = None,
          allow_duplicate_message_ids: bool = False, binary: str = "error",
          library: bool = True) -> tuple[Source, Preparer]:
    """Read the input's shape and check it as a whole; raises :class:`MessageError`."""
    source = Source(data)
    layout = Layout.of(source.names)
    dupes = {}
    if "messageId" in layout.fields and not allow_duplicate_message_ids:
        dupes = source.duplicate_ids(layout.fields["messageId"])
    preparer = Preparer(layout, tz=tz, run_name=run_name, binary=binary, library=library,
                        duplicate_ids=dupes,
                        allow_duplicate_message_ids=allow_duplicate_message_ids)
    return source, preparer


def prepare(data: Any, *, tz: Any = None, run_name: str | None = None,
            allow_duplicate_message_ids: bool = False, binary: str = "error",
            library: bool = True, chunk_rows: int = CHUNK_ROWS) -> Prepared:
    """Validate and serialize every row of ``data``; see :func:`cmdseg_nb.send` for the rules.

    Raises
    ------
    MessageError
        Only for problems of the whole frame (no ``type`` nor ``event`` column, a column under
        two spellings, an unsupported object). Row problems are collected in ``errors``.
    """
    source, preparer = start(data, tz=tz, run_name=run_name, binary=binary, library=library,
                             allow_duplicate_message_ids=allow_duplicate_message_ids)
    rows, ids, bodies, errors = [], [], [], []
    n = 0
    for offset, cols in source.chunks(chunk_rows):
        c = preparer.chunk(offset, cols)
        rows += c.rows
        ids += c.message_ids
        bodies += c.bodies
        errors += c.errors
        n = offset + c.n_rows
    texts = preparer.warnings()
    emit_warnings(texts)
    n_rows = source.n_rows if source.n_rows is not None else n
    index = source.index if source.index is not None else pd.RangeIndex(n_rows)
    return Prepared(n_rows, index, rows, ids, bodies, errors, texts)
