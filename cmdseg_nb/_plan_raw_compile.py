"""The raw fast path's one pass, compiled: what the mappings read, and the lean table's SQL.

The generic path stores every event as JSON and reads each field with its own ``json_extract``
(one parse of the whole event per field). Here one ``json_extract(line, [paths])`` per line
pulls the handful of top-level fields the mappings and triggers read (``type``, ``messageId``,
``userId``, the three times, ``traits``, ``event``...); triggers and mapping-kit data are
compiled by the same compilers (``_fql``, ``_mappingkit``) and read those fields directly. One
pass over the files keeps the matched events in a temporary "lean" table: times as BIGINT keys,
the user, the mapping flags, the traits object of whole-event mappings, one column per
``user_property.*`` / ``user_property_event`` key of the others. Lines that are not JSON are
kept too (as rows without hash), so the same pass counts them.

:func:`_analyse` finds the top-level keys each mapping and trigger reads, and raises
``Unplannable`` for a mapping that names the user otherwise than by ``$.userId``, or reads the
whole event or directives beyond ``@path``/``@if``/``@literal``/``@case``/``@replace``/
``@excludeWhenNull``; :func:`_sources` lists what each mapping's received objects assign
(receiver rules 2-4 of :mod:`cmdseg_nb._receiver`: traits, ``user_property.*`` keys,
``user_property_event``); :func:`_possible_types` says which unmatched lines the pass keeps,
those that may share type and message id with a matched one (de-duplication needs them). The
phases that read the lean table are :mod:`cmdseg_nb._plan_raw`'s.
"""
from __future__ import annotations

import re

from . import _receiver
from ._db import json_path, sql_str
from ._plan import Unplannable, key_sql
from ._warehouse import object_sql, scalar_text_sql

__all__: list[str] = []  # private helpers only: _plan_raw imports them by name

_SIMPLE = ("@path", "@if", "@literal", "@case", "@replace", "@excludeWhenNull")
_TRIGGER_KEYS = {"event-type": "type", "event": "event", "name": "name", "userId": "userId",
                 "event-property": "properties", "event-trait": "traits", "event-context": "context"}
#: placeholder for the event in compiled triggers and mapping data: a quote inside, so that no
#: SQL literal holds it as such (quotes in literals are doubled)
_PH = "cmdseg'ev"


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
            from ._mappingkit_transform import _path_keys
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
    from ._fql_parse import parse_fql
    out = []
    for i, m in enumerate(cfg.mappings):
        keys: set = {"type"}
        tkeys: set = set()
        ast = parse_fql(m.trigger)
        _trigger_keys(ast, tkeys)
        keys |= tkeys
        # "$." is the whole event; "$" is the key "$" (mapping-kit replaces the first "$.")
        whole = isinstance(m.data, dict) and set(m.data) == {"@path"} and m.data["@path"] == "$."
        if whole:
            keys |= {"userId", "traits", "user_property_event"}
        else:
            if not isinstance(m.data, dict) or m.data.get("userId") != {"@path": "$.userId"}:
                raise Unplannable("a raw mapping that names the user otherwise than $.userId")
            if not _keys_of_data(m.data, keys):
                raise Unplannable("a raw mapping reading the whole event or directives beyond @path/@if")
        out.append({"i": i, "name": m.name, "trigger": m.trigger, "ast": ast, "tkeys": tkeys,
                    "data": m.data, "whole": whole, "keys": keys})
    return out


# ---------------------------------------------------------------------------------------------
# reading the extracted fields directly instead of a JSON object built per row

_ONE = re.compile(rf"json_extract\({re.escape(_PH)}, '((?:[^']|'')*)'\)")
_LIST = re.compile(rf"json_extract\({re.escape(_PH)}, \[((?:'(?:[^']|'')*'(?:, )?)+)\]\)")
_LIT = re.compile(r"'((?:[^']|'')*)'")


def _direct(sql: str, x) -> str:
    """Rewrite ``json_extract(<event>, '/key/...')`` (single or list of JSON Pointers) in SQL
    compiled over the placeholder event into reads of the extracted top-level fields ``x(key)``
    (SQL NULL when missing). Pointers of keys not extracted are left alone."""
    def ptr(p: str) -> str | None:
        p = p.replace("''", "'")
        if not p.startswith("/"):
            return None
        head, sep, rest = p[1:].partition("/")
        key = head.replace("~1", "/").replace("~0", "~")
        base = x(key)
        if base is None:
            return None
        return base if not sep else f"json_extract({base}, {sql_str('/' + rest)})"

    def one(m: re.Match) -> str:
        r = ptr(m.group(1))
        return r if r is not None else m.group(0)

    def many(m: re.Match) -> str:
        parts = [ptr(p) for p in _LIT.findall(m.group(1))]
        if any(p is None for p in parts):
            return m.group(0)
        return "[" + ", ".join(f"CAST({p} AS JSON)" for p in parts) + "]"

    return _ONE.sub(one, _LIST.sub(many, sql))


def _value_sql(value) -> str:
    """SQL (JSON; SQL NULL when missing) of one value of a mapping's data object, over the
    placeholder event: the expression ``mapping_to_sql`` builds for that key."""
    from ._jsvalue import _ID_LOCK
    from ._mappingkit import _Compiler
    with _ID_LOCK:
        return _Compiler().c(value, _PH, True)


def _sources(ms: list[dict]) -> None:
    """What each mapping's received objects assign, as lean columns: ``m["src"]`` is a list of
    ``(kind, column, SQL over the placeholder event or None, property)``; kinds: ``traits``
    (rule 2's object), ``prop`` (a ``user_property.<name>`` key), ``upe``
    (``user_property_event``), ``empty`` (the bare ``user_property.`` key, only counted),
    ``uprops`` (the whole event's top-level keys). A data object naming the user by a
    ``userId`` key is a plain object (``_analyse``): its keys are the received object's keys."""
    from ._mappingkit_validate import _is_directive, validate_mapping
    for m in ms:
        i = m["i"]
        if m["whole"]:
            m["src"] = [("traits", "traits", None, None), ("uprops", "uprops", None, None),
                        ("upe", "upe", None, None)]
            continue
        data = m["data"]
        validate_mapping(data, mapping_name=m["name"])
        if _is_directive(data):  # pragma: no cover - _analyse found a userId key
            raise Unplannable("a raw mapping whose data is a directive")
        src = []
        for j, (key, value) in enumerate(data.items()):
            if key == "traits":
                kind, prop = "traits", None
            elif key == _receiver.PREFIX:
                kind, prop = "empty", None
            elif key.startswith(_receiver.PREFIX):
                kind, prop = "prop", key[len(_receiver.PREFIX):]
            elif key == "user_property_event":
                kind, prop = "upe", None
            else:
                continue  # userId (the uid column) and keys no receiver rule reads
            src.append((kind, f"v{i}_{j}", _value_sql(value), prop))
        m["src"] = src


def _lean_sql(files: list[str], ms: list[dict], keep_unmatched: str | None) -> str:
    """One pass over the files: per line the scalar columns, the mapping flags and what the
    matched mappings need; lines that are not JSON are kept as rows whose ``h`` is NULL.
    ``rk``, ``ok``: receivedAt and originalTimestamp as order keys like ``k``."""
    from ._fql import fql_to_sql
    base = ["type", "messageId", "userId", "timestamp", "originalTimestamp", "receivedAt"]
    keys = base + sorted(set().union(*(m["keys"] for m in ms)) - set(base))
    idx = {k: i + 1 for i, k in enumerate(keys)}
    paths = "[" + ", ".join(json_path(k) for k in keys) + "]"

    def x(k: str) -> str | None:
        return f"xs[{idx[k]}]" if k in idx else None

    def s(k: str) -> str:  # the loader's text of a top-level string/number field
        return scalar_text_sql(f"json_type({x(k)})", f"json_extract_string({x(k)}, '$')")

    def ts(k: str) -> str:
        return f"TRY_CAST(json_extract_string({x(k)}, '$') AS TIMESTAMPTZ)"

    def direct(sql: str, m: dict, trigger: bool) -> str:
        sql = _direct(sql, x)
        if _PH not in sql:
            return sql
        if trigger:  # FQL does not tell a missing key from a null one: json_object of the keys
            return sql.replace(_PH, "json_object(" + ", ".join(
                f"{sql_str(k)}, {x(k)}" for k in sorted(m["tkeys"])) + ")")
        # mapping-kit tells missing from null: leave SQL NULL (missing) keys out
        return sql.replace(_PH, object_sql([(k, x(k)) for k in sorted(m["keys"])]))

    # receiver rule 1 on the event's userId (every mapping's P.userId is the event's userId)
    path = json_path("userId")
    uid = (_receiver.user_id_sql(_PH).replace(f"json_type({_PH}, {path})", f"json_type({x('userId')})")
           .replace(f"json_extract_string({_PH}, {path})", f"json_extract_string({x('userId')}, '$')"))
    if _PH in uid:  # pragma: no cover - the receiver's SQL changed shape
        uid = _receiver.user_id_sql(f"json_object('userId', {x('userId')})")
    flags, cols = [], []
    for m in ms:
        f = f"m{m['i']}"
        flags.append(f)
        cols.append(f"COALESCE(NOT bad AND ({direct(fql_to_sql(m['ast'], _PH), m, True)}), false) AS {f}")
    anyf = "(" + " OR ".join(flags) + ")"
    out = ["_f", "type", "message_id", f"{key_sql('t_rat')} AS rk", f"{key_sql('t_ots')} AS ok", "k",
           f"CASE WHEN {anyf} THEN uid END AS uid", "h", *flags]
    whole = [m for m in ms if m["whole"]]
    if whole:
        wf = "(" + " OR ".join(f"m{m['i']}" for m in whole) + ")"
        tr = x("traits")
        # an object (json_extract writes compact JSON: no parse to tell)
        out.append(f"CASE WHEN {wf} AND starts_with(CAST({tr} AS VARCHAR), '{{') THEN {tr} END AS traits")
        out.append(f"CASE WHEN {wf} THEN {x('user_property_event')} END AS upe")
        # top-level user_property.* keys are rare: the whole line is kept only when its text
        # holds the prefix, or any \u escape (that may spell the key: "user_propert\u0079.x")
        out.append(f"CASE WHEN {wf} AND (contains(line, '\"{_receiver.PREFIX}') OR contains(line, '\\u')) "
                   f"THEN CAST(line AS JSON) END AS uprops")
    for m in ms:
        for kind, col, sql, _prop in ([] if m["whole"] else m["src"]):
            out.append(f"CASE WHEN m{m['i']} THEN CAST({direct(sql, m, False)} AS JSON) END AS {col}")
    keep = anyf if keep_unmatched is None else f"({anyf} OR ({keep_unmatched}))"
    per_file = " UNION ALL ".join(
        f"SELECT {i} AS _f, CAST(r.json AS VARCHAR) AS line FROM read_json_objects({sql_str(p)}, "
        f"format='auto', ignore_errors=true) AS r"
        for i, p in enumerate(files))
    # flags first, over every line (with type and message id when unmatched lines may be kept);
    # the other columns only for the lines kept
    ids = f"{s('type')} AS type, {s('messageId')} AS message_id"
    return f"""
        SELECT {', '.join(out)} FROM (
            SELECT *, {key_sql('COALESCE(t_ts, t_ots, t_rat)')} AS k FROM (
                SELECT *, {ts('timestamp')} AS t_ts, {ts('originalTimestamp')} AS t_ots,
                       {ts('receivedAt')} AS t_rat, {uid} AS uid,
                       {'' if keep_unmatched else ids + ','} CASE WHEN NOT bad THEN hash(line) END AS h FROM (
                    SELECT *, {ids + ',' if keep_unmatched else ''} {', '.join(cols)}
                    FROM (SELECT _f, line, line IS NULL AS bad, json_extract(line, {paths}) AS xs
                          FROM ({per_file})))
                WHERE bad OR {keep}))"""


def _possible_types(ms: list[dict]) -> str | None:
    """SQL keeping the unmatched rows that may share (type, message id) with a matched row, or
    None when a row's match depends on its type only (then unmatched rows never matter)."""
    if all(m["tkeys"] <= {"type"} for m in ms):
        return None
    other = object()

    def ev(node, t):  # Kleene logic: True, False, None (unknown)
        if node["type"] == "group":
            vals = [ev(c, t) for c in node["children"]]
            if node["operator"] == "and":
                return False if False in vals else (None if None in vals else True)
            if node["operator"] == "or":
                return True if True in vals else (None if None in vals else False)
            return False
        if node["type"] == "event-type" and node["operator"] in ("=", "!=") and isinstance(node.get("value"), str):
            eq = t is not other and t == node["value"]
            return eq if node["operator"] == "=" else not eq
        return None

    lits = {"identify", "track", "page", "screen", "group", "alias"}
    for m in ms:
        stack = [m["ast"]]
        while stack:
            n = stack.pop()
            if n["type"] == "group":
                stack.extend(n["children"])
            elif n["type"] == "event-type" and isinstance(n.get("value"), str):
                lits.add(n["value"])
    if any(ev(m["ast"], other) is not False for m in ms):
        return "message_id IS NOT NULL"
    types = sorted(t for t in lits if any(ev(m["ast"], t) is not False for m in ms))
    if not types:
        return "false"
    return f"message_id IS NOT NULL AND type IN ({', '.join(sql_str(t) for t in types)})"
