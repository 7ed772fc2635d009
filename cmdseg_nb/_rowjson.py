"""Canonical JSON of flat track rows, built column by column (the fast path of ``_preparer``).

::

    converted columns ──orjson.dumps(whole column), split──▶ value fragments per column
                      ──zip + join per row──▶ b'{"event":...,"properties":{...},...}' per row

The bytes are exactly ``orjson.dumps(message, option=OPT_SORT_KEYS)`` of the message dict the
general path builds (tests check this), so messageIds do not depend on the path taken. It
applies to a chunk only when every row is a valid track of ``userId``/``anonymousId``,
``event``, ``timestamp`` and property columns, and the first property (in key order) is never
missing; otherwise it returns ``None`` and the general path runs.
"""
from __future__ import annotations

from itertools import repeat

import orjson

_NUMBER_TYPES = frozenset({int, float, bool, orjson.Fragment})


def _dense(values: list) -> tuple[bytes, list[bytes], bytes] | None:
    """(opening, fragments, closing) of a column without missing values, or None."""
    kinds = set(map(type, values))
    if kinds == {str}:
        whole = orjson.dumps(values)
        frags = whole[2:-2].split(b'","')  # inside a JSON string every '"' is escaped
        if len(frags) == len(values):
            return b'"', frags, b'"'
        return None
    if kinds <= _NUMBER_TYPES:
        frags = orjson.dumps(values)[1:-1].split(b",")
        if len(frags) == len(values):
            return b"", frags, b""
    return None


def _column(key: bytes, values: list, lead: bytes, trail: bytes) -> list:
    """The parts of one ``"key":value`` member per row: constants repeated, or whole pieces."""
    head = lead + orjson.dumps(key.decode()) + b":"
    if None not in values:
        dense = _dense(values)
        if dense is not None:
            opening, frags, closing = dense
            return [repeat(head + opening), frags, repeat(closing + trail)]
    dumps = orjson.dumps
    return [[b"" if v is None else head + dumps(v) + trail for v in values]]


def track_canonicals(n: int, ids: list[tuple[str, list]], event: list | None,
                     stamps: list | None, names: list[str], extras: list[list]) -> list[bytes] | None:
    """Canonical JSON bytes of ``n`` track messages, or None when the chunk needs the general path."""
    if n == 0 or event is None or None in event:
        return None
    id_cols = dict(ids)
    if set(id_cols) - {"userId", "anonymousId"}:
        return None
    user, anon = id_cols.get("userId"), id_cols.get("anonymousId")
    if user is None or None in user:
        if anon is None or any(u is None and a is None
                               for u, a in zip(user or repeat(None), anon)):
            return None
    props = sorted((name, values) for name, values in zip(names, extras)
                   if any(v is not None for v in values))
    parts: list = [repeat(b"{")]
    if anon is not None:
        parts += _column(b"anonymousId", anon, b"", b",")
    parts += _column(b"event", event, b"", b",")
    if props:
        first, *rest = props
        if None in first[1]:
            return None
        parts.append(repeat(b'"properties":{'))
        parts += _column(first[0].encode(), first[1], b"", b"")
        for name, values in rest:
            parts += _column(name.encode(), values, b",", b"")
        parts.append(repeat(b"},"))
    if stamps is not None:
        parts += _column(b"timestamp", stamps, b"", b",")
    parts.append(repeat(b'"type":"track"'))
    if user is not None:
        parts += _column(b"userId", user, b",", b"")
    parts.append(repeat(b"}"))
    join = b"".join
    return [join(row) for row in zip(*parts)]
