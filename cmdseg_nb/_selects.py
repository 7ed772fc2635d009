"""SQL turning warehouse rows and raw events into canonical event columns (pure SQL generation).

Per warehouse table, the SELECT of its rows as the columns of
:data:`~cmdseg_nb._export.EVENT_COLUMNS` with the event rebuilt as JSON (``_warehouse``), or
lean (the scalar columns only, for the planned path of ``_plan``); per raw events file, the
SELECT of its JSON lines; and the anti-joins that leave out ``tracks`` rows whose event is
also in a per-event table. Used by ``_load`` (the canonical events table) and the planner.
Source of the rules: ``../shared/spec/warehouse-exports.md``.
"""
from __future__ import annotations

from collections.abc import Iterable

from ._db import ident, json_path, sql_str
from ._export import LoadReport, WarehouseTable
from ._files import _Source
from ._warehouse import (
    TABLE_TYPES,
    context_path,
    is_system_column,
    json_value_sql,
    nested_object_sql,
    non_empty_sql,
    object_sql,
    scalar_text_sql,
)

__all__ = ["table_selects"]


def _ts(expr: str) -> str:
    """SQL casting a value to TIMESTAMPTZ; a naive value is UTC (session time zone is UTC)."""
    return f"TRY_CAST({expr} AS TIMESTAMPTZ)"


def _iso(expr: str) -> str:
    return f"to_json(strftime({expr}, '%Y-%m-%dT%H:%M:%S.%gZ'))"


def _scalar_sql(cols: dict[str, str], table_type: str) -> dict[str, str]:
    """The canonical scalar columns of a warehouse table as SQL over alias ``t`` (one place, so
    the full and the lean selects cannot drift apart)."""
    def col(c: str) -> str:
        return f"CAST(t.{ident(cols[c])} AS VARCHAR)" if c in cols else "CAST(NULL AS VARCHAR)"

    out = {"message_id": col("id") if "id" in cols else col("message_id"),
           "user_id": col("user_id"), "anonymous_id": col("anonymous_id")}
    for c in ("timestamp", "original_timestamp", "received_at", "sent_at"):
        out[c] = _ts(f"t.{ident(cols[c])}") if c in cols else "CAST(NULL AS TIMESTAMPTZ)"
    if table_type == "track":
        out["event"] = (f"COALESCE({col('event_text')}, {col('event')})" if "event_text" in cols
                        else col("event"))
    else:
        out["event"] = "CAST(NULL AS VARCHAR)"
    page_like = table_type in ("page", "screen")
    out["name"] = col("name") if page_like else "CAST(NULL AS VARCHAR)"
    out["category"] = col("category") if page_like else "CAST(NULL AS VARCHAR)"
    out["type"] = (col("type") if "type" in cols and table_type not in TABLE_TYPES.values()
                   else sql_str(table_type))
    return out


def _scalar_select(sc: dict[str, str], cols: dict[str, str], passthrough: Iterable[str]) -> tuple[str, str]:
    """The SELECT list of the canonical scalar columns (``sc``: :func:`_scalar_sql`), and that
    of the ``passthrough`` cells as ``"col:<name>"`` (to append after any other columns)."""
    head = (f"{sc['message_id']} AS message_id, CAST({sc['type']} AS VARCHAR) AS type, "
            f"{sc['user_id']} AS user_id, {sc['anonymous_id']} AS anonymous_id, "
            f"{sc['event']} AS event, {sc['name']} AS name, {sc['timestamp']} AS timestamp, "
            f"{sc['original_timestamp']} AS original_timestamp, {sc['received_at']} AS received_at")
    extra = "".join(f", t.{ident(cols[c])} AS {ident('col:' + c)}" for c in passthrough)
    return head, extra


def _warehouse_select(src_name: str, view: str, cols: dict[str, str], types: dict[str, str],
                      table_type: str, report: LoadReport, passthrough: Iterable[str] = ()) -> str:
    """SELECT producing canonical event columns from one warehouse table view.

    ``passthrough`` names (lower-case) columns also selected unchanged as ``"col:<name>"``,
    for the planner (``_plan``) which reads cells without rebuilding the event JSON.
    """
    def has(c: str) -> bool:
        return c in cols

    def col(c: str, cast: str = "VARCHAR") -> str:
        return f"CAST(t.{ident(cols[c])} AS {cast})" if has(c) else f"CAST(NULL AS {cast})"

    payload_cols = [c for c in cols if not is_system_column(c, table_type)]
    payload_sql = object_sql([(c, _cell_json(f"t.{ident(cols[c])}", types[c]))
                              for c in payload_cols])
    ctx_entries, unrestored = [], []
    for c in cols:
        if c.startswith("context_"):
            path, ok = context_path(c)
            ctx_entries.append((path, _cell_json(f"t.{ident(cols[c])}", types[c])))
            if not ok:
                unrestored.append(c)
    if unrestored:
        report.unrestored_names[src_name] = unrestored
    context_sql = nested_object_sql(ctx_entries) if ctx_entries else "json('{}')"

    sc = _scalar_sql(cols, table_type)
    msg_id, event_name, name, category = sc["message_id"], sc["event"], sc["name"], sc["category"]
    ts, ots, rat, sat = (sc[c] for c in ("timestamp", "original_timestamp", "received_at",
                                         "sent_at"))
    type_sql = sc["type"]

    if table_type in ("identify", "group"):
        traits_sql, props_sql = payload_sql, "CAST(NULL AS JSON)"
    elif table_type == "alias":
        traits_sql, props_sql = "CAST(NULL AS JSON)", "CAST(NULL AS JSON)"
    else:
        traits_sql, props_sql = "CAST(NULL AS JSON)", payload_sql

    def j(v: str) -> str:
        return f"to_json({v})"

    top = [
        ("type", j(f"CAST({type_sql} AS VARCHAR)")),
        ("messageId", j(msg_id)),
        ("userId", j(sc["user_id"])),
        ("anonymousId", j(sc["anonymous_id"])),
        ("event", j(event_name)),
        ("name", j(name)),
        ("category", j(category)),
        ("groupId", j(col("group_id"))),
        ("previousId", j(col("previous_id"))),
        ("traits", traits_sql),
        ("properties", props_sql),
        ("context", non_empty_sql(context_sql)),
        ("timestamp", _iso(ts)),
        ("originalTimestamp", _iso(ots)),
        ("sentAt", _iso(sat)),
        ("receivedAt", _iso(rat)),
        ("channel", j(col("channel"))),
    ]
    event_json = object_sql(top)
    head, extra = _scalar_select(sc, cols, passthrough)
    return f"""
        SELECT {head},
               {event_json} AS event_json, {sql_str(src_name)} AS source{extra}
        FROM {ident(view)} AS t"""


def _lean_select(view: str, cols: dict[str, str], table_type: str,
                 passthrough: Iterable[str] = ()) -> str:
    """Like :func:`_warehouse_select` without rebuilding the event: the canonical scalar
    columns (same SQL expressions) and the ``passthrough`` cells as ``"col:<name>"``."""
    head, extra = _scalar_select(_scalar_sql(cols, table_type), cols, passthrough)
    return f"""
        SELECT {head}{extra}
        FROM {ident(view)} AS t"""


def _cell_json(qualified: str, duck_type: str) -> str:
    # json_value_sql quotes a bare column name; here the column is already qualified.
    return json_value_sql("\0", duck_type).replace(ident("\0"), qualified)


def _raw_select(src: _Source) -> str:
    files = "[" + ", ".join(sql_str(p) for p in src.paths) + "]"
    fmt = "auto"
    j = "CAST(r.json AS JSON)"

    def s(key: str) -> str:
        # Text of a top-level string/number field; objects/arrays/booleans are not ids.
        return scalar_text_sql(f"json_type({j}, {json_path(key)})", f"json_extract_string({j}, {json_path(key)})")

    return f"""
        SELECT {s('messageId')} AS message_id, {s('type')} AS type, {s('userId')} AS user_id,
               {s('anonymousId')} AS anonymous_id, {s('event')} AS event, {s('name')} AS name,
               {_ts(f"json_extract_string({j}, {json_path('timestamp')})")} AS timestamp,
               {_ts(f"json_extract_string({j}, {json_path('originalTimestamp')})")} AS original_timestamp,
               {_ts(f"json_extract_string({j}, {json_path('receivedAt')})")} AS received_at,
               {j} AS event_json, {sql_str(src.name)} AS source
        FROM read_json_objects({files}, format={sql_str(fmt)}, ignore_errors=true) AS r
        WHERE r.json IS NOT NULL"""


def _twin_filters(per_event_selects: Iterable[str]) -> tuple[str, str, str]:
    """The per-event tables' rows (``pe``: message id, event, user, anonymous id, time) and the
    two conditions matching a ``tracks`` row ``w`` to its twin ``x`` there: by id, by content."""
    pe = " UNION ALL ".join(
        f"SELECT message_id, event, user_id, anonymous_id, timestamp FROM ({q})"
        for q in per_event_selects)
    by_id = "x.message_id = w.message_id"
    by_content = ("x.event = w.event AND x.user_id IS NOT DISTINCT FROM w.user_id AND "
                  "x.anonymous_id IS NOT DISTINCT FROM w.anonymous_id AND "
                  "x.timestamp = w.timestamp")
    return pe, by_id, by_content


def table_selects(tables: Iterable[WarehouseTable], *, report: LoadReport | None = None,
                  passthrough: dict[str, list[str]] | None = None,
                  lean: bool = False, twins: bool = True) -> list[tuple[str, str]]:
    """Per event table, the SELECT of its rows as canonical event columns (pure SQL).

    ``tracks`` rows whose event is also in a per-event table are left out (see
    :func:`~cmdseg_nb.load_export`). ``passthrough`` maps a table name to lower-case columns also
    selected unchanged as ``"col:<name>"``. Returns ``[(table name, sql), ...]``; the columns
    are those of :data:`~cmdseg_nb._export.EVENT_COLUMNS` but ``traits``, ``properties``, ``context`` and the
    receiver's ``user_id`` (here the raw ``user_id`` cell as VARCHAR). With ``lean`` the
    event JSON is not built either (no ``event_json``, ``source``). With ``twins=False``,
    ``tracks`` keeps every row (a superset, for look-ups that tolerate one).
    """
    report = report if report is not None else LoadReport()
    passthrough = passthrough or {}
    out: list[tuple[str, str]] = []
    per_event_sql: list[str] = []
    tracks_sql: str | None = None
    for t in tables:
        if t.event_type is None:
            continue
        ttype = TABLE_TYPES.get(t.name, "track")  # any other table is a per-event track table
        if lean:
            sel = _lean_select(t.view, t.columns, ttype, passthrough.get(t.name, ()))
        else:
            sel = _warehouse_select(t.name, t.view, t.columns, t.types, ttype, report,
                                    passthrough.get(t.name, ()))
        if t.name == "tracks":
            tracks_sql = sel
            continue
        if t.name not in TABLE_TYPES:
            per_event_sql.append(sel)
        out.append((t.name, sel))
    if tracks_sql is not None:
        if per_event_sql and twins:
            # A track event is written twice: to `tracks` (common columns) and to its per-event
            # table (the same plus properties). Keep the per-event row. Twins share `id` in
            # Segment's warehouses; some loaders write different ids, so an (event, userId,
            # anonymousId, timestamp) match counts too. Two anti-joins (not one OR) so that
            # DuckDB hash-joins them.
            pe, by_id, by_content = _twin_filters(per_event_sql)
            tracks_sql = (f"SELECT * FROM ({tracks_sql}) AS w "
                          f"WHERE NOT EXISTS (SELECT 1 FROM ({pe}) AS x WHERE {by_id}) "
                          f"AND NOT EXISTS (SELECT 1 FROM ({pe}) AS x WHERE {by_content})")
        out.append(("tracks", tracks_sql))
    return out

