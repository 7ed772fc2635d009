"""Segment mapping-kit (the Webhooks (Actions) ``data`` field), in Python and in DuckDB SQL.

Reference: ``@segment/actions-core`` 3.170.0, ``dist/cjs/mapping-kit/index.js`` (``transform``,
13 directives), ``validate.js`` (what Segment rejects), ``../get.js`` (path lookup).

Rules reproduced (each from that source):

* ``get``: ``$.`` is removed once, the path is split on ``.``, ``[``/``]`` next to quotes or
  digits; quotes are dropped. Keys containing a dot are therefore unreachable
  (``$.properties["legacy.tier"]`` looks for ``legacy`` → ``tier``).
* Lookup is ``prev && prev[key]``: a null/false/0/"" parent *is* the result (``$.a.b`` with
  ``a = 0`` gives 0); a missing key gives undefined.
* undefined drops the output key (``removeUndefined``); explicit JSON null is kept; inside
  arrays undefined becomes null when serialized.
* Output keys are literal strings: ``"user_property.plan"`` is one key, never nested.

Values are JSON values (``dict``, ``list``, ``str``, ``int``/``float``, ``bool``, ``None``) and
:data:`UNDEFINED` for "absent".

This module compiles a mapping's ``data`` to DuckDB SQL (:func:`mapping_to_sql`) and registers
what that SQL calls (:func:`register_udfs`). The validate.js port is in
:mod:`cmdseg_nb._mappingkit_validate`, the Python resolver (index.js) in
:mod:`cmdseg_nb._mappingkit_transform`; :func:`validate_mapping` and :func:`transform` are also
importable from here, as this module's ``__all__`` has always listed them.
"""
from __future__ import annotations

import functools
import json
import re

from ._errors import MappingError
from ._jsvalue import (
    _ID,
    _ID_LOCK,
    _NUM_TYPES,
    UNDEFINED,
    js_falsy,
    sql_str,
    sql_walk,
)
from ._mappingkit_transform import (
    _DOUBLE_RE,
    _JS_WS,
    _TRIPLE_RE,
    _as_sent,
    _path_keys,
    _replace_opts,
    _resolve,
    _RuntimeError,
    _spread,
    _substitution,
    transform,
)
from ._mappingkit_validate import (
    DIRECTIVES,
    MAX_PATTERN_LENGTH,
    MAX_REPLACEMENT_LENGTH,
    _is_directive,
    _js_len,
    validate_mapping,
)

__all__ = ["UNDEFINED", "validate_mapping", "transform", "mapping_to_sql", "register_macros", "register_udfs"]

_UDF = "cmdseg_mapping_eval"




def _jlit(v) -> str:
    return f"{sql_str(json.dumps(v, ensure_ascii=False))}::JSON"


_NULL = "NULL::JSON"


class _Compiler:
    def __init__(self):
        self.n = 0

    def var(self) -> str:
        self.n += 1
        return f"cmdseg_v{self.n}"

    def udf(self, m, ev: str) -> str:
        return f"{_UDF}({sql_str(json.dumps(m, ensure_ascii=False))}, {ev}::VARCHAR)::JSON"

    def let(self, expr: str, body) -> str:
        """Evaluate ``expr`` once and give it a name inside ``body`` (DuckDB lambda binding)."""
        if len(expr) < 120:
            return body(expr)
        v = self.var()
        return f"list_transform([{expr}], lambda {v}: {body(v)})[1]"

    def c(self, m, ev: str, root: bool) -> str:
        if not isinstance(m, (dict, list)):
            return _jlit(m)
        if isinstance(m, list):
            if not m:
                return "'[]'::JSON"
            items = ", ".join(f"COALESCE(({self.c(x, ev, root)})::VARCHAR, 'null')" for x in m)
            return f"('[' || concat_ws(',', {items}) || ']')::JSON"
        if not _is_directive(m):
            if not m:
                return "'{}'::JSON"
            parts = ", ".join(
                f"{sql_str(json.dumps(k, ensure_ascii=False) + ':')} || ({self.c(x, ev, root)})::VARCHAR"
                for k, x in m.items())
            return f"('{{' || concat_ws(',', {parts}) || '}}')::JSON"
        name = next(k for k in m if k.startswith("@"))
        meth = getattr(self, "d_" + name[1:], None) if name in DIRECTIVES else None
        if meth is None:
            return self.udf(m, ev)
        out = meth(m[name], ev, root)
        return self.udf(m, ev) if out is None else out

    # -- directives: return None to fall back to the Python UDF

    def path_sql(self, path: str, ev: str, root: bool) -> str:
        """SQL for get(ev, path) (the caller has already removed ``$.`` where JS does)."""
        keys = _path_keys(path)
        if keys is None:
            return ev
        if root:
            return sql_walk(ev, [], keys)
        return self.let(ev, lambda e: _walk_any(e, keys))

    def d_path(self, v, ev, root):
        return self.path_sql(v.replace("$.", "", 1), ev, root) if isinstance(v, str) else None

    def d_literal(self, v, ev, root):
        return self.c(v, ev, root)

    def d_if(self, o, ev, root):
        exists, blank = o.get("exists", UNDEFINED), o.get("blank", UNDEFINED)
        if js_falsy(exists) and js_falsy(blank):
            return None
        if exists is not UNDEFINED:
            x = self.c(exists, ev, root)
            cond = f"COALESCE(json_type({x}) <> 'NULL', false)"
        else:
            cond = self.let(self.c(blank, ev, root), lambda x: (
                f"COALESCE(json_type({x}) <> 'NULL' AND NOT ({_sql_loose_empty(x)}), false)"))
        then = self.c(o["then"], ev, root) if "then" in o else _NULL
        els = self.c(o["else"], ev, root) if not js_falsy(o.get("else", UNDEFINED)) else _NULL
        return f"(CASE WHEN {cond} THEN {then} ELSE {els} END)"

    def d_case(self, o, ev, root):
        if js_falsy(o.get("operator", UNDEFINED)) or o["operator"] not in ("lower", "upper"):
            return None
        if js_falsy(o.get("value", UNDEFINED)):
            return _NULL
        fn = o["operator"]
        return self.let(self.c(o["value"], ev, root), lambda x: (
            f"(CASE WHEN json_type({x}) = 'VARCHAR' THEN to_json({fn}({x} ->> '$')) ELSE {x} END)"))

    def d_replace(self, opts, ev, root):
        o = _replace_opts(opts)
        if js_falsy(o.get("value", UNDEFINED)):
            return _NULL
        steps = [(o["pattern"], o["replacement"])]
        p2 = o.get("pattern2", UNDEFINED)
        if not js_falsy(p2):
            if not (isinstance(p2, str) and isinstance(o["replacement2"], str)):
                steps = steps  # JS skips the second replace
            else:
                steps.append((p2, o["replacement2"]))
        for p, r in steps:
            if _js_len(p) > MAX_PATTERN_LENGTH or _js_len(r) > MAX_REPLACEMENT_LENGTH or re.search(r"\$[`']", r):
                return None
        g, icase = o["global"], o["ignorecase"]

        def body(x):
            s = (f"(CASE json_type({x}) WHEN 'VARCHAR' THEN {x} ->> '$' WHEN 'BOOLEAN' THEN {x}::VARCHAR "
                 f"ELSE (CASE WHEN json_type({x}) IN {_NUM_TYPES} THEN cmdseg_js_num(TRY_CAST({x} AS DOUBLE)) END) END)")
            for p, r in steps:
                s = _sql_replace(s, p, r, g, icase)
            return f"to_json(COALESCE({s}, ''))"
        return self.let(self.c(o["value"], ev, root), body)

    def d_template(self, t, ev, root):
        if not isinstance(t, str) or _TRIPLE_RE.search(t):
            return None
        parts, pos = [], 0
        for m in _DOUBLE_RE.finditer(t):
            if m.start() > pos:
                parts.append(sql_str(t[pos : m.start()]))
            parts.append(_sql_js_string(self.path_sql(m.group(1).strip(_JS_WS), ev, root), self))
            pos = m.end()
        if pos < len(t):
            parts.append(sql_str(t[pos:]))
        if not parts:
            return "to_json(''::VARCHAR)"
        return f"to_json(concat({', '.join(parts)}))"

    def d_json(self, o, ev, root):
        if o.get("mode") not in ("encode", "decode") or js_falsy(o.get("value", UNDEFINED)):
            return None
        x = self.c(o["value"], ev, root)
        if o["mode"] == "encode":
            return f"to_json(({x})::VARCHAR)"
        return self.let(x, lambda v: (
            f"(CASE WHEN json_type({v}) = 'VARCHAR' AND json_valid({v} ->> '$') "
            f"THEN ({v} ->> '$')::JSON ELSE {v} END)"))

    def d_excludeWhenNull(self, v, ev, root):
        return self.let(self.c(v, ev, root), lambda x: (
            f"(CASE json_type({x}) WHEN 'NULL' THEN NULL::JSON WHEN 'OBJECT' THEN "
            f"json_merge_patch('{{}}', {x}) ELSE {x} END)"))

    def d_arrayPath(self, data, ev, root):
        if not data:
            return None
        path = data[0]
        shape = data[1] if len(data) > 1 else UNDEFINED
        r = self.path_sql(path.replace("$.", "", 1), ev, root) if isinstance(path, str) else self.c(path, ev, root)
        if not (isinstance(shape, dict) and shape):
            return r
        it = self.var()
        body = self.c(shape, it, False)
        return self.let(r, lambda x: (
            f"(CASE json_type({x}) WHEN 'ARRAY' THEN ('[' || array_to_string(list_transform("
            f"json_extract({x}, '$[*]'), lambda {it}: COALESCE(({body})::VARCHAR, 'null')), ',') || ']')::JSON "
            f"WHEN 'OBJECT' THEN ('[' || COALESCE((list_transform([{x}], lambda {it}: {body})[1])::VARCHAR, 'null') || ']')::JSON "
            f"ELSE {x} END)"))


def _walk_any(ev: str, keys: list[str]) -> str:
    """Like sql_walk but the base (an @arrayPath item) may itself be falsy."""
    return sql_walk(ev, [], keys, base_is_object=False)


def _sql_loose_empty(x: str) -> str:
    return (f"(CASE json_type({x}) WHEN 'BOOLEAN' THEN {x}::VARCHAR = 'false' "
            f"WHEN 'VARCHAR' THEN {x}::VARCHAR = '\"\"' WHEN 'OBJECT' THEN false "
            f"WHEN 'ARRAY' THEN {_sql_js_string(x, None)} = '' "
            f"ELSE json_type({x}) IN {_NUM_TYPES} AND TRY_CAST({x} AS DOUBLE) = 0 END)")


def _sql_js_string(x: str, comp, depth: int = 2) -> str:
    """SQL VARCHAR: String(x) as a template placeholder renders it (undefined/null give '')."""
    if depth == 0:
        arr = "'[nested array]'"
    else:
        global _LAMBDA_N
        _LAMBDA_N += 1
        e = f"cmdseg_e{_LAMBDA_N}"
        arr = (f"array_to_string(list_transform(json_extract({x}, '$[*]'), lambda {e}: "
               f"{_sql_js_string(e, comp, depth - 1)}), ',')")
    return (f"COALESCE(CASE json_type({x}) WHEN 'NULL' THEN '' WHEN 'VARCHAR' THEN {x} ->> '$' "
            f"WHEN 'BOOLEAN' THEN {x}::VARCHAR WHEN 'OBJECT' THEN '[object Object]' "
            f"WHEN 'ARRAY' THEN {arr} ELSE cmdseg_js_num(TRY_CAST({x} AS DOUBLE)) END, '')")


_LAMBDA_N = 0


def _re2_literal(p: str) -> str:
    return "".join(c if c.isascii() and c.isalnum() else "\\x{%x}" % ord(c) for c in p)


def _sql_replace(s: str, p: str, r: str, g: bool, icase: bool) -> str:
    has_match = "$&" in r.replace("$$", "")
    if icase:
        out, i = [], 0
        while i < len(r):
            if r[i] == "$" and i + 1 < len(r) and r[i + 1] in "$&":
                out.append("$" if r[i + 1] == "$" else "\\0")
                i += 2
            else:
                out.append("\\\\" if r[i] == "\\" else r[i])
                i += 1
        return (f"regexp_replace({s}, {sql_str('(?i)' + _re2_literal(p))}, {sql_str(''.join(out))}"
                f"{', ' + sql_str('g') if g else ''})")
    lit = _substitution(r, p, "", "") if (has_match or "$" in r) else r
    if g:
        return f"replace({s}, {sql_str(p)}, {sql_str(lit)})"
    return (f"(CASE WHEN strpos({s}, {sql_str(p)}) > 0 THEN substr({s}, 1, strpos({s}, {sql_str(p)}) - 1) "
            f"|| {sql_str(lit)} || substr({s}, strpos({s}, {sql_str(p)}) + {len(p)}) ELSE {s} END)")


def mapping_to_sql(data, event: str, *, mapping_name: str | None = None) -> str:
    """Compile a mapping's ``data`` to a DuckDB SQL expression of type JSON.

    Parameters
    ----------
    data : JSON value
        The mapping-kit ``data`` field.
    event : str
        SQL expression of type JSON holding the whole event (e.g. ``"e.event_json"``).

    Returns
    -------
    str
        SQL whose value is the resolved data for each row: SQL NULL means "missing" (the
        mapping resolved to undefined), JSON ``null`` is an explicit null. Keys are read with
        RFC 6901 JSON Pointers (``'/properties/user_property.plan'``), which need no quoting of
        dots, quotes or brackets. ``@path @literal @if @template @case @replace @json
        @excludeWhenNull @arrayPath`` and plain objects/arrays are pure SQL (using the SQL macro
        ``cmdseg_js_num`` for JavaScript number spelling); ``@flatten @merge @transform``, a
        ``@path``/``@template`` whose argument is itself a directive, a ``{{{x}}}`` template and a
        replacement using ``$``` or ``$'`` call the Arrow-vectorized Python UDF
        ``cmdseg_mapping_eval``. Call :func:`register_udfs` on the connection first.

    Raises
    ------
    MappingError
        If :func:`validate_mapping` rejects ``data``.
    """
    validate_mapping(data, mapping_name=mapping_name)
    try:
        top = _spread(data)
    except _RuntimeError as e:
        raise MappingError(f"data must not be null: {e}", mapping=mapping_name, path="$") from None
    global _LAMBDA_N
    with _ID_LOCK:
        _ID[0] = _LAMBDA_N = 0
        return _Compiler().c(top, event, True)


_JS_NUM_MACRO = r"""
CREATE OR REPLACE MACRO cmdseg_js_num(d) AS
  CASE WHEN isnan(d) THEN 'NaN' WHEN isinf(d) THEN (CASE WHEN d > 0 THEN 'Infinity' ELSE '-Infinity' END)
       WHEN d = 0 THEN '0'
       WHEN d = trunc(d) AND abs(d) < 9007199254740992 THEN CAST(d AS BIGINT)::VARCHAR
       ELSE (CASE WHEN d < 0 THEN '-' ELSE '' END) || list_transform([abs(d)::VARCHAR], lambda s:
         list_transform([struct_pack(ip := split_part(split_part(s, 'e', 1), '.', 1),
                                     fp := split_part(split_part(s, 'e', 1), '.', 2),
                                     ex := COALESCE(TRY_CAST(split_part(s, 'e', 2) AS INTEGER), 0))], lambda p:
           list_transform([struct_pack(digits := rtrim(ltrim(p.ip || p.fp, '0'), '0'),
                                       n := length(p.ip) + p.ex - (length(p.ip || p.fp) - length(ltrim(p.ip || p.fp, '0'))))],
             lambda q: CASE WHEN length(q.digits) <= q.n AND q.n <= 21 THEN q.digits || repeat('0', q.n - length(q.digits))
                            WHEN 0 < q.n AND q.n <= 21 THEN left(q.digits, q.n) || '.' || substr(q.digits, q.n + 1)
                            WHEN -6 < q.n AND q.n <= 0 THEN '0.' || repeat('0', -q.n) || q.digits
                            ELSE left(q.digits, 1) || (CASE WHEN length(q.digits) > 1 THEN '.' || substr(q.digits, 2) ELSE '' END)
                                 || 'e' || (CASE WHEN q.n - 1 >= 0 THEN '+' ELSE '-' END) || abs(q.n - 1)::VARCHAR END
           )[1])[1])[1] END;
"""


def _json_out(v) -> str | None:
    if v is UNDEFINED:
        return None
    return json.dumps(_as_sent(v), ensure_ascii=False, allow_nan=False, separators=(",", ":"))


@functools.lru_cache(maxsize=256)
def _parsed(mapping_json: str):
    return json.loads(mapping_json)


def _eval_batch(mappings, payloads):
    import pyarrow as pa

    out = []
    for m, p in zip(mappings.to_pylist(), payloads.to_pylist()):
        if m is None or p is None:
            out.append(None)
            continue
        try:
            out.append(_json_out(_resolve(_parsed(m), json.loads(p))))
        except _RuntimeError as e:
            raise MappingError(f"{e} (event {p[:200]})") from None
    return pa.array(out, type=pa.string())


def register_macros(con) -> None:
    """Register the SQL macros that compiled mapping-kit SQL calls (``cmdseg_js_num``: a
    number as JavaScript spells it), without the Python UDF: what the planned paths' SQL needs.
    ``CREATE OR REPLACE``, so it may run again, also inside the caller's open transaction."""
    con.execute(_JS_NUM_MACRO)


def register_udfs(con) -> None:
    """Register the SQL macros and the Python UDF that :func:`mapping_to_sql` output uses.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        Connection to register on (idempotent: existing definitions are replaced).

    Notes
    -----
    ``cmdseg_mapping_eval(mapping VARCHAR, payload VARCHAR) -> VARCHAR`` is an Arrow
    (vectorized) UDF: DuckDB hands it whole vectors; it runs the Python reference resolver
    for the directives that are not compiled to SQL.
    """
    import duckdb

    register_macros(con)
    try:
        con.remove_function(_UDF)
    except Exception:  # noqa: BLE001 - not registered yet
        pass
    con.create_function(_UDF, _eval_batch, [duckdb.sqltype("VARCHAR"), duckdb.sqltype("VARCHAR")],
                        duckdb.sqltype("VARCHAR"), type="arrow", null_handling="special",
                        side_effects=False)
