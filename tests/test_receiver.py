"""Receiver rules 1-6, in Python (receive) and SQL (user_id_sql, assignments_sql), agreeing."""
from __future__ import annotations

import json

import duckdb
import pytest

from cmdseg_nb import _receiver

USER_IDS = [
    ("u_1", "u_1"), (" padded ", " padded "), ("", None), ("   ", None), ("\t\n", None),
    ("\u3000", None), ("\u00a0x", "\u00a0x"), (1011, "1011"), (1011.0, "1011"), (-5, "-5"),
    (0, "0"), (1.5, "1.5"), (12345678901234567890123, "12345678901234567890123"),
    (1e21, "1e+21"), (True, None), (False, None), (None, None), ([1], None), ({"a": 1}, None),
    ("é✓", "é✓"), ("None", "None"),
]


@pytest.mark.parametrize("value,expected", USER_IDS)
def test_rule1_user_id_python(value, expected):
    assert _receiver.normalize_user_id(value) == expected


def test_rule1_user_id_sql_agrees_with_python():
    con = duckdb.connect()
    objs = [json.dumps({"userId": v}) for v, _ in USER_IDS] + ['{}', '[]', '"x"']
    expected = [e for _, e in USER_IDS] + [None, None, None]
    got = [con.execute(f"SELECT {_receiver.user_id_sql('CAST($1 AS JSON)')}", [o]).fetchall()[0][0]
           for o in objs]
    assert got == expected


def test_rules_2_to_5_precedence_and_reports():
    p = {
        "userId": "u",
        "traits": {"plan": "free", "a.b": 1, "n": None},
        "user_property.plan": "pro",
        "user_property.billing.cycle": "annual",
        "user_property.": "ignored",
        "user_property": "plain key",
        "user_propertyplan": "plain key",
        "user_property_event": "plan",
    }
    uid, assigns, issues = _receiver.receive(p)
    assert uid == "u"
    final = {}
    for prop, value, _rule in assigns:
        final[prop] = value
    # rule 5: traits < user_property.* < user_property_event
    assert final == {"plan": True, "a.b": 1, "n": None, "billing.cycle": "annual"}
    assert issues == ["empty_user_property_name"]


@pytest.mark.parametrize("bad", [None, "", 3, True, ["x"], {"x": 1}])
def test_rule4_invalid_user_property_event_is_reported(bad):
    uid, assigns, issues = _receiver.receive({"userId": "u", "user_property_event": bad})
    assert assigns == [] and issues == ["invalid_user_property_event"]


def test_rule6_null_clears_setting():
    p = {"userId": "u", "traits": {"plan": None, "x": 1}}
    assert _receiver.receive(p)[1] == [("plan", None, "traits"), ("x", 1, "traits")]
    assert _receiver.receive(p, null_clears=False)[1] == [("x", 1, "traits")]


def test_traits_not_an_object_makes_nothing():
    for traits in (["a", "b"], "s", 1, None):
        assert _receiver.receive({"userId": "u", "traits": traits})[1] == []


def test_assignments_sql_agrees_with_receive():
    con = duckdb.connect()
    objs = [
        {"userId": "u1", "traits": {"plan": "pro", "k.e y": [1, {"x": None}], "é": None},
         "user_property.plan": "team", "user_property_event": "Signed Up"},
        {"userId": "u2", "traits": ["not", "object"], "user_property.": 1,
         "user_property_event": ""},
        {"userId": "  ", "traits": {"a": 1}},
        {"traits": {"a": 1}},
        {"userId": 7.0, "user_property.x y": {"deep": {"er": True}}},
    ]
    con.execute("CREATE TABLE o AS SELECT i, CAST(j AS JSON) AS p FROM "
                "(SELECT unnest(range(?)) AS i, unnest(?) AS j)",
                [len(objs), [json.dumps(o) for o in objs]])
    rel = f"(SELECT *, {_receiver.user_id_sql('p')} AS uid FROM o)"
    for null_clears in (True, False):
        rows = con.execute(
            f"SELECT i, uid, property, CAST(value AS VARCHAR), rule FROM "
            f"({_receiver.assignments_sql(rel, null_clears=null_clears)}) ORDER BY i, rule_rank, property"
        ).fetchall()
        got = [(i, uid, prop, json.loads(v), rule) for i, uid, prop, v, rule in rows]
        want = []
        for i, o in enumerate(objs):
            uid, assigns, _ = _receiver.receive(o, null_clears=null_clears)
            ranked = sorted(assigns, key=lambda a: (_receiver.RULES.index(a[2]), a[0]))
            want.extend((i, uid, prop, v, rule) for prop, v, rule in ranked)
        assert got == want
    n, *counts = con.execute(_receiver.issues_sql(rel)).fetchall()[0]
    assert n == len(objs)
    assert dict(zip(_receiver.ISSUES, counts)) == {"no_user_id": 2, "empty_user_property_name": 1,
                                                   "invalid_user_property_event": 1}


def test_whitespace_set_is_pythons_isspace():
    assert set(_receiver.WHITESPACE) == {chr(c) for c in range(0x110000) if chr(c).isspace()}
