"""Running a warehouse :class:`~cmdseg_nb._plan.Plan` in DuckDB: the fast path's queries.

The plan says, per table, which cells become which properties. The queries here compute the
long table with few passes over the files and no sort of all events:

1. **Duplicates.** One grouping of ``hash(message_id)`` over every planned table finds the ids
   seen more than once. Their rows (and rows without an id) are the *special* rows: they are
   de-duplicated per ``(type, message id)`` exactly as the loader does (latest ``received_at``;
   the loader's hash of the rebuilt event where copies tied on ``received_at`` differ). Every
   other row is its event's only copy. A hash collision only makes a row special: still exact.
2. **Latest time per user and slot.** ``k`` is the event time in microseconds (one BIGINT; no
   event time sorts lowest). One aggregation per user keeps ``max(k)`` of every static slot
   (a trait column, a ``user_property.*`` cell) over every row, copies included, one per
   (user, event name) for ``user_property_event`` over the rows seen once, and the counts of
   received objects and skip reasons.
3. **Candidates.** The events whose ``(user, k)`` is one of those maxima are read again (a
   semi join: few rows), with the special rows, de-duplicated, and ranked per user by the
   full which-value-wins order (``k``, then ``original_timestamp``, ``received_at``, message
   id, event hash). Every event that ties with a winner on ``k`` is a candidate, so the rank
   settles ties exactly. Where a static maximum was held only by copies that de-duplication
   dropped (copies of one message differing in time, user or cells; never for plain
   retries), the static aggregation and step 3 run again with the static maxima over the
   rows seen once.
4. **Winners.** Per user and slot the highest-ranked candidate holding the cell wins; its
   value, time and message id are read from the candidate row, the slots are unpivoted, and
   property names set by several slots or mappings compete by (rank, mapping, rule 5). The
   result is sorted by integer ranks of the user ids and of the property names.

The steps run in one transaction of their own (``_db.scratch``: no checkpoint of temporary
tables dropped a moment later; inside the caller's transaction when one is open). Pure SQL
generation, run by :func:`run`; the analysis is :mod:`cmdseg_nb._plan`.
"""
from __future__ import annotations

import logging

import pandas as pd

from . import _receiver
from ._db import duckdb_errors, ident, scratch, sql_str
from ._errors import CmdsegError
from ._frame import empty_long, long_frame
from ._plan import _FLOAT, SETTLED, Plan, Src, _leaves, _names, key_sql, key_time_sql, plan, rank_table_sql
from ._warehouse import holds_json_sql, json_value_sql, per_event_tables

__all__ = ["run"]

_log = logging.getLogger(__name__)

#: The rest of the order, for events sharing ``k`` (ascending: the last one wins).
_RANK_ORDER = ("k ASC, original_timestamp ASC NULLS FIRST, received_at ASC NULLS FIRST, "
               "message_id ASC NULLS FIRST, event_hash ASC NULLS FIRST")



def _collisions(con, s: dict, dyn: str) -> set[str]:
    """Event names of ``user_property_event`` that another slot or mapping also sets."""
    seen: dict[str, int] = {}
    for _mi, _r, _rank, prop, _src, _c in s["static"]:
        seen[prop] = 1
    out = set()
    for mi, *_x in s["dynamic"]:
        for (name,) in con.execute(f"SELECT DISTINCT property FROM {dyn}_{mi} "
                                   f"WHERE property IS NOT NULL").fetchall():
            if name in seen:
                out.add(name)
            seen[name] = 1
    return out


def _sql_list(values: list[str]) -> str:
    return "[" + ", ".join(sql_str(v) for v in values) + "]::VARCHAR[]"


_TEMP = ("cmdseg_plan_dups", "cmdseg_plan_special_rows", "cmdseg_plan_hash_ids", "cmdseg_plan_slow",
         "cmdseg_plan_agg", "cmdseg_plan_dyn", "cmdseg_plan_keys", "cmdseg_plan_cand",
         "cmdseg_plan_win", "cmdseg_plan_users", "cmdseg_plan_props", "cmdseg_plan_tracks")


# ---------------------------------------------------------------------------------------------
# SQL of cells and receiver rules over a table's select


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


def _value_type(src: Src, value: str) -> str:
    """SQL of the JSON type name of ``value`` (the JSON of ``src``): static where the source's
    type fixes it, else read from the JSON."""
    if src.kind == "lit":
        return sql_str(_receiver.value_type(src.value))
    if src.kind == "field":
        return "'string'"
    if src.kind == "col":
        t = src.dtype.upper()
        if t == "BOOLEAN":
            return "'boolean'"
        if t in _FLOAT or t.startswith("DECIMAL") or t in (
                "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
                "UINTEGER", "UBIGINT", "UHUGEINT"):
            return "'number'"
        if t.startswith("TIMESTAMP") or t == "DATE":
            return "'string'"
        if t in ("VARCHAR", "TEXT", "STRING"):
            # as json_value_sql parses the cell: an array or object when it holds one, else text
            c = _cell(src)
            return (f"CASE WHEN {holds_json_sql(c)} THEN CASE left(ltrim({c}), 1) "
                    f"WHEN '[' THEN 'array' ELSE 'object' END ELSE 'string' END")
    return _receiver.value_type_sql(f"json_type({value})")


def _uid_sql(src: Src) -> str:
    """Receiver rule 1 over a text source (a string is kept unless blank)."""
    if src.kind == "absent":
        return "CAST(NULL AS VARCHAR)"
    if src.kind == "lit":
        u = _receiver.normalize_user_id(src.value)
        return sql_str(u) if u is not None else "CAST(NULL AS VARCHAR)"
    s = _cell(src)
    # a first character that is not whitespace keeps the id without the regular expression
    return (f"CASE WHEN {s} IS NULL THEN NULL WHEN unicode({s}) > 32 AND unicode({s}) NOT IN "
            f"({_WIDE_WS}) AND NOT (unicode({s}) BETWEEN 8192 AND 8202) "
            f"THEN {s} WHEN regexp_full_match({s}, '{_receiver._WS}') THEN NULL ELSE {s} END")


#: The receiver's whitespace above U+0020 outside U+2000-U+200A, as code points (for _uid_sql)
_WIDE_WS = ", ".join(str(ord(c)) for c in _receiver.WHITESPACE if ord(c) > 32 and not 8192 <= ord(c) <= 8202)


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
                f"{key_sql('COALESCE(timestamp, original_timestamp, received_at)')} AS k",
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


def _by_expr(pairs: list[tuple[int, str]]) -> str:
    """SQL choosing, per table index ``_t``, one of a few expressions (one CASE at most)."""
    groups: dict[str, list[int]] = {}
    for ti, e in pairs:
        groups.setdefault(e, []).append(ti)
    if len(groups) == 1:
        return next(iter(groups))
    return "CASE " + " ".join(f"WHEN _t IN ({', '.join(map(str, tis))}) THEN {e}"
                              for e, tis in groups.items()) + " END"


def _in_tables(tis) -> str:
    return f"_t IN ({', '.join(map(str, sorted(tis)))})"


# ---------------------------------------------------------------------------------------------
# The mapping's slots: conditions, counts


def _by_mapping(p: Plan) -> dict[int, list]:
    out: dict[int, list] = {}
    for ti, tp in enumerate(p.tables):
        for tm in tp.mappings:
            out.setdefault(tm.mi, []).append((ti, tm))
    return out


def _counts(mi: int, tms, extra: str = "") -> list[str]:
    """Aggregates counting mapping ``mi``'s received objects and skip reasons in tables ``tms``
    (rows where ``extra`` holds, when given)."""
    if not tms:
        return []
    m = f"{ident(f'm{mi}')} AND {_in_tables([ti for ti, _ in tms])}{' AND ' + extra if extra else ''}"
    empty_p = _by_expr([(ti, _present(tm.empty_key)) for ti, tm in tms])
    bad_ev = _by_expr([(ti, f"({_present(tm.event_src)} AND NOT {_event_ok(tm.event_src)})")
                       for ti, tm in tms])
    return [f"count(CASE WHEN {m} THEN 1 END) AS {ident(f'n_{mi}')}",
            f"count(CASE WHEN {m} AND uid IS NULL THEN 1 END) AS {ident(f'nu_{mi}')}",
            f"count(CASE WHEN {m} AND uid IS NOT NULL AND {empty_p} THEN 1 END) AS {ident(f'ne_{mi}')}",
            f"count(CASE WHEN {m} AND uid IS NOT NULL AND {bad_ev} THEN 1 END) AS {ident(f'ni_{mi}')}"]


def _alias(agg: str) -> str:
    return agg.rsplit(" AS ", 1)[1].strip('"')


def slots_of(p: Plan) -> dict:
    """The static slots and ``user_property_event`` sources of a plan, with their SQL.

    ``static``: list of ``(mi, rule, rank, prop, src, cond)``, one per distinct source of a
    mapping (a source in several tables is one slot); ``cond`` is the SQL condition of an
    event assigning it. ``dynamic``: list of ``(mi, tables, name_sql, cond)``. ``static_t``:
    tables whose rows the static aggregation reads (tables with slots, or with nothing but
    counts); ``counts``: the count aggregates of the static aggregation, and per ``("dyn", mi)`` the
    ``(mapping, tables)`` whose objects it counts (each table's objects are counted once).
    """
    static_t = {ti for ti, tp in enumerate(p.tables) for tm in tp.mappings
                if tm.slots or tm.event_src.kind == "absent"}
    counted: dict[int, object] = {ti: "static" for ti in static_t}
    by_m = _by_mapping(p)
    static, dynamic, counts = [], [], {"static": []}
    for mi, tms in sorted(by_m.items()):
        counts["static"] += _counts(mi, [(ti, tm) for ti, tm in tms if ti in static_t])
        m = ident(f"m{mi}")
        slots: dict[tuple, list[int]] = {}
        for ti, tm in tms:
            for sl in tm.slots:
                slots.setdefault((sl.rule, sl.rank, sl.prop, sl.src), []).append(ti)
        for (rule, rank, prop, src), tis in slots.items():
            cond = f"{m} AND {_in_tables(tis)} AND uid IS NOT NULL AND {_present(src)}"
            static.append((mi, rule, rank, prop, src, cond))
        ev_tms = [(ti, tm) for ti, tm in tms if tm.event_src.kind != "absent"]
        if ev_tms:
            tis = {ti for ti, _ in ev_tms}
            name = _by_expr([(ti, _event_name(tm.event_src)) for ti, tm in ev_tms])
            ok = _by_expr([(ti, _event_ok(tm.event_src)) for ti, tm in ev_tms])
            cond = f"{m} AND {_in_tables(tis)} AND uid IS NOT NULL AND {ok}"
            dynamic.append((mi, tis, name, cond))
            # the counts of tables no other aggregation reads, once
            mine = {ti for ti in tis if counted.setdefault(ti, ("dyn", mi)) == ("dyn", mi)}
            counts[("dyn", mi)] = [(mj, [(ti, tm) for ti, tm in tmj if ti in mine])
                                   for mj, tmj in sorted(by_m.items())]
    return {"static": static, "dynamic": dynamic, "static_t": static_t, "counts": counts}


def _slow_selects(export, p: Plan, tables: list[str], ids: str) -> dict[str, str]:
    """Rebuilt-event selects (with ``event_json``) of ``tables``; ``tracks`` keeps the twin filter."""
    from ._selects import table_selects
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
        twins = _per_event_twins(export) if name == "tracks" else None
        if twins:
            pe, by_id, by_content = twins
            sel = (f"SELECT * FROM ({sel}) AS w WHERE NOT EXISTS (SELECT 1 FROM ({pe}) AS x WHERE {by_id}) "
                   f"AND NOT EXISTS (SELECT 1 FROM ({pe}) AS x WHERE {by_content})")
        out[name] = sel
    return out


# ---------------------------------------------------------------------------------------------
# Running


def run(export, config, *, null_clears: bool = True) -> pd.DataFrame:
    """The long user-property table by the planned path (see :func:`user_properties`).

    Raises
    ------
    Unplannable
        When the configuration or export needs the generic path (nothing has been run then,
        except small ``SELECT DISTINCT`` look-ups of event names for triggers).
    CmdsegError
        When DuckDB fails to run a query (the message names the step).
    """
    from ._selects import table_selects
    p = plan(export, config, null_clears=null_clears)
    con = export.con
    if not any(tp.mappings for tp in p.tables):
        df = empty_long()
        df.attrs["skipped"] = {"no_user_id": 0, "empty_user_property_name": 0,
                               "invalid_user_property_event": 0}
        df.attrs["objects"] = 0
        return df
    selects = dict(table_selects([t for t in export.tables if t.event_type is not None],
                                 passthrough={tp.name: tp.columns for tp in p.tables}, lean=True,
                                 twins=False))
    dyn = tuple(f"{_TEMP[5]}_{i}{r}" for i in range(len(p.mapping_names)) for r in ("", "_r"))
    with scratch(con, _TEMP + (f"{_TEMP[-1]}_id",) + dyn):
        if "tracks" in selects and any(tp.name == "tracks" for tp in p.tables):
            with duckdb_errors("matching tracks rows to their per-event tables failed", CmdsegError):
                selects["tracks"] = _tracks_without_twins(con, export, selects["tracks"])
        df, counts = _execute(con, p, selects, export)
    tot = dict.fromkeys(("n", "nu", "ne", "ni"), 0)
    for name, v in counts:
        tot[name.split("_")[0]] += int(v or 0)
    df.attrs["skipped"] = {"no_user_id": tot["nu"], "empty_user_property_name": tot["ne"],
                           "invalid_user_property_event": tot["ni"]}
    df.attrs["objects"] = tot["n"]
    return df


def _per_event_twins(export) -> tuple[str, str, str] | None:
    """``_load._twin_filters`` over the export's per-event tables (lean selects); None when
    there are none."""
    from ._selects import _twin_filters, table_selects
    per_event = per_event_tables(export.tables)
    if not per_event:
        return None
    return _twin_filters(q for _n, q in table_selects(per_event, lean=True))


def _tracks_without_twins(con, export, tracks: str) -> str:
    """The ``tracks`` rows without a twin in a per-event table, as the loader keeps them (see
    ``_load.table_selects``), held in a temporary table; returns a SELECT of it.

    The match on id runs first; the match on content only over the rows it leaves (usually
    none: Segment's twins share their id), so the per-event tables' content is hashed only
    when needed. When the per-event tables hold at least as many rows as ``tracks`` (every
    row may have its twin, as in Segment's warehouses), the rows the id match leaves are
    counted first on ids alone; with none, ``tracks`` is left out without reading its other
    columns (20M events: 1.7 s against 2.6 s). With some, the id match runs a second time,
    over the whole rows."""
    twins = _per_event_twins(export)
    if twins is None:
        return tracks
    pe, by_id, by_content = twins
    unmatched = f"FROM ({tracks}) AS w WHERE NOT EXISTS (SELECT 1 FROM ({pe}) AS x WHERE {by_id})"
    rows = export._report.rows_read
    left_n = None
    if "tracks" in rows and rows["tracks"] <= sum(rows.get(t.name, 0) for t in per_event_tables(export.tables)):
        left_n = con.execute(f"SELECT count(*) {unmatched}").fetchall()[0][0]
        if not left_n:
            return f"SELECT * FROM ({tracks}) WHERE FALSE"
    t, left = _TEMP[-1], f"{_TEMP[-1]}_id"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {left} AS SELECT * {unmatched}")
    if left_n or con.execute(f"SELECT count(*) FROM {left}").fetchall()[0][0]:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {t} AS SELECT * FROM {left} AS w "
                    f"WHERE NOT EXISTS (SELECT 1 FROM ({pe}) AS x WHERE {by_content})")
        return f"SELECT * FROM {t}"
    return f"SELECT * FROM {left}"


def _dedupe_special(con, p: Plan, export, sr: str) -> None:
    """De-duplicate the special rows held in ``sr`` (rows whose id hash is in the duplicates,
    and rows without id) into ``slow``, as the loader does: per (type, message id) the copy
    received last. Where copies tied on received_at differ in a column the plan reads, or two
    types share an id, the loader's hash of the rebuilt event decides: only those rows are read
    again and rebuilt as JSON."""
    _d, _c, hids, slow = _TEMP[:4]
    row = "struct_pack(" + ", ".join(
        f"{ident('c' + str(i))} := {ident(r[0])}"
        for i, r in enumerate(con.execute(f"DESCRIBE {sr}").fetchall()) if r[0] != "special") + ")"
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {hids} AS
        SELECT message_id FROM {sr} WHERE message_id IS NOT NULL GROUP BY type, message_id, received_at
        HAVING count(*) > 1 AND count(DISTINCT {row}) > 1
        UNION SELECT message_id FROM {sr} WHERE message_id IS NOT NULL GROUP BY message_id
        HAVING count(DISTINCT type) > 1""")
    hashed = con.execute(f"SELECT DISTINCT _t FROM {sr} WHERE message_id IS NULL OR "
                         f"message_id IN (SELECT message_id FROM {hids})").fetchall()
    need = sorted(p.tables[r[0]].name for r in hashed)
    rows = [f"SELECT * EXCLUDE (special) FROM {sr} WHERE message_id IS NOT NULL AND message_id NOT IN "
            f"(SELECT message_id FROM {hids})"]
    if need:
        hsel = _slow_selects(export, p, need, hids)
        for part in _lean_selects(p, hsel, export.tables, hashed=True):
            rows.append(f"SELECT * FROM ({part}) WHERE message_id IS NULL OR message_id IN "
                        f"(SELECT message_id FROM {hids})")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {slow} AS
        SELECT * EXCLUDE (_dup) FROM (
            SELECT *, row_number() OVER (PARTITION BY type, message_id
                                         ORDER BY received_at DESC NULLS LAST, event_hash) AS _dup
            FROM ({_union(rows)}))
        WHERE _dup = 1 OR message_id IS NULL""")


def _execute(con, p: Plan, selects: dict, export):
    """Steps 1-4 (see the module docstring); returns the long table and the counts.

    The static maxima are first taken over every row, copies included (no anti join with the
    duplicates: 0.13 s less at 20M events). That is exact unless a slot's latest time is held
    only by copies that de-duplication drops (copies of one message that differ in time, user
    or cell): :meth:`_Run.unsettled` finds those, and the static steps then run again with the
    maxima taken over the rows seen once (the ``user_property_event`` groups stay as they are:
    they are always taken over the rows seen once)."""
    run = _Run(con, p, selects, export)
    with duckdb_errors("running the planned mapping query failed", CmdsegError):
        # 1. ids seen more than once (by hash: a collision only makes a row special)
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {run.dups} AS
            SELECT hash(message_id) AS h FROM ({run.lean}) WHERE message_id IS NOT NULL
            GROUP BY h HAVING count(*) > 1""")
        # 2. the latest k per user and slot, per (user, event name)
        run.latest_static()
        run.latest_dynamic()
        # 3. the candidates
        run.candidates()
        # 4. per user and slot, the highest-ranked candidate holding it
        direct, contested = run.winners()
        if n := run.unsettled():
            _log.debug("planned path: %d (user, slot) pairs had their latest time only on "
                       "dropped copies; running again with the maxima of the rows seen once", n)
            run.exact = True
            run.latest_static()
            run.candidates()
            direct, contested = run.winners()
        df = (long_frame(con, winners_sql(p, direct, contested, *run.orders()))
              if direct or contested else empty_long())
    return df, [pair for step in run.counts.values() for pair in step]


class _Run:
    """The queries of one planned run, over temporary tables named in ``_TEMP``."""

    def __init__(self, con, p: Plan, selects: dict, export):
        self.con, self.p, self.selects, self.export = con, p, selects, export
        #: static maxima over the rows seen once only (else over every row, copies included)
        self.exact = False
        (self.dups, self.scan, _h, self.slow, self.agg, self.dyn, self.keys, self.cand,
         self.win, self.users, self.props, _tk) = _TEMP
        self.lean = _union(_lean_selects(p, selects, export.tables))
        self.s = slots_of(p)
        #: per step (static, dynamic, special), the (name, value) counts it added; a step run
        #: again replaces its own
        self.counts: dict[str, list[tuple[str, int]]] = {}
        self.collide: set[str] = set()

    def part(self, tis) -> str:
        return _union(_lean_selects(self.p, self.selects, self.export.tables, only=tis))

    def special(self, sql: str) -> str:
        """``sql`` plus ``special``: its message id is NULL or seen more than once."""
        return (f"SELECT *, (message_id IS NULL OR hash(message_id) IN (SELECT h FROM {self.dups})) "
                f"AS special FROM ({sql})")

    def add_counts(self, step: str, table: str, cols: list[str], *, rows: bool = False,
                   sign: int = 1) -> None:
        """Add to ``step``'s counts (``sign`` -1: subtract) those aggregated in ``table`` (or,
        with ``rows``, counted over its rows)."""
        if cols:
            sel = ", ".join(cols) if rows else ", ".join(f"sum({ident(_alias(c))})" for c in cols)
            values = self.con.execute(f"SELECT {sel} FROM {table}").fetchall()[0]
            self.counts[step].extend((_alias(c), sign * int(v or 0))
                                     for c, v in zip(cols, values, strict=True))

    def dyn_counts(self, mi: int, extra: str = "") -> list[str]:
        return [c for mj, tms in self.s["counts"][("dyn", mi)] for c in _counts(mj, tms, extra)]

    def latest_static(self) -> None:
        """Per user, over every matched row (``exact``: over the rows seen once): max k of
        every static slot, and the counts (the special rows' are taken off again in
        :meth:`candidates`)."""
        s = self.s
        self.counts["static"] = []
        self.ks = [f"max(CASE WHEN {cond} THEN k END) AS {ident(f'k{i}')}"
                   for i, (*_x, cond) in enumerate(s["static"])]
        if self.ks or s["counts"]["static"]:
            fast = f"SELECT * FROM ({self.part(s['static_t'])}) WHERE {_matched(self.p, s['static_t'])}"
            if self.exact:
                fast += (f" AND message_id IS NOT NULL "
                         f"AND hash(message_id) NOT IN (SELECT h FROM {self.dups})")
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE {self.agg} AS SELECT uid, "
                             f"{', '.join(s['counts']['static'] + self.ks)} FROM ({fast}) GROUP BY uid")
            self.add_counts("static", self.agg, s["counts"]["static"])

    def latest_dynamic(self) -> None:
        """Per (user, event name), over every matched row with a flag for the special ones: the
        latest k of the rows seen once, the message id there, and whether it is settled. It is
        not when two rows share that k (``_plan.SETTLED``),
        when a special row is as late, or when the name is also set by another slot: those
        groups (table ``<dyn>_<mi>_r``) are settled among the candidates, the others need
        nothing more."""
        con, dyn = self.con, self.dyn
        self.counts["dynamic"] = []
        for mi, tis, name, cond in self.s["dynamic"]:
            cnt = self.dyn_counts(mi, "NOT special")
            fk = f"CASE WHEN {cond} AND NOT special THEN"
            rows = self.special(f"SELECT * FROM ({self.part(tis)}) WHERE {_matched(self.p, tis)}")
            con.execute(f"""CREATE OR REPLACE TEMP TABLE {dyn}_{mi} AS
                SELECT *, k2[1] AS k FROM (
                    SELECT uid, CASE WHEN {cond} THEN {name} END AS property, max({fk} k END, 2) AS k2,
                           arg_max(message_id, {fk} k END) AS mid,
                           max(CASE WHEN {cond} AND special THEN k END) AS ks{''.join(', ' + c for c in cnt)}
                    FROM ({rows}) GROUP BY ALL)""")
            self.add_counts("dynamic", f"{dyn}_{mi}", cnt)
        self.collide = _collisions(con, self.s, dyn)
        names_in = (f"list_contains({_sql_list(sorted(self.collide))}, property)"
                    if self.collide else "FALSE")
        for mi, *_x in self.s["dynamic"]:
            con.execute(f"""CREATE OR REPLACE TEMP TABLE {dyn}_{mi}_r AS
                SELECT uid, property, k FROM {dyn}_{mi} WHERE property IS NOT NULL
                AND (k IS NULL OR NOT ({SETTLED}) OR ks >= k OR {names_in})""")

    def candidates(self) -> None:
        """One more scan: the rows at one of the maxima's (user, k), and the special rows,
        which are de-duplicated; then the candidates ranked per user by the full order."""
        con, s = self.con, self.s
        maxima = []
        if self.ks:
            maxima.append(f"SELECT uid, k FROM (UNPIVOT {self.agg} ON "
                          f"{', '.join(ident(f'k{i}') for i in range(len(self.ks)))} INTO NAME s VALUE k)")
        maxima += [f"SELECT uid, k FROM {self.dyn}_{mi}_r WHERE k IS NOT NULL" for mi, *_x in s["dynamic"]]
        union = " UNION ALL ".join(maxima) or "SELECT NULL AS uid, NULL AS k"
        con.execute(f"CREATE OR REPLACE TEMP TABLE {self.keys} AS SELECT DISTINCT uid, k FROM "
                    f"({union}) WHERE uid IS NOT NULL")
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {self.scan} AS
            SELECT * FROM ({self.special(self.lean)}) AS e
            WHERE special OR ({_matched(self.p)} AND EXISTS (
                SELECT 1 FROM {self.keys} AS x WHERE x.uid = e.uid AND x.k = e.k))""")
        _dedupe_special(con, self.p, self.export, f"(SELECT * FROM {self.scan} WHERE special)")
        # the special rows kept count as received objects; without ``exact`` the aggregation
        # counted all of them
        self.counts["special"] = []
        if not self.exact:
            self.add_counts("special", f"(SELECT * FROM {self.scan} WHERE special)",
                            s["counts"]["static"], rows=True, sign=-1)
        self.add_counts("special", self.slow, s["counts"]["static"], rows=True)
        for mi, *_x in s["dynamic"]:
            self.add_counts("special", self.slow, self.dyn_counts(mi), rows=True)
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {self.cand} AS
            SELECT *, row_number() OVER (PARTITION BY uid ORDER BY {_RANK_ORDER}) AS r FROM (
                SELECT * EXCLUDE (special) FROM {self.scan} WHERE NOT special
                UNION ALL BY NAME SELECT * FROM {self.slow} WHERE {_matched(self.p)})
            WHERE uid IS NOT NULL""")

    def orders(self) -> tuple[str, str]:
        """Two tables giving the result's sort keys as integers: every user of the result (the
        candidates' and the per-event-name groups') with ``uo``, its rank in user id order, and
        every property name (the static slots' and the per-event-name groups') with ``po``, its
        rank in name order; returns their names."""
        dyn = [f"{self.dyn}_{mi}" for mi, *_x in self.s["dynamic"]]
        static = sorted({prop for _m, _r, _k, prop, *_x in self.s["static"]})
        self._rank(self.users, "uid", "uo", [f"SELECT uid FROM {self.cand}"]
                   + [f"SELECT uid FROM {d}" for d in dyn])
        self._rank(self.props, "property", "po", [f"SELECT unnest({_sql_list(static)}) AS property"]
                   + [f"SELECT property FROM {d}" for d in dyn])
        return self.users, self.props

    def _rank(self, table: str, col: str, rank: str, sources: list[str]) -> None:
        self.con.execute(rank_table_sql(table, col, rank, sources))

    def unsettled(self) -> int:
        """(Without ``exact``.) The number of (user, static slot) pairs whose latest time
        over every row is later than their winner's: only copies that de-duplication dropped
        held it, so the winner may be an event that is not among the candidates.

        None can be when the copies of every message agree on user, time and which static
        cells they hold (retries, the usual case): then each dropped copy's kept twin is a
        candidate as late. That is checked first, over the special rows only."""
        if not self.ks:
            return 0
        static = self.s["static"]
        flags = ", ".join(f"({cond})" for *_x, cond in static)
        if not self.con.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM {self.scan} WHERE special AND message_id IS NOT NULL "
                f"GROUP BY type, message_id HAVING count(DISTINCT (uid, k, {flags})) > 1)").fetchall()[0][0]:
            return 0
        wk = ", ".join(f"max(CASE WHEN {cond} THEN k END) AS {ident(f'wk{i}')}"
                       for i, (*_x, cond) in enumerate(static))
        later = " OR ".join(f"(a.{k} IS NOT NULL AND (w.{k2} IS NULL OR a.{k} > w.{k2}))"
                            for k, k2 in ((ident(f'k{i}'), ident(f'wk{i}')) for i in range(len(static))))
        return self.con.execute(
            f"SELECT count(*) FROM {self.agg} AS a LEFT JOIN (SELECT uid, {wk} FROM {self.cand} "
            f"GROUP BY uid) AS w ON w.uid = a.uid WHERE a.uid IS NOT NULL AND ({later})").fetchall()[0][0]

    def winners(self) -> tuple[list[str], list[str]]:
        """The assignments that win per (user, slot): ``direct`` ones (the only source of
        their property name) and ``contested`` ones (see :func:`winners_sql`)."""
        con, s, cand, win = self.con, self.s, self.cand, self.win
        parts: dict[str, list[str]] = {}
        if self.ks:
            # per slot the winning candidate's rowid (the highest rank r holding the cell): the
            # parts below join on that one BIGINT instead of (uid, r) (20M events: 0.1 s less)
            gs = [f"arg_max(rowid, CASE WHEN {cond} THEN r END) AS {ident(f'g{i}')}"
                  for i, (*_x, cond) in enumerate(s["static"])]
            con.execute(f"CREATE OR REPLACE TEMP TABLE {win} AS SELECT uid, {', '.join(gs)} "
                        f"FROM {cand} GROUP BY uid")
            for i, (mi, rule, rank, prop, src, _cond) in enumerate(s["static"]):
                value = _to_json(src, _cell(src) if src.kind != "lit" else "NULL")  # cells of c
                parts.setdefault(prop, []).append(f"""
                    SELECT c.uid, {sql_str(prop)} AS property, c.r,
                           {mi} AS mapping_index, {rank} AS rule_rank, {sql_str(rule)} AS rule,
                           {value} AS value, {_value_type(src, value)} AS value_type,
                           c.event_time, c.message_id
                    FROM {win} AS w JOIN {cand} AS c ON c.rowid = w.{ident(f'g{i}')}""")
        collide = self.collide
        direct = [q for prop, qs in parts.items() if len(qs) == 1 and prop not in collide for q in qs]
        contested = [q for prop, qs in parts.items() if len(qs) > 1 or prop in collide for q in qs]
        names = _sql_list(sorted(collide))
        for mi, tis, name, cond in s["dynamic"]:
            d, head = f"{self.dyn}_{mi}", (
                f"{mi} AS mapping_index, 3 AS rule_rank, 'user_property_event' AS rule, "
                f"CAST('true' AS JSON) AS value, 'boolean' AS value_type")
            # the groups settled by their aggregation
            direct.append(f"""
                SELECT d.uid, d.property, NULL AS r, {head}, {key_time_sql('d.k')} AS event_time,
                       d.mid AS message_id
                FROM {d} AS d ANTI JOIN {d}_r AS x ON x.uid = d.uid AND x.property = d.property
                WHERE d.property IS NOT NULL AND d.k IS NOT NULL""")
            # the others, among the candidates
            q = f"""
                SELECT d.uid, d.property, d.r, {head}, c.event_time, c.message_id
                FROM (SELECT uid, CASE WHEN {cond} THEN {name} END AS property,
                             max(CASE WHEN {cond} THEN r END) AS r
                      FROM {cand} WHERE {_in_tables(tis)} GROUP BY ALL) AS d
                JOIN {cand} AS c ON c.uid = d.uid AND c.r = d.r
                SEMI JOIN {d}_r AS x ON x.uid = d.uid AND x.property = d.property"""
            if collide:
                contested.append(f"{q} WHERE list_contains({names}, d.property)")
                direct.append(f"{q} WHERE NOT list_contains({names}, d.property)")
            else:
                direct.append(q)
        return direct, contested


def winners_sql(p: Plan, direct: list[str], contested: list[str], users: str, props: str) -> str:
    """The long table: ``direct`` assignments are the only source of their property names;
    ``contested`` ones compete per (user, property) by (rank, mapping index, rule rank).

    Sorted by user id, property: ``users`` is a table of ``uid`` and its rank ``uo`` in user
    id order, holding every user of the result, and ``props`` one of ``property`` and its rank
    ``po``, so that the sort is on two integers instead of text (0.1 s less for 1.6M rows
    for the users, 0.3 s less for 4M rows for the names)."""
    names = _names(p.mapping_names)
    parts = []
    if direct:
        parts.append(f"""
            SELECT uid AS user_id, property, CAST(value AS VARCHAR) AS value, value_type,
                   event_time AS updated_at, message_id, rule, {names} AS mapping
            FROM ({" UNION ALL ".join(direct)})""")
    if contested:
        # r < 2^40 candidates per user; the mapping index (< 5) and rule rank (< 4) below it
        parts.append(f"""
            SELECT uid AS user_id, property, CAST(x.value AS VARCHAR) AS value, x.value_type,
                   x.event_time AS updated_at, x.message_id, x.rule,
                   {names.replace('mapping_index', 'x.mapping_index')} AS mapping
            FROM (SELECT uid, property,
                         arg_max(struct_pack(value := value, value_type := value_type,
                                             event_time := event_time, message_id := message_id,
                                             rule := rule, mapping_index := mapping_index),
                                 r * 32 + mapping_index * 4 + rule_rank) AS x
                  FROM ({" UNION ALL ".join(contested)}) GROUP BY uid, property)""")
    union = " UNION ALL ".join(f"({x})" for x in parts)
    return (f"SELECT w.* FROM ({union}) AS w JOIN {users} AS o ON o.uid = w.user_id "
            f"JOIN {props} AS n ON n.property = w.property ORDER BY o.uo ASC, n.po ASC")
