"""JavaScript value semantics, in Python and as DuckDB SQL, for triggers and mapping-kit data.

Segment evaluates triggers (``@segment/destination-subscriptions`` 3.37) and mapping-kit data
(``@segment/actions-core`` 3.170.0) in JavaScript, so :mod:`cmdseg_nb._fql` and
:mod:`cmdseg_nb._mappingkit` share these helpers to get the same answers:

* a missing key is ``undefined`` (:data:`UNDEFINED`), not ``null``;
* ``!v``, ``String(v)`` and ``Number(v)`` follow ECMA-262 (``js_falsy``, ``js_string``,
  ``js_to_number``; ``js_number_to_string`` is Number::toString);
* a field lookup is ``pathArray.reduce((prev, key) => prev && prev[key], obj)``: a
  null/false/0/"" parent is itself the looked-up value (``_walk``).

The SQL helpers write the same rules over DuckDB JSON, where NULL is undefined: ``sql_falsy``,
and ``sql_walk``, which reads keys with JSON Pointers and names its lambdas ``cmdseg_p1``,
``cmdseg_p2``, ... (callers compile under ``_ID_LOCK`` and restart ``_ID`` so SQL is stable).
"""
from __future__ import annotations

import math
import re
import threading
from typing import Any

__all__ = [
    "UNDEFINED",
    "js_falsy",
    "js_float",
    "js_is_number",
    "js_member",
    "js_number_to_string",
    "js_string",
    "js_to_number",
    "json_pointer",
    "sql_falsy",
    "sql_str",
    "sql_walk",
]


class _Undefined:
    """JavaScript ``undefined``: a value that is absent (a missing key)."""

    _inst = None

    def __new__(cls):
        if cls._inst is None:
            cls._inst = super().__new__(cls)
        return cls._inst

    def __repr__(self) -> str:
        return "undefined"

    def __bool__(self) -> bool:
        return False


UNDEFINED = _Undefined()

# ---------------------------------------------------------------------------------------------
# JavaScript value helpers (shared by _fql, _fql_parse, _plan and the _mappingkit modules)

_OBJECT_PROTOTYPE_NAMES = frozenset(
    "constructor __defineGetter__ __defineSetter__ hasOwnProperty __lookupGetter__ "
    "__lookupSetter__ isPrototypeOf propertyIsEnumerable toString valueOf __proto__ "
    "toLocaleString".split()
)


def js_is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def js_float(v: int | float) -> float:
    """A JSON number as JavaScript holds it (an IEEE double)."""
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def js_falsy(v: Any) -> bool:
    """``!v`` in JavaScript for a JSON value (or ``UNDEFINED``)."""
    if v is UNDEFINED or v is None or v is False:
        return True
    if js_is_number(v):
        return v == 0 or (isinstance(v, float) and math.isnan(v))
    if isinstance(v, str):
        return v == ""
    return False


def js_number_to_string(x: int | float) -> str:
    """``String(x)`` for a JavaScript number (ECMA-262 Number::toString)."""
    x = js_float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    mant, _, exp = repr(abs(x)).partition("e")
    ip, _, fp = mant.partition(".")
    digits = ip + fp
    n = len(ip) + int(exp or 0)
    stripped = digits.lstrip("0")
    n -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        es = ("+" if e >= 0 else "-") + str(abs(e))
        body = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + es
    return sign + body


_JS_WS = "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_DEC_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")


def js_to_number(v: Any) -> float:
    """``Number(v)`` for a JSON value, boolean or string (ECMA-262 ToNumber)."""
    if v is UNDEFINED:
        return math.nan
    if v is None or v is False:
        return 0.0
    if v is True:
        return 1.0
    if js_is_number(v):
        return js_float(v)
    if isinstance(v, str):
        s = v.strip(_JS_WS)
        if s == "":
            return 0.0
        if s in ("Infinity", "+Infinity"):
            return math.inf
        if s == "-Infinity":
            return -math.inf
        low = s[:2].lower()
        if len(s) > 2 and low in ("0x", "0o", "0b"):
            base = {"0x": 16, "0o": 8, "0b": 2}[low]
            try:
                return js_float(int(s[2:], base)) if s[2:].isalnum() else math.nan
            except ValueError:
                return math.nan
        if _DEC_RE.match(s):
            return float(s)
        return math.nan
    return math.nan  # objects/arrays: not needed by FQL


def js_string(v: Any) -> str:
    """``String(v)`` for a JSON value (objects give ``[object Object]`` as in JavaScript)."""
    if v is UNDEFINED:
        return "undefined"
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if js_is_number(v):
        return js_number_to_string(v)
    if isinstance(v, str):
        return v
    if isinstance(v, list):
        return ",".join("" if (i is None or i is UNDEFINED) else js_string(i) for i in v)
    return "[object Object]"


_INDEX_RE = re.compile(r"(?:0|[1-9][0-9]*)\Z")


def js_member(obj: Any, key: str) -> Any:
    """``obj[key]`` for a truthy JSON value, own data only (no prototype or string members)."""
    if isinstance(obj, dict):
        return obj.get(key, UNDEFINED)
    if isinstance(obj, list) and _INDEX_RE.match(key):
        i = int(key)
        return obj[i] if i < len(obj) else UNDEFINED
    return UNDEFINED


def _walk(obj: Any, keys: list[str]) -> Any:
    for key in keys:  # pathArray.reduce((prev, key) => prev && prev[key], obj)
        if js_falsy(obj):
            return obj
        obj = js_member(obj, key)
    return obj


# ---------------------------------------------------------------------------------------------
# SQL helpers (shared by _fql and _mappingkit)

_NUM_TYPES = "('BIGINT','UBIGINT','DOUBLE','HUGEINT','UHUGEINT','INTEGER')"


def sql_str(s: str) -> str:
    """A SQL string literal."""
    return "'" + s.replace("'", "''") + "'"


def json_pointer(keys: list[str]) -> str:
    """RFC 6901 JSON Pointer for ``keys``; DuckDB reads it with the same array-index rule as JS
    (``"1"`` indexes an array, ``"01"`` does not) and needs no quoting of dots/quotes/brackets."""
    return "".join("/" + k.replace("~", "~0").replace("/", "~1") for k in keys)


def sql_falsy(x: str) -> str:
    """SQL boolean: the JSON value ``x`` is JavaScript-falsy (NULL, i.e. undefined, gives NULL)."""
    return (
        f"(CASE json_type({x}) WHEN 'NULL' THEN true WHEN 'BOOLEAN' THEN {x}::VARCHAR = 'false' "
        f"WHEN 'VARCHAR' THEN {x}::VARCHAR = '\"\"' ELSE json_type({x}) IN {_NUM_TYPES} "
        f"AND TRY_CAST({x} AS DOUBLE) = 0 END)"
    )


def sql_walk(event: str, base: list[str], keys: list[str], *, base_is_object: bool = True) -> str:
    """SQL JSON for ``keys.reduce((p, k) => p && p[k], event[base...])``; NULL is undefined.

    One ``json_extract`` with a list of JSON Pointers reads every prefix in one pass; a lambda
    binds the list so each prefix is named once. With ``base`` empty and ``base_is_object`` the
    event itself (an object, never falsy) is not tested.
    """
    prefixes = [base + keys[:i] for i in range(len(keys) + 1)]
    if not base and base_is_object:
        prefixes = prefixes[1:]
        if not prefixes:
            return event
    if len(prefixes) == 1:
        return f"json_extract({event}, {sql_str(json_pointer(prefixes[0]))})"
    paths = ", ".join(sql_str(json_pointer(p)) if p else "'$'" for p in prefixes)
    var = f"cmdseg_p{_next_id()}"
    steps = [f"{var}[{i + 1}]" for i in range(len(prefixes))]
    whens = " ".join(f"WHEN {sql_falsy(s)} THEN {s}" for s in steps[:-1])
    return f"list_transform([json_extract({event}, [{paths}])], lambda {var}: CASE {whens} ELSE {steps[-1]} END)[1]"


_ID = [0]
_ID_LOCK = threading.RLock()  # compile under the lock so lambda names restart at 1 (stable SQL)


def _next_id() -> int:
    _ID[0] += 1
    return _ID[0]
