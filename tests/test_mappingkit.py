"""Mapping-kit: cases B02/B03, directive semantics from actions-core 3.170.0, validation errors, SQL."""
from __future__ import annotations

import json

import duckdb
import pytest

from cmdseg_nb._errors import MappingError
from cmdseg_nb._mappingkit import UNDEFINED, mapping_to_sql, register_udfs, transform, validate_mapping

B02_MAPPING = {
    "userId": {"@path": "$.userId"},
    "user_property.plan": {"@path": "$.properties.plan"},
    "user_property.billing.cycle": {"@path": "$.properties.billing_cycle"},
    "user_propertyplan": {"@path": "$.properties.plan"},
    "user_property": {"@path": "$.properties.plan"},
    "user_property.legacy": {"@path": "$.properties.legacy.tier"},
}
B02_EVENT = {"type": "track", "userId": "u_2001", "event": "Plan Changed", "timestamp": "2024-04-01T09:00:00Z",
             "properties": {"plan": "team", "billing_cycle": "annual", "legacy.tier": "gold"}}
B02_BODY = {"userId": "u_2001", "user_property.plan": "team", "user_property.billing.cycle": "annual",
            "user_propertyplan": "team", "user_property": "team"}


@pytest.fixture
def con():
    c = duckdb.connect()
    register_udfs(c)
    return c


def sql_eval(con, data, events):
    con.execute("CREATE OR REPLACE TABLE ev (i INTEGER, j JSON)")
    con.executemany("INSERT INTO ev VALUES (?, ?)", [(i, json.dumps(e)) for i, e in enumerate(events)])
    rows = con.execute(f"SELECT ({mapping_to_sql(data, 'j')})::VARCHAR FROM ev ORDER BY i").fetchall()
    return [UNDEFINED if v is None else json.loads(v) for (v,) in rows]


def test_b02_webhook_body_python_and_sql(con):
    assert transform(B02_MAPPING, B02_EVENT) == B02_BODY
    assert sql_eval(con, B02_MAPPING, [B02_EVENT]) == [B02_BODY]


def test_b03_keys_with_dots_slashes_quotes_never_null(con):
    row = {"userId": "u_2002", "user_property.plan": "team", "Status / Sub": "ok", 'say "hi"': 1}
    # Top-level keys are reachable by @path only when they contain no dot; the SQL reads every
    # key through a JSON Pointer so quotes and slashes come back intact.
    data = {"s": {"@path": "$.Status / Sub"}, "q": {"@path": '$.say "hi"'}, "all": {"@path": "$."}}
    py = transform(data, row)
    assert py["s"] == "ok" and py["all"] == row
    assert "q" not in py  # get() strips quotes: looks for `say hi`
    assert sql_eval(con, data, [row]) == [py]


@pytest.mark.parametrize(("data", "event", "expected"), [
    ({"a": {"@path": "$.p.x.y"}}, {"p": {"x": 0}}, {"a": 0}),                 # falsy parent is the value
    ({"a": {"@path": "$.p.x.y"}}, {"p": {"x": None}}, {"a": None}),
    ({"a": {"@path": "$.p.x.y"}}, {"p": {"x": ""}}, {"a": ""}),
    ({"a": {"@path": "$.p.x.y"}}, {"p": {"x": False}}, {"a": False}),
    ({"a": {"@path": "$.p.x.y"}}, {"p": {"x": 5}}, {}),                      # truthy scalar: missing
    ({"a": {"@path": "$.p.x"}}, {"p": {"x": None}}, {"a": None}),             # explicit null kept
    ({"a": {"@path": "$.p.missing"}}, {"p": {}}, {}),                        # missing drops the key
    ({"a": {"@path": "$.p.l[1]"}}, {"p": {"l": [1, 2]}}, {"a": 2}),
    ({"a": {"@path": "$.p.l.01"}}, {"p": {"l": [1, 2]}}, {}),
    ({"a": {"@template": "{{p.n}}/{{p.m}}/{{p.o}}/{{p.l}}"}}, {"p": {"n": 1e21, "m": None, "o": {}, "l": [1, [2, None]]}},
     {"a": "1e+21//[object Object]/1,2,"}),
    ({"a": {"@if": {"blank": {"@path": "$.p"}, "then": 1, "else": 2}}}, {"p": 0}, {"a": 2}),
    ({"a": {"@if": {"exists": {"@path": "$.p"}, "then": 1, "else": 2}}}, {"p": 0}, {"a": 1}),
    ({"a": {"@case": {"operator": "upper", "value": {"@path": "$.p"}}}}, {"p": "café"}, {"a": "CAFÉ"}),
    ({"a": {"@replace": {"pattern": "A", "replacement": "[$&]", "ignorecase": True, "value": {"@path": "$.p"}}}},
     {"p": "banana"}, {"a": "b[a]n[a]n[a]"}),
    ({"a": {"@replace": {"pattern": ".", "global": False, "value": {"@path": "$.p"}}}}, {"p": 1.5}, {"a": "15"}),
    ({"a": {"@replace": {"pattern": "x", "value": {"@path": "$.p"}}}}, {"p": None}, {"a": ""}),
    ({"a": {"@json": {"mode": "encode", "value": {"@path": "$.p"}}}}, {"p": {"k": [1, "é"]}}, {"a": '{"k":[1,"é"]}'}),
    ({"a": {"@json": {"mode": "decode", "value": {"@path": "$.p"}}}}, {"p": "[1,2]"}, {"a": [1, 2]}),
    ({"a": {"@json": {"mode": "decode", "value": {"@path": "$.p"}}}}, {"p": "{bad"}, {"a": "{bad"}),
    ({"a": {"@excludeWhenNull": {"@path": "$.p"}}}, {"p": {"x": None, "y": {"z": None, "w": [None]}}}, {"a": {"y": {"w": [None]}}}),
    ({"a": {"@excludeWhenNull": {"@path": "$.p"}}}, {"p": None}, {}),
    ({"a": {"@arrayPath": ["$.p", {"v": {"@path": "$.k"}}]}}, {"p": [{"k": 1}, {}, 0]}, {"a": [{"v": 1}, {}, {"v": 0}]}),
    ({"a": {"@arrayPath": ["$.p", {"v": {"@path": "$.k"}}]}}, {"p": {"k": 1}}, {"a": [{"v": 1}]}),
    ({"a": {"@flatten": {"separator": ".", "value": {"@path": "$.p"}}}}, {"p": {"x": {"y": 1}, "l": [2]}}, {"a": {"x.y": 1, "l.0": 2}}),
    ({"a": {"@merge": {"direction": "left", "objects": [{"@path": "$.p"}, {"x": 2}]}}}, {"p": {"x": 1}}, {"a": {"x": 1}}),
    ({"a": {"@transform": {"apply": {"n": {"@path": "$.p"}}, "mapping": {"m": {"@path": "$.n"}}}}}, {"p": 3}, {"a": {"m": 3}}),
    ({"@path": "$.p"}, {"p": [1]}, [1]),
    ({"@path": "$.missing"}, {}, UNDEFINED),
])
def test_directive_semantics_python_and_sql(con, data, event, expected):
    assert transform(data, event) == expected
    assert sql_eval(con, data, [event]) == [expected]


@pytest.mark.parametrize(("data", "path"), [
    ({"a": {"@bogus": "$.x"}}, '$.a'),
    ({"a": {"@path": "$.x", "@template": "y"}}, "$.a"),
    ({"a": {"@path": "$.x", "other": 1}}, "$.a"),
    ({"a": {"@replace": {"pattern": "12345678901", "value": "x"}}}, '$.a["@replace"].pattern'),
    ({"a": {"@replace": {"value": "x"}}}, '$.a["@replace"]'),
    ({"a": {"@path": 5}}, '$.a["@path"]'),
    ({"a": {"@json": {"mode": "zip", "value": "x"}}}, '$.a["@json"].mode'),
    ({"a": {"@merge": {"objects": [{"@path": "$.x"}, 5], "direction": "left"}}}, '$.a["@merge"].objects[1]'),
    ({"a": {"@arrayPath": "$.x"}}, '$.a["@arrayPath"]'),
    ({"a": {"@if": {"exists": {"@path": "$.x"}, "then": {"@nope": 1}}}}, '$.a["@if"].then'),
    ({"a": {"@if": {"then": 1}}}, '$.a["@if"]'),
    ({"a": {"@case": {"operator": "title", "value": "x"}}}, '$.a["@case"].operator'),
    ({"a": [{"@unknown": 1}]}, "$.a[0]"),
    ({"a": {"@liquid": "{{ userId }}"}}, "$.a"),
    ({"a": {"@transform": {"apply": 1, "mapping": {}}}}, '$.a["@transform"].apply'),
])
def test_validation_names_mapping_and_path(data, path):
    with pytest.raises(MappingError) as e:
        validate_mapping(data, mapping_name="Plan sync")
    assert e.value.mapping == "Plan sync"
    assert e.value.path == path
    assert "Plan sync" in str(e.value) and path in str(e.value)


def test_runtime_error_raised_as_mapping_error():
    with pytest.raises(MappingError, match="expected string"):
        transform({"a": {"@path": {"@path": "$.n"}}}, {"n": 5})


def test_sql_snapshot_simple_path():
    assert mapping_to_sql({"p": {"@path": "$.properties.plan"}}, "e.j") == (
        "('{' || concat_ws(',', '\"p\":' || (list_transform([json_extract(e.j, ['/properties', "
        "'/properties/plan'])], lambda cmdseg_p1: CASE WHEN (CASE json_type(cmdseg_p1[1]) WHEN 'NULL' THEN true "
        "WHEN 'BOOLEAN' THEN cmdseg_p1[1]::VARCHAR = 'false' WHEN 'VARCHAR' THEN cmdseg_p1[1]::VARCHAR = '\"\"' "
        "ELSE json_type(cmdseg_p1[1]) IN ('BIGINT','UBIGINT','DOUBLE','HUGEINT','UHUGEINT','INTEGER') AND "
        "TRY_CAST(cmdseg_p1[1] AS DOUBLE) = 0 END) THEN cmdseg_p1[1] ELSE cmdseg_p1[2] END)[1])::VARCHAR) || '}')::JSON"
    )
