"""Fast path for raw Segment events (NDJSON, ``.json.gz``): parse each line once.

The generic path stores every event as JSON and reads each field with its own ``json_extract``
(one parse of the whole event per field), then builds the canonical table. Here one pass over
the files keeps the matched events in a temporary "lean" table, each line's top-level fields
read by one ``json_extract`` (the SQL of that pass is :mod:`cmdseg_nb._plan_raw_compile`'s).
Lines that are not JSON are kept too (as rows without hash), so the same pass counts them
(``run`` warns). De-duplication is the loader's (per type and message id, latest receivedAt;
the event hash, from a second, filtered pass, only where copies tied on receivedAt differ or
events without message id tie on everything else): the losing copies are deleted.

Which value wins, by candidates (no per-instant ranks, no UPDATE):

1. ``k`` is the event time as a BIGINT (``epoch_us``; NULL time lowest).
2. Phase 1: per (user, property), ``max(k)`` over the assignments, property names only: per
   (user, set of trait keys) for traits (``json_keys``, no values), per (user, name) for
   ``user_property.*`` keys. ``user_property_event`` assignments are grouped per (user, event
   name) with their two latest k (``max(k, 2)``, one per row and mapping) and the latest row's
   message id and mapping: a group whose latest k is one row's, for a name no other source sets
   (for any user), is settled, and that row is its result (1M generated events: 413,262 of
   413,298 groups; the candidates drop from 439K events to 46K). ``W`` is the set of (user, k)
   pairs that are one of the other maxima.
3. The candidates ``C`` are the de-duplicated matched events whose (user, k) is in ``W`` (a
   join), ranked once per user by the full order: k, originalTimestamp, receivedAt, message id,
   event hash (``r``). From here on a user is named by ``uo``, the rank of its id, so that
   phase 2 groups, joins and sorts on an integer.
4. Phase 2: the assignments of ``C`` only; per (user, property) the greatest (r, mapping index,
   rule rank). Every assignment tied with the winner on ``k`` belongs to ``C``, so this is exact.

Used by ``user_properties`` when every source is raw and every mapping names the user by
``$.userId`` (the whole event, or a ``userId: {"@path": "$.userId"}`` key).
"""
from __future__ import annotations

import os
import warnings

import duckdb
import pandas as pd

from . import _receiver
from ._db import drop_temp, duckdb_errors, ident, json_path, scratch, settings, sql_str
from ._errors import CmdsegError, CmdsegWarning, ExportError
from ._frame import long_frame
from ._plan import (
    SETTLED,
    Unplannable,
    _names,
    key_time_sql,
    rank_table_sql,
    repeated_id_hashes_sql,
)
from ._plan_raw_compile import _analyse, _lean_sql, _possible_types, _sources

__all__ = ["run"]

_TEMP = ("cmdseg_raw_lean", "cmdseg_raw_special", "cmdseg_raw_copies", "cmdseg_raw_hash", "cmdseg_raw_md5",
         "cmdseg_raw_static", "cmdseg_raw_texts", "cmdseg_raw_names",
         "cmdseg_raw_groups", "cmdseg_raw_keys", "cmdseg_raw_users", "cmdseg_raw_win", "cmdseg_raw_cand",
         "cmdseg_raw_props")
_TIE_ORDER = ("k ASC, ok ASC, rk ASC, message_id ASC NULLS FIRST, event_hash ASC NULLS FIRST")


def run(export, cfg, *, null_clears: bool = True) -> pd.DataFrame:
    """The long user-property table of raw events by one pass over the files."""
    if export.tables or not export.raw_files:
        raise Unplannable("not a raw-events export")
    ms = _analyse(cfg)
    if not ms:
        raise Unplannable("no mapping")
    _sources(ms)
    con = export.con
    # no step reads a table's row order (each sorts on the full order it needs, and the result
    # query has its ORDER BY): the inserts need not keep it, which spares each its ordered
    # batch collection (5M events, custom mapping: user_properties 14.4-15.6 s against
    # 15.6-16.5 s; at 20M under a 2 GB limit within noise, 67.9 s both)
    with scratch(con, _TEMP, transaction=False), settings(con, preserve_insertion_order=False):
        df, bad = _run(con, export, ms, null_clears)
    if bad:
        where = ", ".join(f"{n:,} in {os.path.basename(export.raw_files[f])}" for f, n in sorted(bad.items()))
        warnings.warn(f"{sum(bad.values()):,} line(s) are not JSON and were skipped ({where}); "
                      f"export.report names them", CmdsegWarning, stacklevel=3)
    return df


def _per_file(files, cols: str) -> str:
    return " UNION ALL ".join(
        f"SELECT {i} AS _f, {cols} FROM read_json_objects({sql_str(p)}, format='auto', "
        f"ignore_errors=true) AS r WHERE r.json IS NOT NULL" for i, p in enumerate(files))


def _hash_pass(con, files, md5t: str, rows: str) -> None:
    """A second, filtered pass: the loader's hash of the event (md5 of its JSON text) for the
    rows ``rows`` (a relation with ``_f`` and ``h``, the hash of the line)."""
    con.execute(f"""INSERT INTO {md5t} SELECT DISTINCT _f, hash(CAST(j AS VARCHAR)),
                        md5(CAST(CAST(j AS JSON) AS VARCHAR))
                    FROM ({_per_file(files, 'r.json AS j')})
                    WHERE (_f, hash(CAST(j AS VARCHAR))) IN (SELECT DISTINCT (_f, h) FROM ({rows}))
                    AND (_f, hash(CAST(j AS VARCHAR))) NOT IN (SELECT (_f, h) FROM {md5t})""")


def _is_object(col: str) -> str:
    """SQL: the JSON column is an object (the lean ``traits`` column holds objects only)."""
    return f"{col} IS NOT NULL" if col == "traits" else f"json_type({col}) = 'OBJECT'"


def _kv(rel: str, col: str, cols: str, where: str) -> str:
    """The keys and values of the JSON objects in column ``col`` of ``rel``, with ``cols``:
    ``key``, ``value`` (JSON). Two lists unnested side by side (json_keys, ``$.*``): no lateral
    json_each, whose decorrelation joins the results back on the object text."""
    return (f"SELECT {cols}, unnest(json_keys({col})) AS key, unnest(json_extract({col}, '$.*')) AS value "
            f"FROM {rel} WHERE ({where}) AND {_is_object(col)}")


def _phase1_sql(ms: list[dict], null_clears: bool, ev: str, names: str) -> tuple[str, str | None]:
    """Phase 1 from property names only (no values): ``(static, upe)``.

    ``static`` selects ``(uid, property, k)``: per source other than ``user_property_event``
    (traits, ``user_property.*`` keys, named ``user_property.<name>`` keys), the latest event
    time ``k`` of each (user, property) it assigns. ``upe`` selects one row per
    ``user_property_event`` assignment (``uid, pid, k, message_id, mi``: the event's user, the
    number of the property it names in ``names`` (see :func:`_names_sql`), its time and id, and
    the mapping's index), or is None when no mapping has that key. The pairs (user, latest k)
    of every (user, property) are among the pairs these give."""
    pre, n = _receiver.PREFIX, len(_receiver.PREFIX)
    nn = "" if null_clears else " AND json_type(value) <> 'NULL'"
    parts, upes = [], []

    def traits(flag: str, col: str) -> None:
        if null_clears:  # one row per (user, set of keys): most identifies of a user share it.
            # The set is grouped on as its JSON text, not as a list (20M events under a 2 GB
            # limit: 3.0-3.4 s against 3.5-3.8 s; a JSON array of the keys round-trips any key)
            parts.append(f"""SELECT uid, property, max(mk) AS k FROM (
                SELECT uid, unnest(from_json(ks, '["VARCHAR"]')) AS property, mk FROM (
                    SELECT uid, CAST(json_keys({col}) AS JSON) AS ks, max(k) AS mk FROM {ev}
                    WHERE {flag} AND uid IS NOT NULL AND {_is_object(col)} GROUP BY ALL))
                GROUP BY uid, property""")
        else:
            parts.append(f"SELECT uid, key AS property, max(k) AS k FROM "
                         f"({_kv(ev, col, 'uid, k', f'{flag} AND uid IS NOT NULL')}) WHERE true{nn} GROUP BY uid, key")

    def upe(flag: str, col: str, i: int) -> None:  # names holds the valid names only
        upes.append(f"SELECT e.uid, n.pid, e.k, e.message_id, {i} AS mi FROM {ev} AS e "
                    f"JOIN {names} AS n ON n.j = e.{col} WHERE e.{flag} AND e.uid IS NOT NULL")

    whole = [m for m in ms if m["whole"]]
    if whole:
        wf = "(" + " OR ".join(f"m{m['i']}" for m in whole) + ")"
        traits(wf, "traits")
        parts.append(f"SELECT uid, substr(key, {n + 1}) AS property, max(k) AS k FROM "
                     f"({_kv(ev, 'uprops', 'uid, k', f'{wf} AND uid IS NOT NULL')}) "
                     f"WHERE starts_with(key, '{pre}') AND length(key) > {n}{nn} GROUP BY uid, key")
        for m in whole:  # one row per mapping: two mappings may match one event
            upe(f"m{m['i']}", "upe", m["i"])
    for m in ms:
        f = f"m{m['i']}"
        for kind, col, _sql, prop in ([] if m["whole"] else m["src"]):
            if kind == "traits":
                traits(f, col)
            elif kind == "prop":  # one property name: per user
                parts.append(f"SELECT uid, {sql_str(prop)} AS property, max(k) AS k FROM {ev} "
                             f"WHERE {f} AND uid IS NOT NULL AND {col} IS NOT NULL"
                             + ("" if null_clears else f" AND json_type({col}) <> 'NULL'") + " GROUP BY uid")
            elif kind == "upe":
                upe(f, col, m["i"])
    static = (" UNION ALL ".join(f"({q})" for q in parts) if parts else
              "SELECT CAST(NULL AS VARCHAR) AS uid, CAST(NULL AS VARCHAR) AS property, CAST(NULL AS BIGINT) AS k "
              "WHERE false")
    return static, (" UNION ALL ".join(upes) if upes else None)


def _event_name_ok(col: str) -> str:
    """SQL: the JSON ``col`` (a ``user_property_event`` value) is a non-empty string, the
    name of the property it sets (receiver rule 4)."""
    return f"json_type({col}) = 'VARCHAR' AND {col} ->> '$' <> ''"


def _upe_sources(ms: list[dict]) -> list[tuple[int, str]]:
    """``(mapping index, lean column)`` of each mapping's ``user_property_event`` key."""
    return [(m["i"], col) for m in ms for kind, col, _sql, _prop in m["src"] if kind == "upe"]


def _texts_sql(ms: list[dict], ev: str) -> str:
    """Per mapping with a ``user_property_event`` key, the distinct JSON texts of that key in
    the events with a user (``mi, j, n``: mapping index, text, events). Names are few (one per
    event name): the JSON of the names is read from these few texts, not from every event."""
    return ("SELECT mi, j, count(*) AS n FROM (" + " UNION ALL ".join(
        f"SELECT {i} AS mi, {col} AS j FROM {ev} WHERE m{i} AND uid IS NOT NULL AND {col} IS NOT NULL"
        for i, col in _upe_sources(ms)) + ") GROUP BY mi, j")


def _names_sql(texts: str) -> str:
    """The texts of ``texts`` that are valid names (:func:`_event_name_ok`): ``j, property,
    pid``, the text, the name, and the name's number (texts spelling one name share it)."""
    return (f"SELECT j, property, dense_rank() OVER (ORDER BY property) AS pid FROM ("
            f"SELECT j, j ->> '$' AS property FROM (SELECT DISTINCT j FROM {texts}) WHERE {_event_name_ok('j')})")


def _assignments_sql(ms: list[dict], null_clears: bool, cand: str, groups: str, names: str) -> str:
    """Phase 2: every assignment of the candidates (ranked ``r`` per user), with ``w``, its
    order among those of its (user, property): rank, mapping index, rule rank (rule 5). The
    user is named by ``uo``, the rank of the user id (an integer to group, join and sort on).
    ``user_property_event`` assignments count only for the (user, property) groups of
    ``groups`` that are not settled (the settled ones are in the result already); their names
    are those of ``names``, the valid ones that phase 1 grouped on."""
    pre, n = _receiver.PREFIX, len(_receiver.PREFIX)
    nn = "" if null_clears else " AND json_type(value) <> 'NULL'"
    n_map = len(ms)
    parts = []
    for m in ms:
        i, f = m["i"], f"m{m['i']}"

        def w(rr: int, i: int = i) -> str:
            return f"(r * {4 * n_map} + {i * 4 + rr}) AS w"
        for kind, col, _sql, prop in m["src"]:
            if kind == "traits":
                parts.append(f"SELECT uo, key AS property, value, {w(1)} FROM ({_kv(cand, col, 'uo, r', f)})"
                             f" WHERE true{nn}")
            elif kind == "uprops":
                parts.append(f"SELECT uo, substr(key, {n + 1}) AS property, value, {w(2)} "
                             f"FROM ({_kv(cand, col, 'uo, r', f)}) "
                             f"WHERE starts_with(key, '{pre}') AND length(key) > {n}{nn}")
            elif kind == "prop":
                parts.append(f"SELECT uo, {sql_str(prop)} AS property, {col} AS value, {w(2)} FROM {cand} "
                             f"WHERE {f} AND {col} IS NOT NULL" + ("" if null_clears else f" AND json_type({col}) <> 'NULL'"))
            elif kind == "upe":
                parts.append(f"SELECT c.uo, n.property, CAST('true' AS JSON) AS value, {w(3)} "
                             f"FROM {cand} AS c JOIN {names} AS n ON n.j = c.{col} WHERE c.{f} AND EXISTS ("
                             f"SELECT 1 FROM {groups} AS g WHERE NOT g.settled AND g.uid = c.uid "
                             f"AND g.property = n.property)")
    if not parts:
        return ("SELECT CAST(NULL AS BIGINT) AS uo, CAST(NULL AS VARCHAR) AS property, "
                "CAST(NULL AS JSON) AS value, CAST(NULL AS BIGINT) AS w WHERE false")
    return " UNION ALL ".join(parts)


def _counts_sql(ms: list[dict], ev: str) -> str:
    """Per mapping, in one scan of the de-duplicated events: received objects, objects without
    user, bare ``user_property.`` keys (the invalid ``user_property_event`` values are counted
    from :func:`_texts_sql`'s texts)."""
    out = []
    for m in ms:
        f = f"m{m['i']}"
        ne = "false"
        for kind, col, _sql, _prop in m["src"]:
            if kind == "uprops":
                ne = f"json_exists(uprops, {json_path(_receiver.PREFIX)})"
            elif kind == "empty":
                ne = f"{col} IS NOT NULL"
        out += [f"count(*) FILTER (WHERE {f})", f"count(*) FILTER (WHERE {f} AND uid IS NULL)",
                f"count(*) FILTER (WHERE {f} AND uid IS NOT NULL AND {ne})"]
    return f"SELECT {', '.join(out)} FROM {ev}"


def _without_filter_pushdown(con, sql: str) -> None:
    """Run ``sql`` with DuckDB's filter pushdown off: pushed below the projection that computes
    the mapping flags, the lean pass's filter would compute them (and parse the fields they
    read) twice per line."""
    prev = con.execute("SELECT value FROM duckdb_settings() WHERE name = 'disabled_optimizers'").fetchall()
    prev = prev[0][0] if prev else ""
    opts = ",".join(o for o in [*(prev or "").split(","), "filter_pushdown"] if o.strip())
    with settings(con, disabled_optimizers=opts):
        con.execute(sql)


def _run(con, export, ms, null_clears) -> tuple[pd.DataFrame, dict]:
    lean, sp, cp, hsh, md5t, p1, texts, names, groups, keys, users, win, cand, props = _TEMP
    files = list(export.raw_files)
    with duckdb_errors("running the raw-events mapping failed", CmdsegError):
        try:
            _without_filter_pushdown(
                con, f"CREATE OR REPLACE TEMP TABLE {lean} AS {_lean_sql(files, ms, _possible_types(ms))}")
        except (duckdb.IOException, duckdb.InvalidInputException) as exc:
            # a truncated gzip stream; a first line that is not JSON, so no format is detected
            raise ExportError(f"cannot read the raw event files: {exc} (a truncated or corrupt "
                              f"file?)") from exc
        bad = dict(con.execute(f"SELECT _f, count(*) FROM {lean} WHERE h IS NULL GROUP BY _f").fetchall())
        if bad:
            con.execute(f"DELETE FROM {lean} WHERE h IS NULL")
        # de-duplication as the loader does it (per type and message id, latest receivedAt):
        # the copies that lose are deleted, so that the table holds the de-duplicated events.
        # The ids seen more than once are found by hash; a collision only adds an id seen once,
        # which the steps below keep
        con.execute(f"CREATE OR REPLACE TEMP TABLE {sp} AS {repeated_id_hashes_sql(lean)}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE {md5t} (_f INTEGER, h UBIGINT, event_hash VARCHAR)")
        if con.execute(f"SELECT count(*) FROM {sp}").fetchall()[0][0]:
            # the rows of those ids, narrow (row id, line, type, id, receivedAt), read once for
            # both groupings, the hash pass and the delete; every column is read only for the
            # copies tied on receivedAt (20M events under a 2 GB limit: these steps 2.9-3.3 s
            # against 3.9-4.8 s, when the rows of those ids were read whole, then read again)
            con.execute(f"CREATE OR REPLACE TEMP TABLE {cp} AS SELECT rowid AS rid, _f, h, type, message_id, rk "
                        f"FROM {lean} WHERE message_id IS NOT NULL AND hash(message_id) IN (SELECT h FROM {sp})")
            tied_rows = (f"SELECT rid FROM (SELECT rid, count(*) OVER (PARTITION BY type, message_id, rk) AS n "
                         f"FROM {cp}) WHERE n > 1")
            row = "struct_pack(" + ", ".join(
                f"{ident('c' + str(i))} := {ident(r[0])}" for i, r in
                enumerate(con.execute(f"DESCRIBE {lean}").fetchall()) if r[0] not in ("h", "_f")) + ")"
            # copies tied on receivedAt that differ, and ids shared by types: the event hash decides
            differ = (f"SELECT message_id FROM {lean} WHERE rowid IN ({tied_rows}) "
                      f"GROUP BY type, message_id, rk HAVING count(DISTINCT {row}) > 1 UNION "
                      if con.execute(f"SELECT count(*) FROM ({tied_rows})").fetchall()[0][0] else "")
            con.execute(f"""CREATE OR REPLACE TEMP TABLE {hsh} AS {differ}
                SELECT message_id FROM {cp} GROUP BY message_id HAVING count(DISTINCT type) > 1""")
            if con.execute(f"SELECT count(*) FROM {hsh}").fetchall()[0][0]:
                _hash_pass(con, files, md5t,
                           f"SELECT _f, h FROM {cp} WHERE message_id IN (SELECT message_id FROM {hsh})")
            con.execute(f"""DELETE FROM {lean} WHERE rowid IN (
                SELECT rid FROM (
                    SELECT c.rid, row_number() OVER (PARTITION BY c.type, c.message_id
                        ORDER BY c.rk DESC, d.event_hash) AS _dup
                    FROM {cp} AS c LEFT JOIN {md5t} AS d ON d._f = c._f AND d.h = c.h)
                WHERE _dup > 1)""")
        # events without message id tied on everything else: the event hash orders them
        tk = ("uid", "k", "ok", "rk")
        tied = (f"SELECT _f, h FROM {lean} AS l WHERE message_id IS NULL AND uid IS NOT NULL AND EXISTS ("
                f"SELECT 1 FROM (SELECT {', '.join(tk)} FROM {lean} WHERE message_id IS NULL AND uid IS NOT NULL "
                f"GROUP BY ALL HAVING count(*) > 1) AS t WHERE "
                + " AND ".join(f"t.{c} IS NOT DISTINCT FROM l.{c}" for c in tk) + ")")
        if con.execute(f"SELECT count(*) FROM ({tied})").fetchall()[0][0]:
            _hash_pass(con, files, md5t, tied)
        if con.execute(f"SELECT count(*) FROM {md5t}").fetchall()[0][0]:
            ev = (f"(SELECT l.*, d.event_hash FROM {lean} AS l "
                  f"LEFT JOIN {md5t} AS d ON d._f = l._f AND d.h = l.h)")
        else:
            ev = f"(SELECT *, CAST(NULL AS VARCHAR) AS event_hash FROM {lean})"
        # The user_property_event names: the distinct texts of the key first (one per event
        # name), their JSON read there, the valid names numbered; the groups are per (user,
        # number), and the invalid values are counted from the texts (20M events, custom mapping,
        # 2 GB limit: texts, groups and counts 4.2-4.3 s against 7.1-7.7 s, when every event's text
        # was read as JSON twice and grouped on as a name; all steps after the one pass 16.8-16.9 s
        # against 21.1-21.3 s)
        invalid: dict = {}
        if _upe_sources(ms):
            con.execute(f"CREATE OR REPLACE TEMP TABLE {texts} AS {_texts_sql(ms, lean)}")
            con.execute(f"CREATE OR REPLACE TEMP TABLE {names} AS {_names_sql(texts)}")
            invalid = dict(con.execute(f"SELECT mi, sum(n) FROM {texts} WHERE j NOT IN "
                                       f"(SELECT j FROM {names}) GROUP BY mi").fetchall())
        else:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {names} (j JSON, property VARCHAR, pid BIGINT)")
        # phase 1: the latest k per (user, property) of every source but user_property_event;
        # per (user, event name) of the user_property_event assignments, the two latest k (of
        # one row each, max(k, 2)) and what the latest row names. A group whose latest k is
        # one row's, for a name no other source assigns, is settled: that row wins it (its
        # message id and mapping are two arg_max, which agree there: 5M events, 0.2 s less than
        # one arg_max of a struct; arg_max_null, as arg_max skips a latest row without an id).
        # ``mid`` and ``mi`` are read for settled groups only: on a tied latest k they may name
        # two rows
        static, upe_rows = _phase1_sql(ms, null_clears, ev, names)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {p1} AS {static}")
        if upe_rows is None:
            upe_rows = ("SELECT CAST(NULL AS VARCHAR) AS uid, CAST(NULL AS BIGINT) AS pid, "
                        "CAST(NULL AS BIGINT) AS k, CAST(NULL AS VARCHAR) AS message_id, 0 AS mi WHERE false")
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {groups} AS
            SELECT g.uid, x.property, g.k2, g.mid, g.mi, ({SETTLED}) AND n.property IS NULL AS settled FROM (
                SELECT uid, pid, max(k, 2) AS k2, arg_max_null(message_id, k) AS mid,
                       arg_max(mi, k) AS mi
                FROM ({upe_rows}) GROUP BY uid, pid) AS g
            JOIN (SELECT DISTINCT pid, property FROM {names}) AS x ON x.pid = g.pid
            LEFT JOIN (SELECT DISTINCT property FROM {p1}) AS n ON n.property = x.property""")
        # W: the (user, k) pairs of those maxima, but for settled groups. Users are named by
        # their rank (``uo``, by user id) from here on: phase 2 groups, joins and sorts on that
        # integer instead of the id's text
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {keys} AS SELECT DISTINCT uid, k FROM (
            SELECT uid, k FROM {p1} UNION ALL SELECT uid, k2[1] FROM {groups} WHERE NOT settled)""")
        con.execute(rank_table_sql(users, "uid", "uo", [f"SELECT uid FROM {keys}",
                                                         f"SELECT uid FROM {groups} WHERE settled"]))
        con.execute(f"CREATE OR REPLACE TEMP TABLE {win} AS SELECT w.uid, w.k, u.uo FROM {keys} AS w "
                    f"JOIN {users} AS u ON u.uid = w.uid")
        # the candidates: the events at some (user, k) of W, ranked once per user by the full order
        anyf = " OR ".join(f"m{m['i']}" for m in ms)
        keep = ", ".join(f"e.{ident(r[0])}" for r in con.execute(f"DESCRIBE {lean}").fetchall()
                         if r[0] not in ("_f", "h", "type")) + ", e.event_hash"
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {cand} AS
            SELECT *, row_number() OVER (PARTITION BY uo ORDER BY {_TIE_ORDER}) AS r FROM (
                SELECT {keep}, w.uo FROM {ev} AS e JOIN {win} AS w ON w.uid = e.uid AND w.k = e.k
                WHERE ({anyf}))""")
        # every property name of the result (a static one has its phase-1 maximum, a
        # user_property_event one its group) with its rank in name order: the result is sorted
        # on that integer instead of the text (20M events, 2 GB limit: 0.5-1.3 s less). The
        # result joins this table, so every kind of assignment of _assignments_sql must have
        # its source in _phase1_sql or the groups (else its rows would be dropped): the random
        # raw tests compare the result with the generic path's
        con.execute(rank_table_sql(props, "property", "po", [f"SELECT property FROM {p1}",
                                                              f"SELECT property FROM {groups}"]))
        # phase 2: the candidates' assignments; per (user, property) the latest by
        # (rank, mapping, rule 5); then the settled groups' rows
        n_map = len(ms)
        names_sql = _names([m["name"] for m in ms]).replace("mapping_index", "mi")
        sql = f"""
            SELECT uid AS user_id, property, CAST(value AS VARCHAR) AS value,
                   {_receiver.value_type_sql('json_type(value)')} AS value_type,
                   {key_time_sql('k')} AS updated_at, message_id,
                   CASE rr WHEN 1 THEN 'traits' WHEN 2 THEN 'user_property' ELSE 'user_property_event' END AS rule,
                   {names_sql} AS mapping
            FROM (SELECT x.*, n.po FROM (SELECT uo, uid, property, value, message_id, k, CAST((mw // 4) % {n_map} AS INTEGER) AS mi,
                         CAST(mw % 4 AS INTEGER) AS rr
                  FROM (SELECT a.*, c.uid, c.message_id, c.k FROM (
                            SELECT uo, property, arg_max(value, w) AS value, max(w) AS mw
                            FROM ({_assignments_sql(ms, null_clears, cand, groups, names)}) GROUP BY uo, property) AS a
                        JOIN {cand} AS c ON c.uo = a.uo AND c.r = a.mw // {4 * n_map})
                  UNION ALL
                  SELECT u.uo, g.uid, g.property, CAST('true' AS JSON), g.mid, g.k2[1], g.mi, 3
                  FROM {groups} AS g JOIN {users} AS u ON u.uid = g.uid WHERE g.settled) AS x
                  JOIN {props} AS n ON n.property = x.property)
            ORDER BY uo ASC, po ASC"""
        vals = con.execute(_counts_sql(ms, lean)).fetchall()[0]
        # the result needs only the candidates, groups, names and user ranks: the lean table
        # and the other steps' tables go first, so that the final sort has their memory (and
        # spills less under a memory limit)
        drop_temp(con, (lean, sp, cp, hsh, md5t, p1, texts, keys, win))
        df = long_frame(con, sql)
    tot = [sum(int(v or 0) for v in vals[j::3]) for j in range(3)]
    df.attrs["skipped"] = {"no_user_id": tot[1], "empty_user_property_name": tot[2],
                           "invalid_user_property_event": sum(int(v) for v in invalid.values())}
    df.attrs["objects"] = tot[0]
    return df, bad
