"""to_sql: the whole mapping as one warehouse query, transpiled with sqlglot. The DuckDB output,
run on DuckDB over the bundled export, gives the same long table as user_properties."""
from __future__ import annotations

import pandas as pd
import pytest
import sqlglot
from conftest import EXAMPLE, RUDDER

from cmdseg_nb import load_export, user_properties
from cmdseg_nb._frame import long_frame
from cmdseg_nb._to_sql import DIALECTS, ToSqlError, to_sql

CUSTOM = [
    {"name": "Identify traits", "trigger": 'type = "identify"', "data": {"@path": "$."}},
    {"name": "Plan", "trigger": 'type = "track" and event = "ORDER COMPLETED"',
     "data": {"userId": {"@path": "$.userId"}, "user_property.plan": {"@path": "$.properties.payment_method"},
              "user_property.total": {"@path": "$.properties.total"}, "user_property.seen": True}},
    {"name": "Events", "trigger": 'type = "track" or type = "page"',
     "data": {"userId": {"@path": "$.userId"}, "user_property_event": {"@path": "$.event"}}},
]
CONFIGS = pytest.mark.parametrize("config", [None, EXAMPLE, CUSTOM], ids=["default", "example", "custom"])


@pytest.fixture(scope="module")
def rudder():
    export = load_export(RUDDER)
    for t in export.tables:  # the warehouse's table names, as to_sql writes them
        export.con.execute(f'CREATE OR REPLACE TEMP VIEW "{t.name}" AS SELECT * FROM "{t.view}"')
    return export


@CONFIGS
def test_duckdb_output_gives_the_user_properties_table(rudder, config):
    got = long_frame(rudder.con, to_sql(config, "duckdb", schema=rudder))
    want = user_properties(rudder, config)
    assert len(want) > 0
    pd.testing.assert_frame_equal(got, want)


def whitespace_ids(folder):
    """An identifies table whose user ids are blank but for one (receiver rule 1)."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq
    folder.mkdir(parents=True, exist_ok=True)
    ids = ["u1", "", " ", "\u00a0", "\u2003 \t", "\x1c", "\u3000\u205f"]
    t = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    pq.write_table(pa.table({"id": [f"m{i}" for i in range(len(ids))], "user_id": ids,
                             "timestamp": [t] * len(ids), "plan": ["pro"] * len(ids)}),
                   folder / "identifies.parquet")
    export = load_export(folder)
    for tb in export.tables:
        export.con.execute(f'CREATE OR REPLACE TEMP VIEW "{tb.name}" AS SELECT * FROM "{tb.view}"')
    return export


def test_blank_user_ids_are_skipped_as_by_the_receiver(tmp_path):
    export = whitespace_ids(tmp_path)
    got = long_frame(export.con, to_sql(None, "duckdb", schema=export))
    want = user_properties(export)
    assert list(want["user_id"]) == ["u1"]
    pd.testing.assert_frame_equal(got, want)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_dialect_parses_back(rudder, dialect):
    sql = to_sql(CUSTOM, dialect, schema=rudder, qualify="analytics.rudder")
    sqlglot.parse_one(sql, read=dialect)  # valid in its own dialect
    assert "CMDSEG_" not in sql.upper()  # every placeholder rendered
    assert "analytics.rudder" in sql
    marker = {"duckdb": "to_json", "spark": "get_json_object", "snowflake": "TO_VARIANT",
              "bigquery": "TO_JSON_STRING"}[dialect]
    assert marker.lower() in sql.lower()


def test_schema_as_dict_with_types():
    schema = {"identifies": {"id": "VARCHAR", "user_id": "VARCHAR", "timestamp": "TIMESTAMP",
                             "received_at": "TIMESTAMP", "plan": "VARCHAR", "seats": "BIGINT",
                             "context_ip": "VARCHAR"},
              "users": ["id", "plan"]}
    sql = to_sql(None, "duckdb", schema=schema)
    assert '"seats"' in sql and '"plan"' in sql and "context_ip" not in sql
    assert '"users"' not in sql  # a snapshot table is not events
    import duckdb
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("""CREATE TABLE identifies AS SELECT * FROM (VALUES
        ('m1', 'u1', TIMESTAMP '2024-01-01 00:00:00', TIMESTAMP '2024-01-01 00:00:01', 'free', 1, '1.1.1.1'),
        ('m2', 'u1', TIMESTAMP '2024-01-02 00:00:00', TIMESTAMP '2024-01-02 00:00:01', NULL, 3, '1.1.1.1'),
        ('m3', '  ', TIMESTAMP '2024-01-03 00:00:00', TIMESTAMP '2024-01-03 00:00:01', 'pro', 9, '1.1.1.1'))
        AS t(id, user_id, timestamp, received_at, plan, seats, context_ip)""")
    rows = con.execute(sql).fetchall()
    assert [(r[0], r[1], r[2], r[3], r[5]) for r in rows] == [
        ("u1", "plan", '"free"', "string", "m1"), ("u1", "seats", "3", "number", "m2")]


@pytest.mark.parametrize("data", [
    {"userId": {"@path": "$.userId"}, "user_property.x": {"@template": "{{event}}"}},
    {"userId": {"@path": "$.userId"}, "user_property.x": {"@path": "$.context.ip"}},
])
def test_unplannable_mapping_is_refused(rudder, data):
    with pytest.raises(ToSqlError):
        to_sql([{"name": "m", "trigger": 'type = "identify"', "data": data}], "spark", schema=rudder)


def test_unknown_dialect(rudder):
    with pytest.raises(ValueError):
        to_sql(None, "oracle", schema=rudder)
