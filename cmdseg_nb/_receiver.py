"""Command AI's webhook receiver rules: what it records from one received data object ``P``.

Rules 1-6 of ``../shared/spec/webhook-rules.md`` ("Receiver rules"), twice: as DuckDB SQL over
a JSON column (used in bulk) and as plain Python over one dict (used by ``preview`` and as the
second implementation in tests). Both must agree; the tests check that they do.

1. ``P.userId`` names the user: a non-blank string (kept exactly) or a number (canonical
   decimal string: ``1011`` and ``1011.0`` are ``"1011"``). Anything else: skipped,
   reason ``no_user_id``. ``anonymousId`` is never used.
2. Every key of ``P.traits`` (when it is an object) is a property (rule ``traits``).
3. Every top-level key ``user_property.<name>`` sets property ``<name>`` verbatim (rule
   ``user_property``); the bare key ``user_property.`` is ignored and reported.
4. A non-empty string ``P.user_property_event`` sets that property to ``true`` (rule
   ``user_property_event``); any other value is ignored and reported.
5. Within one object: traits, then ``user_property.*``, then ``user_property_event``; later wins.
6. An explicit JSON null is a value (it clears); an absent key changes nothing.
"""
from __future__ import annotations

import json
import math
from typing import Any

import orjson

from ._db import json_path

__all__ = [
    "ISSUES",
    "WHITESPACE",
    "RULES",
    "assignments_sql",
    "receive",
    "json_text",
    "normalize_user_id",
    "user_id_sql",
    "value_type",
    "value_type_sql",
]

#: Rule names in precedence order (rule 5): a later rule overwrites an earlier one.
RULES = ("traits", "user_property", "user_property_event")
PREFIX = "user_property."

#: Python's str.isspace() set (29 characters), for SQL that trims them (portable to every
#: dialect of to_sql, unlike a regular expression class).
WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
# The same set as an RE2 class, so SQL and Python agree on "only whitespace".
_WS = (r"[\t\n\x{0B}\x{0C}\r\x{1C}-\x{1F} \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}"
       r"\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]*")
_MAX_SAFE = 2 ** 53


def normalize_user_id(value: Any) -> str | None:
    """Receiver rule 1 for one value: the user id string, or None when the object is skipped."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        return None if (value == "" or value.isspace()) else value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if value.is_integer() and abs(value) < _MAX_SAFE:
            return str(int(value))
        return repr(value)
    return None


def user_id_sql(p: str) -> str:
    """SQL (VARCHAR) applying receiver rule 1 to ``P.userId`` of the JSON expression ``p``."""
    path = json_path("userId")
    s = f"json_extract_string({p}, {path})"
    d = f"TRY_CAST({s} AS DOUBLE)"
    return (f"CASE json_type({p}, {path}) "
            f"WHEN 'VARCHAR' THEN CASE WHEN regexp_full_match({s}, '{_WS}') THEN NULL ELSE {s} END "
            f"WHEN 'BIGINT' THEN {s} WHEN 'UBIGINT' THEN {s} WHEN 'HUGEINT' THEN {s} "
            f"WHEN 'DOUBLE' THEN CASE "
            f"WHEN regexp_full_match({s}, '-?[0-9]+') THEN {s} "
            f"WHEN NOT isfinite({d}) THEN NULL "
            f"WHEN {d} = trunc({d}) AND abs({d}) < {_MAX_SAFE} "
            f"THEN CAST(CAST({d} AS BIGINT) AS VARCHAR) "
            f"ELSE CAST({d} AS VARCHAR) END "
            f"ELSE NULL END")


def json_text(value: Any) -> str:
    """Compact JSON text of a value (UTF-8, no ASCII escaping), as the ``value`` column holds it."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # integers beyond 64 bits: the stdlib writes them exactly
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def value_type(value: Any) -> str:
    """JSON type name of a value: string, number, boolean, null, array or object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def value_type_sql(json_type_expr: str) -> str:
    """SQL mapping DuckDB's ``json_type`` names to JSON type names (see :func:`value_type`)."""
    return (f"CASE {json_type_expr} WHEN 'VARCHAR' THEN 'string' WHEN 'BOOLEAN' THEN 'boolean' "
            f"WHEN 'NULL' THEN 'null' WHEN 'ARRAY' THEN 'array' WHEN 'OBJECT' THEN 'object' "
            f"ELSE 'number' END")


def receive(p: Any, *, null_clears: bool = True) -> tuple[str | None, list[tuple[str, Any, str]], list[str]]:
    """Apply the receiver rules to one received object.

    Returns
    -------
    (user_id, assignments, issues)
        ``user_id`` is None when the object is skipped (``issues == ["no_user_id"]``).
        ``assignments`` is ``[(property, value, rule), ...]`` in precedence order (a later
        entry for the same property overwrites an earlier one). ``issues`` lists reasons for
        keys that made nothing: ``empty_user_property_name``, ``invalid_user_property_event``.
    """
    if not isinstance(p, dict):
        return None, [], ["no_user_id"]
    uid = normalize_user_id(p.get("userId"))
    if uid is None:
        return None, [], ["no_user_id"]
    out: list[tuple[str, Any, str]] = []
    issues: list[str] = []
    traits = p.get("traits")
    if isinstance(traits, dict):
        out.extend((k, v, "traits") for k, v in traits.items())
    for k, v in p.items():
        if k.startswith(PREFIX):
            if k == PREFIX:
                issues.append("empty_user_property_name")
            else:
                out.append((k[len(PREFIX):], v, "user_property"))
    if "user_property_event" in p:
        ev = p["user_property_event"]
        if isinstance(ev, str) and ev != "":
            out.append((ev, True, "user_property_event"))
        else:
            issues.append("invalid_user_property_event")
    if not null_clears:
        out = [a for a in out if a[1] is not None]
    return uid, out, issues


def assignments_sql(objects: str, *, null_clears: bool = True) -> str:
    """SQL listing the property assignments made by the objects of relation ``objects``.

    ``objects`` must have columns ``p`` (JSON, the received object) and ``uid`` (from
    :func:`user_id_sql`), plus any ordering columns, which are carried through (``o.*``).
    Result columns: those of ``objects`` plus ``property`` VARCHAR, ``value`` JSON,
    ``rule`` VARCHAR and ``rule_rank`` INTEGER (1-3, rule 5's order).
    """
    traits = json_path("traits")
    upe = json_path("user_property_event")
    keep_null = "" if null_clears else " AND j.type <> 'NULL'"
    return f"""
        SELECT o.*, j.key AS property, j.value AS value, 'traits' AS rule, 1 AS rule_rank
        FROM {objects} AS o,
             json_each(CASE WHEN json_type(o.p, {traits}) = 'OBJECT'
                            THEN json_extract(o.p, {traits}) END) AS j
        WHERE o.uid IS NOT NULL{keep_null}
        UNION ALL
        SELECT o.*, substr(j.key, {len(PREFIX) + 1}) AS property, j.value AS value,
               'user_property' AS rule, 2 AS rule_rank
        FROM {objects} AS o,
             json_each(CASE WHEN json_type(o.p) = 'OBJECT' THEN o.p END) AS j
        WHERE o.uid IS NOT NULL AND starts_with(j.key, '{PREFIX}')
              AND length(j.key) > {len(PREFIX)}{keep_null}
        UNION ALL
        SELECT o.*, json_extract_string(o.p, {upe}) AS property, CAST('true' AS JSON) AS value,
               'user_property_event' AS rule, 3 AS rule_rank
        FROM {objects} AS o
        WHERE o.uid IS NOT NULL AND json_type(o.p, {upe}) = 'VARCHAR'
              AND json_extract_string(o.p, {upe}) <> ''"""


#: Reasons a received object (or one of its keys) made nothing, as counted by :func:`issues_sql`.
ISSUES = ("no_user_id", "empty_user_property_name", "invalid_user_property_event")


def issues_sql(objects: str) -> str:
    """SQL counting, over ``objects`` (columns ``p``, ``uid``), in one scan, the received
    objects and what the rules skipped.

    One row; columns ``objects`` BIGINT (all received objects), then one BIGINT per reason of
    :data:`ISSUES` (zero counts included).
    """
    upe = json_path("user_property_event")
    empty = json_path(PREFIX)
    return f"""
        SELECT count(*) AS objects,
               count(*) FILTER (WHERE uid IS NULL) AS no_user_id,
               count(*) FILTER (WHERE uid IS NOT NULL AND json_type(p) = 'OBJECT'
                                AND json_exists(p, {empty})) AS empty_user_property_name,
               count(*) FILTER (WHERE uid IS NOT NULL AND json_type(p) = 'OBJECT'
                                AND json_exists(p, {upe})
                                AND (json_type(p, {upe}) <> 'VARCHAR'
                                     OR json_extract_string(p, {upe}) = ''))
                   AS invalid_user_property_event
        FROM {objects}"""
