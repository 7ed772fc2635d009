"""The planned path settles "which value wins" by the latest event time per user and slot, then
ranks only the candidate events (those at one of the maxima, and the special rows whose id is
seen more than once). These tests build the situations where that shortcut could go wrong and
check the winners by name, and that the generic path agrees."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cmdseg_nb import load_export, user_properties

TS = pa.timestamp("us", tz="UTC")
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
ID_SCHEMA = pa.schema([("id", pa.string()), ("user_id", pa.string()), ("timestamp", TS),
                       ("original_timestamp", TS), ("received_at", TS), ("plan", pa.string()),
                       ("signed_up", pa.string())])
EV_SCHEMA = pa.schema([("id", pa.string()), ("user_id", pa.string()), ("timestamp", TS),
                       ("original_timestamp", TS), ("received_at", TS), ("event", pa.string()),
                       ("event_text", pa.string())])
EVENTS = [
    {"name": "Identify traits", "trigger": 'type = "identify"', "data": {"@path": "$."}},
    {"name": "Events", "trigger": 'type = "track"',
     "data": {"userId": {"@path": "$.userId"}, "user_property_event": {"@path": "$.event"}}},
]


def _t(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def _write(folder: Path, name: str, rows: list[dict], schema: pa.Schema) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({f.name: [r.get(f.name) for r in rows] for f in schema}, schema=schema),
                   folder / f"{name}.parquet")


def _event(i, user, ts, name="Signed Up", *, ot=None, ra=None) -> dict:
    return {"id": i, "user_id": user, "timestamp": ts, "original_timestamp": ot or ts,
            "received_at": ra or ts, "event": name.lower().replace(" ", "_"), "event_text": name}


def both(folder: Path, config=None) -> pd.DataFrame:
    export = load_export(folder)
    planned = user_properties(export, config, engine="plan")
    pd.testing.assert_frame_equal(planned, user_properties(export, config, engine="generic"))
    assert planned.attrs == user_properties(export, config, engine="generic").attrs
    return planned.set_index(["user_id", "property"])


def test_a_tie_on_timestamp_is_settled_by_original_timestamp_then_received_at_then_id(tmp_path):
    same = _t(10)
    _write(tmp_path, "identifies", [
        # u1: three identifies at one timestamp; the latest originalTimestamp wins
        {"id": "c", "user_id": "u1", "timestamp": same, "original_timestamp": _t(1), "received_at": _t(9),
         "plan": "by-ot"},
        {"id": "z", "user_id": "u1", "timestamp": same, "original_timestamp": _t(0), "received_at": _t(99),
         "plan": "not-me"},
        {"id": "a", "user_id": "u1", "timestamp": _t(5), "plan": "older", "signed_up": "2020"},
        # u2: same timestamp and originalTimestamp; the later receivedAt wins
        {"id": "y", "user_id": "u2", "timestamp": same, "original_timestamp": same, "received_at": _t(20),
         "plan": "by-ra"},
        {"id": "x", "user_id": "u2", "timestamp": same, "original_timestamp": same, "received_at": _t(30),
         "plan": "by-ra-later"},
        # u3: all times equal; the greater message id wins
        {"id": "m-2", "user_id": "u3", "timestamp": same, "original_timestamp": same, "received_at": same,
         "plan": "by-id"},
        {"id": "m-1", "user_id": "u3", "timestamp": same, "original_timestamp": same, "received_at": same,
         "plan": "lower-id"},
    ], ID_SCHEMA)
    got = both(tmp_path)
    assert got.loc[("u1", "plan"), "value"] == '"by-ot"' and got.loc[("u1", "plan"), "message_id"] == "c"
    assert got.loc[("u1", "signed_up"), "message_id"] == "a"  # the latest event holding the cell
    assert got.loc[("u2", "plan"), "value"] == '"by-ra-later"'
    assert got.loc[("u3", "plan"), "message_id"] == "m-2"


def test_user_property_event_ties_and_many_events_at_one_instant(tmp_path):
    same = _t(10)
    # 1,500 events of one user at one instant (the old order key allowed 1,023)
    rows = [_event(f"e{i:05d}", "u1", same) for i in range(1500)]
    rows.append(_event("older", "u1", _t(1), "Plan Changed"))
    rows += [_event("p2", "u1", _t(2), "Plan Changed", ra=_t(3)),
             _event("p1", "u1", _t(2), "Plan Changed", ra=_t(4))]  # tie on time: receivedAt decides
    _write(tmp_path, "signed_up", [r for r in rows if r["event_text"] == "Signed Up"], EV_SCHEMA)
    _write(tmp_path, "plan_changed", [r for r in rows if r["event_text"] == "Plan Changed"], EV_SCHEMA)
    got = both(tmp_path, EVENTS)
    assert got.loc[("u1", "Signed Up"), "message_id"] == "e01499"
    assert got.loc[("u1", "Plan Changed"), "message_id"] == "p1"
    assert got.loc[("u1", "Plan Changed"), "updated_at"] == pd.Timestamp(_t(2))


def test_a_later_copy_that_deduplication_drops_does_not_win(tmp_path):
    # m1 is stored twice: the copy received last (kept) says 11:00, the dropped copy 12:00. The
    # user's other event at 11:30 must win over both for the trait and for the event flag.
    _write(tmp_path, "identifies", [
        {"id": "m1", "user_id": "u1", "timestamp": _t(12 * 3600), "received_at": _t(1), "plan": "dropped"},
        {"id": "m1", "user_id": "u1", "timestamp": _t(11 * 3600), "received_at": _t(2), "plan": "kept"},
        {"id": "m2", "user_id": "u1", "timestamp": _t(11.5 * 3600), "received_at": _t(0), "plan": "winner"},
    ], ID_SCHEMA)
    _write(tmp_path, "signed_up", [
        _event("s1", "u1", _t(12 * 3600), ra=_t(1)),
        _event("s1", "u1", _t(11 * 3600), ra=_t(2)),
        _event("s2", "u1", _t(11.5 * 3600), ra=_t(0)),
        # a special row (its id is seen twice) as late as the settled winner, and winning on id
        _event("s9", "u2", _t(50)), _event("s9", "u2", _t(50)), _event("s4", "u2", _t(50)),
    ], EV_SCHEMA)
    got = both(tmp_path, EVENTS)
    assert got.loc[("u1", "plan"), "value"] == '"winner"'
    assert got.loc[("u1", "Signed Up"), "message_id"] == "s2"
    assert got.loc[("u2", "Signed Up"), "message_id"] == "s9"  # "s9" > "s4" at one instant


def test_maxima_over_all_copies_run_again_only_when_a_dropped_copy_held_the_latest_time(
        tmp_path, caplog):
    # The static maxima are first taken over every row, copies included. Exact retries (copies
    # that differ only in receivedAt) never need more; a dropped copy holding the latest time
    # of a slot makes the run start again over the rows seen once.
    retries, odd = tmp_path / "retries", tmp_path / "odd"
    _write(retries, "identifies", [
        {"id": "m1", "user_id": "u1", "timestamp": _t(60), "received_at": _t(61), "plan": "latest"},
        {"id": "m1", "user_id": "u1", "timestamp": _t(60), "received_at": _t(90), "plan": "latest"},
        {"id": "m0", "user_id": "u1", "timestamp": _t(30), "plan": "older"},
    ], ID_SCHEMA)
    _write(odd, "identifies", [
        {"id": "m1", "user_id": "u1", "timestamp": _t(60), "received_at": _t(61), "plan": "dropped"},
        {"id": "m1", "user_id": "u1", "timestamp": _t(20), "received_at": _t(90), "plan": "kept"},
        {"id": "m0", "user_id": "u1", "timestamp": _t(30), "plan": "winner"},
    ], ID_SCHEMA)
    with caplog.at_level("DEBUG", logger="cmdseg_nb._plan_run"):
        assert both(retries).loc[("u1", "plan"), "value"] == '"latest"'
        assert "running again" not in caplog.text
        got = both(odd)
    assert got.loc[("u1", "plan"), "value"] == '"winner"'
    assert got.loc[("u1", "plan"), "message_id"] == "m0"
    assert "1 (user, slot) pairs had their latest time only on dropped copies" in caplog.text


def test_an_event_named_like_a_trait_competes_with_it(tmp_path):
    _write(tmp_path, "identifies", [
        {"id": "i1", "user_id": "u1", "timestamp": _t(5), "signed_up": "2020"},
        {"id": "i2", "user_id": "u2", "timestamp": _t(5), "signed_up": "2021"},
    ], ID_SCHEMA)
    _write(tmp_path, "signed_up", [_event("s1", "u1", _t(9), "signed_up"),
                                   _event("s2", "u2", _t(1), "signed_up")], EV_SCHEMA)
    got = both(tmp_path, EVENTS)
    assert got.loc[("u1", "signed_up"), "value"] == "true"      # the later event
    assert got.loc[("u1", "signed_up"), "rule"] == "user_property_event"
    assert got.loc[("u2", "signed_up"), "value"] == '"2021"'    # the later identify


def test_times_far_from_today_and_missing_are_planned(tmp_path):
    far = dt.datetime(1700, 1, 2, tzinfo=dt.timezone.utc)
    future = dt.datetime(2300, 1, 2, tzinfo=dt.timezone.utc)
    _write(tmp_path, "identifies", [
        {"id": "a", "user_id": "u1", "timestamp": far, "plan": "1700"},
        {"id": "b", "user_id": "u1", "timestamp": None, "plan": "no time"},
        {"id": "c", "user_id": "u2", "timestamp": future, "plan": "2300"},
        {"id": "d", "user_id": "u2", "timestamp": _t(0), "plan": "2024"},
        {"id": "e", "user_id": "u3", "timestamp": None, "plan": "none 1"},
        {"id": "f", "user_id": "u3", "timestamp": None, "plan": "none 2"},
    ], ID_SCHEMA)
    got = both(tmp_path)
    assert got.loc[("u1", "plan"), "value"] == '"1700"'   # any time beats no time
    assert got.loc[("u2", "plan"), "value"] == '"2300"'
    assert got.loc[("u3", "plan"), "message_id"] == "f"   # no times: the greater id
    assert pd.isna(got.loc[("u3", "plan"), "updated_at"])


def test_tracks_rows_without_a_twin_are_kept_when_per_event_tables_hold_more_rows(tmp_path):
    # Segment writes each track twice: in `tracks` and in its event's table. When the per-event
    # tables hold at least as many rows as `tracks`, the planned path first counts the `tracks`
    # rows without a twin on ids alone; none: `tracks` is left out, some: they are kept.
    twinned, partial = tmp_path / "twinned", tmp_path / "partial"
    per_event = [_event("t1", "u1", _t(10)), _event("x1", "u1", _t(20)), _event("x2", "u2", _t(5))]
    _write(twinned, "signed_up", per_event, EV_SCHEMA)
    _write(twinned, "tracks", [_event("t1", "u1", _t(10)), _event("x2", "u2", _t(5))], EV_SCHEMA)
    _write(partial, "signed_up", per_event, EV_SCHEMA)
    _write(partial, "tracks", [_event("t1", "u1", _t(10)),
                               _event("only-in-tracks", "u3", _t(30), "Logged In")], EV_SCHEMA)
    got = both(twinned, EVENTS)
    assert sorted(got.index) == [("u1", "Signed Up"), ("u2", "Signed Up")]
    assert got.loc[("u1", "Signed Up"), "message_id"] == "x1"
    got = both(partial, EVENTS)
    assert got.loc[("u3", "Logged In"), "message_id"] == "only-in-tracks"
    assert got.loc[("u1", "Signed Up"), "message_id"] == "x1"
