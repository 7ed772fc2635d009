"""The planned path (per user and column aggregation over warehouse columns) gives exactly the
generic path's long table: same rows, values, value types, times, message ids, rules, mappings,
and the same skipped/objects counts, including duplicates, ties and collisions."""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import EXAMPLE, ROOT, RUDDER

from cmdseg_nb import CmdsegError, CmdsegWarning, ExportError, load_export, user_properties
from cmdseg_nb._plan import Unplannable, plan
from cmdseg_nb._properties import PlanError, _config

CUSTOM = [
    {"name": "Identify traits", "trigger": 'type = "identify"', "data": {"@path": "$."}},
    {"name": "Plan", "trigger": 'type = "track" and event = "Plan Changed"',
     "data": {"userId": {"@path": "$.userId"}, "user_property.plan": {"@path": "$.properties.plan"},
              "user_property.amount": {"@path": "$.properties.amount"},
              "user_property.seen": True}},
    {"name": "Events", "trigger": 'type = "track"',
     "data": {"userId": {"@path": "$.userId"}, "user_property_event": {"@path": "$.event"}}},
]


def same(export, config, **kw) -> pd.DataFrame:
    planned = user_properties(export, config, engine="plan", **kw)
    generic = user_properties(export, config, engine="generic", **kw)
    pd.testing.assert_frame_equal(planned, generic)
    assert planned.attrs == generic.attrs
    return planned


@pytest.mark.parametrize("config", [None, EXAMPLE, CUSTOM], ids=["default", "example", "custom"])
def test_rudderstack_planned_equals_generic(config):
    export = load_export(RUDDER)
    first = user_properties(export, config, engine="plan")
    assert not export.materialized  # the planned path never rebuilt the events as JSON
    assert len(first) > 0
    same(export, config)


def test_planned_is_what_auto_uses_and_null_clears_false():
    export = load_export(RUDDER)
    auto = user_properties(export)
    assert not export.materialized
    pd.testing.assert_frame_equal(auto, user_properties(export, engine="generic"))
    same(export, CUSTOM, null_clears=False)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import generate
    finally:
        sys.path.pop(0)
    out = tmp_path_factory.mktemp("gen")
    generate.generate(3000, out, seed=3, formats=("parquet",), chunk=1500, n_users=60)
    return out / "warehouse"


@pytest.mark.parametrize("config", [None, CUSTOM], ids=["default", "custom"])
def test_generated_planned_equals_generic(generated, config):
    export = load_export(generated)
    long = same(export, config)
    # the data has what the test is about: duplicates, copies tied on receivedAt, and one user's
    # events sharing a timestamp
    assert export.report.duplicates_removed > 0
    assert long["user_id"].nunique() > 30
    if config is CUSTOM:
        assert {"traits", "user_property", "user_property_event"} <= set(long["rule"])


# --- crafted tables: duplicates, ties, collisions, NULL ids and times, odd values ---------------

def _write(folder: Path, name: str, rows: list[dict], schema: pa.Schema) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
    pq.write_table(pa.table(cols, schema=schema), folder / f"{name}.parquet")


TS = pa.timestamp("us", tz="UTC")
ID_SCHEMA = pa.schema([("id", pa.string()), ("user_id", pa.string()), ("anonymous_id", pa.string()),
                       ("timestamp", TS), ("original_timestamp", TS), ("received_at", TS),
                       ("plan", pa.string()), ("seats", pa.int64()), ("mrr", pa.float64()),
                       ("admin", pa.bool_()), ("tags", pa.string()), ("context_ip", pa.string())])
TR_SCHEMA = pa.schema([("id", pa.string()), ("user_id", pa.string()), ("anonymous_id", pa.string()),
                       ("timestamp", TS), ("original_timestamp", TS), ("received_at", TS),
                       ("event", pa.string()), ("event_text", pa.string())])
PE_SCHEMA = pa.schema(list(TR_SCHEMA) + [("plan", pa.string()), ("amount", pa.float64())])


def _random_export(folder: Path, seed: int) -> Path:
    rnd = random.Random(seed)
    import datetime as dt
    base = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    users = ["u1", "u2", "u3", " ", "", None, "ü-5"]

    def t(n):  # few distinct instants: many ties
        return None if rnd.random() < 0.05 else base + dt.timedelta(seconds=n)

    def common(i):
        return {"id": None if rnd.random() < 0.04 else f"m{rnd.randrange(0, 40)}",  # many collisions
                "user_id": rnd.choice(users), "anonymous_id": f"a{i % 3}",
                "timestamp": t(rnd.randrange(5)), "original_timestamp": t(rnd.randrange(3)),
                "received_at": t(rnd.randrange(4))}

    idents, tracks, plan_changed, signed_up = [], [], [], []
    for i in range(60):
        r = common(i)
        r.update(plan=rnd.choice(["free", "pro", None, ""]), seats=rnd.choice([1, 2, None]),
                 mrr=rnd.choice([1.5, float("nan"), None, 2.0]), admin=rnd.choice([True, False, None]),
                 tags=rnd.choice(['["a","b"]', '{"x": 1}', "[not json", None]),
                 context_ip=rnd.choice(["1.1.1.1", "2.2.2.2"]))
        idents.append(r)
        if rnd.random() < 0.2:  # an exact or near copy, same or later receivedAt
            c = dict(r)
            if rnd.random() < 0.5:
                c["context_ip"] = "9.9.9.9"
            if rnd.random() < 0.5:
                c["plan"] = "copy"
            idents.append(c)
    for i in range(80):
        r = common(i)
        name = rnd.choice(["Plan Changed", "Signed Up", ""])
        r.update(event=name.lower().replace(" ", "_"), event_text=name)
        if name == "Plan Changed":
            plan_changed.append(dict(r, plan=rnd.choice(["pro", None]), amount=rnd.choice([3.0, None])))
        elif name == "Signed Up":
            signed_up.append(dict(r))
        if rnd.random() < 0.9:
            tracks.append({k: r[k] for k in TR_SCHEMA.names})
        else:  # a tracks row written with another id (matched by event, user and time)
            tracks.append(dict({k: r[k] for k in TR_SCHEMA.names}, id=f"other{i}"))
    rnd.shuffle(idents)
    _write(folder, "identifies", idents, ID_SCHEMA)
    _write(folder, "tracks", tracks, TR_SCHEMA)
    _write(folder, "plan_changed", plan_changed, PE_SCHEMA)
    _write(folder, "signed_up", signed_up, TR_SCHEMA)
    return folder


EDGE = [
    {"name": "Identify traits", "trigger": 'type = "identify"', "data": {"@path": "$."}},
    {"name": "Copies", "trigger": 'type = "identify"',
     "data": {"userId": {"@path": "$.userId"}, "user_property.plan": {"@path": "$.traits.plan"},
              "user_property.cleared": None, "user_property.": "x",
              "user_property.tier": {"@if": {"exists": {"@path": "$.traits.seats"},
                                             "then": {"@path": "$.traits.mrr"}, "else": "none"}}}},
    {"name": "Plan", "trigger": 'event = "Plan Changed"',
     "data": {"userId": {"@path": "$.userId"}, "user_property.plan": {"@path": "$.properties.plan"},
              "user_property_event": {"@path": "$.event"}, "other": {"@path": "$.anonymousId"}}},
    {"name": "Events", "trigger": 'type = "track" or type = "page"',
     "data": {"userId": {"@path": "$.userId"}, "user_property_event": {"@path": "$.event"},
              "user_property.last_event": {"@path": "$.event"}}},
]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("config", [None, EDGE, CUSTOM], ids=["default", "edge", "custom"])
def test_random_duplicates_ties_collisions(tmp_path, seed, config):
    export = load_export(_random_export(tmp_path / "wh", seed))
    long = same(export, config)
    same(export, config, null_clears=False)
    if config is EDGE:
        assert long.attrs["skipped"]["no_user_id"] > 0
        assert long.attrs["skipped"]["empty_user_property_name"] > 0
        assert long.attrs["skipped"]["invalid_user_property_event"] > 0  # event_text ""
    assert export.report.duplicates_removed > 0


@pytest.mark.parametrize("data", [
    {"userId": {"@path": "$.userId"}, "user_property.x": {"@template": "{{event}}"}},
    {"userId": {"@path": "$.userId"}, "user_property.x": {"@path": "$.context.ip"}},
    {"userId": {"@if": {"exists": {"@path": "$.traits.email"}, "then": {"@path": "$.traits.email"}}},
     "user_property.x": 1},
])
def test_unplannable_falls_back(data):
    export = load_export(RUDDER)
    cfg = [{"name": "m", "trigger": 'type = "identify"', "data": data}]
    with pytest.raises(Unplannable):
        plan(export, _config(cfg))
    with pytest.raises(PlanError):
        user_properties(export, cfg, engine="plan")
    pd.testing.assert_frame_equal(user_properties(export, cfg),
                                  user_properties(export, cfg, engine="generic"))


class _Recording:
    """A DuckDB connection that records the SQL it is given (and otherwise is the connection)."""

    def __init__(self, con):
        self._con, self.sql = con, []

    def execute(self, sql, *args):
        self.sql.append(sql)
        return self._con.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._con, name)


def test_several_event_name_triggers_look_each_table_up_once(generated):
    """Webhooks configs often have one mapping per event name: the planner reads the distinct
    event names of each tracks table once, not once per mapping (20M events: 0.2 s a look-up
    round), and the result is still the generic path's."""
    names = ["Plan Changed", "Order Completed", "Feature 00 Used", "Feature 01 Used"]
    cfg = [{"name": n, "trigger": f'type = "track" and event = "{n}"',
            "data": {"userId": {"@path": "$.userId"}, f"user_property.seen_{i}": True}}
           for i, n in enumerate(names)]
    export = load_export(generated)
    rec = _Recording(export.con)
    export.con = rec
    p = plan(export, _config(cfg))
    lookups = [q for q in rec.sql if q.startswith("SELECT DISTINCT event FROM")]
    tracks = [t for t in export.tables if t.event_type == "track"]
    assert len(tracks) > 10
    assert len(lookups) == len(tracks)  # one per table, whatever the number of mappings
    planned = {tp.name: [tm.mi for tm in tp.mappings] for tp in p.tables if tp.mappings}
    assert planned["plan_changed"] == [0] and planned["order_completed"] == [1]
    export.con = rec._con
    long = same(export, cfg)
    assert set(long["property"]) == {f"seen_{i}" for i in range(len(names))}


def test_trigger_on_properties_is_not_planned_but_auto_answers():
    export = load_export(RUDDER)
    cfg = [{"name": "m", "trigger": "properties.total > 10",
            "data": {"userId": {"@path": "$.userId"}, "user_property.big": True}}]
    with pytest.raises(Unplannable):
        plan(export, _config(cfg))
    long = user_properties(export, cfg)
    assert set(long["property"]) == {"big"}


def _random_raw(path: Path, seed: int) -> Path:
    rnd = random.Random(seed)
    times = [None, "2024-01-01T00:00:00Z", "2024-01-01T00:00:01.5Z", "2024-01-01T02:00:00+02:00",
             "2024-01-02T00:00:00Z", "not a time"]
    lines = []
    for i in range(120):
        e = {"type": rnd.choice(["identify", "track", "page", "identify"]),
             "messageId": rnd.choice([None, f"m{rnd.randrange(50)}", 7]),
             "userId": rnd.choice(["u1", "u2", 1011, 1011.0, " ", "", None, "ü 3"]),
             "timestamp": rnd.choice(times), "receivedAt": rnd.choice(times[:4]),
             "originalTimestamp": rnd.choice(times)}
        e = {k: v for k, v in e.items() if v is not None or rnd.random() < 0.3}
        if e["type"] == "identify":
            e["traits"] = rnd.choice([{"plan": rnd.choice(["pro", None, 3, [1, 2], {"a": {"b": 1}}]),
                                       "favorite color": "red", "café": rnd.random() < 0.5},
                                      "not an object", {}])
            if rnd.random() < 0.2:
                e["user_property.tier"] = rnd.choice(["gold", None])
            if rnd.random() < 0.1:
                e["user_property."] = 1
            if rnd.random() < 0.2:
                e["user_property_event"] = rnd.choice(["Signed Up", "", 5])
        elif e["type"] == "track":
            e["event"] = rnd.choice(["Plan Changed", "Signed Up", "", None])
            e["properties"] = {"plan": rnd.choice(["pro", None, 1.5]), "amount": 3}
        lines.append(e)
        if rnd.random() < 0.25:  # a copy: same id, maybe same receivedAt, maybe other content
            c = dict(e)
            if rnd.random() < 0.5:
                c["context"] = {"ip": "9.9.9.9"}
            if rnd.random() < 0.5 and e["type"] == "identify":
                c["traits"] = {"plan": "copy"}
            lines.append(c)
    rnd.shuffle(lines)
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    return path


RAW_CUSTOM = [
    {"name": "Identify traits", "trigger": 'type = "identify"', "data": {"@path": "$."}},
    {"name": "Plan", "trigger": 'event = "Plan Changed"',
     "data": {"userId": {"@path": "$.userId"}, "user_property.plan": {"@path": "$.properties.plan"},
              "user_property.": 1, "user_property_event": {"@path": "$.event"},
              "user_property.tier": {"@if": {"exists": {"@path": "$.traits.plan"},
                                             "then": {"@path": "$.traits.plan"}, "else": "none"}}}},
    {"name": "Events", "trigger": 'type = "track" or type = "identify"',
     "data": {"userId": {"@path": "$.userId"}, "user_property_event": {"@path": "$.event"}}},
]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("config", [None, RAW_CUSTOM, CUSTOM], ids=["default", "raw-custom", "custom"])
def test_raw_events_planned_equals_generic(tmp_path, seed, config):
    export = load_export(_random_raw(tmp_path / "events.ndjson", seed))
    long = same(export, config)
    assert not export.materialized or True
    same(export, config, null_clears=False)
    assert export.report.duplicates_removed > 0
    if config is None:
        assert len(long) > 0


def test_raw_planned_path_reads_the_files_once_without_materializing(tmp_path):
    export = load_export(ROOT / "data" / "segment_spec_examples")
    user_properties(export, EXAMPLE, engine="plan")
    assert not export.materialized
    same(export, EXAMPLE)


def test_raw_mapping_naming_the_user_otherwise_is_generic(tmp_path):
    export = load_export(_random_raw(tmp_path / "events.ndjson", 0))
    cfg = [{"name": "m", "trigger": 'type = "identify"',
            "data": {"userId": {"@path": "$.anonymousId"}, "user_property.x": 1}}]
    with pytest.raises(PlanError):
        user_properties(export, cfg, engine="plan")
    pd.testing.assert_frame_equal(user_properties(export, cfg),
                                  user_properties(export, cfg, engine="generic"))


def test_memory_limit_and_temp_directory_reach_the_planned_queries(tmp_path):
    export = load_export(RUDDER, memory_limit="300MB", temp_directory=str(tmp_path / "spill"))
    got = dict(export.con.execute(
        "SELECT name, value FROM duckdb_settings() WHERE name IN ('memory_limit', 'temp_directory')"
    ).fetchall())
    assert got["memory_limit"].replace(" ", "").startswith(("286.1MiB", "300.0MB", "286MiB"))
    assert got["temp_directory"] == str(tmp_path / "spill")
    same(export, CUSTOM)


@pytest.mark.parametrize("source", [RUDDER, ROOT / "data" / "segment_spec_examples"], ids=["warehouse", "raw"])
def test_the_planned_paths_leave_the_callers_settings_as_they_were(source):
    """The planned paths hand Arrow large strings over (``_db.settings``) and run in a
    transaction of their own; a connection the caller passed in keeps its settings."""
    import duckdb
    con = duckdb.connect()
    con.execute("SET checkpoint_threshold = '123MB'")
    read = "SELECT current_setting('checkpoint_threshold'), current_setting('arrow_large_buffer_size')"
    before = con.execute(read).fetchall()
    assert before[0][1] is False
    export = load_export(source, con=con)
    assert len(user_properties(export, engine="plan")) > 0
    assert con.execute(read).fetchall() == before


def test_the_planned_path_runs_inside_a_transaction_the_caller_has_open():
    import duckdb
    con = duckdb.connect()
    export = load_export(RUDDER, con=con)
    tables = "SELECT count(*) FROM duckdb_tables()"
    before = con.execute(tables).fetchall()
    con.execute("BEGIN TRANSACTION")
    con.execute("CREATE TABLE mine AS SELECT 42 AS x")
    long = user_properties(export, CUSTOM, engine="plan")
    assert len(long) > 0
    con.execute("ROLLBACK")  # still the caller's own transaction: their table goes with it
    assert con.execute(tables).fetchall() == before
    pd.testing.assert_frame_equal(user_properties(export, CUSTOM, engine="plan"), long)


def test_a_failed_planned_run_takes_its_temporary_tables_away(monkeypatch):
    import cmdseg_nb._plan_run as plan_run
    export = load_export(RUDDER)
    tables = "SELECT count(*) FROM duckdb_tables()"
    before = export.con.execute(tables).fetchall()

    def fail(con, *args):
        con.execute("CREATE TEMP TABLE cmdseg_plan_dups AS SELECT 1 AS h")
        con.execute("SELECT error('boom')")
    monkeypatch.setattr(plan_run, "_execute", fail)
    with pytest.raises(CmdsegError, match="boom"):
        user_properties(export, CUSTOM, engine="plan")
    assert export.con.execute(tables).fetchall() == before
    assert export.con.execute("SELECT 1").fetchall() == [(1,)]  # not left in an aborted transaction


def test_an_error_in_the_last_query_is_the_one_raised_and_settings_are_put_back(monkeypatch):
    """The final query runs with arrow_large_buffer_size set, inside the run's transaction: after
    an error there the transaction refuses statements, yet the setting is put back and the
    error raised is the query's own (found by a newcomer with an interrupt)."""
    import duckdb

    import cmdseg_nb._plan_run as plan_run
    con = duckdb.connect()
    export = load_export(RUDDER, con=con)
    monkeypatch.setattr(plan_run, "winners_sql", lambda *a: "SELECT error('boom in the final query')")
    with pytest.raises(CmdsegError, match="boom in the final query"):
        user_properties(export, engine="plan")
    assert con.execute("SELECT current_setting('arrow_large_buffer_size')").fetchall() == [(False,)]
    assert con.execute("SELECT 42").fetchall() == [(42,)]


def test_the_callers_tables_named_like_the_temporary_ones_are_left_alone():
    import duckdb
    con = duckdb.connect()
    export = load_export(RUDDER, con=con)
    expected = user_properties(export, CUSTOM, engine="plan")
    con.execute("CREATE VIEW cmdseg_plan_dyn AS SELECT 1 AS mine")
    con.execute("CREATE TABLE cmdseg_plan_dups AS SELECT 'mine' AS h")
    pd.testing.assert_frame_equal(user_properties(export, CUSTOM, engine="plan"), expected)
    assert con.execute("SELECT * FROM cmdseg_plan_dyn").fetchall() == [(1,)]
    assert con.execute("SELECT * FROM cmdseg_plan_dups").fetchall() == [("mine",)]


def test_raw_path_in_the_callers_transaction_reports_a_bad_file_and_puts_settings_back(tmp_path):
    import gzip

    import duckdb
    lines = "".join(json.dumps({"type": "identify", "messageId": f"m{i}", "userId": f"u{i % 50}",
                                "traits": {"n": i, "pad": "x" * (i % 50)}}) + "\n" for i in range(20000))
    gz = gzip.compress(lines.encode())
    (tmp_path / "events.json.gz").write_bytes(gz[: len(gz) * 2 // 3])  # truncated
    con = duckdb.connect()
    con.execute("SET disabled_optimizers = 'join_order'")
    export = load_export(tmp_path / "events.json.gz", con=con)
    con.execute("BEGIN TRANSACTION")
    with pytest.raises(CmdsegError, match="Unexpected end of GZIP stream"):
        user_properties(export)
    con.execute("ROLLBACK")
    assert con.execute("SELECT current_setting('disabled_optimizers')").fetchall() == [("join_order",)]
    assert con.execute("SELECT current_setting('preserve_insertion_order')").fetchall() == [(True,)]


def test_a_callers_aborted_transaction_gives_a_cmdseg_error():
    import duckdb
    con = duckdb.connect()
    export = load_export(RUDDER, con=con)
    con.execute("BEGIN TRANSACTION")
    with pytest.raises(duckdb.Error):
        con.execute("SELECT error('the caller''s own failure')")
    with pytest.raises(CmdsegError, match="aborted"):
        user_properties(export, engine="plan")
    con.execute("ROLLBACK")
    assert len(user_properties(export, engine="plan")) > 0


@pytest.mark.parametrize("engine", ["plan", "generic"])
def test_user_ids_differing_only_in_case_stay_apart_under_a_nocase_collation(tmp_path, engine):
    """A caller's ``default_collation = 'nocase'`` (set before or after load_export) must not
    merge the users 'u1' and 'U1' (found by a newcomer); it is put back afterwards."""
    import duckdb
    lines = [{"type": "identify", "messageId": f"m{i}", "userId": uid, "traits": {"plan": uid},
              "timestamp": "2024-01-01T00:00:00Z"} for i, uid in enumerate(["u1", "U1", "Élan", "élan"])]
    path = tmp_path / "events.ndjson"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    con = duckdb.connect()
    con.execute("SET default_collation = 'nocase'")
    export = load_export(path, con=con)
    assert con.execute("SELECT current_setting('default_collation')").fetchall() == [("",)]
    con.execute("SET default_collation = 'nocase'")  # again, after loading
    long = user_properties(export, engine=engine)
    assert list(long["user_id"]) == ["U1", "u1", "Élan", "élan"]
    assert con.execute("SELECT current_setting('default_collation')").fetchall() == [("nocase",)]


@pytest.mark.parametrize("source", ["raw", "warehouse"])
def test_a_callers_descending_default_order_changes_neither_winners_nor_row_order(tmp_path, source):
    """``SET default_order = 'DESC'`` (and NULLs first) on the caller's connection would reverse
    every ORDER BY without a direction: the rank of users, the which-value-wins order of events
    at one instant, the result's order (found by a newcomer). Both engines ignore it and put
    it back afterwards."""
    import duckdb
    con = duckdb.connect()
    if source == "raw":
        at = "2024-01-01T00:00:01Z"
        events = [{"type": "identify", "userId": u, "messageId": f"{u}{i}", "timestamp": at,
                   "originalTimestamp": f"2024-01-01T00:00:0{i}Z", "traits": {"plan": f"{u}-{i}"}}
                  for u in ("b", "a") for i in (2, 1)]
        src = _ndjson(tmp_path / "events.ndjson", events)
    else:
        src = RUDDER
    export = load_export(src, con=con)
    reference = user_properties(export, CUSTOM)  # the library's own defaults
    con.execute("SET default_order = 'DESC'")
    con.execute("SET default_null_order = 'NULLS_FIRST'")
    long = same(export, CUSTOM)
    pd.testing.assert_frame_equal(long, reference)
    assert list(long["user_id"]) == sorted(long["user_id"])
    if source == "raw":  # same time: the later originalTimestamp wins
        assert dict(zip(long["user_id"], long["value"])) == {"a": '"a-2"', "b": '"b-2"'}
    assert con.execute("SELECT current_setting('default_order'), current_setting('default_null_order')"
                       ).fetchall() == [("DESC", "NULLS_FIRST")]


def test_raw_user_property_key_spelled_with_escapes(tmp_path):
    """The raw path keeps a line's top-level ``user_property.*`` keys only when its text may
    spell one: the prefix, or a ``\\u`` escape (found by a newcomer)."""
    lines = ['{"type":"identify","userId":"u1","messageId":"a","timestamp":"2024-01-01T00:00:01Z",'
             '"user_propert\\u0079.tier":"gold","user_property\\u002eseats":3}']
    export = load_export(_ndjson(tmp_path / "events.ndjson", lines))
    long = same(export, None)
    assert dict(zip(long["property"], long["value"])) == {"seats": "3", "tier": '"gold"'}


@pytest.mark.parametrize("source", ["raw", "warehouse"])
def test_path_dollar_alone_reads_the_key_dollar_not_the_whole_event(tmp_path, source):
    """mapping-kit reads ``{"@path": "$"}`` as the key ``"$"`` (it strips the first ``"$."``):
    no user id, nothing recorded. Only ``"$."`` is the whole event (found by a newcomer)."""
    if source == "raw":
        src = _ndjson(tmp_path / "events.ndjson", [
            {"type": "identify", "userId": "u1", "messageId": "a", "traits": {"plan": "pro"}}])
    else:
        src = RUDDER
    export = load_export(src)
    cfg = [{"name": "W", "trigger": 'type = "identify"', "data": {"@path": "$"}}]
    long = user_properties(export, cfg)
    pd.testing.assert_frame_equal(long, user_properties(export, cfg, engine="generic"))
    assert len(long) == 0 and long.attrs["skipped"]["no_user_id"] > 0
    assert len(user_properties(export, [{**cfg[0], "data": {"@path": "$."}}])) > 0


@pytest.mark.parametrize("engine", ["plan", "generic"])
def test_raw_file_whose_first_line_is_not_json_is_an_export_error(tmp_path, engine):
    path = tmp_path / "events.ndjson"
    path.write_text('not json\n{"type":"identify","userId":"u1","traits":{"a":1}}\n', encoding="utf-8")
    with pytest.raises(ExportError, match="events.ndjson|not JSON|JSON"):
        user_properties(load_export(path), engine=engine)


def test_settings_are_put_back_when_the_block_fails():
    import duckdb

    from cmdseg_nb._db import settings
    con = duckdb.connect()
    read = "SELECT current_setting('checkpoint_threshold')"
    before = con.execute(read).fetchall()
    with pytest.raises(ZeroDivisionError), settings(con, checkpoint_threshold="1TB"):
        assert con.execute(read).fetchall() != before
        1 / 0
    assert con.execute(read).fetchall() == before


def test_the_planned_path_leaves_no_temporary_tables():
    export = load_export(RUDDER)
    before = export.con.execute("SELECT count(*) FROM duckdb_tables()").fetchall()
    user_properties(export, CUSTOM)
    assert export.con.execute("SELECT count(*) FROM duckdb_tables()").fetchall() == before


def test_raw_lines_that_are_not_json_are_skipped_alike(tmp_path):
    path = _random_raw(tmp_path / "events.ndjson", 1)
    with path.open("a", encoding="utf-8") as fh:
        fh.write('{"type":"identify","userId":"b"\nnot json\n')
    export = load_export(path)
    with pytest.warns(CmdsegWarning, match=r"2 line\(s\) are not JSON .*events.ndjson.*export.report"):
        same(export, None)
    assert export.report.rejected_rows == {"events.ndjson": 2}


# --- raw events: candidates instead of per-instant ranks ---------------------------------------

def _ndjson(path: Path, events: list) -> Path:
    path.write_text("".join((e if isinstance(e, str) else json.dumps(e, ensure_ascii=False)) + "\n"
                            for e in events), encoding="utf-8")
    return path


def test_raw_events_at_one_instant_are_ordered_by_original_time_received_time_then_id(tmp_path):
    at = "2024-03-01T10:00:00Z"

    def ident(mid, plan, ots=None, rat=None, **kw):
        e = {"type": "identify", "userId": "u1", "timestamp": at, "traits": {"plan": plan}, **kw}
        if mid is not None:
            e["messageId"] = mid
        if ots:
            e["originalTimestamp"] = ots
        if rat:
            e["receivedAt"] = rat
        return e

    path = _ndjson(tmp_path / "events.ndjson", [
        # u1 "plan": all at one instant; the latest originalTimestamp wins
        ident("m9", "a", ots="2024-03-01T09:00:00Z"), ident("m1", "b", ots="2024-03-01T09:30:00Z"),
        ident("m5", "c", ots="2024-03-01T09:10:00Z"),
        # u1 "seats": same originalTimestamp: the latest receivedAt wins
        {**ident("s1", "x", ots="2024-03-01T08:00:00Z", rat="2024-03-01T10:00:09Z"), "timestamp": "2024-03-01T11:00:00Z",
         "traits": {"seats": 1}},
        {**ident("s2", "x", ots="2024-03-01T08:00:00Z", rat="2024-03-01T10:00:05Z"), "timestamp": "2024-03-01T11:00:00Z",
         "traits": {"seats": 2}},
        # u2: same times everywhere: the largest message id wins
        {**ident("n2", "x"), "userId": "u2", "traits": {"tier": "n2"}},
        {**ident("n10", "x"), "userId": "u2", "traits": {"tier": "n10"}},
        {**ident("n1", "x"), "userId": "u2", "traits": {"tier": "n1"}},
        # u3: no message ids and no times at all: the event hash decides, as in the generic path
        {"type": "identify", "userId": "u3", "traits": {"k": 1}},
        {"type": "identify", "userId": "u3", "traits": {"k": 2}},
        {"type": "identify", "userId": "u3", "traits": {"k": 3}, "context": {"x": 1}},
    ])
    export = load_export(path)
    long = same(export, None)
    same(export, CUSTOM, null_clears=False)
    got = {(u, p): (v, m) for u, p, v, m in long[["user_id", "property", "value", "message_id"]].itertuples(index=False)}
    assert got[("u1", "plan")] == ('"b"', "m1")
    assert got[("u1", "seats")] == ("1", "s1")
    assert got[("u2", "tier")] == ('"n2"', "n2")  # text order: "n2" > "n10" > "n1"
    assert got[("u3", "k")][1] is None or pd.isna(got[("u3", "k")][1])


def test_raw_more_than_1023_events_of_one_user_at_one_instant(tmp_path):
    events = [{"type": "identify", "userId": "u1", "messageId": f"m{i:05d}", "timestamp": "2024-01-01T00:00:00Z",
               "traits": {"n": i, **({"odd": i} if i % 2 else {})}} for i in range(1500)]
    random.Random(0).shuffle(events)
    export = load_export(_ndjson(tmp_path / "events.ndjson", events))
    long = user_properties(export, engine="plan")  # no fallback: ties need no ranks any more
    pd.testing.assert_frame_equal(long, user_properties(export, engine="generic"))
    got = dict(zip(long["property"], zip(long["value"], long["message_id"])))
    assert got == {"n": ("1499", "m01499"), "odd": ("1499", "m01499")}


RAW_KEYS = [
    {"name": "Traits key", "trigger": 'type = "identify" or type = "track"',
     "data": {"userId": {"@path": "$.userId"}, "traits": {"@path": "$.traits"},
              "user_property.plan": {"@path": "$.properties.plan"}, "user_property.": None,
              "user_property_event": {"@path": "$.event"}}},
    {"name": "Whole", "trigger": 'type = "identify"', "data": {"@path": "$."}},
]


@pytest.mark.parametrize("seed", range(3))
def test_raw_traits_key_and_explicit_nulls_equal_generic(tmp_path, seed):
    export = load_export(_random_raw(tmp_path / "events.ndjson", seed))
    long = same(export, RAW_KEYS)
    same(export, RAW_KEYS, null_clears=False)
    assert (long["mapping"] == "Traits key").any()
    assert long.attrs["skipped"]["empty_user_property_name"] > 0


def test_raw_times_out_of_the_usual_range_equal_generic(tmp_path):
    events = [{"type": "identify", "userId": "u1", "messageId": f"m{i}", "timestamp": t, "traits": {"x": i}}
              for i, t in enumerate(["1700-01-01T00:00:00Z", "2500-01-01T00:00:00Z", None, "infinity",
                                     "-infinity", "0001-01-01T00:00:00Z"])]
    events += [{"type": "identify", "userId": "u2", "messageId": "z", "traits": {"y": 1}},
               {"type": "identify", "userId": "u2", "messageId": "a", "timestamp": "-infinity",
                "traits": {"y": 2}}]
    export = load_export(_ndjson(tmp_path / "events.ndjson", events))
    user_properties(export, engine="plan")
    same(export, None)


def test_raw_odd_keys_and_literals_equal_generic(tmp_path):
    events = [{"type": "track", "userId": f"u{i % 3}", "messageId": f"m{i}", "event": "E",
               "timestamp": f"2024-01-0{1 + i % 5}T00:00:00Z",
               "properties": {"a/b~c": i, "q'uote": {"x": i} if i % 2 else None}} for i in range(12)]
    events.append({"type": "track", "userId": "u1", "messageId": "p", "event": "E", "properties": None,
                   "timestamp": "2024-02-01T00:00:00Z"})
    cfg = [{"name": "odd", "trigger": 'type = "track" and event = "E"',
            "data": {"userId": {"@path": "$.userId"}, "user_property.slash": {"@path": "$.properties.a/b~c"},
                     "user_property.quote": {"@path": "$.properties.q'uote.x"},
                     "user_property.lit": "cmdseg'ev json_extract(cmdseg'ev, '/x')"}}]
    export = load_export(_ndjson(tmp_path / "events.ndjson", events))
    long = same(export, cfg)
    same(export, cfg, null_clears=False)
    assert set(long["property"]) == {"slash", "quote", "lit"}


@pytest.mark.parametrize("trait_later", [False, True])
def test_raw_event_name_that_a_trait_also_sets_is_not_settled_by_the_events_alone(tmp_path, trait_later):
    """A ``user_property_event`` group whose latest k is one event's is settled without the
    candidates, unless another source (here a trait key) sets the same name: then the trait
    and the event compete, and only one row comes out."""
    at = ["2024-01-01T00:00:01Z", "2024-01-01T00:00:02Z"]
    events = [
        {"type": "identify", "userId": "u1", "messageId": "i1", "timestamp": at[trait_later],
         "traits": {"Signed Up": "yes", "plan": "pro"}},
        {"type": "track", "userId": "u1", "messageId": "t1", "event": "Signed Up", "timestamp": at[not trait_later]},
        {"type": "track", "userId": "u2", "messageId": "t2", "event": "Signed Up", "timestamp": at[0]},
    ]
    export = load_export(_ndjson(tmp_path / "events.ndjson", events))
    long = same(export, CUSTOM)
    rows = long[long["property"] == "Signed Up"].set_index("user_id")
    assert list(rows.index) == ["u1", "u2"]
    assert rows.loc["u1", "value"] == ('"yes"' if trait_later else "true")
    assert rows.loc["u1", "message_id"] == ("i1" if trait_later else "t1")
    assert rows.loc["u2", "rule"] == "user_property_event"


def test_raw_triggers_match_strings_whatever_their_escapes(tmp_path):
    r"""Triggers compare JSON text (``_fql._json_text_equals``): a type or event name the sender
    wrote with ``\u`` escapes still matches, on both paths."""
    t = '"timestamp":"2024-01-01T00:00:0%dZ"'
    lines = ['{"type":"\\u0069dentify","userId":"u1","messageId":"a",%s,"traits":{"plan":"pro"}}' % (t % 1),
             '{"type":"track","userId":"u1","messageId":"b",%s,"event":"Plan \\u0043hanged",'
             '"properties":{"plan":"team"}}' % (t % 2),
             '{"type":"track","userId":"u2","messageId":"c",%s,"event":"Plan Changed ",'
             '"properties":{"plan":"x"}}' % (t % 3)]
    export = load_export(_ndjson(tmp_path / "events.ndjson", lines))
    long = same(export, CUSTOM)
    got = {(r.user_id, r.property): r.value for r in long.itertuples()}
    assert got[("u1", "plan")] == '"team"'
    assert ("u2", "plan") not in got


def test_raw_event_names_spelled_apart_set_one_property_and_bad_names_count_per_mapping(tmp_path):
    r"""The raw path groups ``user_property_event`` assignments by the number of the name in a
    table of the key's distinct texts: ``"E\u0041"`` and ``"EA"`` set one property, which the
    latest event wins; a number or an empty string is counted as invalid once per mapping that
    sends it (from those texts). Both paths agree."""
    t = '"timestamp":"2024-01-01T00:00:0%dZ"'
    lines = ['{"type":"track","userId":"u1","messageId":"a",%s,"event":"E\\u0041"}' % (t % 1),
             '{"type":"track","userId":"u1","messageId":"b",%s,"event":"EA"}' % (t % 2),
             '{"type":"track","userId":"u2","messageId":"c",%s,"event":"EA"}' % (t % 3),
             '{"type":"track","userId":"u2","messageId":"d",%s,"event":"E\\u0041"}' % (t % 4),
             '{"type":"track","userId":"u3","messageId":"e",%s,"event":5}' % (t % 5),
             '{"type":"track","userId":"u3","messageId":"f",%s,"event":""}' % (t % 6)]
    again = {"name": "Events again", "trigger": 'type = "track"',
             "data": {"userId": {"@path": "$.userId"}, "user_property_event": {"@path": "$.event"}}}
    export = load_export(_ndjson(tmp_path / "events.ndjson", lines))
    long = same(export, [*CUSTOM, again])
    rows = long.set_index(["user_id", "property"])
    assert sorted(rows.index) == [("u1", "EA"), ("u2", "EA")]
    assert rows.loc[("u1", "EA"), "message_id"] == "b" and rows.loc[("u2", "EA"), "message_id"] == "d"
    assert rows.loc[("u2", "EA"), "mapping"] == "Events again"
    assert long.attrs["skipped"]["invalid_user_property_event"] == 4


def test_raw_replace_directive_on_a_fresh_export_runs_on_the_planned_path(tmp_path):
    """``@replace`` compiles to SQL that calls the mapping kit's ``cmdseg_js_num`` macro: the
    planned path registers it too, so the first call on a new export works (it failed with
    "Scalar Function with name cmdseg_js_num does not exist" until the generic path had run)."""
    events = [{"type": "track", "userId": "u1", "messageId": "a", "timestamp": "2024-01-01T00:00:00Z",
               "event": "EA", "properties": {"n": 15}}]
    cfg = [{"name": "R", "trigger": 'type = "track"',
            "data": {"userId": {"@path": "$.userId"},
                     "user_property_event": {"@replace": {"pattern": "E", "replacement": "",
                                                          "value": {"@path": "$.event"}}},
                     "user_property.n": {"@replace": {"pattern": "5", "replacement": "6",
                                                      "value": {"@path": "$.properties.n"}}}}}]
    export = load_export(_ndjson(tmp_path / "events.ndjson", events))
    long = same(export, cfg)  # the planned engine runs first
    assert {(r.property, r.value) for r in long.itertuples()} == {("A", "true"), ("n", '"16"')}


@pytest.mark.parametrize("trigger", ['type = "track" and event = "Plan Changed"', 'event = "Plan Changed"'])
def test_raw_copy_received_later_that_no_longer_matches_wins_de_duplication(tmp_path, trigger):
    t = "2024-01-01T00:00:00Z"
    events = [
        {"type": "track", "userId": "u1", "messageId": "m1", "event": "Plan Changed",
         "properties": {"plan": "pro"}, "timestamp": t, "receivedAt": "2024-01-01T00:00:01Z"},
        # the same message received later, renamed: it replaces the first copy, and matches nothing
        {"type": "track", "userId": "u1", "messageId": "m1", "event": "Renamed",
         "properties": {"plan": "pro"}, "timestamp": t, "receivedAt": "2024-01-01T00:00:09Z"},
        {"type": "track", "userId": "u2", "messageId": "m2", "event": "Plan Changed",
         "properties": {"plan": "free"}, "timestamp": t},
        {"type": "page", "userId": "u3", "messageId": "m2", "name": "x"},  # an id shared by types
    ]
    cfg = [{"name": "Plan", "trigger": trigger,
            "data": {"userId": {"@path": "$.userId"}, "user_property.plan": {"@path": "$.properties.plan"}}}]
    export = load_export(_ndjson(tmp_path / "events.ndjson", events))
    long = same(export, cfg)
    assert list(zip(long["user_id"], long["value"])) == [("u2", '"free"')]
