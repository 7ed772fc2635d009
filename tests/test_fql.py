"""FQL triggers: parseFql AST shapes, evaluation quirks of destination-subscriptions 3.37, SQL."""
from __future__ import annotations

import json

import duckdb
import pytest

from cmdseg_nb._errors import MappingError
from cmdseg_nb._fql import fql_matches, fql_to_sql
from cmdseg_nb._fql_parse import parse_fql

EVENTS = [
    {"type": "identify", "userId": "u1", "traits": {"plan": "team", "n": 5, "z": 0, "flag": True}},
    {"type": "track", "event": "Plan Changed", "userId": "u2", "properties": {"plan": "pro", "n": "5", "price": 12.5}},
    {"type": "track", "event": "Signed Up", "properties": {"a": {"b": None}}, "context": {"x y": "é"}},
    {"type": "page", "name": "Home", "properties": 0},
]


def sql_matches(trigger, texts=None):
    """``fql_to_sql(trigger)`` evaluated by DuckDB over the events' JSON texts (EVENTS by default)."""
    texts = [json.dumps(e) for e in EVENTS] if texts is None else texts
    con = duckdb.connect()
    con.execute("CREATE TABLE ev (i INTEGER, j JSON)")
    con.executemany("INSERT INTO ev VALUES (?, ?)", list(enumerate(texts)))
    return [v for _, v in con.execute(f"SELECT i, {fql_to_sql(trigger, 'j')} FROM ev ORDER BY i").fetchall()]


@pytest.mark.parametrize(("trigger", "expected"), [
    ('type = "identify"', [True, False, False, False]),
    ("type = identify", [True, False, False, False]),
    ('type = "track" and event = "Plan Changed"', [False, True, False, False]),
    ('type = "page" or event = "Signed Up"', [False, False, True, True]),
    ("properties.plan exists", [False, True, False, True]),  # properties = 0 is the value
    ("properties.plan != null", [False, True, False, True]),
    ("properties.plan = null", [True, False, True, False]),
    ("properties.a.b.c exists", [False, False, False, True]),
    ("properties.a.b = null", [True, True, True, False]),  # null parent is the value
    ("properties.x exists", [False, False, False, True]),  # properties = 0: get() returns 0
    ("properties.n = 5", [False, False, False, False]),    # number_equals needs a JSON number
    ('properties.n = "5"', [False, True, False, False]),
    ("traits.n = 5", [True, False, False, False]),
    ("traits.n > 4.5 and traits.n <= 5", [True, False, False, False]),
    ("traits.z != 1", [True, False, False, False]),
    ("traits.flag = true", [True, False, False, False]),
    ('contains(event, "Plan")', [False, True, False, False]),
    ('!contains(event, "Plan")', [False, False, True, False]),
    ('match(event, "Sign*")', [False, False, True, False]),
    ('match(event, "*Changed")', [False, True, False, False]),
    ('context.x\\ y = "é"', [False, False, True, False]),
    ('!(type = "identify")', [True, False, False, False]),  # Segment ignores ! before (
    ("event != \"x\"", [True, True, True, True]),          # != is true when missing
    ('type = "track" and (event = "Signed Up" or event = "Plan Changed")', [False, True, True, False]),
    ('type = "identify" or type = "track" and userId exists', [False, False, False, False]),  # last and/or of a level wins: all `and`
])
def test_matches_python_and_sql(trigger, expected):
    assert [fql_matches(trigger, e) for e in EVENTS] == expected
    assert sql_matches(trigger) == expected


def test_ast_shape():
    assert parse_fql('type = "track" and properties.plan = 5') == {
        "type": "group", "operator": "and", "children": [
            {"type": "event-type", "operator": "=", "value": "track"},
            {"type": "event-property", "name": "plan", "operator": "number_equals", "value": 5.0}]}


@pytest.mark.parametrize("bad", ["", "type", 'type = "x" and ()', "((type = \"x\"))", '"unterminated',
                                 'type = "x" @', "\\"])
def test_parse_errors(bad):
    with pytest.raises(MappingError, match="invalid trigger"):
        parse_fql(bad, mapping_name="m", path="$[0].trigger")


def test_nested_parentheses_error_says_so():
    from cmdseg_nb import MappingError
    with pytest.raises(MappingError, match="does not support nested parentheses"):
        parse_fql('type = "track" and ((event = "a") or event = "b")')
    with pytest.raises(MappingError) as info:
        parse_fql('type = "x" and ()')
    assert "nested parentheses" not in str(info.value)


ESCAPED = [  # JSON text as a sender may write it: escapes the JSON writer would not use
    r'{"type":"\u0069dentify","event":"Plan \u0043hanged"}',
    '{"type":"track","event":"q \\" b \\\\ t \\t c \\u0001 é 😀 \u2028 /"}',
    r'{"type":"track","event":"q \" b \\ t \t c \u0001 \u00e9 \ud83d\ude00 \u2028 \/"}',
    '{"type":1,"event":["Plan Changed"]}',
    '{"type":"1","event":{"a":"Plan Changed"}}',
    '{"type":"1 ","event":null}',
]


@pytest.mark.parametrize("ast", [
    {"type": "event-type", "operator": "=", "value": "identify"},
    {"type": "event", "operator": "=", "value": "Plan Changed"},
    {"type": "event", "operator": "=", "value": 'q " b \\ t \t c \u0001 é 😀 \u2028 /'},
    {"type": "event", "operator": "!=", "value": 'q " b \\ t \t c \u0001 é 😀 \u2028 /'},
    {"type": "event-type", "operator": "=", "value": "1"},
    {"type": "event-type", "operator": "!=", "value": "1"},
])
def test_string_equality_whatever_the_escapes(ast):
    """``=`` compares JSON text written by DuckDB's writer on both sides: equal strings match
    whichever escapes the event used, and numbers, arrays, objects and null never equal a string."""
    got = sql_matches(ast, ESCAPED)
    assert got == [fql_matches(ast, json.loads(t)) for t in ESCAPED]
    assert sum(got) in (1, 2, 4, 5)  # each literal matches some rows and misses others


@pytest.mark.parametrize("op", ["=", "!="])
def test_a_literal_that_is_not_valid_unicode_equals_nothing(op):
    """An AST (not FQL text: the lexer makes lone surrogates U+FFFD) may carry a lone surrogate;
    DuckDB holds no such text, so ``=`` is false and ``!=`` true, as in ``fql_matches``."""
    ast = {"type": "event", "operator": op, "value": "\ud800"}
    got = sql_matches(ast, ESCAPED)
    assert got == [fql_matches(ast, json.loads(t)) for t in ESCAPED] == [op == "!="] * len(ESCAPED)
