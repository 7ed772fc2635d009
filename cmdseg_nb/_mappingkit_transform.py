"""Mapping-kit in Python: the reference resolver of a mapping's ``data`` against one event.

Reference: ``@segment/actions-core`` 3.170.0, ``dist/cjs/mapping-kit/index.js`` (``transform``
and the runners of its 13 directives) and ``../get.js`` (path lookup), whose rules are listed in
:mod:`cmdseg_nb._mappingkit`.

:func:`transform` answers for one event (``preview``, the tests). The SQL compiler
(:mod:`cmdseg_nb._mappingkit`) reuses the path splitting, the ``@replace`` options and
substitution and the template patterns from here, and its Python UDF runs :func:`_resolve` for the
directives it does not compile. ``_RuntimeError`` is an Error that actions-core throws while
resolving; :func:`transform` turns it into :class:`~cmdseg_nb.MappingError`.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

from ._errors import MappingError
from ._jsvalue import (
    UNDEFINED,
    _walk,
    js_falsy,
    js_float,
    js_is_number,
    js_number_to_string,
    js_string,
)
from ._mappingkit_validate import (
    MAX_PATTERN_LENGTH,
    MAX_REPLACEMENT_LENGTH,
    _is_directive,
    _js_len,
    _segment_validate,
    _type,
)

__all__ = ["transform"]


class _RuntimeError(Exception):
    """An Error that actions-core's transform throws while resolving."""



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


def _as_sent(v):
    """The value as JSON.stringify sends it: undefined array items become null."""
    if isinstance(v, list):
        return [None if x is UNDEFINED else _as_sent(x) for x in v]
    if isinstance(v, dict):
        return {k: _as_sent(x) for k, x in v.items() if x is not UNDEFINED}
    return v


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
        that resolves to nothing returns :data:`~cmdseg_nb._jsvalue.UNDEFINED`.

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
