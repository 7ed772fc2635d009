"""The whole mapping as one SQL query over Segment's warehouse tables, for DuckDB, Snowflake,
BigQuery and Spark (Databricks).

``to_sql(config, dialect, schema=...)`` resolves the configuration against the tables' columns
with the same planner as the fast path (``_plan``): triggers, the data field, receiver rules
and which value wins become one query in DuckDB's dialect, which sqlglot transpiles. A few
JSON operations have no common spelling; they are written as placeholder functions and
rendered per dialect (:data:`_RENDER`).

Differences from :func:`cmdseg_nb.user_properties`, by design of a portable query:

* Ties the loader breaks with a hash of the rebuilt event JSON (two copies of one message id
  received at the same instant with different cells; two events of different types sharing a
  message id and an event time) are broken by the warehouse's row order.
* A text cell holding a JSON array or object is re-serialized by the warehouse's JSON functions
  (DuckDB and Spark write it compactly like ``user_properties``; key order and number spelling
  may differ elsewhere). Numbers are spelled by the warehouse (``1e+20`` in DuckDB,
  ``1.0E20`` in Spark).
* "Blank" user ids are the empty string and strings matching ``^\\s*$`` in the warehouse's
  regular expressions.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from . import _receiver
from ._db import ident, sql_str
from ._errors import CmdsegError
from ._plan import Plan, Src, TablePlan, Unplannable, _leaves, plan
from ._warehouse import SNAPSHOT_TABLES, TABLE_TYPES, per_event_tables

__all__ = ["DIALECTS", "to_sql"]

DIALECTS = ("duckdb", "snowflake", "bigquery", "spark")
_FLOAT = ("FLOAT", "DOUBLE", "REAL", "FLOAT4", "FLOAT8")
_NUM = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
        "UINTEGER", "UBIGINT", "INT", "INT64", "LONG", "NUMBER", "DECIMAL", "NUMERIC") + _FLOAT


class ToSqlError(CmdsegError, ValueError):
    """The configuration cannot be written as portable SQL (e.g. a directive other than
    ``@path``/``@if``/literals, a trigger on ``properties``): use ``user_properties``."""


@dataclasses.dataclass(frozen=True)
class _Table:
    name: str
    view: str
    columns: dict
    types: dict
    event_type: str | None
    paths: tuple = ()


@dataclasses.dataclass
class _Schema:
    tables: tuple
    raw_files: tuple = ()
    con: Any = None


def _tables(schema, qualify: str | None) -> list[_Table]:
    from ._export import Export
    out = []
    if isinstance(schema, Export):
        items = [(t.name, t.columns, t.types) for t in schema.tables]
    elif isinstance(schema, dict):
        items = []
        for name, cols in schema.items():
            if isinstance(cols, dict):
                types = {c.lower(): str(t).upper() for c, t in cols.items()}
                names = {c.lower(): c for c in cols}
            else:
                names = {c.lower(): c for c in cols}
                types = dict.fromkeys(names, "VARCHAR")
            items.append((name.lower(), names, types))
    else:
        raise TypeError("schema must be a dict {table: [columns] or {column: type}} or an Export")
    for name, cols, types in items:
        view = f"{qualify}.{ident(name)}" if qualify else ident(name)
        out.append(_Table(name, view, dict(cols), dict(types),
                          None if name in SNAPSHOT_TABLES else TABLE_TYPES.get(name, "track")))
    return out


# ---------------------------------------------------------------------------------------------
# SQL pieces (DuckDB dialect, with placeholder functions CMDSEG_*)


def _col(t: _Table, c: str) -> str:
    return f"t.{ident(t.columns[c])}" if c in t.columns else "CAST(NULL AS VARCHAR)"


def _ts(t: _Table, c: str) -> str:
    return f"TRY_CAST(t.{ident(t.columns[c])} AS TIMESTAMPTZ)" if c in t.columns else "CAST(NULL AS TIMESTAMPTZ)"


def _text(t: _Table, c: str) -> str:
    return f"CAST(t.{ident(t.columns[c])} AS VARCHAR)" if c in t.columns else "CAST(NULL AS VARCHAR)"


def _json_of(src: Src, expr: str) -> tuple[str, str]:
    """(JSON text, value type) SQL of a present value held in ``expr``."""
    if src.kind == "lit":
        return sql_str(_receiver.json_text(src.value)), sql_str(_receiver.value_type(src.value))
    if src.kind == "field":
        return f"CMDSEG_JSON_STR({expr})", "'string'"
    t = src.dtype.upper()
    if t in ("VARCHAR", "TEXT", "STRING") or t.startswith("VARCHAR"):
        looks = f"(LEFT(LTRIM({expr}), 1) IN ('[', '{{') AND CMDSEG_JSON_VALID({expr}))"
        return (f"CASE WHEN {looks} THEN CMDSEG_JSON_MIN({expr}) ELSE CMDSEG_JSON_STR({expr}) END",
                f"CASE WHEN {looks} THEN (CASE WHEN LEFT(LTRIM({expr}), 1) = '[' THEN 'array' "
                f"ELSE 'object' END) ELSE 'string' END")
    if t.startswith("TIMESTAMP") or t == "DATETIME":
        return f"CMDSEG_JSON_STR(CMDSEG_ISO({expr}))", "'string'"
    if t == "DATE":
        return f"CMDSEG_JSON_STR(CAST({expr} AS VARCHAR))", "'string'"
    if t in ("BOOLEAN", "BOOL"):
        return f"CASE WHEN {expr} THEN 'true' ELSE 'false' END", "'boolean'"
    if t in _NUM or t.startswith(("DECIMAL", "NUMERIC")):
        return f"CMDSEG_JSON_NUM({expr})", "'number'"
    raise Unplannable(f"a column of type {src.dtype}")


def _present(src: Src, expr: str) -> str:
    if src.kind == "absent":
        return "FALSE"
    if src.kind == "lit":
        return "TRUE"
    if src.kind == "col" and src.dtype.upper() in _FLOAT:
        return f"({expr} IS NOT NULL AND CMDSEG_FINITE({expr}))"
    return f"({expr} IS NOT NULL)"


def _cell_name(src: Src) -> str:
    return f"c_{src.kind}_{src.dtype}_{src.name}"


def _sources(tp: TablePlan) -> list[Src]:
    out: dict = {}
    for tm in tp.mappings:
        for s in _leaves([sl.src for sl in tm.slots] + [tm.uid, tm.event_src, tm.empty_key]):
            if s.kind in ("col", "field"):
                out[_cell_name(s)] = s
    return list(out.values())


def _uid(src: Src, expr: str) -> str:
    if src.kind == "absent":
        return "CAST(NULL AS VARCHAR)"
    if src.kind == "lit":
        u = _receiver.normalize_user_id(src.value)
        return sql_str(u) if u is not None else "CAST(NULL AS VARCHAR)"
    # receiver rule 1: a string of whitespace only (Python's isspace set, as _receiver) is no id
    return f"CASE WHEN trim({expr}, {sql_str(_receiver.WHITESPACE)}) = '' THEN NULL ELSE {expr} END"


def _value(src: Src, cells: dict[str, str]) -> tuple[str, str, str]:
    """(present, json text, value type) of a slot source in a row of the lean relation."""
    if src.kind == "if":
        c, a, b = src.parts
        pa_, ja, ta = _value(a, cells) if a.kind != "absent" else ("FALSE", "NULL", "NULL")
        pb, jb, tb = _value(b, cells) if b.kind != "absent" else ("FALSE", "NULL", "NULL")
        pc = _value(c, cells)[0]
        return (f"(CASE WHEN {pc} THEN {pa_} ELSE {pb} END)",
                f"(CASE WHEN {pc} THEN {ja} ELSE {jb} END)", f"(CASE WHEN {pc} THEN {ta} ELSE {tb} END)")
    expr = cells.get(_cell_name(src), "NULL")
    js, vt = _json_of(src, expr) if src.kind != "absent" else ("NULL", "NULL")
    return _present(src, expr), js, vt


def _lean(p: Plan, tables: dict[str, _Table]) -> tuple[list[str], list[str]]:
    """Per planned table a SELECT with the same columns (NULL-padded): the union's parts."""
    srcs: dict[str, Src] = {}
    for tp in p.tables:
        for s in _sources(tp):
            srcs[_cell_name(s)] = s
    names = sorted(srcs)
    flags = sorted({tm.mi for tp in p.tables for tm in tp.mappings})
    parts = []
    for ti, tp in enumerate(p.tables):
        t = tables[tp.name]
        ttype = tp.ttype
        event = (f"COALESCE({_text(t, 'event_text')}, {_text(t, 'event')})" if "event_text" in t.columns
                 else _text(t, "event")) if ttype == "track" else "CAST(NULL AS VARCHAR)"
        name = _text(t, "name") if ttype in ("page", "screen") else "CAST(NULL AS VARCHAR)"
        base = {"message_id": _text(t, "id") if "id" in t.columns else _text(t, "message_id"),
                "user_id": _text(t, "user_id"), "anonymous_id": _text(t, "anonymous_id"),
                "event": event, "name": name}
        mine = {_cell_name(s): s for s in _sources(tp)}
        cols = [f"{ti} AS _t", f"{base['message_id']} AS message_id", f"{sql_str(ttype)} AS type",
                f"{base['user_id']} AS user_id", f"{base['anonymous_id']} AS anonymous_id",
                f"{base['event']} AS event", f"{base['name']} AS name",
                f"{_ts(t, 'timestamp')} AS ts", f"{_ts(t, 'original_timestamp')} AS original_timestamp",
                f"{_ts(t, 'received_at')} AS received_at"]
        by_mi = {tm.mi: tm for tm in tp.mappings}
        for mi in flags:
            trig = by_mi[mi].trigger.replace('"event"', base["event"]).replace('"name"', base["name"]) \
                if mi in by_mi else "FALSE"
            cols.append(f"{trig} AS m{mi}")
        for n in names:
            s = srcs[n]
            if n in mine and s.kind == "col":
                cols.append(f"t.{ident(t.columns[s.name])} AS {n}")
            elif n in mine:
                cols.append(f"{base[s.name] if s.name in base else sql_str(ttype)} AS {n}")
            else:
                cols.append(f"CAST(NULL AS {_duck_type(s)}) AS {n}")
        parts.append(f"SELECT {', '.join(cols)} FROM {t.view} AS t")
    return parts, names


def _duck_type(s: Src) -> str:
    if s.kind == "col":
        return s.dtype
    return "VARCHAR"


def _sql(p: Plan, tables: dict[str, _Table]) -> str:
    parts, cell_names = _lean(p, tables)
    # tracks rows whose event is also in a per-event table are left out (as the loader does)
    per_event = [tp.name for tp in p.tables if tp.name not in TABLE_TYPES]
    all_per_event = per_event_tables(tables.values())
    for i, tp in enumerate(p.tables):
        if tp.name == "tracks" and all_per_event:
            pe = " UNION ALL ".join(
                f"SELECT {_text(t, 'id') if 'id' in t.columns else _text(t, 'message_id')} AS message_id, "
                f"{'COALESCE(' + _text(t, 'event_text') + ', ' + _text(t, 'event') + ')' if 'event_text' in t.columns else _text(t, 'event')} AS event, "
                f"{_text(t, 'user_id')} AS user_id, {_text(t, 'anonymous_id')} AS anonymous_id, "
                f"{_ts(t, 'timestamp')} AS ts FROM {t.view} AS t" for t in all_per_event)
            parts[i] = (f"SELECT * FROM ({parts[i]}) AS w WHERE NOT EXISTS (SELECT 1 FROM ({pe}) AS x "
                        f"WHERE x.message_id = w.message_id) AND NOT EXISTS (SELECT 1 FROM ({pe}) AS x "
                        f"WHERE x.event = w.event AND x.user_id IS NOT DISTINCT FROM w.user_id AND "
                        f"x.anonymous_id IS NOT DISTINCT FROM w.anonymous_id AND x.ts = w.ts)")
    del per_event
    flags = sorted({tm.mi for tp in p.tables for tm in tp.mappings})
    matched = " OR ".join(f"m{mi}" for mi in flags)
    uid = _uid(p.uid, _uid_cell(p))
    assigns = []
    for ti, tp in enumerate(p.tables):
        for tm in tp.mappings:
            cells = {n: n for n in cell_names}
            where = f"_t = {ti} AND m{tm.mi} AND uid IS NOT NULL"
            for sl in tm.slots:
                present, js, vt = _value(sl.src, cells)
                assigns.append(
                    f"SELECT uid, {sql_str(sl.prop)} AS property, {js} AS value, {vt} AS value_type, "
                    f"event_time, original_timestamp, received_at, message_id, {tm.mi} AS mapping_index, "
                    f"{sl.rank} AS rule_rank, {sql_str(sl.rule)} AS rule FROM ev WHERE {where} AND {present}")
            if tm.event_src.kind != "absent":
                s = tm.event_src
                name = sql_str(s.value) if s.kind == "lit" else cells[_cell_name(s)]
                ok = ("TRUE" if isinstance(s.value, str) and s.value else "FALSE") if s.kind == "lit" \
                    else f"({name} IS NOT NULL AND {name} <> '')"
                assigns.append(
                    f"SELECT uid, {name} AS property, 'true' AS value, 'boolean' AS value_type, "
                    f"event_time, original_timestamp, received_at, message_id, {tm.mi} AS mapping_index, "
                    f"3 AS rule_rank, 'user_property_event' AS rule FROM ev WHERE {where} AND {ok}")
    if not assigns:
        assigns.append("SELECT CAST(NULL AS VARCHAR) AS uid, CAST(NULL AS VARCHAR) AS property, "
                       "CAST(NULL AS VARCHAR) AS value, CAST(NULL AS VARCHAR) AS value_type, "
                       "CAST(NULL AS TIMESTAMPTZ) AS event_time, CAST(NULL AS TIMESTAMPTZ) AS original_timestamp, "
                       "CAST(NULL AS TIMESTAMPTZ) AS received_at, CAST(NULL AS VARCHAR) AS message_id, "
                       "0 AS mapping_index, 0 AS rule_rank, CAST(NULL AS VARCHAR) AS rule FROM ev WHERE FALSE")
    names = "CASE mapping_index " + " ".join(
        f"WHEN {i} THEN {sql_str(n)}" for i, n in enumerate(p.mapping_names)) + " END"
    return f"""
WITH lean AS ({' UNION ALL '.join(parts)}),
dedup AS (
  SELECT *, COALESCE(ts, original_timestamp, received_at) AS event_time, {uid} AS uid,
         ROW_NUMBER() OVER (PARTITION BY type, message_id ORDER BY received_at DESC NULLS LAST) AS dup_rank
  FROM lean),
ev AS (SELECT * FROM dedup WHERE (dup_rank = 1 OR message_id IS NULL) AND ({matched})),
assignments AS ({' UNION ALL '.join(assigns)}),
ranked AS (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY uid, property ORDER BY event_time DESC NULLS LAST,
             original_timestamp DESC NULLS LAST, received_at DESC NULLS LAST, message_id DESC NULLS LAST,
             mapping_index DESC, rule_rank DESC) AS win_rank
  FROM assignments)
SELECT uid AS user_id, property, value, value_type, event_time AS updated_at, message_id, rule,
       {names} AS mapping
FROM ranked WHERE win_rank = 1
ORDER BY user_id, property"""


def _uid_cell(p: Plan) -> str:
    s = p.uid
    if s.kind in ("col", "field"):
        return _cell_name(s) if s.kind == "col" else s.name
    return "NULL"


# ---------------------------------------------------------------------------------------------
# placeholders per dialect

def _render(dialect: str):
    import sqlglot
    from sqlglot import exp

    def parse(s: str) -> exp.Expression:
        return sqlglot.parse_one(s, read=dialect)

    templates = {
        "duckdb": {
            "CMDSEG_FINITE": 'isfinite({0})',
            "CMDSEG_JSON_STR": "CAST(to_json({0}) AS VARCHAR)",
            "CMDSEG_JSON_NUM": "CAST(to_json({0}) AS VARCHAR)",
            "CMDSEG_JSON_VALID": "json_valid({0})",
            "CMDSEG_JSON_MIN": "CAST(json({0}) AS VARCHAR)",
            "CMDSEG_ISO": "strftime({0}, '%Y-%m-%dT%H:%M:%S.%gZ')",
        },
        "spark": {
            "CMDSEG_FINITE": "(NOT isnan({0}) AND abs({0}) < double('Infinity'))",
            "CMDSEG_JSON_STR": "substring(to_json(array({0})), 2, length(to_json(array({0}))) - 2)",
            "CMDSEG_JSON_NUM": "substring(to_json(array({0})), 2, length(to_json(array({0}))) - 2)",
            "CMDSEG_JSON_VALID": "(get_json_object({0}, '$') IS NOT NULL)",
            "CMDSEG_JSON_MIN": "get_json_object({0}, '$')",
            "CMDSEG_ISO": "date_format({0}, \"yyyy-MM-dd'T'HH:mm:ss.SSS'Z'\")",
        },
        "snowflake": {
            "CMDSEG_FINITE": "({0} NOT IN ('NaN'::FLOAT, 'inf'::FLOAT, '-inf'::FLOAT))",
            "CMDSEG_JSON_STR": "TO_JSON(TO_VARIANT({0}))",
            "CMDSEG_JSON_NUM": "TO_JSON(TO_VARIANT({0}))",
            "CMDSEG_JSON_VALID": "(TRY_PARSE_JSON({0}) IS NOT NULL)",
            "CMDSEG_JSON_MIN": "TO_JSON(TRY_PARSE_JSON({0}))",
            "CMDSEG_ISO": "TO_VARCHAR(CONVERT_TIMEZONE('UTC', {0}), 'YYYY-MM-DD\"T\"HH24:MI:SS.FF3\"Z\"')",
        },
        "bigquery": {
            "CMDSEG_FINITE": '(NOT IS_NAN({0}) AND NOT IS_INF({0}))',
            "CMDSEG_JSON_STR": "TO_JSON_STRING({0})",
            "CMDSEG_JSON_NUM": "TO_JSON_STRING({0})",
            "CMDSEG_JSON_VALID": "(SAFE.PARSE_JSON({0}) IS NOT NULL)",
            "CMDSEG_JSON_MIN": "TO_JSON_STRING(SAFE.PARSE_JSON({0}))",
            "CMDSEG_ISO": "FORMAT_TIMESTAMP('%Y-%m-%dT%H:%M:%E3SZ', {0}, 'UTC')",
        },
    }[dialect]

    def transform(node):
        if isinstance(node, exp.Anonymous) and str(node.name).upper() in templates:
            arg = node.expressions[0].sql(dialect=dialect)
            return parse(templates[str(node.name).upper()].format(arg))
        return node
    return transform


def to_sql(config=None, dialect: str = "duckdb", *, schema, qualify: str | None = None,
           pretty: bool = True) -> str:
    """The mapping as one SQL query over Segment's warehouse tables.

    Parameters
    ----------
    config : MappingConfig, dict, list, str or path, optional
        The Webhooks destination's mappings (default: the recommended identify mapping).
    dialect : {"duckdb", "snowflake", "bigquery", "spark"}
        Target SQL dialect (transpiled from DuckDB's with sqlglot).
    schema : dict or Export
        The tables and their columns, as Segment's warehouse connector writes them:
        ``{"identifies": {"id": "VARCHAR", "user_id": "VARCHAR", "plan": "VARCHAR",
        "seats": "BIGINT", ...}, "tracks": [...], "order_completed": {...}}`` (a list of
        column names means every column is text), or an :class:`Export` whose tables' columns
        and DuckDB types are used. Table names are the warehouse's (``identifies``, ``tracks``,
        ``pages``, per-event tables); ``users`` and ``accounts`` are ignored.
    qualify : str, optional
        Prefix for table names, e.g. ``"analytics.my_source"`` (written as is).
    pretty : bool
        Indent the output.

    Returns
    -------
    str
        A query returning the long table of :func:`cmdseg_nb.user_properties`: ``user_id``,
        ``property``, ``value`` (JSON text), ``value_type``, ``updated_at`` (timestamp),
        ``message_id``, ``rule``, ``mapping``, ordered by ``user_id``, ``property``. See the
        module notes for where a warehouse may differ (hash tie-breaks, number spelling).

    Raises
    ------
    ToSqlError
        When a mapping uses what the planner cannot write as SQL (directives other than
        ``@path``, ``@if`` with ``exists`` and literals; paths into ``context`` or into nested
        values; triggers on fields other than ``type``, ``event``, ``name``).
    ImportError
        When sqlglot is not installed (``pip install sqlglot``).
    """
    from ._properties import _config
    if dialect not in DIALECTS:
        raise ValueError(f"dialect must be one of {DIALECTS}, got {dialect!r}")
    try:
        import sqlglot
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("to_sql needs sqlglot: pip install sqlglot") from exc
    cfg = _config(config)
    tables = _tables(schema, qualify)
    try:
        p = plan(_Schema(tuple(tables)), cfg)
    except Unplannable as exc:
        raise ToSqlError(f"this mapping cannot be written as warehouse SQL: {exc}") from None
    sql = _sql(p, {t.name: t for t in tables})
    tree = sqlglot.parse_one(sql, read="duckdb")
    tree = tree.transform(_render(dialect))
    return tree.sql(dialect=dialect, pretty=pretty)
