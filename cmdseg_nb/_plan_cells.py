"""SQL of cells and receiver rules over a warehouse table's select: the fast path's pieces.

:func:`cmdseg_nb._plan.plan` says, per table, which sources (:class:`~cmdseg_nb._plan.Src`:
a trait or property column, a top-level field, a literal, an ``@if`` of those) become which
properties. The pure functions here turn a source into SQL over the table's lean select
(``_selects.table_selects`` with the plan's passthrough columns): its raw value, whether its key
is in the received object (a NULL cell is "not sent", as the loader leaves the key out; so is a
NaN or infinite float, which cannot be JSON: ``_warehouse.json_value_sql``), its JSON and JSON
type name (the receiver's ``value_type``), receiver rule 1 on the user id and the non-empty
``user_property_event`` name. :func:`_lean_selects` makes one SELECT per table of the ordering
columns, the user, one trigger flag per mapping and the cells read; :func:`slots_of` the
mapping's slots, each with the SQL condition of an event assigning it, and the counts of
received objects and skip reasons. The receiver's rules are :mod:`cmdseg_nb._receiver`'s; the
queries that run this SQL are :mod:`cmdseg_nb._plan_run`'s and :mod:`cmdseg_nb._plan_dedupe`'s.
"""
from __future__ import annotations

from . import _receiver
from ._db import ident, sql_str
from ._plan import _FLOAT, Plan, Src, _leaves, key_sql
from ._warehouse import holds_json_sql, json_value_sql

__all__ = ["slots_of"]


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

    ``selects`` are ``_selects.table_selects`` (lean or not) with the plan's passthrough; with
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
