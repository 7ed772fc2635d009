"""Segment FQL triggers, exactly as ``@segment/destination-subscriptions`` 3.37 evaluates them.

A mapping's *trigger* (``type = "identify"``, ``event = "Signed Up" and properties.plan exists``)
is parsed here into the same AST that ``parseFql`` builds, then either evaluated in Python
(:func:`fql_matches`, like ``validate(parseFql(fql), event)``) or compiled to a DuckDB boolean
predicate over the event JSON (:func:`fql_to_sql`).

The lexer is a line-by-line port of ``@segment/fql-ts`` 1.10 and the parser of
``destination-subscriptions/dist/cjs/parse-fql.js``, quirks included, because a trigger must
match the same events Segment matches:

* ``and``/``or`` are not precedence-ordered: every condition of one parenthesised level is joined
  by the *last* ``and``/``or`` seen on that level.
* ``!`` only negates ``contains(...)``/``match(...)``; before a parenthesis it is ignored.
* ``=``/``!=`` compare strings strictly (``properties.n = "5"`` does not match the number 5);
  ``= 5``/``!= 5`` and ``<``/``<=``/``>``/``>=`` only match JSON numbers; ``= true``/``= false``
  only match booleans (except on ``type``/``event``/``name``); ``= null`` means "missing or null".
* Single-quoted strings keep their quotes (``event = 'x'`` compares with ``'x'``).
* Nested parentheses and empty groups are errors.

Segment's field lookup (``get``) walks ``properties``/``traits``/``context`` with JavaScript's
``prev && prev[key]``: a null/false/0/"" parent is itself the looked-up value.
"""
from __future__ import annotations

import math
import re
import threading
from typing import Any

from ._errors import MappingError

__all__ = ["parse_fql", "fql_to_sql", "fql_matches"]


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
# JavaScript value helpers (shared with _mappingkit)

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
# SQL helpers shared with _mappingkit

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


# ---------------------------------------------------------------------------------------------
# Lexer: port of @segment/fql-ts 1.10 lexer.js (works on UTF-16 code units, like JavaScript)

_EOS = "-1"


class _LexError(Exception):
    pass


def _units(s: str) -> list[str]:
    b = s.encode("utf-16-le", "surrogatepass")
    return [chr(int.from_bytes(b[i : i + 2], "little")) for i in range(0, len(b), 2)]


def _from_units(s: str) -> str:
    return s.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _is_alpha(c: str) -> bool:
    return len(c) == 1 and ("a" <= c <= "z" or "A" <= c <= "Z")


def _is_number(c: str) -> bool:
    return c != _EOS and len(c) == 1 and "0" <= c <= "9"


def _is_ws(c: str) -> bool:
    return c in (" ", "\t", "\n")


def _is_ident(c: str) -> bool:
    return c != _EOS and (_is_alpha(c) or _is_number(c) or c in ("_", "-", "\\"))


def _is_term(c: str) -> bool:
    return c == _EOS or _is_ws(c) or c in (",", "]", ")")


class _Lexer:
    def __init__(self, code: str):
        self.code = _units(code)
        self.pos = 0

    def next(self) -> tuple[str, bool]:
        if self.pos == len(self.code):
            return _EOS, True
        c = self.code[self.pos]
        self.pos += 1
        return c, False

    def peek(self) -> str:
        c, eos = self.next()
        if not eos:
            self.backup(1)
        return c

    def backup(self, n: int) -> None:
        for _ in range(n):
            if self.pos == 0:
                return
            self.pos -= 1

    def accept(self, s: str) -> bool:
        chars = ""
        for _ in s:
            c, eos = self.next()
            chars += c
            if eos:
                return False
            if _is_term(c):
                break
        if s == chars and _is_term(self.peek()):
            return True
        self.backup(len(chars))
        return False

    def lex(self) -> list[dict]:
        toks: list[dict] = []
        while True:
            c, eos = self.next()
            if eos:
                toks.append({"type": "eos", "value": "eos"})
                return toks
            if _is_ws(c):
                continue
            if c == "!":
                nc = self.peek()
                if _is_alpha(nc) or nc == "(":
                    toks.append({"type": "operator", "value": "!"})
                    continue
            if _is_alpha(c) or c in ("!", "=", ">", "<", "\\", "_"):
                toks.append(self.op_or_cond(c))
            elif _is_number(c) or c in ("-", "+"):
                toks.append(self.number(c))
            elif c in ('"', "'"):
                toks.append(self.string(c))
            else:
                simple = {".": "dot", "[": "brackleft", "]": "brackright", ",": "comma",
                          "(": "parenleft", ")": "parenright"}
                if c not in simple:
                    raise _LexError(f'invalid character "{_from_units(c)}"')
                toks.append({"type": simple[c], "value": c})

    def string(self, q: str) -> dict:
        s = ""
        while self.peek() != q:
            c, eos = self.next()
            s += c
            if eos:
                raise _LexError("unterminated string")
            if len(s) >= 100000:
                raise _LexError("unreasonable string length")
        self.accept(q)
        return {"type": "string", "value": _from_units(q + s + q)}

    def number(self, prev: str) -> dict:
        s, coming, dec = "", self.peek(), False
        while _is_number(coming) or coming == ".":
            c, _ = self.next()
            s += c
            if coming == ".":
                if _is_term(self.peek()):
                    raise _LexError("unexpected terminator after decimal point")
                if dec:
                    raise _LexError("multiple decimal points in one number")
                dec = True
            if len(s) >= 100000:
                raise _LexError("unreasonable number length")
            coming = self.peek()
        return {"type": "number", "value": prev + s}

    def op_or_cond(self, prev: str) -> dict:
        if prev == "=":
            return {"type": "operator", "value": "="}
        if prev == "!":
            if self.accept("="):
                return {"type": "operator", "value": "!="}
            raise _LexError(f"expected '=' after '!', got '{self.peek()}'")
        if prev == "a" and self.accept("nd"):
            return {"type": "conditional", "value": "and"}
        if prev == "o" and self.accept("r"):
            return {"type": "conditional", "value": "or"}
        if prev == "n" and self.accept("ull"):
            return {"type": "null", "value": "null"}
        if prev in ("<", ">"):
            if self.accept("="):
                return {"type": "operator", "value": prev + "="}
            return {"type": "operator", "value": prev}
        return self.ident(prev)

    def ident(self, prev: str) -> dict:
        s, c = "", prev
        while True:
            if c == "\\":
                if self.peek() == _EOS:
                    raise _LexError("expected character after escape character, got EOS")
                c, _ = self.next()
            s += c
            if len(s) >= 100000:
                raise _LexError("unreasonable literal length")
            if not _is_ident(self.peek()):
                break
            c, _ = self.next()
        nc = self.peek()
        if not (_is_term(nc) or nc in (".", "(", "=", "!")):
            raise _LexError(f"expected termination character after identifier, got {_from_units(nc)}")
        return {"type": "ident", "value": _from_units(s)}


def _normalize(toks: list[dict]) -> list[dict]:
    out: list[dict] = []
    i = 0
    while i < len(toks):
        last = out[-1] if out else None
        cur = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        if last and last["type"] == "ident" and cur["type"] == "dot" and nxt and nxt["type"] == "ident":
            out.pop()
            out.append({"type": "ident", "value": last["value"] + cur["value"] + nxt["value"]})
            i += 2
        else:
            out.append(cur)
            i += 1
    return out


# ---------------------------------------------------------------------------------------------
# Parser: port of destination-subscriptions 3.37 parse-fql.js

_COND_TYPES = {"type": "event-type", "event": "event", "name": "name", "userId": "userId",
               "context": "event-context", "properties": "event-property", "traits": "event-trait"}
_PREFIX = {"event-property": "properties", "event-trait": "traits", "event-context": "context"}


class _ParseError(Exception):
    pass


def _token_value(tok: dict) -> Any:
    if tok["type"] == "string":
        v = tok["value"]
        v = v[1:] if v.startswith('"') else v
        return v[:-1] if v.endswith('"') else v
    if tok["type"] == "number":
        return js_to_number(tok["value"]) if tok["value"] not in ("-", "+") else math.nan
    if tok["type"] == "ident" and tok["value"] in ("true", "false"):
        return tok["value"] == "true"
    return js_string(tok["value"])


def _shift(toks: list[dict]) -> dict | None:
    return toks.pop(0) if toks else None


def _attr(tok: dict | None, key: str) -> Any:
    if tok is None:  # JavaScript: "Cannot read properties of undefined"
        raise _ParseError(f"Cannot read properties of undefined (reading '{key}')")
    return tok[key]


def _strip_prefix(name: str, prefix: str) -> str:
    return name[len(prefix) + 1 :] if name.startswith(prefix + ".") else name


def _parse_function(name: str, nodes: list, toks: list[dict], negate: bool) -> None:
    _shift(toks)
    name_tok = _shift(toks)
    if not name_tok:
        raise _ParseError(f"{name}() is missing a 1st argument")
    _shift(toks)
    value_tok = _shift(toks)
    if not value_tok:
        raise _ParseError(f"{name}() is missing a 2nd argument")
    _shift(toks)
    if name == "contains":
        op = "not_contains" if negate else "contains"
        value = js_string(_token_value(value_tok))
    else:
        if value_tok["value"].endswith('*"'):
            op = "not_starts_with" if negate else "starts_with"
            value = js_string(_token_value(value_tok))[:-1]
        else:
            op = "not_ends_with" if negate else "ends_with"
            value = js_string(_token_value(value_tok))[1:]
    nv = name_tok["value"]
    if nv in ("event", "name", "userId"):
        nodes.append({"type": nv, "operator": op, "value": value})
    for ctype, prefix in _PREFIX.items():
        if nv.startswith(prefix):
            nodes.append({"type": ctype, "name": _strip_prefix(nv, prefix), "operator": op, "value": value})


def _is_fql_function(tok: dict | None) -> bool:
    return _attr(tok, "type") == "ident" and tok["value"] in ("contains", "match")


def _parse(toks: list[dict]) -> Any:
    nodes: list = []
    operator = "and"
    tok = _shift(toks)
    while tok and tok["type"] != "eos":
        if tok["type"] == "ident":
            start = tok["value"].split(".")[0]
            ctype = _COND_TYPES.get(start)
            if ctype is None and start in _OBJECT_PROTOTYPE_NAMES:
                ctype = "prototype"  # JS: tokenToConditionType[start] is an inherited function
            if ctype:
                op_tok = _shift(toks)
                if not op_tok:
                    raise _ParseError("Operator token is missing")
                val_tok = _shift(toks)
                if not val_tok:
                    raise _ParseError("Value token is missing")
                opv, vv = op_tok["value"], val_tok["value"]
                flags = {
                    "is_true": opv == "=" and vv == "true",
                    "is_false": opv == "=" and vv == "false",
                    "exists": opv == "!=" and vv == "null",
                    "not_exists": opv == "=" and vv == "null",
                    "number_equals": opv == "=" and val_tok["type"] == "number",
                    "number_not_equals": opv == "!=" and val_tok["type"] == "number",
                }
                if ctype in ("event", "event-type"):
                    nodes.append({"type": ctype, "operator": opv, "value": js_string(_token_value(val_tok))})
                elif ctype in ("name", "userId"):
                    allowed = ["exists", "not_exists"] + (["is_true", "is_false"] if ctype == "userId" else [])
                    special = next((f for f in allowed if flags[f]), None)
                    if special:
                        nodes.append({"type": ctype, "operator": special})
                    else:
                        nodes.append({"type": ctype, "operator": opv, "value": js_string(_token_value(val_tok))})
                elif ctype in _PREFIX:
                    node = {"type": ctype, "name": _strip_prefix(tok["value"], _PREFIX[ctype])}
                    special = next((f for f in flags if flags[f]), None)
                    if special in ("number_equals", "number_not_equals"):
                        node.update(operator=special, value=_token_value(val_tok))
                    elif special:
                        node["operator"] = special
                    else:
                        node.update(operator=opv, value=_token_value(val_tok))
                    nodes.append(node)
            if _is_fql_function(tok):
                _parse_function(tok["value"], nodes, toks, negate=False)
        if tok["type"] == "operator" and tok["value"] == "!":
            if _is_fql_function(toks[0] if toks else None):
                name = toks[0]["value"]
                _shift(toks)
                _parse_function(name, nodes, toks, negate=True)
        if tok["type"] == "parenleft":
            group: list[dict] = []
            g = _shift(toks)
            while _attr(g, "type") != "parenright":
                group.append(g)
                g = _shift(toks)
            group.append({"type": "eos", "value": "eos"})
            nodes.append(_parse(group))
        if tok["type"] == "conditional":
            operator = tok["value"]
        tok = _shift(toks)
    if len(nodes) > 1:
        return {"type": "group", "operator": operator, "children": nodes}
    return nodes[0] if nodes else None


def _check_evaluable(node: Any) -> None:
    """Reject what parseFql accepts but validate() would crash on (TypeError in JavaScript)."""
    if node is None:
        raise _ParseError("empty parentheses: Segment's evaluator would crash on this trigger")
    if node.get("type") == "group":
        for child in node["children"]:
            _check_evaluable(child)
    elif "name" in node and node["name"] and not re.search(r"[^\[.\]]", node["name"]):
        raise _ParseError(f"field name {node['name']!r} has no path segment")


def parse_fql(text: str, *, mapping_name: str | None = None, path: str | None = None) -> dict:
    """Parse a Segment FQL trigger into the AST ``parseFql`` builds.

    Parameters
    ----------
    text : str
        The trigger, e.g. ``'type = "track" and event = "Plan Changed"'``.
    mapping_name, path : str, optional
        Named in the error (the mapping and the JSON path of its trigger).

    Returns
    -------
    dict
        ``{"type": "group", "operator": "and"|"or", "children": [...]}``; leaves are
        ``{"type": "event-type"|"event"|"name"|"userId"|"event-property"|"event-trait"|
        "event-context", "name"?: str, "operator": str, "value"?: str|float|bool}``,
        the same shape as ``@segment/destination-subscriptions``.

    Raises
    ------
    MappingError
        Where ``parseFql`` returns ``{error}`` (lexer errors, missing operands, unclosed or nested
        parentheses, no condition at all), and where the AST would make ``validate`` throw
        (an empty ``()`` group, a field name made only of ``.[]``).
    """
    if not isinstance(text, str):
        raise MappingError(f"trigger must be a string, got {type(text).__name__}", mapping=mapping_name, path=path)
    try:
        lexer = _Lexer(text)
        try:
            toks = lexer.lex()
        except _LexError:
            toks = []  # fql-ts returns {tokens: [], error}; parseFql ignores the error
        ast = _parse(_normalize(toks))
        if ast is None:
            raise _ParseError("no condition found")
        if ast.get("type") != "group":
            ast = {"type": "group", "operator": "and", "children": [ast]}
        _check_evaluable(ast)
    except _ParseError as e:
        hint = ("; Segment's FQL does not support nested parentheses: flatten them"
                if _paren_depth(text) > 1 else "")
        raise MappingError(f"invalid trigger {text!r}: {e}{hint}", mapping=mapping_name,
                           path=path) from None
    return ast


def _paren_depth(text: str) -> int:
    """Deepest parenthesis nesting outside quoted strings (for error messages only)."""
    depth = best = 0
    quote = None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
            best = max(best, depth)
        elif ch == ")":
            depth -= 1
    return best


def _ast(trigger: str | dict) -> dict:
    return parse_fql(trigger) if isinstance(trigger, str) else trigger


# ---------------------------------------------------------------------------------------------
# Evaluation: port of destination-subscriptions 3.37 validate.js


def _sub_get(obj: Any, name: str) -> Any:
    if not name:
        return UNDEFINED
    return _walk(obj, re.findall(r"[^\[.\]]+", name))


def _validate_value(actual: Any, op: str, expected: Any) -> bool:
    num = js_is_number(actual)
    a = js_float(actual) if num else None
    if op in ("=", "!="):
        eq = isinstance(actual, str) and actual == js_string(expected)
        return eq if op == "=" else not eq
    if op in ("number_equals", "number_not_equals", "<", "<=", ">", ">="):
        if not num:
            return False
        e = js_to_number(expected)
        return {"number_equals": a == e, "number_not_equals": a != e, "<": a < e, "<=": a <= e,
                ">": a > e, ">=": a >= e}[op]
    if op in ("contains", "not_contains", "starts_with", "not_starts_with", "ends_with", "not_ends_with"):
        if not isinstance(actual, str):
            return False
        e = js_string(expected)
        hit = {"contains": e in actual, "starts_with": actual.startswith(e),
               "ends_with": actual.endswith(e)}[op.removeprefix("not_")]
        return not hit if op.startswith("not_") else hit
    if op == "exists":
        return actual is not UNDEFINED and actual is not None
    if op == "not_exists":
        return actual is UNDEFINED or actual is None
    if op == "is_true":
        return actual is True
    if op == "is_false":
        return actual is False
    return False


_TOP = {"event-type": "type", "event": "event", "name": "name", "userId": "userId"}


def _eval(node: dict, event: dict) -> bool:
    t = node["type"]
    if t == "group":
        kids = node["children"]
        if node["operator"] == "and":
            return all(_eval(c, event) for c in kids)
        if node["operator"] == "or":
            return any(_eval(c, event) for c in kids)
        return False
    if t in _TOP:
        return _validate_value(event.get(_TOP[t], UNDEFINED), node["operator"], node.get("value", UNDEFINED))
    if t in _PREFIX:
        base = event.get(_PREFIX[t], UNDEFINED)
        return _validate_value(_sub_get(base, node["name"]), node["operator"], node.get("value", UNDEFINED))
    return False


def fql_matches(trigger: str | dict, event: dict) -> bool:
    """Whether ``event`` matches ``trigger``, as ``validate(parseFql(trigger), event)``.

    Parameters
    ----------
    trigger : str or dict
        FQL text or an AST from :func:`parse_fql`.
    event : dict
        One Segment event as parsed JSON (``type``, ``event``, ``userId``, ``properties``, ...).

    Returns
    -------
    bool

    Raises
    ------
    MappingError
        If ``trigger`` is text that does not parse (Segment would match nothing).
    """
    return _eval(_ast(trigger), event)


def _json_text_equals(actual: str, text: str) -> str:
    """SQL: the JSON value ``actual`` is the string ``text`` (NULL when ``actual`` is NULL).

    ``actual`` is always the output of DuckDB's ``json_extract``, which writes the value it
    parsed back out (yyjson's writer), so equal strings have equal JSON text, whatever escapes
    the event used (``"\\u0069dentify"`` is written ``"identify"``). Comparing that text to the
    literal's JSON text, written by the same writer (``to_json``, folded once per query), needs
    no parse per row (``json_type`` and ``->>`` each parsed the value again): the raw path's
    one pass over 5M generated lines with three ``type``/``event`` triggers took 12.8-14.0 s
    against 15.4-15.5 s, alternating in one process. A literal that is not valid Unicode (a
    lone surrogate, in an AST passed in: the FQL lexer turns them into U+FFFD) equals no value
    DuckDB holds (it rejects such text when it reads JSON), so the test is ``false``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "false"
    return f"CAST({actual} AS VARCHAR) = CAST(to_json(CAST({sql_str(text)} AS VARCHAR)) AS VARCHAR)"


def _sql_value(actual: str, op: str, expected: Any) -> str:
    isnum = f"json_type({actual}) IN {_NUM_TYPES}"
    isstr = f"json_type({actual}) = 'VARCHAR'"
    s = f"({actual} ->> '$')"
    if op in ("=", "!="):
        eq = f"COALESCE({_json_text_equals(actual, js_string(expected))}, false)"
        return eq if op == "=" else f"(NOT {eq})"
    if op in ("number_equals", "number_not_equals", "<", "<=", ">", ">="):
        e = js_to_number(expected)
        if math.isnan(e):
            return f"COALESCE({isnum}, false)" if op == "number_not_equals" else "false"
        lit = f"'{e!r}'::DOUBLE" if math.isinf(e) else f"{e!r}::DOUBLE"
        sop = {"number_equals": "=", "number_not_equals": "<>"}.get(op, op)
        return f"COALESCE({isnum} AND TRY_CAST({actual} AS DOUBLE) {sop} {lit}, false)"
    if op in ("contains", "not_contains", "starts_with", "not_starts_with", "ends_with", "not_ends_with"):
        e = sql_str(js_string(expected))
        fn = {"contains": "contains", "starts_with": "starts_with", "ends_with": "suffix"}[op.removeprefix("not_")]
        hit = f"{fn}({s}, {e})"
        return f"COALESCE({isstr} AND {'NOT ' if op.startswith('not_') else ''}{hit}, false)"
    exists = f"COALESCE(json_type({actual}) <> 'NULL', false)"
    if op == "exists":
        return exists
    if op == "not_exists":
        return f"(NOT {exists})"
    if op in ("is_true", "is_false"):
        return f"COALESCE(json_type({actual}) = 'BOOLEAN' AND {actual}::VARCHAR = '{op[3:]}', false)"
    return "false"


def _sql(node: dict, event: str) -> str:
    t = node["type"]
    if t == "group":
        if node["operator"] not in ("and", "or"):
            return "false"
        joiner = f" {node['operator'].upper()} "
        return "(" + joiner.join(_sql(c, event) for c in node["children"]) + ")"
    if t in _TOP:
        actual = f"json_extract({event}, {sql_str(json_pointer([_TOP[t]]))})"
    elif t in _PREFIX:
        if not node["name"]:
            actual = "NULL::JSON"
        else:
            actual = sql_walk(event, [_PREFIX[t]], re.findall(r"[^\[.\]]+", node["name"]))
    else:
        return "false"
    return _sql_value(actual, node["operator"], node.get("value", UNDEFINED))


def fql_to_sql(trigger: str | dict, event: str) -> str:
    """Compile a trigger to a DuckDB boolean SQL predicate (never NULL).

    Parameters
    ----------
    trigger : str or dict
        FQL text or an AST from :func:`parse_fql`.
    event : str
        SQL expression of type JSON holding the whole Segment event, e.g. ``"e.event_json"``.

    Returns
    -------
    str
        SQL text; true exactly where :func:`fql_matches` is true. Keys are read with JSON
        Pointers (``'/properties/plan'``), so dots, quotes and slashes in keys are safe.

    Raises
    ------
    MappingError
        If ``trigger`` is text that does not parse.
    """
    ast = _ast(trigger)
    with _ID_LOCK:
        _ID[0] = 0
        return _sql(ast, event)
