"""Column-level plan of a mapping over warehouse tables: the analysis of the fast path.

The generic path rebuilds every warehouse row into a Segment event (JSON), resolves each
mapping over that JSON, unpivots every received object with ``json_each`` and ranks every
assignment. Most mappings need far less: the default whole-event identify mapping makes one
property per non-NULL trait column of ``identifies``; ``{"userId": {"@path": "$.userId"},
"user_property.plan": {"@path": "$.properties.plan"}}`` reads one column. For such mappings this
module works out statically, per table, which cells become which properties (:func:`plan`);
:mod:`cmdseg_nb._plan_run` turns that into a few queries that read only those columns (no
JSON) and aggregate per user and column, and :mod:`cmdseg_nb._to_sql` into one portable query.

The result is the same long table as the generic path, row for row. A configuration the
planner cannot analyse (other directives, paths into ``context`` or into nested values,
mappings that name the user differently, raw NDJSON sources) raises :class:`Unplannable`,
which says why; ``user_properties`` then takes the generic path.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from . import _receiver
from ._db import ident, sql_str
from ._warehouse import TABLE_TYPES, is_system_column

__all__ = ["Plan", "Unplannable", "plan"]

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
    from ._mappingkit_transform import _path_keys
    # mapping-kit reads ``path.replace("$.", "")``: "$.a" is the key "a", but "$a" and "$" are
    # the keys "$a" and "$" (not planned)
    keys = _path_keys(path[2:]) if path.startswith("$.") else None
    if keys is None:
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
        from ._jsvalue import js_falsy
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
    if isinstance(data, dict) and set(data) == {"@path"} and data["@path"] == "$.":
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


def _trigger(con, m, table, ttype: str, select_sql: str, looked: dict) -> str | None:
    """SQL predicate of the trigger on this table's select, or None when it never matches.

    A trigger on ``event`` or ``name`` looks up the column's distinct values in the table (one
    scan of that column); ``looked`` keeps them per (table, column), so that several mappings
    triggered by event names scan each table once, not once per mapping."""
    from ._fql import fql_matches
    from ._fql_parse import parse_fql
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
        key = (table.name, col)
        values = looked.get(key)
        if values is None:
            values = looked[key] = [r[0] for r in con.execute(
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
    from ._fql import fql_matches
    from ._jsvalue import js_string
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
    from ._selects import table_selects
    if export.raw_files:
        raise Unplannable("raw event files (only warehouse tables are planned)")
    tables = [t for t in export.tables if t.event_type is not None]
    if not tables:
        raise Unplannable("no event tables")
    # trigger look-ups read every tracks row (twins included: a superset of event names is harmless)
    selects = (dict(table_selects(tables, lean=True, twins=False)) if export.con is not None
               else {t.name: "" for t in tables})
    out: list[TablePlan] = []
    looked: dict = {}
    for t in tables:
        if t.name not in selects:
            continue
        ttype = TABLE_TYPES.get(t.name, "track")
        tms = []
        for mi, m in enumerate(config.mappings):
            trig = _trigger(export.con, m, t, ttype, selects[t.name], looked)
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
# Shared with the queries (_plan_cells, _plan_run, _plan_raw_compile, _plan_raw)


#: SQL: a ``user_property_event`` group is settled by ``k2 = max(k, 2)``, the two largest k of
#: its rows (one element, or two different ones): one row holds the latest time and wins
SETTLED = "(len(k2) = 1 OR k2[1] > k2[2])"

def rank_table_sql(table: str, col: str, rank: str, sources: list[str]) -> str:
    """SQL creating the temporary ``table``: the distinct non-NULL ``col`` values of the
    SELECTs ``sources`` with ``rank``, their position in ``col`` order (an integer to group,
    join and sort on instead of the text)."""
    return (f"CREATE OR REPLACE TEMP TABLE {table} AS "
            f"SELECT {col}, row_number() OVER (ORDER BY {col} ASC) AS {rank} FROM "
            f"(SELECT DISTINCT {col} FROM ({' UNION ALL '.join(sources)})) WHERE {col} IS NOT NULL")


def repeated_id_hashes_sql(rows: str) -> str:
    """A SELECT of ``h``: the distinct ``hash(message_id)`` held by more than one row of the
    relation ``rows`` (rows without a message id left out). The sorted hashes equal to their
    predecessor: a sort of 64-bit integers, cheaper than grouping (warehouse path, 20M events:
    0.26-0.31 s against 0.36-0.54 s for a grouping of 4M distinct hashes; raw path, 20M events
    under a 2 GB limit: 1.2-1.7 s against 1.9-3.2 s for a grouping of the id texts). A hash
    collision only adds the hash of an id seen once: callers must stay exact for such ids."""
    return f"""SELECT DISTINCT h FROM (
                SELECT h, lag(h) OVER (ORDER BY h ASC) AS p FROM (
                    SELECT hash(message_id) AS h FROM {rows} WHERE message_id IS NOT NULL))
            WHERE h = p"""


#: Which-value-wins order, first part: an event time (TIMESTAMPTZ) as one BIGINT of
#: microseconds. No time sorts below every time, -infinity just above it, infinity above every
#: finite time (``epoch_us`` gives NULL for the infinities).
_K_NULL, _K_NINF, _K_INF = -(2 ** 63) + 1, -(2 ** 63) + 2, 2 ** 63 - 1


def key_sql(t: str) -> str:
    """SQL: the BIGINT order key of the event time ``t``."""
    return (f"(CASE WHEN {t} IS NULL THEN {_K_NULL} "
            f"WHEN {t} = '-infinity'::TIMESTAMPTZ THEN {_K_NINF} "
            f"WHEN {t} = 'infinity'::TIMESTAMPTZ THEN {_K_INF} ELSE epoch_us({t}) END)")


def key_time_sql(k: str) -> str:
    """SQL: the event time (TIMESTAMPTZ) held in the order key ``k``; NULL for no time."""
    return (f"CASE {k} WHEN {_K_NULL} THEN NULL WHEN {_K_NINF} THEN '-infinity'::TIMESTAMPTZ "
            f"WHEN {_K_INF} THEN 'infinity'::TIMESTAMPTZ ELSE make_timestamptz({k}) END")


def _names(mapping_names: list[str]) -> str:
    return "CASE mapping_index " + " ".join(
        f"WHEN {i} THEN {sql_str(n)}" for i, n in enumerate(mapping_names)) + " END"
