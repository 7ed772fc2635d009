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
"""
from __future__ import annotations

import functools
import json
import math
import re
from typing import Any

from ._errors import MappingError
from ._jsvalue import (
    _ID,
    _ID_LOCK,
    _NUM_TYPES,
    UNDEFINED,
    _walk,
    js_falsy,
    js_float,
    js_is_number,
    js_number_to_string,
    js_string,
    sql_str,
    sql_walk,
)

__all__ = ["UNDEFINED", "validate_mapping", "transform", "mapping_to_sql", "register_udfs"]

DIRECTIVES = ("@if", "@case", "@replace", "@arrayPath", "@path", "@template", "@literal",
              "@flatten", "@json", "@merge", "@transform", "@excludeWhenNull", "@liquid")
MAX_PATTERN_LENGTH = 10
MAX_REPLACEMENT_LENGTH = 10
_UDF = "cmdseg_mapping_eval"


class _RuntimeError(Exception):
    """An Error that actions-core's transform throws while resolving."""


def _js_len(s: str) -> int:
    return len(s.encode("utf-16-le", "surrogatepass")) // 2


def _type(v: Any) -> str:
    """realTypeOf"""
    if v is UNDEFINED:
        return "undefined"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if js_is_number(v):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _type_or_directive(v: Any) -> str:
    if isinstance(v, dict) and any(k.startswith("@") for k in v):
        return "directive"
    return _type(v)


def _is_directive(v: Any) -> bool:
    """is-directive.js: an object with an @-key and no other key than @-keys and _metadata."""
    if not isinstance(v, dict) or not any(k.startswith("@") for k in v):
        return False
    return all(k.startswith("@") or k == "_metadata" for k in v)


def _an(t: str) -> str:
    return f"an {t}" if t[:1] in "aeiou" else f"a {t}"


# ---------------------------------------------------------------------------------------------
# validate.js


class _VErr(Exception):
    def __init__(self, msg: str, stack: list):
        super().__init__(msg)
        self.msg, self.stack = msg, list(stack)


def _json_path(stack: list) -> str:
    out = "$"
    for k in stack:
        if isinstance(k, int):
            out += f"[{k}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
            out += "." + k
        else:
            out += "[" + json.dumps(k, ensure_ascii=False) + "]"
    return out


class _Validator:
    def __init__(self):
        self.errors: list[_VErr] = []

    def err(self, msg, stack):
        raise _VErr(msg, stack)

    def collect(self, fn, *args):
        try:
            fn(*args)
        except _VErr as e:
            self.errors.append(e)

    def validate(self, m, stack):
        t = _type_or_directive(m)
        if t == "directive":
            self.directive(m, stack)
        elif t == "object":
            self.object(m, stack)

    def directive(self, obj, stack):
        dkeys = [k for k in obj if k.startswith("@")]
        if len(dkeys) > 1:
            self.err(f"should only have one @-prefixed key but it has {len(dkeys)} keys", stack)
        if any(not k.startswith("@") and k != "_metadata" for k in obj):
            self.err(f"should only have one @-prefixed key but it has {len(obj)} keys", stack)
        name = dkeys[0]
        fn = getattr(self, "d_" + name[1:], None) if name in DIRECTIVES else None
        if fn is None:
            self.err(f"has an invalid directive: {name}", stack)
        fn(obj[name], stack + [name])

    def raw(self, v, stack):
        t = _type_or_directive(v)
        if t == "directive":
            self.directive(v, stack)
        elif t not in ("object", "array", "boolean", "string", "number", "null"):
            self.err(f"should be a mapping directive or a JSON value but it is {_an(t)}", stack)

    def dir_or_string(self, v, stack):
        t = _type_or_directive(v)
        if t == "directive":
            self.directive(v, stack)
        elif t != "string":
            self.err(f"should be a string or a mapping directive but it is {_an(t)}", stack)

    def dir_or_object(self, v, stack):
        t = _type_or_directive(v)
        if t == "directive":
            self.directive(v, stack)
        elif t == "object":
            self.object(v, stack)
        else:
            self.err(f"should be a object or a mapping directive but it is {_an(t)}", stack)

    def string(self, v, stack):
        t = _type_or_directive(v)
        if t != "string":
            self.err(f"should be a string but it is {_an(t)}", stack)

    def boolean(self, v, stack):
        t = _type_or_directive(v)
        if t != "boolean":
            self.err(f"should be a boolean but it is {_an(t)}", stack)

    def length(self, lo, hi):
        def check(v, stack):
            self.string(v, stack)
            if _js_len(v) < lo:
                self.err(f"should be a string of length {lo} or greater", stack)
            if _js_len(v) > hi:
                self.err(f"should be a string of length {hi} or less", stack)
        return check

    def allowed(self, *names):
        def check(v, stack):
            self.string(v, stack)
            if v.lower() not in names:
                self.err(f"should be one of {', '.join(names)} but it is {json.dumps(v)}", stack)
        return check

    def array(self, v, stack):
        t = _type(v)
        if t != "array":
            self.err(f"should be an array but it is {_an(t)}", stack)

    def object(self, v, stack):
        t = _type_or_directive(v)
        if t != "object":
            self.err(f"should be an object but it is {_an(t)}", stack)
        for k in v:
            self.collect(self.validate, v[k], stack + [k])

    def fields(self, v, stack, required=None, optional=None):
        self.object(v, stack)
        for prop, fn in (required or {}).items():
            if prop not in v:
                self.errors.append(_VErr(f"should have field {json.dumps(prop)} but it doesn't", stack))
            else:
                self.collect(fn, v[prop], stack + [prop])
        for prop, fn in (optional or {}).items():
            if prop in v:
                self.collect(fn, v[prop], stack + [prop])

    def d_if(self, v, s):
        self.fields(v, s, optional={"exists": self.raw, "then": self.raw, "else": self.raw})

    def d_case(self, v, s):
        self.fields(v, s, optional={"operator": self.string, "value": self.dir_or_string})

    def d_replace(self, v, s):
        self.fields(v, s, required={"pattern": self.length(1, MAX_PATTERN_LENGTH), "value": self.dir_or_string},
                    optional={"replacement": self.length(0, MAX_REPLACEMENT_LENGTH),
                              "ignorecase": self.boolean, "global": self.boolean})

    def d_arrayPath(self, v, s):
        self.array(v, s)
        self.dir_or_string(v[0] if v else UNDEFINED, s)
        if len(v) > 1:
            self.validate(v[1], s)

    def d_path(self, v, s):
        self.dir_or_string(v, s)

    d_template = d_path

    def d_json(self, v, s):
        self.fields(v, s, required={"value": self.raw, "mode": self.allowed("encode", "decode")})

    def d_flatten(self, v, s):
        self.fields(v, s, required={"value": self.raw}, optional={"separator": self.string})

    def d_merge(self, v, s):
        self.fields(v, s, required={"objects": self.array}, optional={"direction": self.allowed("left", "right")})
        for i, obj in enumerate(v["objects"]):
            self.collect(self.dir_or_object, obj, s + ["objects", i])

    def d_literal(self, v, s):
        self.raw(v, s)

    d_excludeWhenNull = d_literal

    def d_transform(self, v, s):
        self.fields(v, s, required={"apply": self.dir_or_object, "mapping": self.dir_or_object})

    def d_liquid(self, v, s):
        self.string(v, s)


def _segment_validate(data) -> list[_VErr]:
    """Port of validate.js: the errors Segment reports, in order."""
    v = _Validator()
    v.collect(v.validate, data, [])
    return v.errors


def _static_problems(m, stack: list, out: list) -> None:
    """Mistakes validate.js lets through but that make transform() throw or that we refuse."""
    if isinstance(m, list):
        for i, x in enumerate(m):
            # validate.js never looks inside arrays, but transform() resolves directives there
            # and throws on the same mistakes (`[1, {"@template": 5}]`): check them alike.
            if isinstance(x, dict):
                v = _Validator()
                v.collect(v.validate, x, stack + [i])
                out.extend(v.errors)
            _static_problems(x, stack + [i], out)
        return
    if not isinstance(m, dict):
        return
    if not _is_directive(m):
        if any(k.startswith("@") for k in m):
            out.append(_VErr("has an @-prefixed key beside other keys", stack))
        for k, x in m.items():
            _static_problems(x, stack + [k], out)
        return
    name = next(k for k in m if k.startswith("@"))
    v, s = m[name], stack + [name]
    if name not in DIRECTIVES:
        out.append(_VErr(f"has an invalid directive: {name}", stack))
        return
    if name == "@liquid":
        out.append(_VErr("@liquid is not supported: no maintained Python Liquid engine matches liquidjs "
                         "10.27 (filters, truthiness, number output); use @template/@if/@case instead", stack))
        return
    if name == "@if" and isinstance(v, dict) and js_falsy(v.get("exists", UNDEFINED)) and js_falsy(v.get("blank", UNDEFINED)):
        out.append(_VErr('@if requires an "exists" key or a "blank" key', s))
    if name == "@case" and isinstance(v, dict) and v.get("operator") not in ("lower", "upper"):
        out.append(_VErr('operator key should have a value of "lower" or "upper"', s + ["operator"]))
    if name == "@json" and isinstance(v, dict) and (v.get("mode") not in ("encode", "decode") or js_falsy(v.get("value", UNDEFINED))):
        out.append(_VErr('@json requires "mode" "encode" or "decode" and a non-empty "value"', s))
    if name == "@replace" and isinstance(v, dict):
        p2 = v.get("pattern2")
        if p2 is not None and not (isinstance(p2, str) and _js_len(p2) <= MAX_PATTERN_LENGTH):
            out.append(_VErr(f"pattern2 should be a string of length {MAX_PATTERN_LENGTH} or less", s + ["pattern2"]))
        r2 = v.get("replacement2")
        if r2 is not None and not (isinstance(r2, str) and _js_len(r2) <= MAX_REPLACEMENT_LENGTH):
            out.append(_VErr(f"replacement2 should be a string of length {MAX_REPLACEMENT_LENGTH} or less", s + ["replacement2"]))
    if name == "@flatten" and isinstance(v, dict) and not isinstance(v.get("separator"), (str, dict)):
        out.append(_VErr('@flatten requires a "separator" key', s))
    if name == "@merge" and isinstance(v, dict) and js_falsy(v.get("direction", UNDEFINED)):
        out.append(_VErr('@merge requires a "direction" key', s))
    if isinstance(v, (dict, list)):
        _static_problems(v, s, out)


def validate_mapping(data, *, mapping_name: str | None = None, base_path: str = "$") -> None:
    """Check a mapping's ``data`` field the way Segment does, plus sure runtime failures.

    Parameters
    ----------
    data : JSON value
        The mapping-kit object, e.g. ``{"userId": {"@path": "$.userId"}}``.
    mapping_name : str, optional
        Named in the error.
    base_path : str
        JSON path prefix of ``data`` inside the configuration (``"$[0].data"``).

    Raises
    ------
    MappingError
        For everything ``validate.js`` of actions-core rejects (unknown directive, two @-keys or an
        @-key beside other keys, ``@replace`` pattern longer than 10 UTF-16 units, a non-string
        ``@path``, missing required fields, wrong argument types, ...), and for mistakes it lets
        through but that make ``transform`` throw (unknown directive inside an array, ``@if``
        without ``exists``/``blank``, ``@case`` operator other than lower/upper, ``@json`` without
        mode/value, ``@merge`` without direction, ``@flatten`` without separator) and for
        ``@liquid`` (not supported). ``.path`` is the JSON path of the first problem,
        ``.problems`` lists all ``(path, message)``.
    """
    errs = _segment_validate(data)
    if data is None:
        errs.append(_VErr("data must be an object or a directive, not null", []))
    _static_problems(data, [], errs)
    if errs:
        # the same mistake can be found by both checks: list it once
        problems = list(dict.fromkeys((base_path + _json_path(e.stack)[1:], e.msg) for e in errs))
        path, msg = problems[0]
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        err = MappingError(msg + more, mapping=mapping_name, path=path)
        err.problems = problems
        raise err


# ---------------------------------------------------------------------------------------------
# transform (index.js)

_SPLIT_RE = re.compile(r"\[(?=[\"'0-9])|\.|(?<=[\"'0-9])\]+")


def _path_keys(path: str) -> list[str] | None:
    """get.js: None means the whole object ('' or '.')."""
    if path in ("", "."):
        return None
    return [re.sub(r"['\"]", "", s) for s in _SPLIT_RE.split(path) if s]


def _get(obj, path: str):
    keys = _path_keys(path)
    return obj if keys is None else _walk(obj, keys)


def _js_keys(d: dict) -> list[str]:
    """Object.keys order: array-index-like keys first, ascending, then insertion order."""
    idx = [k for k in d if re.fullmatch(r"0|[1-9][0-9]{0,9}", k) and int(k) < 2**32 - 1]
    return sorted(idx, key=int) + [k for k in d if k not in set(idx)]


def _resolve(m, payload):
    if not isinstance(m, (dict, list)):
        return m
    if _is_directive(m):
        name = next(k for k in m if k.startswith("@"))
        fn = _RUNNERS.get(name)
        if fn is None:
            raise _RuntimeError(f"{name} is not a valid directive, got undefined")
        return fn(m[name], payload)
    if isinstance(m, list):
        return [_resolve(v, payload) for v in m]
    return {k: _resolve(m[k], payload) for k in _js_keys(m)}


def _opt(opts: dict, key: str):
    return opts.get(key, UNDEFINED)


def _need_object(opts, msg):
    if not isinstance(opts, dict):
        raise _RuntimeError(msg)


def _r_if(opts, payload):
    _need_object(opts, '@if requires an object with an "exists" key')
    exists, blank = _opt(opts, "exists"), _opt(opts, "blank")
    cond = False
    if js_falsy(exists) and js_falsy(blank):
        raise _RuntimeError('@if requires an "exists" key or a "blank" key')
    elif exists is not UNDEFINED:
        v = _resolve(exists, payload)
        cond = v is not UNDEFINED and v is not None
    elif blank is not UNDEFINED:
        v = _resolve(blank, payload)
        cond = v is not UNDEFINED and v is not None and not _loose_eq_empty(v)
    if cond and _opt(opts, "then") is not UNDEFINED:
        return _resolve(opts["then"], payload)
    if not cond and not js_falsy(_opt(opts, "else")):
        return _resolve(opts["else"], payload)
    return UNDEFINED


def _loose_eq_empty(v) -> bool:
    """``v == ''`` in JavaScript for a non-null JSON value."""
    if isinstance(v, bool) or js_is_number(v):
        return js_float(v) == 0
    if isinstance(v, str):
        return v == ""
    if isinstance(v, list):
        return js_string(v) == ""
    return False


def _r_case(opts, payload):
    _need_object(opts, '@case requires an object with a "operator" key')
    op = _opt(opts, "operator")
    if js_falsy(op):
        raise _RuntimeError('@case requires a "operator" key')
    if not js_falsy(_opt(opts, "value")):
        v = _resolve(opts["value"], payload)
        if isinstance(v, str):
            if op == "lower":
                return v.lower()
            if op == "upper":
                return v.upper()
            raise _RuntimeError('operator key should have a value of "lower" or "upper"')
        return v
    return UNDEFINED


def _canon(c: str) -> str:
    """ECMAScript Canonicalize for a non-unicode /i regex."""
    u = c.upper()
    if len(u) != 1 or (ord(c) >= 128 and ord(u) < 128):
        return c
    return u


def _substitution(repl: str, matched: str, before: str, after: str) -> str:
    """GetSubstitution for a pattern without capture groups."""
    out, i = [], 0
    while i < len(repl):
        c = repl[i]
        if c == "$" and i + 1 < len(repl):
            n = repl[i + 1]
            if n == "$":
                out.append("$")
            elif n == "&":
                out.append(matched)
            elif n == "`":
                out.append(before)
            elif n == "'":
                out.append(after)
            else:
                out.append("$" + n)
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _perform_replace(value: str, pattern: str, replacement: str, global_: bool, icase: bool) -> str:
    if _js_len(pattern) > MAX_PATTERN_LENGTH:
        raise _RuntimeError(f'@replace requires a "pattern" less than {MAX_PATTERN_LENGTH} characters')
    if _js_len(replacement) > MAX_REPLACEMENT_LENGTH:
        raise _RuntimeError(f'@replace requires a "replacement" less than {MAX_REPLACEMENT_LENGTH} characters')
    if icase:
        hay, needle = "".join(map(_canon, value)), "".join(map(_canon, pattern))
    else:
        hay, needle = value, pattern
    out, pos, n = [], 0, len(pattern)
    while True:
        i = hay.find(needle, pos)
        if i < 0:
            break
        out.append(value[pos:i])
        out.append(_substitution(replacement, value[i : i + n], value[:i], value[i + n :]))
        pos = i + n
        if not global_:
            break
    out.append(value[pos:])
    return "".join(out)


def _replace_opts(opts) -> dict:
    o = dict(opts)
    if o.get("replacement") is None:
        o["replacement"] = ""
    if not js_falsy(o.get("pattern2", UNDEFINED)) and o.get("replacement2") is None:
        o["replacement2"] = ""
    if o.get("ignorecase") is None:
        o["ignorecase"] = False
    if o.get("global") is None:
        o["global"] = True
    return o


def _r_replace(opts, payload):
    _need_object(opts, '@replace requires an object with a "pattern" key')
    if js_falsy(_opt(opts, "pattern")):
        raise _RuntimeError('@replace requires a "pattern" key')
    o = _replace_opts(opts)
    if js_falsy(_opt(o, "value")):
        return UNDEFINED
    v = _resolve(o["value"], payload)
    if isinstance(v, bool) or js_is_number(v):
        v = js_string(v)
    new = ""
    if (isinstance(v, str) and isinstance(o["pattern"], str) and isinstance(o["replacement"], str)
            and isinstance(o["ignorecase"], bool) and isinstance(o["global"], bool)):
        new = _perform_replace(v, o["pattern"], o["replacement"], o["global"], o["ignorecase"])
        p2, r2 = o.get("pattern2", UNDEFINED), o.get("replacement2", UNDEFINED)
        if not js_falsy(p2) and isinstance(p2, str) and isinstance(r2, str):
            new = _perform_replace(new, p2, r2, o["global"], o["ignorecase"])
    return new


def _arrify(v):
    if v is UNDEFINED or v is None:
        return []
    return v if isinstance(v, list) else [v]


def _r_array_path(data, payload):
    if not isinstance(data, list):
        raise _RuntimeError(f"@arrayPath expected array, got {_type(data)}")
    path = data[0] if data else UNDEFINED
    shape = data[1] if len(data) > 1 else UNDEFINED
    root = _get(payload, path.replace("$.", "", 1)) if isinstance(path, str) else _resolve(path, payload)
    if _type(root) in ("object", "array") and isinstance(shape, dict) and shape:
        return [_resolve(shape, item) for item in _arrify(root)]
    return root


def _string_arg(name):
    def wrap(fn):
        def run(value, payload):
            s = _resolve(value, payload)
            if not isinstance(s, str):
                raise _RuntimeError(f"{name}: expected string, got {_type(s)}")
            return fn(s, payload)
        return run
    return wrap


@_string_arg("@path")
def _r_path(path, payload):
    return _get(payload, path.replace("$.", "", 1))


_TRIPLE_RE = re.compile(r"\{\{\{([^}]+)\}\}\}")
_DOUBLE_RE = re.compile(r"\{\{([^}]+)\}\}")
_JS_WS = "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"


def _placeholder(payload, inner: str) -> str:
    v = _get(payload, inner.strip(_JS_WS))
    return "" if v is UNDEFINED or v is None else js_string(v)


@_string_arg("@template")
def _r_template(template, payload):
    out = _TRIPLE_RE.sub(lambda m: _placeholder(payload, m.group(1)), template)
    return _DOUBLE_RE.sub(lambda m: _placeholder(payload, m.group(1)), out)


def _r_literal(value, payload):
    return _resolve(value, payload)


def _flatten(value, prefix: str, sep: str, ignore_arrays: bool) -> dict:
    if isinstance(value, dict) or (not ignore_arrays and isinstance(value, list)):
        acc: dict = {}
        items = [(k, value[k]) for k in _js_keys(value)] if isinstance(value, dict) else [(str(i), v) for i, v in enumerate(value)]
        for k, v in items:
            acc.update(_flatten(v, f"{prefix}{sep}{k}" if prefix else k, sep, ignore_arrays))
        return acc
    return {prefix: value}


def _r_flatten(opts, payload):
    _need_object(opts, '@flatten requires an object with a "separator" key')
    if js_falsy(_opt(opts, "separator")):
        raise _RuntimeError('@flatten requires a "separator" key')
    sep = _resolve(opts["separator"], payload)
    if not isinstance(sep, str):
        raise _RuntimeError("@flatten requires a string separator")
    value = _resolve(_opt(opts, "value"), payload)
    return _flatten(value, "", sep, not js_falsy(_opt(opts, "omitArrays")))


def js_stringify(v) -> str | Any:
    """``JSON.stringify(v)`` (UNDEFINED for undefined)."""
    if v is UNDEFINED:
        return UNDEFINED
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if js_is_number(v):
        f = js_float(v)
        return js_number_to_string(f) if math.isfinite(f) else "null"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ",".join("null" if x is UNDEFINED else js_stringify(x) for x in v) + "]"
    parts = [json.dumps(k, ensure_ascii=False) + ":" + js_stringify(v[k]) for k in _js_keys(v) if v[k] is not UNDEFINED]
    return "{" + ",".join(parts) + "}"


def _no_constants(name):
    raise ValueError(name)


def js_json_parse(s: str):
    """``JSON.parse(s)``; raises ValueError where JavaScript throws."""
    return json.loads(s, parse_constant=_no_constants)


def _r_json(opts, payload):
    _need_object(opts, '@json requires an object with a "value" key')
    if js_falsy(_opt(opts, "mode")):
        raise _RuntimeError('@json requires a "mode" key')
    if js_falsy(_opt(opts, "value")):
        raise _RuntimeError('@json requires a "value" key')
    v = _resolve(opts["value"], payload)
    if opts["mode"] == "encode":
        return js_stringify(v)
    if opts["mode"] == "decode":
        if isinstance(v, str):
            try:
                return js_json_parse(v)
            except ValueError:
                return v
        return v
    return UNDEFINED


def _assign_source(target: dict, src) -> None:
    """One source of Object.assign({}, ...sources)."""
    if isinstance(src, dict):
        for k in _js_keys(src):
            target[k] = src[k]
    elif isinstance(src, list):
        for i, x in enumerate(src):
            target[str(i)] = x
    elif isinstance(src, str):
        for i, c in enumerate(src):
            target[str(i)] = c


def _r_merge(opts, payload):
    _need_object(opts, '@merge requires an object with an "objects" key and a "direction" key')
    if js_falsy(_opt(opts, "direction")):
        raise _RuntimeError('@merge requires a "direction" key')
    direction = _resolve(opts["direction"], payload)
    if js_falsy(_opt(opts, "objects")):
        raise _RuntimeError('@merge requires a "objects" key')
    if not isinstance(opts["objects"], list):
        raise _RuntimeError("@merge: expected opts.array")
    objs = [_resolve(o, payload) for o in opts["objects"]]
    if direction == "left":
        objs.reverse()
    out: dict = {}
    for o in objs:
        _assign_source(out, o)
    return out


def _remove_undefined(v):
    if isinstance(v, list):
        return [_remove_undefined(x) for x in v]  # undefined items stay (JS keeps holes)
    if isinstance(v, dict):
        return {k: _remove_undefined(x) for k, x in v.items() if x is not UNDEFINED}
    return v


def _spread(mapping) -> dict:
    """``{...mapping}`` as getMappingToProcess does: the top level of data is always an object."""
    if mapping is None:
        raise _RuntimeError("Cannot convert undefined or null to object")
    if isinstance(mapping, dict):
        return dict(mapping)
    if isinstance(mapping, list):
        return {str(i): v for i, v in enumerate(mapping)}
    if isinstance(mapping, str):
        return {str(i): c for i, c in enumerate(mapping)}
    return {}


def _transform(mapping, payload):
    if payload is UNDEFINED:
        payload = {}
    if not isinstance(payload, dict):
        raise _RuntimeError(f"data must be an object, got {_type(payload)}")
    mapping = _spread(mapping)
    errs = _segment_validate(mapping)
    if errs:
        raise _RuntimeError(f"/{'/'.join(map(str, errs[0].stack))} {errs[0].msg}.")
    return _remove_undefined(_resolve(mapping, payload))


def _r_transform(opts, payload):
    _need_object(opts, '@transform requires an object with an "apply" key and a "mapping" key')
    if js_falsy(_opt(opts, "mapping")):
        raise _RuntimeError('@transform requires a "mapping" key')
    if js_falsy(_opt(opts, "apply")):
        raise _RuntimeError('@transform requires a "apply" key')
    if not isinstance(opts["apply"], dict):
        raise _RuntimeError('@transform "apply" key should be an object')
    return _resolve(opts["mapping"], _transform(opts["apply"], payload))


def _clean_nulls(v):
    if isinstance(v, dict):
        return {k: (UNDEFINED if x is None else _clean_nulls(x) if isinstance(x, dict) else x) for k, x in v.items()}
    return v


def _r_exclude_when_null(value, payload):
    r = _resolve(value, payload)
    return UNDEFINED if r is None else _clean_nulls(r)


def _r_liquid(opts, payload):
    raise _RuntimeError("@liquid is not supported by cmdseg_nb (no Python engine matches liquidjs)")


_RUNNERS = {"@if": _r_if, "@case": _r_case, "@replace": _r_replace, "@arrayPath": _r_array_path,
            "@path": _r_path, "@template": _r_template, "@literal": _r_literal, "@flatten": _r_flatten,
            "@json": _r_json, "@merge": _r_merge, "@transform": _r_transform,
            "@excludeWhenNull": _r_exclude_when_null, "@liquid": _r_liquid}


def transform(data, payload: dict, *, mapping_name: str | None = None):
    """Resolve a mapping against one event, like actions-core ``transform(mapping, payload)``.

    Parameters
    ----------
    data : JSON value
        The mapping's ``data`` field.
    payload : dict
        One Segment event as parsed JSON.
    mapping_name : str, optional
        Named in errors.

    Returns
    -------
    JSON value or UNDEFINED
        The resolved data object. Keys whose value resolved to undefined are dropped; undefined
        items of arrays become ``None`` (as ``JSON.stringify`` sends them). A top-level directive
        that resolves to nothing returns :data:`UNDEFINED`.

    Raises
    ------
    MappingError
        Where actions-core throws: ``validate.js`` rejects the mapping, or a directive fails at
        run time for this event (``@path`` of a non-string, ``@case`` with an unknown operator on a
        string, ...), and for ``@liquid``.
    """
    try:
        return _as_sent(_transform(data, payload))
    except _RuntimeError as e:
        raise MappingError(str(e), mapping=mapping_name) from None


# ---------------------------------------------------------------------------------------------
# SQL


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


def _as_sent(v):
    """The value as JSON.stringify sends it: undefined array items become null."""
    if isinstance(v, list):
        return [None if x is UNDEFINED else _as_sent(x) for x in v]
    if isinstance(v, dict):
        return {k: _as_sent(x) for k, x in v.items() if x is not UNDEFINED}
    return v


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

    con.execute(_JS_NUM_MACRO)
    try:
        con.remove_function(_UDF)
    except Exception:  # noqa: BLE001 - not registered yet
        pass
    con.create_function(_UDF, _eval_batch, [duckdb.sqltype("VARCHAR"), duckdb.sqltype("VARCHAR")],
                        duckdb.sqltype("VARCHAR"), type="arrow", null_handling="special",
                        side_effects=False)
