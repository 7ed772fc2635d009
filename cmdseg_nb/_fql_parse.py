"""The FQL parser: a port of ``@segment/destination-subscriptions`` 3.37 ``parse-fql.js``.

:func:`parse_fql` reads the tokens of :mod:`cmdseg_nb._fql_lex` into the AST ``parseFql``
builds, quirks included (the list is in :mod:`cmdseg_nb._fql`): one ``and``/``or`` per
parenthesised level (the last one seen), ``!`` only before ``contains(...)``/``match(...)``,
``= null``/``!= null``/``= true``/``= 5`` turned into ``not_exists``/``exists``/``is_true``/
``number_equals``, nested parentheses an error. Where ``parseFql`` returns ``{error}``, or the
AST would make ``validate`` throw, it raises :class:`~cmdseg_nb.MappingError`.
:mod:`cmdseg_nb._fql` evaluates and compiles the AST, with ``_PREFIX`` (defined here) mapping
its field types to the event's ``properties``/``traits``/``context``.
"""
from __future__ import annotations

import math
import re
from typing import Any

from ._errors import MappingError
from ._fql_lex import _LexError, _Lexer, _normalize
from ._jsvalue import _OBJECT_PROTOTYPE_NAMES, js_string, js_to_number

__all__ = ["parse_fql"]

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
