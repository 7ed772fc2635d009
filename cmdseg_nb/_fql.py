"""Segment FQL triggers, exactly as ``@segment/destination-subscriptions`` 3.37 evaluates them.

A mapping's *trigger* (``type = "identify"``, ``event = "Signed Up" and properties.plan exists``)
is parsed (:func:`~cmdseg_nb._fql_parse.parse_fql`) into the same AST that ``parseFql`` builds, then either evaluated in Python
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

This module evaluates and compiles the AST; the lexer is in :mod:`cmdseg_nb._fql_lex`, the parser
(:func:`~cmdseg_nb._fql_parse.parse_fql`) in :mod:`cmdseg_nb._fql_parse`, and the JavaScript
value rules both follow (``undefined``, ``String(v)``, ``Number(v)``, ``get``) in
:mod:`cmdseg_nb._jsvalue`.
"""
from __future__ import annotations

import math
import re
from typing import Any

from ._fql_parse import _PREFIX, parse_fql
from ._jsvalue import (
    _ID,
    _ID_LOCK,
    _NUM_TYPES,
    UNDEFINED,
    _walk,
    js_float,
    js_is_number,
    js_string,
    js_to_number,
    json_pointer,
    sql_str,
    sql_walk,
)

__all__ = ["fql_to_sql", "fql_matches"]


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
        FQL text or an AST from :func:`~cmdseg_nb._fql_parse.parse_fql`.
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
        FQL text or an AST from :func:`~cmdseg_nb._fql_parse.parse_fql`.
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
