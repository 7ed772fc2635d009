"""Mapping-kit validation: the mapping ``data`` that Segment rejects, and mistakes that would throw.

Reference: ``@segment/actions-core`` 3.170.0, ``dist/cjs/mapping-kit/validate.js`` (what Segment
rejects, ported in order by :func:`_segment_validate`) and ``is-directive.js``.

This module also holds what the resolver (:mod:`cmdseg_nb._mappingkit_transform`) and the SQL
compiler (:mod:`cmdseg_nb._mappingkit`) share with it: the 13 directive names, the ``@replace``
length limits, UTF-16 string length, ``realTypeOf`` and ``isDirective``.
:func:`validate_mapping` adds to validate.js the mistakes it lets through but that make
``transform`` throw, and refuses ``@liquid``. The rules of mapping-kit as a whole are listed in
:mod:`cmdseg_nb._mappingkit`.
"""
from __future__ import annotations

import json
import re
from typing import Any

from ._errors import MappingError
from ._jsvalue import UNDEFINED, js_falsy
from ._receiver import value_type

__all__ = ["validate_mapping"]

DIRECTIVES = ("@if", "@case", "@replace", "@arrayPath", "@path", "@template", "@literal",
              "@flatten", "@json", "@merge", "@transform", "@excludeWhenNull", "@liquid")
MAX_PATTERN_LENGTH = 10
MAX_REPLACEMENT_LENGTH = 10


def _js_len(s: str) -> int:
    return len(s.encode("utf-16-le", "surrogatepass")) // 2


def _type(v: Any) -> str:
    """realTypeOf"""
    return "undefined" if v is UNDEFINED else value_type(v)


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
