"""Loader: warehouse tables and raw events -> canonical events (cmdseg_nb._load)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cmdseg_nb import ExportError, load_export
from conftest import DATA, RUDDER

SPEC = DATA / "segment_spec_examples"


def write_ndjson(path: Path, events) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    return path


def test_rudderstack_tables_are_read_and_counted():
    export = load_export(RUDDER)
    r = export.report
    assert r.rows_read == {"identifies": 176, "order_completed": 95, "pages": 1600, "tracks": 494}
    # order_completed rows replace their `tracks` twins (same id), so the total stays the rows of
    # tracks + identifies + pages.
    assert r.events == 176 + 494 + 1600
    assert r.duplicates_removed == 0
    types = dict(export.con.execute(
        f"SELECT type, count(*) FROM {export.table} GROUP BY 1").fetchall())
    assert types == {"identify": 176, "track": 494, "page": 1600}


def test_tracks_take_event_text_and_per_event_properties():
    export = load_export(RUDDER)
    events = export.event_dicts("type = 'track' AND source = 'order_completed'", limit=3)
    assert len(events) == 3
    for ev in events:
        assert ev["event"] == "ORDER COMPLETED"  # event_text, not the slug
        props = ev["properties"]
        assert isinstance(props["products"], list)  # JSON text parsed back
        assert {"revenue", "order_id", "currency"} <= props.keys()
        assert "user_id" not in props and "context_ip" not in props
    plain = export.event_dicts("type = 'track' AND source = 'tracks'", limit=1)[0]
    assert plain["properties"] == {}
    assert plain["event"] == plain["event"].upper()  # e.g. "CART ADD" from event_text


def test_context_columns_restored_to_spec_nesting_and_unknown_ones_reported():
    export = load_export(RUDDER)
    ev = export.event_dicts("type = 'identify'", limit=1)[0]
    ctx = ev["context"]
    assert ctx["screen"]["innerWidth"] > 0
    assert "page" in ctx and "url" in ctx["page"]
    assert "traits" not in ev["context"]
    assert "context_session_id" in export.report.unrestored_names["identifies"]
    assert ctx["session_id"]  # kept, under its snake_case name


def test_b09_warehouse_identifies_system_columns_nulls_and_arrays(tmp_path):
    case = _case("B09")
    rows = case["input"]["identifies_rows"]
    pd.DataFrame(rows).to_csv(tmp_path / "identifies.csv", index=False)
    export = load_export(tmp_path)
    evs = {e["messageId"]: e for e in export.event_dicts()}
    assert evs["m-20"]["traits"] == {"plan": "pro", "account_type": "trial", "first_name": "Ana",
                                     "company_name": "Example Co", "roles": ["admin", "billing"]}
    # NULL cells mean "not sent": left out, never an explicit null.
    assert evs["m-21"]["traits"] == {"account_type": "paid"}
    assert evs["m-20"]["context"]["library"]["name"] == "analytics-python"
    assert evs["m-20"]["anonymousId"] == "a-77"
    assert any("cannot be recovered" in n for n in export.report.notes)


def test_b11_duplicates_keep_the_copy_received_last(tmp_path):
    case = _case("B11")
    pd.DataFrame(case["input"]["rows"]).to_csv(tmp_path / "identifies.csv", index=False)
    export = load_export(tmp_path)
    assert export.report.events == case["expected"]["distinct_events"]
    assert export.report.duplicates_removed == 1
    kept = export.con.execute(
        f"SELECT received_at FROM {export.table} WHERE message_id = 'm-40'").fetchall()
    assert [str(r[0]) for r in kept] == ["2024-06-07 03:12:00+00:00"]


def test_b06_late_keys_are_not_lost_to_schema_sampling(tmp_path):
    path = tmp_path / "events.ndjson"
    with path.open("w") as fh:
        for i in range(20480):
            fh.write(json.dumps({"type": "identify", "userId": f"u_{i}",
                                 "timestamp": "2024-01-01T00:00:00Z", "traits": {"n": i}}) + "\n")
        fh.write(json.dumps({"type": "identify", "userId": "u_late",
                             "timestamp": "2024-01-02T00:00:00Z",
                             "traits": {"n": 1, "plan": "pro"}}) + "\n")
    export = load_export(path)
    assert export.report.events == 20481
    late = export.event_dicts("user_id = 'u_late'")
    assert late[0]["traits"] == {"n": 1, "plan": "pro"}


def test_upper_case_columns_and_parquet_and_ndjson_tables_agree(tmp_path):
    rows = _case("B09")["input"]["identifies_rows"]
    df = pd.DataFrame(rows)
    (tmp_path / "csv").mkdir()
    df.to_csv(tmp_path / "csv" / "identifies.csv", index=False)
    (tmp_path / "upper").mkdir()
    df.rename(columns=str.upper).to_csv(tmp_path / "upper" / "IDENTIFIES.csv", index=False)
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "pq" / "identifies.parquet")
    (tmp_path / "nd").mkdir()
    write_ndjson(tmp_path / "nd" / "identifies.ndjson", rows)
    got = {}
    for name in ("csv", "upper", "pq", "nd"):
        ex = load_export(tmp_path / name)
        got[name] = sorted((e["messageId"], json.dumps(e["traits"], sort_keys=True))
                           for e in ex.event_dicts())
    assert got["csv"] == got["upper"] == got["pq"] == got["nd"]


def test_timestamps_naive_are_utc_and_offsets_respected(tmp_path):
    write_ndjson(tmp_path / "raw.ndjson", [
        {"type": "identify", "userId": "a", "messageId": "1", "timestamp": "2024-01-01T10:00:00"},
        {"type": "identify", "userId": "a", "messageId": "2", "timestamp": "2024-01-01T10:00:00-07:00"},
        {"type": "identify", "userId": "a", "messageId": "3", "timestamp": "2024-01-01T10:00:00Z"},
    ])
    export = load_export(tmp_path / "raw.ndjson")
    got = dict(export.con.execute(
        f"SELECT message_id, strftime(timestamp, '%Y-%m-%dT%H:%M:%S%z') FROM {export.table}").fetchall())
    assert got == {"1": "2024-01-01T10:00:00+00", "2": "2024-01-01T17:00:00+00",
                   "3": "2024-01-01T10:00:00+00"}


def test_raw_gzip_archive_and_spec_examples_load(tmp_path):
    lines = (SPEC / "spec_examples.ndjson").read_bytes()
    gz = tmp_path / "segment-logs" / "src" / "1700000000000" / "part.json.gz"
    gz.parent.mkdir(parents=True)
    gz.write_bytes(gzip.compress(lines))
    a = load_export(SPEC)
    b = load_export(gz)
    assert a.report.rows_read == {"spec_examples.ndjson": 36}
    assert b.report.events == a.report.events
    # The docs reuse one messageId across five examples of different types: a collision, kept.
    assert a.report.message_id_collisions == 1
    assert a.report.duplicates_removed == 1  # two track examples share an id
    types = dict(a.con.execute(f"SELECT type, count(*) FROM {a.table} GROUP BY 1").fetchall())
    assert types["identify"] == 2 and types["alias"] == 2 and types["group"] == 2


def test_users_snapshot_table_is_reported_not_used(tmp_path):
    pd.DataFrame([{"id": "u1", "plan": "x"}]).to_csv(tmp_path / "users.csv", index=False)
    pd.DataFrame([{"id": "m1", "user_id": "u1", "plan": "y",
                   "timestamp": "2024-01-01T00:00:00Z"}]).to_csv(tmp_path / "identifies.csv", index=False)
    export = load_export(tmp_path)
    assert "users" in export.report.ignored_tables
    assert export.report.events == 1


def test_missing_source_and_empty_folder_raise_export_error(tmp_path):
    with pytest.raises(ExportError, match="no such file"):
        load_export(tmp_path / "nope")
    with pytest.raises(ExportError, match="no CSV, Parquet or JSON"):
        load_export(tmp_path)


def test_colliding_columns_after_case_folding_name_the_table(tmp_path):
    (tmp_path / "identifies.csv").write_text("id,user_id,Plan,plan\nm1,u1,a,b\n")
    with pytest.raises(ExportError, match="identifies.*collide"):
        load_export(tmp_path)


def _case(case_id: str) -> dict:
    from conftest import load_case
    return load_case(case_id)


def test_ragged_csv_rows_are_skipped_counted_and_named(tmp_path):
    (tmp_path / "identifies.csv").write_text(
        "id,user_id,timestamp,email\n"
        "m1,u1,2024-01-01T00:00:00Z,a@x.com\n"
        "m2,u2,2024-01-02T00:00:00Z,b@x.com,extra\n"
        "m3,u3,2024-01-03T00:00:00Z,c@x.com\n"
        "m4,u4\n")
    export = load_export(tmp_path)
    r = export.report
    assert [e["messageId"] for e in export.event_dicts()] == ["m1", "m3"]  # good rows still load
    assert r.rejected_rows == {"identifies": 2}
    assert [(t, Path(p).name, line) for t, p, line, _ in r.rejected_examples] == [
        ("identifies", "identifies.csv", 3), ("identifies", "identifies.csv", 5)]
    assert "TOO MANY COLUMNS" in r.rejected_examples[0][3]
    assert "identifies.csv line 3" in str(r)


def test_bad_json_lines_are_skipped_counted_and_named(tmp_path):
    path = tmp_path / "events.ndjson"
    path.write_text('{"type":"identify","userId":"a","traits":{"x":1}}\n'
                    '{"type":"identify","userId":"b"\n'
                    '\n'
                    '{"type":"identify","userId":"c"}\n'
                    'not json\n')
    export = load_export(path)
    assert sorted(e["userId"] for e in export.event_dicts()) == ["a", "c"]
    assert export.report.rejected_rows == {"events.ndjson": 2}
    assert [line for *_x, line, _r in export.report.rejected_examples] == [2, 5]


def test_truncated_gzip_names_the_file(tmp_path):
    good = gzip.compress(b'{"type":"identify","userId":"a"}\n' * 1000)
    path = tmp_path / "part.json.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ExportError, match="part.json.gz.*truncated or corrupt"):
        load_export(path)


def test_raw_files_are_not_read_by_load_export_but_counted_when_the_report_is_needed(tmp_path):
    from cmdseg_nb import CmdsegWarning, user_properties
    path = tmp_path / "events.ndjson"
    path.write_text('{"type":"identify","userId":"a","messageId":"1","traits":{"x":1}}\n'
                    '{"type":"identify","userId":"b"\n'
                    '\n'
                    '{"type":"identify","userId":"c","messageId":"2","traits":{"x":2}}\n'
                    'not json\n')
    export = load_export(path)
    assert not export.materialized and export._report.rows_read == {}  # nothing counted yet
    assert repr(export) == "<Export of 1 raw event file, not yet materialized>"
    assert not export.materialized
    with pytest.warns(CmdsegWarning, match=r"2 line\(s\) are not JSON and were skipped \(2 in events.ndjson\); "
                                            r"export.report names them"):
        long = user_properties(export, engine="plan")
    assert sorted(long["user_id"]) == ["a", "c"]
    assert not export.materialized and export._report.rows_read == {}
    r = export.report  # counted now, exactly as before
    assert r.rows_read == {"events.ndjson": 2}
    assert r.rejected_rows == {"events.ndjson": 2}
    assert [line for *_x, line, _r in r.rejected_examples] == [2, 5]
    assert r.events == 2 and r.duplicates_removed == 0
    r2 = export.report
    assert r2.rejected_rows == {"events.ndjson": 2} and len(r2.rejected_examples) == 2  # counted once


def test_raw_and_warehouse_files_together_count_each_once(tmp_path):
    pd.DataFrame([{"id": "m1", "user_id": "u1", "plan": "y",
                   "timestamp": "2024-01-01T00:00:00Z"}]).to_csv(tmp_path / "identifies.csv", index=False)
    write_ndjson(tmp_path / "raw.ndjson", [
        {"type": "identify", "userId": "a", "messageId": "r1", "traits": {"x": 1}},
        {"type": "identify", "userId": "a", "messageId": "r1", "traits": {"x": 1}},  # a duplicate
    ])
    export = load_export(tmp_path)
    assert repr(export) == "<Export of 1 tables (1 rows) and 1 raw event file, not yet materialized>"
    r = export.report
    assert r.rows_read == {"identifies": 1, "raw.ndjson": 2}
    assert r.events == 2 and r.duplicates_removed == 1


def test_truncated_gzip_found_after_load_names_the_file(tmp_path):
    import random
    from cmdseg_nb import user_properties
    rnd = random.Random(0)
    lines = b"".join(json.dumps({"type": "identify", "userId": f"u{i}", "messageId": str(i),
                                 "traits": {"r": rnd.random()}}).encode() + b"\n" for i in range(60000))
    good = gzip.compress(lines)
    path = tmp_path / "part.json.gz"
    path.write_bytes(good[: len(good) * 3 // 4])  # the first 64 KB still read fine
    export = load_export(path)  # not read here
    with pytest.raises(ExportError, match="part.json.gz.*truncated or corrupt"):
        user_properties(export, engine="plan")
    with pytest.raises(ExportError, match="part.json.gz.*truncated or corrupt"):
        export.report
