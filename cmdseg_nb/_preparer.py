"""One chunk of input columns -> exact message bytes and messageIds, or a MessageError per bad row.

:class:`Preparer` converts each column of a chunk in bulk (value rules in ``_serialize``),
keeps the first bad column of each row as its :class:`~cmdseg_nb._errors.MessageError`,
builds the messages of the good rows (plain track chunks column by column through
``_rowjson``, making the same bytes as the general path) and derives their messageIds (case
B21) from the canonical JSON, the ``run_name`` and the occurrence of identical messages,
across the chunks of one input. The result of a chunk is a :class:`Chunk`. Pure (no HTTP);
split from ``_messages``, which starts a Preparer for an input. Source of the rules: the
Spec fields, required fields and limits in ``_layout``.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np
import orjson

from ._errors import MessageError
from ._layout import (
    _EXTRA_TARGET,
    _ID_FIELDS,
    _OBJECT_FIELDS,
    _REQUIRED,
    _TEXT_FIELDS,
    MAX_MESSAGE_BYTES,
    MAX_MESSAGE_ID_CHARS,
    MESSAGE_TYPES,
    Layout,
)
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

__all__ = ["Chunk", "Preparer"]


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

    Parameters are those of :func:`~cmdseg_nb._messages.prepare`; ``duplicate_ids`` are the caller's messageIds that
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

