"""Column-level plan of a mapping over warehouse tables: the fast path of ``user_properties``.

The generic path rebuilds every warehouse row into a Segment event (JSON), resolves each
mapping over that JSON, unpivots every received object with ``json_each`` and ranks every
assignment. Most mappings need far less: the default whole-event identify mapping makes one
property per non-NULL trait column of ``identifies``; ``{"userId": {"@path": "$.userId"},
"user_property.plan": {"@path": "$.properties.plan"}}`` reads one column. For such mappings this
module works out statically, per table, which cells become which properties, and the query

1. reads only those columns (no JSON),
2. de-duplicates on ``(type, message_id)`` as the loader does (only rows whose message id is
   seen more than once, or is NULL, are rebuilt as JSON, for the loader's hash tie-break),
3. aggregates per user and column, keeping the latest cell by the which-value-wins order
   (NULL cells are "not sent" and skipped), and
4. unpivots only the aggregated rows, then picks the winner per (user, property).

The result is the same long table as the generic path, row for row. A configuration the
planner cannot analyse (other directives, paths into ``context`` or into nested values,
mappings that name the user differently, raw NDJSON sources) is left to the generic path:
:func:`plan` returns ``None`` and says why in ``Plan.reason``... of the caller's choice.

Pure SQL generation here; :func:`run` is the thin layer that executes it.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd

from . import _receiver
from ._db import duckdb_errors, ident, sql_str
from ._errors import CmdsegError
from ._frame import empty_long, long_frame
from ._warehouse import TABLE_TYPES, is_system_column, json_value_sql

__all__ = ["Plan", "Unplannable", "plan", "run"]

_WHOLE = ("", ".")
_TOP_FIELDS = {"userId": "user_id", "anonymousId": "anonymous_id", "messageId": "message_id",
               "event": "event", "name": "name", "type": "type"}
_FLOAT = ("FLOAT", "DOUBLE", "REAL")


class Unplannable(Exception):
    """The configuration (or export) needs the generic path; the message says why."""


@dataclasses.dataclass(frozen=True)
class Src:
    """Where a received object's value comes from, in one table.

    kind: ``absent`` (the key is left out), ``col`` (a warehouse cell; ``name`` is the lower-case
    column, ``dtype`` its DuckDB type), ``field`` (a rebuilt top-level string field: ``name`` is
    the canonical column, e.g. ``event``), ``lit`` (``value``, a JSON scalar).
    """

    kind: str
    name: str = ""
    dtype: str = "VARCHAR"
    value: Any = None
    parts: tuple = ()  # kind "if": (exists, then, else) sources


ABSENT = Src("absent")


@dataclasses.dataclass
class Slot:
    """One static assignment: property ``prop`` from ``src`` by ``rule`` of mapping ``mi``."""

    mi: int
    rule: str
    rank: int
    prop: str
    src: Src


@dataclasses.dataclass
class TableMapping:
    """What one mapping does with the rows of one table."""

    mi: int
    trigger: str          # SQL predicate over the table's select, "TRUE" when always
    uid: Src              # where P.userId comes from
    slots: list[Slot]
    event_src: Src        # P.user_property_event
    empty_key: Src        # P["user_property."] (reported when present)


@dataclasses.dataclass
class TablePlan:
    name: str
    ttype: str
    mappings: list[TableMapping]
    columns: list[str]    # lower-case columns read as "col:<name>"


@dataclasses.dataclass
class Plan:
    """A configuration resolved against an export's warehouse tables."""

    tables: list[TablePlan]
    mapping_names: list[str]
    null_clears: bool
    uid: Src = ABSENT


# ---------------------------------------------------------------------------------------------
# Analysis


def _payload(table, ttype: str) -> list[str]:
    return [c for c in table.columns if not is_system_column(c, ttype)]


def _resolve_path(path: str, table, ttype: str) -> Src:
    from ._mappingkit import _path_keys
    keys = _path_keys(path[2:] if path.startswith("$.") else path[1:] if path.startswith("$") else path)
    if not path.startswith("$") or keys is None:
        raise Unplannable(f"path {path!r}")
    head = keys[0]
    if head in ("traits", "properties"):
        holder = "traits" if ttype in ("identify", "group") else (
            None if ttype == "alias" else "properties")
        if holder != head:
            return ABSENT  # the rebuilt event has no such object
        if len(keys) == 1:
            raise Unplannable(f"path {path!r} (a whole object as a value)")
        payload = _payload(table, ttype)
        if keys[1] not in payload:
            return ABSENT
        if len(keys) > 2:
            raise Unplannable(f"path {path!r} (into a cell's value)")
        return Src("col", keys[1], table.types[keys[1]].upper())
    if head in _TOP_FIELDS and len(keys) == 1:
        field = _TOP_FIELDS[head]
        if field == "event" and ttype != "track":
            return ABSENT
        if field == "name" and ttype not in ("page", "screen"):
            return ABSENT
        if field == "type" and "type" in table.columns:
            raise Unplannable("a table with its own type column")
        return Src("field", field)
    raise Unplannable(f"path {path!r}")


def _value_src(v: Any, table, ttype: str) -> Src:
    if v is None or isinstance(v, (str, bool, int, float)):
        return Src("lit", value=v)
    if isinstance(v, dict) and len(v) == 1 and "@path" in v and isinstance(v["@path"], str):
        return _resolve_path(v["@path"], table, ttype)
    if (isinstance(v, dict) and len(v) == 1 and isinstance(v.get("@if"), dict)
            and set(v["@if"]) <= {"exists", "then", "else"} and "exists" in v["@if"]):
        from ._fql import js_falsy
        o = v["@if"]
        cond = _value_src(o["exists"], table, ttype)
        if cond.kind == "if":
            raise Unplannable("nested @if")
        then = _value_src(o["then"], table, ttype) if "then" in o else ABSENT
        other = (_value_src(o["else"], table, ttype) if "else" in o and not js_falsy(o["else"])
                 else ABSENT)
        if cond.kind == "lit" and cond.value is None:
            return other
        if cond.kind == "lit":
            return then
        if cond.kind == "absent":
            return other
        return Src("if", parts=(cond, then, other))
    raise Unplannable(f"data value {v!r}")


def _table_mapping(mi: int, m, table, ttype: str, trigger: str, null_clears: bool) -> TableMapping:
    data = m.data
    slots: list[Slot] = []
    if isinstance(data, dict) and set(data) == {"@path"} and data["@path"] in ("$.", "$"):
        # the whole event: traits (identify/group) become properties; no user_property keys
        uid = Src("field", "user_id")
        if ttype in ("identify", "group"):
            slots = [Slot(mi, "traits", 1, c, Src("col", c, table.types[c].upper()))
                     for c in _payload(table, ttype)]
        return TableMapping(mi, trigger, uid, slots, ABSENT, ABSENT)
    if not isinstance(data, dict) or any(k.startswith("@") for k in data):
        raise Unplannable("data is not an object of keys")
    uid, event_src, empty_key = ABSENT, ABSENT, ABSENT
    for key, v in data.items():
        if key == "userId":
            uid = _value_src(v, table, ttype)
        elif key == "traits":
            if v != {"@path": "$.traits"}:
                raise Unplannable("traits from something else than $.traits")
            if ttype in ("identify", "group"):
                slots.extend(Slot(mi, "traits", 1, c, Src("col", c, table.types[c].upper()))
                             for c in _payload(table, ttype))
        elif key == _receiver.PREFIX:
            empty_key = _value_src(v, table, ttype)
        elif key.startswith(_receiver.PREFIX):
            src = _value_src(v, table, ttype)
            slots.append(Slot(mi, "user_property", 2, key[len(_receiver.PREFIX):], src))
        elif key == "user_property_event":
            event_src = _value_src(v, table, ttype)
            if event_src.kind in ("col", "if") or (event_src.kind == "lit" and event_src.value is not None
                                           and not isinstance(event_src.value, str)):
                raise Unplannable("user_property_event from a cell")
        else:
            _value_src(v, table, ttype)  # other keys make nothing, but must be plannable
    if uid.kind == "if" or (uid.kind == "col" and uid.dtype not in ("VARCHAR",)):
        raise Unplannable("userId from a non-text cell")
    if not null_clears:
        slots = [s for s in slots if not (s.src.kind == "lit" and s.src.value is None)]
    slots = [s for s in slots if s.src.kind != "absent"]
    # traits first, then user_property keys, then user_property_event (rule 5): slots keep order
    return TableMapping(mi, trigger, uid, slots, event_src, empty_key)


def _leaves(srcs) -> list[Src]:
    out = []
    for s in srcs:
        out.extend(_leaves(s.parts) if s.kind == "if" else [s])
    return out


def _trigger_fields(node: dict, out: set) -> None:
    if node.get("type") == "group":
        for c in node["children"]:
            _trigger_fields(c, out)
    else:
        out.add(node["type"])


def _trigger(con, m, table, ttype: str, select_sql: str) -> str | None:
    """SQL predicate of the trigger on this table's select, or None when it never matches."""
    from ._fql import fql_matches, parse_fql
    ast = parse_fql(m.trigger)
    fields: set = set()
    _trigger_fields(ast, fields)
    if fields <= {"event-type"}:
        return "TRUE" if fql_matches(ast, {"type": ttype}) else None
    if fields <= {"event-type", "event", "name"}:
        col = "event" if "event" in fields else "name"
        if "event" in fields and "name" in fields:
            raise Unplannable("trigger on both event and name")
        if (col == "event" and ttype != "track") or (col == "name" and ttype not in ("page", "screen")):
            return "TRUE" if fql_matches(ast, {"type": ttype}) else None
        if con is None:  # no data to look at (to_sql): compile the conditions on the column
            return _static_trigger(ast, ttype, col)
        values = [r[0] for r in con.execute(
            f"SELECT DISTINCT {col} FROM ({select_sql}) LIMIT 10001").fetchall()]
        if len(values) > 10000:
            raise Unplannable(f"trigger on {col} with more than 10,000 distinct values")
        hits = []
        for v in values:
            ev = {"type": ttype}
            if v is not None:
                ev[col] = v
            if fql_matches(ast, ev):
                hits.append(v)
        if not hits:
            return None
        if len(hits) == len(values):
            return "TRUE"
        parts = [f"{col} IN ({', '.join(sql_str(v) for v in hits if v is not None)})"] if any(
            v is not None for v in hits) else []
        if None in hits:
            parts.append(f"{col} IS NULL")
        return "(" + " OR ".join(parts) + ")"
    raise Unplannable("trigger on fields other than type, event, name")


def _static_trigger(node: dict, ttype: str, col: str) -> str:
    """Portable SQL of a trigger over ``type`` (static per table) and one text column."""
    from ._fql import fql_matches, js_string
    if node.get("type") == "group":
        kids = [_static_trigger(c, ttype, col) for c in node["children"]]
        op = {"and": " AND ", "or": " OR "}.get(node["operator"])
        return "(" + op.join(kids) + ")" if op else "FALSE"
    if node["type"] == "event-type":
        return "TRUE" if fql_matches({"type": "group", "operator": "and", "children": [node]},
                                     {"type": ttype}) else "FALSE"
    op, c = node["operator"], ident(col)
    if op in ("=", "!="):
        eq = f"COALESCE({c} = {sql_str(js_string(node.get('value')))}, FALSE)"
        return eq if op == "=" else f"NOT {eq}"
    if op == "exists":
        return f"{c} IS NOT NULL"
    if op == "not_exists":
        return f"{c} IS NULL"
    raise Unplannable(f"trigger operator {op!r} in SQL for a warehouse")


def plan(export, config, *, null_clears: bool = True) -> Plan:
    """Resolve ``config`` against the warehouse tables of ``export``.

    Raises
    ------
    Unplannable
        When the generic path is needed (the message says why).
    """
    from ._load import table_selects
    if export.raw_files:
        raise Unplannable("raw event files (only warehouse tables are planned)")
    tables = [t for t in export.tables if t.event_type is not None]
    if not tables:
        raise Unplannable("no event tables")
    selects = (dict(table_selects(tables, lean=True)) if export.con is not None
               else {t.name: "" for t in tables})
    out: list[TablePlan] = []
    for t in tables:
        if t.name not in selects:
            continue
        ttype = TABLE_TYPES.get(t.name, "track")
        tms = []
        for mi, m in enumerate(config.mappings):
            trig = _trigger(export.con, m, t, ttype, selects[t.name])
            if trig is None:
                continue
            tms.append(_table_mapping(mi, m, t, ttype, trig, null_clears))
        if tms:
            cols = sorted({x.name for tm in tms
                           for x in _leaves([s.src for s in tm.slots] + [tm.uid, tm.event_src, tm.empty_key])
                           if x.kind == "col"})
            out.append(TablePlan(t.name, ttype, tms, cols))
    uids = {tm.uid for tp in out for tm in tp.mappings}
    if len(uids) > 1:
        raise Unplannable("mappings name the user from different fields")
    # Tables of the same event types take part in de-duplication (per type and message id)
    # even when no mapping reads them.
    types = {tp.ttype for tp in out}
    planned = {tp.name for tp in out}
    out += [TablePlan(t.name, TABLE_TYPES.get(t.name, "track"), [], []) for t in tables
            if t.name in selects and t.name not in planned and TABLE_TYPES.get(t.name, "track") in types]
    return Plan(out, [m.name for m in config.mappings], null_clears, uids.pop() if uids else ABSENT)


# ---------------------------------------------------------------------------------------------
# SQL


def _cell(src: Src) -> str:
    """SQL of the raw value (typed; JSON for ``if``) of a source in a table's select."""
    if src.kind == "if":
        c, a, b = src.parts
        ja = _to_json(a, _cell(a)) if a.kind != "absent" else "NULL"
        jb = _to_json(b, _cell(b)) if b.kind != "absent" else "NULL"
        return (f"CASE WHEN {_present(c)} THEN CASE WHEN {_present(a)} THEN {ja} END "
                f"ELSE CASE WHEN {_present(b)} THEN {jb} END END")
    if src.kind == "col":
        return ident(f"col:{src.dtype}:{src.name}")
    if src.kind == "field":
        return ident(src.name)
    if src.kind == "lit":
        return "NULL"
    return "NULL"


def _present(src: Src) -> str:
    """SQL: the key is in the received object (not "not sent")."""
    if src.kind == "absent":
        return "FALSE"
    if src.kind == "lit":
        return "TRUE"
    if src.kind == "if":
        c, a, b = src.parts
        return f"(CASE WHEN {_present(c)} THEN {_present(a)} ELSE {_present(b)} END)"
    c = _cell(src)
    if src.kind == "col" and src.dtype in _FLOAT:
        return f"({c} IS NOT NULL AND isfinite({c}))"
    return f"({c} IS NOT NULL)"


def _to_json(src: Src, expr: str) -> str:
    """SQL JSON of a (non-NULL) value of ``src`` held in ``expr``."""
    if src.kind == "lit":
        return f"CAST({sql_str(_receiver.json_text(src.value))} AS JSON)"
    if src.kind == "field":
        return f"to_json({expr})"
    if src.kind == "if":
        return expr
    return json_value_sql("\0", src.dtype).replace(ident("\0"), expr)


def _uid_sql(src: Src) -> str:
    """Receiver rule 1 over a text source (a string is kept unless blank)."""
    if src.kind == "absent":
        return "CAST(NULL AS VARCHAR)"
    if src.kind == "lit":
        u = _receiver.normalize_user_id(src.value)
        return sql_str(u) if u is not None else "CAST(NULL AS VARCHAR)"
    s = _cell(src)
    return (f"CASE WHEN {s} IS NULL THEN NULL WHEN unicode({s}) > 32 AND unicode({s}) NOT IN "
            f"(133, 160, 5760, 8232, 8233, 8239, 8287, 12288) AND NOT (unicode({s}) BETWEEN 8192 AND 8202) "
            f"THEN {s} WHEN regexp_full_match({s}, '{_receiver._WS}') THEN NULL ELSE {s} END")


def _event_ok(src: Src) -> str:
    """SQL: P.user_property_event is a non-empty string."""
    if src.kind == "absent":
        return "FALSE"
    if src.kind == "lit":
        return "TRUE" if isinstance(src.value, str) and src.value != "" else "FALSE"
    return f"({_cell(src)} IS NOT NULL AND {_cell(src)} <> '')"


def _event_name(src: Src) -> str:
    return sql_str(src.value) if src.kind == "lit" else _cell(src)


def _lean_selects(p: Plan, selects: dict[str, str], export_tables, *, hashed: bool = False,
                  only: set | None = None) -> list[str]:
    """One SELECT per table: ordering columns, uid, one trigger flag per mapping, cells read.

    ``selects`` are ``_load.table_selects`` (lean or not) with the plan's passthrough; with
    ``hashed`` they hold ``event_json`` and ``event_hash`` is the loader's hash of it.
    """
    uid = _uid_sql(p.uid)
    out = []
    for ti, tp in enumerate(p.tables):
        if tp.name not in selects or (only is not None and ti not in only):
            continue
        cols = [f"{ti} AS _t", "message_id", "type", "received_at", "original_timestamp",
                "COALESCE(timestamp, original_timestamp, received_at) AS event_time",
                f"{uid if tp.mappings else 'CAST(NULL AS VARCHAR)'} AS uid",
                "md5(CAST(event_json AS VARCHAR)) AS event_hash" if hashed
                else "CAST(NULL AS VARCHAR) AS event_hash"]
        for tm in tp.mappings:
            cols.append(f"{tm.trigger} AS {ident(f'm{tm.mi}')}")
        for name in sorted({x.name for tm in tp.mappings
                            for x in _leaves([s.src for s in tm.slots] + [tm.event_src, tm.empty_key])
                            if x.kind == "field"}):
            if name not in ("message_id", "type"):
                cols.append(ident(name))
        if tp.mappings:
            tbl = next(t for t in export_tables if t.name == tp.name)
            cols += [f"{ident('col:' + c)} AS {ident(f'col:{tbl.types[c].upper()}:{c}')}"
                     for c in tp.columns]
        out.append(f"SELECT {', '.join(cols)} FROM ({selects[tp.name]})")
    return out


def _union(parts: list[str]) -> str:
    return " UNION ALL BY NAME ".join(f"({x})" for x in parts) if parts else ""


def _matched(p: Plan, only: set | None = None) -> str:
    flags = [ident(f"m{tm.mi}") for ti, tp in enumerate(p.tables) for tm in tp.mappings
             if only is None or ti in only]
    return "(" + " OR ".join(f"COALESCE({f}, FALSE)" for f in dict.fromkeys(flags)) + ")"


# Which-value-wins order as one BIGINT per event: event time in microseconds (times 1024),
# plus, for a user's events sharing one event time, their rank by the rest of the order
# (originalTimestamp, receivedAt, message id, event hash). NULL sorts lowest, like the generic
# path's DESC NULLS LAST. Times outside 1830-2110, or more than 1023 events of one user at one
# instant, raise and the caller falls back to the generic path.
_NULL_US = -(2 ** 52)
_OUT_OF_RANGE = "cmdseg_plan: order key out of range"
_K_TIME = (f"(CASE WHEN event_time IS NULL THEN {_NULL_US} "
           f"WHEN event_time BETWEEN TIMESTAMPTZ '1830-01-01 00:00:00+00' AND TIMESTAMPTZ '2110-01-01 00:00:00+00' "
           f"THEN epoch_us(event_time) ELSE error('{_OUT_OF_RANGE}') END) * 1024")
_TIE_ORDER = ("original_timestamp ASC NULLS FIRST, received_at ASC NULLS FIRST, "
              "message_id ASC NULLS FIRST, event_hash ASC NULLS FIRST")


def _k_time(k: str) -> str:
    """The event time held in an order key (NULL for the NULL sentinel)."""
    return (f"CASE WHEN {k} >= {_NULL_US + 1} * 1024 "
            f"THEN CAST(make_timestamp(CAST(floor({k} / 1024) AS BIGINT)) AS TIMESTAMPTZ) END")


_KEY_COLS = ("uid", "event_time", "original_timestamp", "received_at", "message_id", "event_hash")


def tie_ranks_sql(ev: str, ties: str) -> str:
    """Rank (from 0) of each distinct order key among a user's events sharing one event time."""
    on = "x.uid = e.uid AND x.event_time IS NOT DISTINCT FROM e.event_time"
    return f"""
        SELECT DISTINCT {', '.join(_KEY_COLS)},
               dense_rank() OVER (PARTITION BY uid, event_time ORDER BY {_TIE_ORDER}) - 1 AS rnk
        FROM {ev} AS e WHERE EXISTS (SELECT 1 FROM {ties} AS x WHERE {on})"""


def _mid(enc: str) -> str:
    """The message id held in an encoded ``mid`` (see :func:`keyed_sql`)."""
    return f"CASE WHEN starts_with({enc}, '1') THEN substr({enc}, 2) END"


def keyed_sql(ev: str, ranks: str) -> str:
    """``ev`` plus ``k`` BIGINT, the order key (``ranks`` from :func:`tie_ranks_sql`)."""
    on = " AND ".join(f"r.{c} IS NOT DISTINCT FROM e.{c}" for c in _KEY_COLS)
    # mid: the message id made non-NULL ('1' + id, or '0'), for arg_max (DuckDB's arg_max_null
    # loses a NULL argument when partial aggregates are combined)
    return (f"SELECT e.*, {_K_TIME.replace('event_time', 'e.event_time')} + COALESCE(r.rnk, 0) AS k, "
            f"COALESCE('1' || e.message_id, '0') AS mid FROM {ev} AS e "
            f"LEFT JOIN {ranks} AS r ON {on}")


def events_sql(p: Plan, lean: str, special: str, slow: str, only: set | None = None) -> str:
    """De-duplicated, matched events: rows whose message id is seen once, plus the winners
    (kept in relation ``slow``) of the rows whose id is seen more than once or is NULL."""
    return (f"SELECT * FROM ({lean}) WHERE message_id IS NOT NULL AND {_matched(p, only)} "
            f"AND message_id NOT IN (SELECT message_id FROM {special}) "
            f"UNION ALL BY NAME SELECT * FROM {slow} WHERE {_matched(p, only)}"
            + (f" AND _t IN ({', '.join(map(str, sorted(only)))})" if only is not None else ""))


def _by_expr(pairs: list[tuple[int, str]]) -> str:
    """SQL choosing, per table index ``_t``, one of a few expressions (one CASE at most)."""
    groups: dict[str, list[int]] = {}
    for ti, e in pairs:
        groups.setdefault(e, []).append(ti)
    if len(groups) == 1:
        return next(iter(groups))
    return "CASE " + " ".join(f"WHEN _t IN ({', '.join(map(str, tis))}) THEN {e}"
                              for e, tis in groups.items()) + " END"


def _in_tables(tis, all_tis) -> str:
    return ("TRUE" if all_tis is not None and sorted(tis) == sorted(all_tis)
            else f"_t IN ({', '.join(map(str, sorted(tis)))})")


def aggregate_sql(p: Plan, kev) -> dict:
    """The aggregation queries over keyed events (``kev(tables)`` gives the relation of the
    events of a set of table indexes, with ``k``).

    ``static``: per user, every static slot's latest value, message id and key, plus the counts
    of received objects of the tables read; it reads the tables with slots (or with nothing but
    counts). ``dynamic``: per mapping with ``user_property_event``, per (user, event name) the
    latest key and message id (and the counts of the tables only it reads). ``unpivot``:
    ``(property, sql over relation agg)`` per slot. Slots with the same source in several tables
    share one aggregate; CASE inside aggregates, not FILTER (DuckDB runs many FILTERs ~3x slower).
    """
    static_t = {ti for ti, tp in enumerate(p.tables) for tm in tp.mappings
                if tm.slots or tm.event_src.kind == "absent"}
    counted: dict[int, str] = {ti: "static" for ti in static_t}
    aggs, unpivot, dyn = [], [], []

    def counts_for(mi: int, tms, tis: set) -> list[str]:
        tms = [(ti, tm) for ti, tm in tms if ti in tis]
        if not tms:
            return []
        m = f"{ident(f'm{mi}')} AND {_in_tables([ti for ti, _ in tms], None)}"
        empty_p = _by_expr([(ti, _present(tm.empty_key)) for ti, tm in tms])
        bad_ev = _by_expr([(ti, f"({_present(tm.event_src)} AND NOT {_event_ok(tm.event_src)})")
                           for ti, tm in tms])
        return [f"count(CASE WHEN {m} THEN 1 END) AS {ident(f'n_{mi}')}",
                f"count(CASE WHEN {m} AND uid IS NULL THEN 1 END) AS {ident(f'nu_{mi}')}",
                f"count(CASE WHEN {m} AND uid IS NOT NULL AND {empty_p} THEN 1 END) AS {ident(f'ne_{mi}')}",
                f"count(CASE WHEN {m} AND uid IS NOT NULL AND {bad_ev} THEN 1 END) AS {ident(f'ni_{mi}')}"]

    static_counts = []
    cells: dict[str, str] = {}  # SQL of a value in the events -> its column in ``win``
    for mi in range(len(p.mapping_names)):
        tms = [(ti, tm) for ti, tp in enumerate(p.tables) for tm in tp.mappings if tm.mi == mi]
        if not tms:
            continue
        m = ident(f"m{mi}")
        static_counts += counts_for(mi, tms, static_t)
        slots: dict[tuple, list[int]] = {}
        for ti, tm in tms:
            for sl in tm.slots:
                slots.setdefault((sl.rule, sl.rank, sl.prop, sl.src), []).append(ti)
        for si, ((rule, rank, prop, src), tis) in enumerate(slots.items()):
            ak = ident(f"k_{mi}_{si}")
            cond = f"{m} AND {_in_tables(tis, [ti for ti, _ in tms])} AND uid IS NOT NULL AND {_present(src)}"
            # phase 1: only the latest key per user and slot (a BIGINT max: cheap); the values
            # are read back from the few winning events (relation ``win``)
            aggs.append(f"max(CASE WHEN {cond} THEN k END) AS {ak}")
            if src.kind != "lit":
                cell = cells.setdefault(_cell(src), f"v{len(cells)}")
            value = _to_json(src, f"w.{cell}" if src.kind != "lit" else "NULL")
            unpivot.append((prop, ak, f"""
                SELECT a.uid, {sql_str(prop)} AS property, a.{ak} AS k, {mi} AS mapping_index,
                       {rank} AS rule_rank, {sql_str(rule)} AS rule, {value} AS value,
                       {_k_time('a.' + ak)} AS event_time, {_mid('w.mid')} AS message_id
                FROM agg AS a JOIN win AS w ON w.uid = a.uid AND w.k = a.{ak}
                WHERE a.{ak} IS NOT NULL"""))
        ev_tms = [(ti, tm) for ti, tm in tms if tm.event_src.kind != "absent"]
        if ev_tms:
            tis = {ti for ti, _ in ev_tms}
            name = _by_expr([(ti, _event_name(tm.event_src)) for ti, tm in ev_tms])
            ok = _by_expr([(ti, _event_ok(tm.event_src)) for ti, tm in ev_tms])
            cond = f"{m} AND uid IS NOT NULL AND {ok}"
            # the counts of tables no other query reads, once
            mine = {ti for ti in tis if counted.setdefault(ti, f"dyn{mi}") == f"dyn{mi}"}
            cnt = []
            for mj in range(len(p.mapping_names)):
                tmj = [(ti, tm) for ti, tp in enumerate(p.tables) for tm in tp.mappings if tm.mi == mj]
                cnt += counts_for(mj, tmj, mine)
            dyn.append((mi, f"""
                SELECT uid, CASE WHEN {cond} THEN {name} END AS property,
                       max(CASE WHEN {cond} THEN k END) AS k,
                       arg_max(mid, CASE WHEN {cond} THEN k END) AS mid
                       {''.join(', ' + c for c in cnt)}
                FROM {kev(tis)} GROUP BY ALL""", [c.rsplit(' AS ', 1)[1].strip('"') for c in cnt]))
    static = None
    if aggs or static_counts:
        static = (f"SELECT uid, {', '.join(static_counts + aggs)} FROM {kev(static_t)} GROUP BY uid")
    return {"static": static, "static_counts": [c.rsplit(" AS ", 1)[1].strip('"') for c in static_counts],
            "unpivot": unpivot, "dynamic": dyn, "static_tables": static_t,
            "cells": cells}


def _names(mapping_names: list[str]) -> str:
    return "CASE mapping_index " + " ".join(
        f"WHEN {i} THEN {sql_str(n)}" for i, n in enumerate(mapping_names)) + " END"


def winners_sql(p: Plan, direct: list[str], contested: list[str]) -> str:
    """The long table: ``direct`` assignments are the only source of their property names;
    ``contested`` ones compete per (user, property) by (k, mapping index, rule rank)."""
    names = _names(p.mapping_names)
    parts = []
    if direct:
        parts.append(f"""
            SELECT uid AS user_id, property, CAST(value AS VARCHAR) AS value,
                   {_receiver.value_type_sql('json_type(value)')} AS value_type,
                   event_time AS updated_at, message_id, rule, {names} AS mapping
            FROM ({" UNION ALL ".join(direct)})""")
    if contested:
        # a struct argument: arg_max skips a row whose argument is NULL (a NULL message id)
        parts.append(f"""
            SELECT uid AS user_id, property, CAST(x.value AS VARCHAR) AS value,
                   {_receiver.value_type_sql('json_type(x.value)')} AS value_type,
                   x.event_time AS updated_at, x.message_id, x.rule,
                   {names.replace('mapping_index', 'x.mapping_index')} AS mapping
            FROM (SELECT uid, property, arg_max(struct_pack(value := value, event_time := event_time,
                                                            message_id := message_id, rule := rule,
                                                            mapping_index := mapping_index), w) AS x
                  FROM (SELECT *, struct_pack(k := k, mi := mapping_index, rr := rule_rank) AS w
                        FROM ({" UNION ALL ".join(contested)}))
                  GROUP BY uid, property)""")
    return " UNION ALL ".join(f"({x})" for x in parts) + " ORDER BY user_id, property"


def _slow_selects(export, p: Plan, tables: list[str], ids: str) -> dict[str, str]:
    """Rebuilt-event selects (with ``event_json``) of ``tables``; ``tracks`` keeps the twin filter."""
    from ._load import _twin_filters, table_selects
    by_name = {t.name: t for t in export.tables if t.event_type is not None}
    pt = {tp.name: tp.columns for tp in p.tables}
    out = {}
    for name in tables:
        t = by_name[name]
        sel = table_selects([t], passthrough=pt)[0][1]
        # read only the rows that need the hash: filter the files' rows before the rebuild
        mid = f"t.{ident(t.columns['id' if 'id' in t.columns else 'message_id'])}" if (
            "id" in t.columns or "message_id" in t.columns) else "NULL"
        src = f"FROM {ident(t.view)} AS t"
        assert sel.count(src) == 1
        sel = sel.replace(src, f"FROM (SELECT * FROM {ident(t.view)} AS t WHERE {mid} IS NULL OR "
                               f"CAST({mid} AS VARCHAR) IN (SELECT message_id FROM {ids})) AS t")
        per_event = [t for t in by_name.values() if t.name not in TABLE_TYPES]
        if name == "tracks" and per_event:
            pe = " UNION ALL ".join(
                f"SELECT message_id, event, user_id, anonymous_id, timestamp FROM ({q})"
                for _n, q in table_selects(per_event, lean=True))
            by_id, by_content = _twin_filters(pe)
            sel = (f"SELECT * FROM ({sel}) AS w WHERE NOT EXISTS (SELECT 1 FROM ({pe}) AS x WHERE {by_id}) "
                   f"AND NOT EXISTS (SELECT 1 FROM ({pe}) AS x WHERE {by_content})")
        out[name] = sel
    return out


def run(export, config, *, null_clears: bool = True) -> pd.DataFrame:
    """The long user-property table by the planned path (see :func:`user_properties`).

    Raises
    ------
    Unplannable
        When the configuration or export needs the generic path (nothing has been run then,
        except small ``SELECT DISTINCT`` look-ups of event names for triggers).
    """
    from ._load import table_selects
    p = plan(export, config, null_clears=null_clears)
    con = export.con
    if not any(tp.mappings for tp in p.tables):
        df = empty_long()
        df.attrs["skipped"] = {"no_user_id": 0, "empty_user_property_name": 0,
                               "invalid_user_property_event": 0}
        df.attrs["objects"] = 0
        return df
    selects = dict(table_selects([t for t in export.tables if t.event_type is not None],
                                 passthrough={tp.name: tp.columns for tp in p.tables}, lean=True))
    try:
        if "tracks" in selects and any(tp.name == "tracks" for tp in p.tables):
            # the twin anti-join against the per-event tables, once (usually few rows survive)
            with duckdb_errors("matching tracks rows to their per-event tables failed", CmdsegError):
                con.execute(f"CREATE OR REPLACE TEMP TABLE {_TEMP[-1]} AS {selects['tracks']}")
            selects["tracks"] = f"SELECT * FROM {_TEMP[-1]}"
        df, counts = _execute(con, p, selects, export)
    except CmdsegError as exc:
        if _OUT_OF_RANGE in str(exc):
            raise Unplannable("event times outside 1830-2110 or over 1023 events at one instant") from None
        raise
    finally:
        for t in _TEMP + (f"{_TEMP[-2]}_w",) + tuple(f"{_TEMP[5]}_{i}" for i in range(len(p.mapping_names))):
            con.execute(f"DROP TABLE IF EXISTS {t}")
    tot = dict.fromkeys(("n", "nu", "ne", "ni"), 0)
    for name, v in counts:
        tot[name.split("_")[0]] += int(v or 0)
    df.attrs["skipped"] = {"no_user_id": tot["nu"], "empty_user_property_name": tot["ne"],
                           "invalid_user_property_event": tot["ni"]}
    df.attrs["objects"] = tot["n"]
    return df


_TEMP = ("cmdseg_plan_special", "cmdseg_plan_special_rows", "cmdseg_plan_slow", "cmdseg_plan_agg",
         "cmdseg_plan_ties", "cmdseg_plan_dyn", "cmdseg_plan_hash_ids", "cmdseg_plan_groups",
         "cmdseg_plan_ranks", "cmdseg_plan_win", "cmdseg_plan_tracks")


def _execute(con, p: Plan, selects: dict, export):
    sp, sr, slow, agg, ties, dyn, _h, _g, ranks, win, _tk = _TEMP
    lean = _union(_lean_selects(p, selects, export.tables))
    with duckdb_errors("running the planned mapping query failed", CmdsegError):
        # 1. one scan, two groupings: message ids seen more than once (duplicates, or shared
        #    by two event types), and (user, event time) pairs seen more than once (ties for the
        #    order key; counted before de-duplication and triggers, a superset is harmless)
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {_g} AS
            SELECT grouping(message_id) AS g, message_id, uid, event_time FROM ({lean})
            GROUP BY GROUPING SETS ((message_id), (uid, event_time)) HAVING count(*) > 1""")
        con.execute(f"CREATE OR REPLACE TEMP TABLE {sp} AS SELECT message_id FROM {_g} "
                    f"WHERE g = 0 AND message_id IS NOT NULL")
        con.execute(f"CREATE OR REPLACE TEMP TABLE {ties} AS SELECT uid, event_time FROM {_g} "
                    f"WHERE g = 1 AND uid IS NOT NULL")
        # 2. the rows of those ids (and rows without id). Where copies tied on received_at differ
        #    in a column the plan reads, or two types share an id, the loader's hash of the
        #    rebuilt event decides: only those rows are read again and rebuilt as JSON.
        con.execute(f"CREATE OR REPLACE TEMP TABLE {sr} AS SELECT * FROM ({lean}) WHERE "
                    f"message_id IS NULL OR message_id IN (SELECT message_id FROM {sp})")
        row = "struct_pack(" + ", ".join(
            f"{ident('c' + str(i))} := {ident(r[0])}"
            for i, r in enumerate(con.execute(f"DESCRIBE {sr}").fetchall())) + ")"
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {_h} AS
            SELECT message_id FROM {sr} WHERE message_id IS NOT NULL GROUP BY type, message_id, received_at
            HAVING count(*) > 1 AND count(DISTINCT {row}) > 1
            UNION SELECT message_id FROM {sr} WHERE message_id IS NOT NULL GROUP BY message_id
            HAVING count(DISTINCT type) > 1""")
        hashed = con.execute(f"SELECT DISTINCT _t FROM {sr} WHERE message_id IS NULL OR "
                             f"message_id IN (SELECT message_id FROM {_h})").fetchall()
        need = sorted(p.tables[r[0]].name for r in hashed)
        rows = [f"SELECT * FROM {sr} WHERE message_id IS NOT NULL AND message_id NOT IN "
                f"(SELECT message_id FROM {_h})"]
        if need:
            hsel = _slow_selects(export, p, need, _h)
            for part in _lean_selects(p, hsel, export.tables, hashed=True):
                rows.append(f"SELECT * FROM ({part}) WHERE message_id IS NULL OR message_id IN "
                            f"(SELECT message_id FROM {_h})")
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {slow} AS
            SELECT * EXCLUDE (_dup) FROM (
                SELECT *, row_number() OVER (PARTITION BY type, message_id
                                             ORDER BY received_at DESC NULLS LAST, event_hash) AS _dup
                FROM ({_union(rows)}))
            WHERE _dup = 1 OR message_id IS NULL""")
        def ev(tis=None) -> str:
            part = _union(_lean_selects(p, selects, export.tables, only=tis))
            return f"({events_sql(p, part, sp, slow, only=tis)})"

        # 3. the order key: a user's events sharing one event time are ranked among themselves,
        #    once over all tables, so that keys compare across the queries below
        con.execute(f"CREATE OR REPLACE TEMP TABLE {ranks} AS {tie_ranks_sql(ev(), ties)}")
        if (con.execute(f"SELECT max(rnk) FROM {ranks}").fetchall()[0][0] or 0) >= 1024:
            raise Unplannable("more than 1023 events of one user at one instant")

        def kev(tis) -> str:
            return f"({keyed_sql(ev(tis), ranks)})"

        q = aggregate_sql(p, kev)
        # 4. aggregate per user and column, then unpivot the aggregated rows only
        names, counts = [], []
        contested, dyn_names = [], set()
        for mi, sql, cnt in q["dynamic"]:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {dyn}_{mi} AS {sql}")
            if cnt:
                names += cnt
                counts += con.execute(f"SELECT {', '.join(f'sum({ident(c)})' for c in cnt)} "
                                      f"FROM {dyn}_{mi}").fetchall()[0]
            dyn_names |= {r[0] for r in con.execute(
                f"SELECT DISTINCT property FROM {dyn}_{mi} WHERE property IS NOT NULL").fetchall()}
            contested.append(f"""
                SELECT uid, property, k, {mi} AS mapping_index, 3 AS rule_rank,
                       'user_property_event' AS rule, CAST('true' AS JSON) AS value,
                       {_k_time('k')} AS event_time, {_mid('mid')} AS message_id
                FROM {dyn}_{mi} WHERE property IS NOT NULL""")
        direct = []
        if q["static"]:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {agg} AS {q['static']}")
            if q["static_counts"]:
                names += q["static_counts"]
                counts += con.execute(f"SELECT {', '.join(f'sum({ident(c)})' for c in q['static_counts'])} "
                                      f"FROM {agg}").fetchall()[0]
            # phase 2: the winning events' cells, read once more for those events only
            if q["unpivot"]:
                wins = " UNION ".join(f"SELECT uid, {ak} AS k FROM {agg} WHERE {ak} IS NOT NULL"
                                      for _p, ak, _s in q["unpivot"])
                con.execute(f"CREATE OR REPLACE TEMP TABLE {_TEMP[-2]}_w AS {wins}")
                cells = "".join(f", {expr} AS {alias}" for expr, alias in q["cells"].items())
                con.execute(f"""CREATE OR REPLACE TEMP TABLE {win} AS
                    SELECT e.uid, e.k, e.mid{cells} FROM {kev(q['static_tables'])} AS e
                    WHERE EXISTS (SELECT 1 FROM {_TEMP[-2]}_w AS x WHERE x.uid = e.uid AND x.k = e.k)
                    QUALIFY row_number() OVER (PARTITION BY e.uid, e.k) = 1""")
            seen: dict[str, int] = {}
            for prop, _ak, _sql in q["unpivot"]:
                seen[prop] = seen.get(prop, 0) + 1
            for prop, _ak, sql in q["unpivot"]:
                sql = sql.replace("FROM agg AS a JOIN win AS w", f"FROM {agg} AS a JOIN {win} AS w")
                (direct if seen[prop] == 1 and prop not in dyn_names else contested).append(sql)
        df = long_frame(con, winners_sql(p, direct, contested)) if direct or contested else empty_long()
        counts = list(zip(names, counts))
    return df, counts
