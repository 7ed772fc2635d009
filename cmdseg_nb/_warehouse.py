"""Rebuild flattened warehouse rows into Segment events (pure SQL generation).

Segment's warehouse connector (and RudderStack's, which writes the same shape) flattens each
event into columns: traits/properties lose their nesting and original spelling, ``context``
becomes ``context_*`` columns, the event name becomes a slug in ``event`` and is kept verbatim
in ``event_text``. Mappings are written against raw events (``$.traits.plan``,
``$.context.page.url``), so each row is rebuilt into a raw-shaped event before mapping.
Source: Segment docs, "Warehouse Schemas"; ``../shared/spec/warehouse-exports.md``.

What can be restored and what cannot:

* ``context_*`` columns whose names Segment's Spec defines (``context_page_url`` ->
  ``context.page.url``, ``context_user_agent`` -> ``context.userAgent``) are restored to the Spec's
  nesting and camelCase; other ``context_*`` columns stay as one snake_case key under
  ``context`` and are reported as not restored.
* Trait and property names stay as exported (``first_name``, ``address_city``): the original
  camelCase or dotted names are lost and reported once per export.
* A NULL cell means "not sent" and the key is left out; an explicit null cannot be recovered.
* VARCHAR cells holding a JSON array or object (``'["a","b"]'``) are parsed back.
"""
from __future__ import annotations

from collections.abc import Iterable

from ._db import ident, sql_str

__all__ = [
    "SYSTEM_COLUMNS",
    "TABLE_TYPES",
    "context_path",
    "holds_json_sql",
    "json_value_sql",
    "non_empty_sql",
    "object_sql",
    "per_event_tables",
    "scalar_text_sql",
]

#: Warehouse table name -> Segment event type. Other tables are per-event track tables,
#: except ``users`` and ``accounts`` which are upserted snapshots, not events.
TABLE_TYPES = {
    "identifies": "identify",
    "tracks": "track",
    "pages": "page",
    "screens": "screen",
    "groups": "group",
    "aliases": "alias",
}
SNAPSHOT_TABLES = ("users", "accounts")

#: Columns that are never traits or properties (Segment warehouse and Data Lakes system columns).
SYSTEM_COLUMNS = frozenset({
    "id", "message_id", "user_id", "anonymous_id", "received_at", "sent_at", "timestamp",
    "original_timestamp", "uuid", "uuid_ts", "loaded_at", "event", "event_text", "channel",
    "project_id", "type", "version", "group_id", "previous_id", "_source_file",
})
SYSTEM_PREFIXES = ("context_", "metadata_", "integrations_", "_metadata_")
#: For pages and screens the page/screen name and category are top-level fields.
PAGE_TOP_LEVEL = frozenset({"name", "category"})

# Context fields of the Segment Spec ("Context" page): flattened snake_case -> JSON path.
_CONTEXT_SPEC = {
    "ip": ("ip",), "locale": ("locale",), "timezone": ("timezone",),
    "user_agent": ("userAgent",), "group_id": ("groupId",), "active": ("active",),
    "library_name": ("library", "name"), "library_version": ("library", "version"),
    "page_path": ("page", "path"), "page_referrer": ("page", "referrer"),
    "page_search": ("page", "search"), "page_title": ("page", "title"),
    "page_url": ("page", "url"),
    "campaign_name": ("campaign", "name"), "campaign_source": ("campaign", "source"),
    "campaign_medium": ("campaign", "medium"), "campaign_term": ("campaign", "term"),
    "campaign_content": ("campaign", "content"),
    "device_id": ("device", "id"), "device_advertising_id": ("device", "advertisingId"),
    "device_ad_tracking_enabled": ("device", "adTrackingEnabled"),
    "device_manufacturer": ("device", "manufacturer"), "device_model": ("device", "model"),
    "device_name": ("device", "name"), "device_type": ("device", "type"),
    "device_token": ("device", "token"),
    "os_name": ("os", "name"), "os_version": ("os", "version"),
    "app_name": ("app", "name"), "app_version": ("app", "version"),
    "app_build": ("app", "build"), "app_namespace": ("app", "namespace"),
    "screen_width": ("screen", "width"), "screen_height": ("screen", "height"),
    "screen_density": ("screen", "density"), "screen_inner_width": ("screen", "innerWidth"),
    "screen_inner_height": ("screen", "innerHeight"),
    "network_bluetooth": ("network", "bluetooth"), "network_carrier": ("network", "carrier"),
    "network_cellular": ("network", "cellular"), "network_wifi": ("network", "wifi"),
    "location_city": ("location", "city"), "location_country": ("location", "country"),
    "location_latitude": ("location", "latitude"),
    "location_longitude": ("location", "longitude"), "location_speed": ("location", "speed"),
    "location_region": ("location", "region"),
    "referrer_id": ("referrer", "id"), "referrer_type": ("referrer", "type"),
}


def is_system_column(name: str, table_type: str) -> bool:
    """True when a (lower-case) warehouse column is not a trait/property of ``table_type``."""
    if name in SYSTEM_COLUMNS or name.startswith(SYSTEM_PREFIXES):
        return True
    return table_type in ("page", "screen") and name in PAGE_TOP_LEVEL


def context_path(column: str) -> tuple[tuple[str, ...], bool]:
    """The ``context`` JSON path a ``context_*`` column came from, and whether it is restored.

    ``context_page_url`` -> ``(("page", "url"), True)``; ``context_traits_plan_tier`` ->
    ``(("traits", "plan_tier"), True)`` (trait names stay as exported); an unknown
    ``context_session_id`` -> ``(("session_id",), False)``.
    """
    rest = column[len("context_"):]
    if rest in _CONTEXT_SPEC:
        return _CONTEXT_SPEC[rest], True
    if rest.startswith("traits_") and len(rest) > len("traits_"):
        return ("traits", rest[len("traits_"):]), True
    return (rest,), False


def json_value_sql(column: str, duck_type: str) -> str:
    """SQL giving a warehouse cell as a JSON value, or SQL NULL when the cell is NULL.

    VARCHAR cells that hold a valid JSON array or object are parsed back (arrays are stored
    as JSON text); other strings stay strings. Timestamps become ISO-8601 UTC strings with
    milliseconds and ``Z``, as Segment's libraries send them.
    """
    c = ident(column)
    t = duck_type.upper()
    if t in ("VARCHAR", "TEXT", "STRING"):
        return (f"CASE WHEN {c} IS NULL THEN NULL WHEN {holds_json_sql(c)} THEN json({c}) "
                f"ELSE to_json({c}) END")
    if t.startswith("TIMESTAMP"):
        return (f"CASE WHEN {c} IS NULL THEN NULL ELSE to_json(strftime("
                f"CAST({c} AS TIMESTAMPTZ), '%Y-%m-%dT%H:%M:%S.%gZ')) END")
    if t == "DATE":
        return f"CASE WHEN {c} IS NULL THEN NULL ELSE to_json(strftime({c}, '%Y-%m-%d')) END"
    if t == "JSON":
        return c
    if t in ("FLOAT", "DOUBLE", "REAL"):
        # NaN/inf cannot be JSON: leave the key out, like a missing cell.
        return f"CASE WHEN {c} IS NULL OR NOT isfinite({c}) THEN NULL ELSE to_json({c}) END"
    return f"CASE WHEN {c} IS NULL THEN NULL ELSE to_json({c}) END"


def per_event_tables(tables: Iterable) -> list:
    """The per-event track tables (``order_completed``...) among ``tables``: event tables
    (``event_type`` set) other than Segment's :data:`TABLE_TYPES`."""
    return [t for t in tables if t.event_type is not None and t.name not in TABLE_TYPES]


def holds_json_sql(text: str) -> str:
    """SQL: the text cell ``text`` holds a JSON array or object (how :func:`json_value_sql`
    tells warehouse-stored arrays and objects from strings)."""
    return f"(left(ltrim({text}), 1) IN ('[', '{{') AND json_valid({text}))"


def scalar_text_sql(json_type: str, text: str) -> str:
    """SQL: ``text`` (the field's text) when ``json_type`` (its ``json_type``) is a string or
    a number, else NULL: how ids, types and names are read from raw events (objects, arrays
    and booleans are not ids). A CASE, not ``IN (...)``: in a filter DuckDB turns that IN into
    a join (0.35 s of CPU per 1M events)."""
    return (f"CASE {json_type} " + " ".join(f"WHEN '{t}' THEN {text}" for t in (
        "VARCHAR", "BIGINT", "UBIGINT", "DOUBLE", "HUGEINT")) + " END")


def object_sql(entries: list[tuple[str, str]]) -> str:
    """SQL building a JSON object from ``(key, json_sql)`` pairs, leaving out SQL NULL values.

    An entry whose value is SQL NULL ("not sent") is dropped; a JSON ``null`` value is kept.
    Keys are literal strings (a dot in a key is not nesting).
    """
    if not entries:
        return "json('{}')"
    items = ", ".join(
        f"{{'k': {sql_str(k)}, 'v': CAST({v} AS JSON)}}" for k, v in entries
    )
    return (f"CAST(to_json(map_from_entries(list_filter([{items}], "
            f"lambda x: x.v IS NOT NULL))) AS JSON)")


def non_empty_sql(obj_sql: str) -> str:
    """SQL NULL ("not sent") when the JSON object ``obj_sql`` is empty, else the object; the
    object is built once (a CASE naming it twice would build it twice per row)."""
    return f"CAST(NULLIF(CAST({obj_sql} AS VARCHAR), '{{}}') AS JSON)"


def nested_object_sql(entries: list[tuple[tuple[str, ...], str]]) -> str:
    """Like :func:`object_sql` for nested paths: ``(("page", "url"), sql)`` -> ``{"page": {"url": ...}}``.

    A nested object all of whose leaves are NULL is left out.
    """
    groups: dict[str, list] = {}
    leaves: list[tuple[str, str]] = []
    order: list[tuple[str, bool]] = []
    for path, sql in entries:
        if len(path) == 1:
            leaves.append((path[0], sql))
            order.append((path[0], False))
        else:
            if path[0] not in groups:
                groups[path[0]] = []
                order.append((path[0], True))
            groups[path[0]].append((path[1:], sql))
    out: list[tuple[str, str]] = []
    leaf_map = dict(leaves)
    for key, is_group in order:
        if is_group:
            inner = nested_object_sql(groups[key])
            out.append((key, non_empty_sql(inner)))
        else:
            out.append((key, leaf_map[key]))
    return object_sql(out)
