"""Fast path for raw Segment events (NDJSON, ``.json.gz``): parse each line once.

The generic path stores every event as JSON and reads each field with its own ``json_extract``
(one parse of the whole event per field), then builds the canonical table. Here one
``json_extract(line, [paths])`` per line pulls the handful of top-level fields the mappings and
triggers read (``type``, ``messageId``, ``userId``, the three times, ``traits``, ``event``...),
triggers and mapping-kit data are evaluated by the same compilers (``_fql``, ``_mappingkit``)
over a small JSON object of those fields, and only the received objects of matched events are
kept (one temporary table, one pass over the files). De-duplication, the hash tie-break (a
second, filtered pass only when copies tied on receivedAt differ), the order key and the
receiver rules are those of the generic path, so the long table is the same.

Used by ``user_properties`` when every source is raw and every mapping names the user by
``$.userId`` (the whole event, or a ``userId: {"@path": "$.userId"}`` key).
"""
from __future__ import annotations

import pandas as pd

from . import _receiver
from ._db import duckdb_errors, ident, json_path, sql_str
from ._errors import CmdsegError
from ._frame import long_frame
from ._plan import _K_TIME, _OUT_OF_RANGE, _TIE_ORDER, Unplannable, _k_time, _mid, _names
from ._warehouse import object_sql

__all__ = ["run"]

_SIMPLE = ("@path", "@if", "@literal", "@case", "@replace", "@excludeWhenNull")
_TRIGGER_KEYS = {"event-type": "type", "event": "event", "name": "name", "userId": "userId",
                 "event-property": "properties", "event-trait": "traits", "event-context": "context"}
_TEMP = ("cmdseg_raw_lean", "cmdseg_raw_special", "cmdseg_raw_hash", "cmdseg_raw_md5",
         "cmdseg_raw_slow", "cmdseg_raw_ties", "cmdseg_raw_ranks", "cmdseg_raw_assign")


def _keys_of_data(data, out: set) -> bool:
    """Collect the top-level event keys ``data`` reads; False when it may read anything."""
    if isinstance(data, list):
        return all(_keys_of_data(v, out) for v in data)
    if not isinstance(data, dict):
        return True
    directives = [k for k in data if k.startswith("@")]
    for d in directives:
        if d not in _SIMPLE:
            return False
        if d == "@path":
            from ._mappingkit import _path_keys
            path = data[d]
            if not isinstance(path, str):
                return False
            keys = _path_keys(path.replace("$.", "", 1))
            if keys is None or path in ("$", "$."):
                return False
            out.add(keys[0])
    return all(_keys_of_data(v, out) for k, v in data.items() if k != "@path")


def _trigger_keys(node: dict, out: set) -> None:
    if node.get("type") == "group":
        for c in node["children"]:
            _trigger_keys(c, out)
    else:
        out.add(_TRIGGER_KEYS.get(node["type"], node["type"]))


def _analyse(cfg) -> list[dict]:
    from ._fql import parse_fql
    out = []
    for i, m in enumerate(cfg.mappings):
        keys: set = {"type"}
        _trigger_keys(parse_fql(m.trigger), keys)
        whole = isinstance(m.data, dict) and set(m.data) == {"@path"} and m.data["@path"] in ("$.", "$")
        if whole:
            keys |= {"userId", "traits", "user_property_event"}
        else:
            if not isinstance(m.data, dict) or m.data.get("userId") != {"@path": "$.userId"}:
                raise Unplannable("a raw mapping that names the user otherwise than $.userId")
            if not _keys_of_data(m.data, keys):
                raise Unplannable("a raw mapping reading the whole event or directives beyond @path/@if")
        out.append({"i": i, "name": m.name, "trigger": m.trigger, "data": m.data, "whole": whole,
                    "keys": keys})
    return out


def _lean_sql(files: list[str], ms: list[dict], null_clears: bool) -> str:
    from ._fql import fql_to_sql
    from ._mappingkit import mapping_to_sql
    base = ["type", "messageId", "userId", "timestamp", "originalTimestamp", "receivedAt"]
    keys = base + sorted(set().union(*(m["keys"] for m in ms)) - set(base))
    idx = {k: i + 1 for i, k in enumerate(keys)}
    paths = "[" + ", ".join(json_path(k) for k in keys) + "]"

    def x(k: str) -> str:
        return f"cmdseg_xs[{idx[k]}]"

    def s(k: str) -> str:  # the loader's text of a top-level string/number field
        return (f"CASE WHEN json_type({x(k)}) IN ('VARCHAR', 'BIGINT', 'UBIGINT', 'DOUBLE', 'HUGEINT') "
                f"THEN json_extract_string({x(k)}, '$') END")

    def ts(k: str) -> str:
        return f"TRY_CAST(json_extract_string({x(k)}, '$') AS TIMESTAMPTZ)"

    uobj = "json_object('userId', " + x("userId") + ")"
    cols = [f"{s('type')} AS type", f"{s('messageId')} AS message_id",
            f"{ts('receivedAt')} AS received_at", f"{ts('originalTimestamp')} AS original_timestamp",
            f"COALESCE({ts('timestamp')}, {ts('originalTimestamp')}, {ts('receivedAt')}) AS event_time",
            # receiver rule 1 on P.userId (every mapping's P.userId is the event's userId)
            f"{_receiver.user_id_sql(uobj)} AS uid",
            "hash(line) AS h"]
    event_time = f"COALESCE({ts('timestamp')}, {ts('originalTimestamp')}, {ts('receivedAt')})"
    cols.append(f"{_K_TIME.replace('event_time', event_time)} AS k")  # rank added later
    for m in ms:
        i = m["i"]
        f = f"m{i}"
        # FQL does not tell a missing key from a null one: json_object of the keys it reads
        tkeys: set = set()
        from ._fql import parse_fql
        _trigger_keys(parse_fql(m["trigger"]), tkeys)
        tmini = "json_object(" + ", ".join(f"{sql_str(k)}, {x(k)}" for k in sorted(tkeys)) + ")"
        cols.append(f"({fql_to_sql(m['trigger'], tmini)}) AS {f}")
        if m["whole"]:
            tr = x("traits")
            cols.append(f"CASE WHEN {f} AND json_type({tr}) = 'OBJECT' THEN {tr} END AS {ident(f'traits{i}')}")
            cols.append(f"CASE WHEN {f} THEN {x('user_property_event')} END AS {ident(f'upe{i}')}")
            # top-level user_property.* keys are rare: the whole line is kept only when its text
            # holds the prefix
            cols.append(f"CASE WHEN {f} AND contains(line, '\"user_property.') THEN CAST(line AS JSON) END "
                        f"AS {ident(f'full{i}')}")
        else:
            # mapping-kit tells missing from null: leave SQL NULL (missing) keys out
            dmini = object_sql([(k, x(k)) for k in sorted(m["keys"])])
            data_sql = mapping_to_sql(m["data"], dmini, mapping_name=m["name"])
            cols.append(f"CASE WHEN {f} THEN CAST({data_sql} AS JSON) END AS {ident(f'p{i}')}")
    flags = " OR ".join(f"m{m['i']}" for m in ms)
    per_file = " UNION ALL ".join(
        f"SELECT {i} AS _f, CAST(r.json AS VARCHAR) AS line FROM read_json_objects({sql_str(p)}, "
        f"format='auto', ignore_errors=true) AS r WHERE r.json IS NOT NULL"
        for i, p in enumerate(files))
    return f"""
        SELECT _f, * EXCLUDE (_f) FROM (
            SELECT _f, {', '.join(cols)}
            FROM (SELECT _f, line, json_extract(line, {paths}) AS cmdseg_xs FROM ({per_file})))
        WHERE {{types}} OR ({flags})"""


def run(export, cfg, *, null_clears: bool = True) -> pd.DataFrame:
    """The long user-property table of raw events by one pass over the files."""
    if export.tables or not export.raw_files:
        raise Unplannable("not a raw-events export")
    ms = _analyse(cfg)
    con = export.con
    try:
        return _run(con, export, cfg, ms, null_clears)
    except CmdsegError as exc:
        if _OUT_OF_RANGE in str(exc):
            raise Unplannable("event times outside 1830-2110") from None
        raise
    finally:
        for t in _TEMP:
            con.execute(f"DROP TABLE IF EXISTS {t}")


def _types_in_play(cfg) -> list[str]:
    """Event types some trigger can match (de-duplication is per type; others are not read)."""
    from ._fql import fql_matches, parse_fql
    types = ["identify", "track", "page", "screen", "group", "alias"]
    out = set()
    for m in cfg.mappings:
        ast = parse_fql(m.trigger)
        keys: set = set()
        _trigger_keys(ast, keys)
        if keys - {"type"}:
            return []  # the trigger reads other fields: every type may match
        out |= {t for t in types if fql_matches(ast, {"type": t})}
    return sorted(out)


def _run(con, export, cfg, ms, null_clears) -> pd.DataFrame:
    lean, sp, hsh, md5t, slow, ties, ranks, asg = _TEMP
    types = _types_in_play(cfg)
    with duckdb_errors("running the raw-events mapping failed", CmdsegError):
        sql = _lean_sql(list(export.raw_files), ms, null_clears)
        sql = sql.replace("{types}", f"type IN ({', '.join(sql_str(t) for t in types)})" if types else "TRUE")
        con.execute(f"CREATE OR REPLACE TEMP TABLE {lean} AS {sql}")
        # de-duplication as the loader does it (per type and message id, latest receivedAt)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {sp} AS SELECT message_id FROM {lean} "
                    f"WHERE message_id IS NOT NULL GROUP BY message_id HAVING count(*) > 1")
        row = "struct_pack(" + ", ".join(
            f"{ident('c' + str(i))} := {ident(r[0])}" for i, r in
            enumerate(con.execute(f"DESCRIBE {lean}").fetchall()) if r[0] not in ("h",)) + ")"
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {hsh} AS
            SELECT message_id FROM {lean} WHERE message_id IN (SELECT message_id FROM {sp})
            GROUP BY type, message_id, received_at HAVING count(*) > 1 AND count(DISTINCT {row}) > 1
            UNION SELECT message_id FROM {lean} WHERE message_id IN (SELECT message_id FROM {sp})
            GROUP BY message_id HAVING count(DISTINCT type) > 1""")
        need = con.execute(f"SELECT count(*) FROM {lean} WHERE message_id IS NULL OR message_id IN "
                           f"(SELECT message_id FROM {hsh})").fetchall()[0][0]
        con.execute(f"CREATE OR REPLACE TEMP TABLE {md5t} (_f INTEGER, h UBIGINT, event_hash VARCHAR)")
        if need:
            # a second, filtered pass: the loader's hash of the event for the rows that need it
            hs = f"(SELECT DISTINCT h FROM {lean} WHERE message_id IS NULL OR message_id IN (SELECT message_id FROM {hsh}))"
            per_file = " UNION ALL ".join(
                f"SELECT {i} AS _f, r.json AS j FROM read_json_objects({sql_str(p)}, format='auto', "
                f"ignore_errors=true) AS r WHERE r.json IS NOT NULL"
                for i, p in enumerate(export.raw_files))
            con.execute(f"""INSERT INTO {md5t} SELECT DISTINCT _f, hash(CAST(j AS VARCHAR)),
                                md5(CAST(CAST(j AS JSON) AS VARCHAR))
                            FROM ({per_file}) WHERE hash(CAST(j AS VARCHAR)) IN {hs}""")
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {slow} AS
            SELECT * EXCLUDE (_dup) FROM (
                SELECT l.*, d.event_hash, row_number() OVER (
                    PARTITION BY l.type, l.message_id ORDER BY l.received_at DESC NULLS LAST, d.event_hash) AS _dup
                FROM {lean} AS l LEFT JOIN {md5t} AS d ON d._f = l._f AND d.h = l.h
                WHERE l.message_id IS NULL OR l.message_id IN (SELECT message_id FROM {sp}))
            WHERE _dup = 1 OR message_id IS NULL""")
        flags = " OR ".join(f"m{m['i']}" for m in ms)
        ev = (f"(SELECT *, CAST(NULL AS VARCHAR) AS event_hash FROM {lean} WHERE ({flags}) AND "
              f"message_id IS NOT NULL AND message_id NOT IN (SELECT message_id FROM {sp}) "
              f"UNION ALL BY NAME SELECT * FROM {slow} WHERE ({flags}))")
        # the order key (event time, then rank among a user's same-instant events)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {ties} AS SELECT uid, event_time FROM {ev} "
                    f"WHERE uid IS NOT NULL GROUP BY ALL HAVING count(*) > 1")
        key_cols = ("uid", "event_time", "original_timestamp", "received_at", "message_id", "event_hash")
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {ranks} AS
            SELECT DISTINCT {', '.join(key_cols)},
                   dense_rank() OVER (PARTITION BY uid, event_time ORDER BY {_TIE_ORDER}) - 1 AS rnk
            FROM {ev} AS e WHERE EXISTS (SELECT 1 FROM {ties} AS x WHERE x.uid = e.uid
                                         AND x.event_time IS NOT DISTINCT FROM e.event_time)""")
        if (con.execute(f"SELECT max(rnk) FROM {ranks}").fetchall()[0][0] or 0) >= 1024:
            raise Unplannable("more than 1023 events of one user at one instant")
        # add the rank to the key of tied events, in place (no join after the unnest below)
        for t in (lean, slow):
            on = " AND ".join(f"r.{c} IS NOT DISTINCT FROM {t}.{c}" for c in key_cols if c != "event_hash")
            eh = (f" AND r.event_hash IS NOT DISTINCT FROM {t}.event_hash" if t == slow
                  else " AND r.event_hash IS NULL")
            con.execute(f"UPDATE {t} SET k = k + r.rnk FROM {ranks} AS r WHERE r.rnk > 0 AND {on}{eh}")
        kev = f"(SELECT *, COALESCE('1' || message_id, '0') AS mid FROM {ev})"
        # receiver rules per mapping; w orders a user's assignments of one property
        keep_null = "" if null_clears else " AND j.type <> 'NULL'"
        parts, counts = [], []
        for m in ms:
            i, f = m["i"], f"m{m['i']}"
            cols = f"uid, k, mid, {i} AS mapping_index"
            if m["whole"]:
                tr, upe, full = ident(f"traits{i}"), ident(f"upe{i}"), ident(f"full{i}")
                parts.append(f"SELECT {cols}, j.key AS property, j.value AS value, 1 AS rule_rank "
                             f"FROM {kev} AS e, json_each(e.{tr}) AS j WHERE {f} AND uid IS NOT NULL{keep_null}")
                parts.append(f"SELECT {cols}, substr(j.key, {len(_receiver.PREFIX) + 1}) AS property, "
                             f"j.value AS value, 2 AS rule_rank FROM {kev} AS e, json_each(e.{full}) AS j "
                             f"WHERE {f} AND uid IS NOT NULL AND starts_with(j.key, '{_receiver.PREFIX}') "
                             f"AND length(j.key) > {len(_receiver.PREFIX)}{keep_null}")
                parts.append(f"SELECT {cols}, json_extract_string({upe}, '$') AS property, "
                             f"CAST('true' AS JSON) AS value, 3 AS rule_rank FROM {kev} "
                             f"WHERE {f} AND uid IS NOT NULL AND json_type({upe}) = 'VARCHAR' "
                             f"AND json_extract_string({upe}, '$') <> ''")
                counts.append(f"""SELECT count(*) FILTER (WHERE {f}),
                    count(*) FILTER (WHERE {f} AND uid IS NULL),
                    count(*) FILTER (WHERE {f} AND uid IS NOT NULL AND json_exists({full}, {json_path(_receiver.PREFIX)})),
                    count(*) FILTER (WHERE {f} AND uid IS NOT NULL AND {upe} IS NOT NULL
                                     AND (json_type({upe}) <> 'VARCHAR' OR json_extract_string({upe}, '$') = ''))
                    FROM {ev}""")
            else:
                p = ident(f"p{i}")
                objects = f"(SELECT {cols}, {p} AS p FROM {kev} WHERE {f})"
                sub = _receiver.assignments_sql(objects, null_clears=null_clears)
                parts.append(f"SELECT uid, k, mid, mapping_index, property, value, rule_rank FROM ({sub})")
                upe = json_path("user_property_event")
                counts.append(f"""SELECT count(*) FILTER (WHERE {f}),
                    count(*) FILTER (WHERE {f} AND uid IS NULL),
                    count(*) FILTER (WHERE {f} AND uid IS NOT NULL AND json_type({p}) = 'OBJECT'
                                     AND json_exists({p}, {json_path(_receiver.PREFIX)})),
                    count(*) FILTER (WHERE {f} AND uid IS NOT NULL AND json_type({p}) = 'OBJECT'
                                     AND json_exists({p}, {upe}) AND (json_type({p}, {upe}) <> 'VARCHAR'
                                     OR json_extract_string({p}, {upe}) = ''))
                    FROM {ev}""")
        names = _names([m["name"] for m in ms]).replace("mapping_index", "mi")
        # one HUGEINT orders a user's assignments of one property: key, mapping, rule (rule 5)
        # (k is shifted to be non-negative: the NULL-time sentinel is negative)
        w = f"((CAST(k AS HUGEINT) + {2 ** 62}) * 32 + mapping_index * 4 + rule_rank)"
        sql = f"""
            SELECT uid AS user_id, property, CAST(value AS VARCHAR) AS value,
                   {_receiver.value_type_sql('json_type(value)')} AS value_type,
                   {_k_time('kk')} AS updated_at, {_mid('mid')} AS message_id,
                   CASE rr WHEN 1 THEN 'traits' WHEN 2 THEN 'user_property' ELSE 'user_property_event' END AS rule,
                   {names} AS mapping
            FROM (SELECT uid, property, value, mid, CAST(mw // 32 - {2 ** 62} AS BIGINT) AS kk,
                         CAST((mw // 4) % 8 AS INTEGER) AS mi, CAST(mw % 4 AS INTEGER) AS rr
                  FROM (SELECT uid, property, arg_max(value, w) AS value, arg_max(mid, w) AS mid,
                               max(w) AS mw
                        FROM (SELECT *, {w} AS w FROM ({' UNION ALL '.join(parts)}))
                        GROUP BY uid, property))
            ORDER BY user_id, property"""
        df = long_frame(con, sql)
        tot = [0, 0, 0, 0]
        for c in counts:
            for j, v in enumerate(con.execute(c).fetchall()[0]):
                tot[j] += int(v or 0)
    df.attrs["skipped"] = {"no_user_id": tot[1], "empty_user_property_name": tot[2],
                           "invalid_user_property_event": tot[3]}
    df.attrs["objects"] = tot[0]
    return df
