"""Tests of cmdseg_nb._send: unit tests with httpx.MockTransport, integration with LocalSegment."""
from __future__ import annotations

import base64
import gzip
import re
import threading
import time

import httpx
import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmdseg_nb._errors import SendError
from cmdseg_nb._batching import Envelope, plan_batches
from cmdseg_nb._send import SendResult, WriteKey, send
from cmdseg_nb.testing import LocalSegment, Reply

KEY = "wk_FAKE_0123456789abcdef"
SENT_AT = re.compile(rb'"sentAt":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"')


class Recorder:
    """A MockTransport handler that records requests and answers from a function."""

    def __init__(self, answer=None):
        self.answer = answer or (lambda rec, req, body: httpx.Response(200, json={"success": True}))
        self.requests: list[tuple[httpx.Request, bytes, float]] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        raw = request.read()
        body = gzip.decompress(raw) if request.headers.get("content-encoding") == "gzip" else raw
        with self.lock:
            self.requests.append((request, body, time.monotonic()))
        return self.answer(self, request, body)

    @property
    def bodies(self) -> list[dict]:
        return [orjson.loads(b) for _, b, _ in self.requests]

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def frame(n: int, **extra) -> pd.DataFrame:
    return pd.DataFrame(
        {"user_id": [f"u{i}" for i in range(n)], "event": ["E"] * n, "i": range(n), **extra}
    )


def do_send(data, rec: Recorder, **kw) -> SendResult:
    kw.setdefault("progress", False)
    kw.setdefault("backoff", 0.01)
    return send(data, write_key=KEY, transport=rec.transport(), **kw)


def batch_part(body: bytes) -> bytes:
    """The body without its sentAt, the only part allowed to change between attempts."""
    return SENT_AT.sub(b"", body)


# -- request shape ------------------------------------------------------------------------
def test_request_shape_auth_gzip_and_body():
    rec = Recorder()
    result = do_send(frame(3), rec, integrations={"All": False, "Webhooks": True})
    [(request, body, _)] = rec.requests
    assert request.method == "POST" and str(request.url) == "https://api.segment.io/v1/batch"
    expected = base64.b64encode(f"{KEY}:".encode()).decode()
    assert request.headers["authorization"] == f"Basic {expected}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["content-encoding"] == "gzip"
    data = orjson.loads(body)
    assert [m["userId"] for m in data["batch"]] == ["u0", "u1", "u2"]
    assert data["integrations"] == {"All": False, "Webhooks": True}
    assert SENT_AT.search(body)
    assert result.sent == 3 and result.requests == 1 and result.ok
    assert list(result.rows["status"]) == ["sent"] * 3
    assert list(result.rows["messageId"]) == [m["messageId"] for m in data["batch"]]


def test_eu_region_no_gzip_and_trimmed_key():
    rec = Recorder()
    send(frame(1), write_key=f"  {KEY}\n", region="eu", gzip=False, progress=False,
         transport=rec.transport())
    [(request, body, _)] = rec.requests
    assert request.url.host == "events.eu1.segmentapis.com"
    assert "content-encoding" not in request.headers
    assert base64.b64decode(request.headers["authorization"].split()[1]) == f"{KEY}:".encode()
    assert orjson.loads(body)["batch"][0]["userId"] == "u0"


@pytest.mark.parametrize("bad", ["", "   ", "wk:with:colons", "wk with space"])
def test_bad_write_key_raises_send_error_without_showing_it(bad):
    with pytest.raises(SendError) as info:
        send(frame(1), write_key=bad, progress=False, transport=Recorder().transport())
    if bad.strip():
        assert bad.strip() not in str(info.value)


@pytest.mark.parametrize(
    "kw", [{"region": "mars"}, {"endpoint": "ftp://x"}, {"max_batch_bytes": 600_000},
           {"max_batch_messages": 2_501}]
)
def test_bad_settings_raise_send_error(kw):
    rec = Recorder()
    with pytest.raises(SendError):
        do_send(frame(1), rec, **kw)
    assert rec.requests == []


def test_write_key_never_in_result_repr_html_or_rows():
    rec = Recorder(lambda r, q, b: httpx.Response(403, json={"message": "forbidden"}))
    result = do_send(frame(4), rec, max_batch_messages=2, concurrency=1)
    texts = [repr(result), str(result), result._repr_html_(), result.rows.to_csv(),
             repr(vars(result)), repr(WriteKey(KEY)), str(WriteKey(KEY))]
    for text in texts:
        assert KEY not in text and KEY[6:] not in text
    assert "wk_F…cdef" in repr(result) and "wk_F…cdef" in result._repr_html_()
    # a 403 fails its batch and skips the rest: every later batch would get it too
    assert list(result.rows["status"]) == ["failed", "failed", "skipped", "skipped"]
    assert result.rows["error"][0] == "403: forbidden" and len(rec.requests) == 1


# -- batching (B18) -------------------------------------------------------------------------
def b18_frame():
    rows = frame(121, blob=["x" * 4_300] * 121)
    rows.loc[120, "blob"] = "y" * 40_000
    return rows


def check_bodies(bodies: list[bytes], max_bytes: int, max_messages: int):
    for body in bodies:
        assert len(body) <= max_bytes
        assert len(orjson.loads(body)["batch"]) <= max_messages


def test_b18_oversize_row_rejected_and_batches_within_limits():
    rec = Recorder()
    result = do_send(b18_frame(), rec)
    assert (result.sent, result.invalid, result.failed) == (120, 1, 0)
    bad = result.rows.loc[120]
    assert bad["status"] == "invalid"
    size = int(re.search(r"([\d,]+) bytes", bad["error"]).group(1).replace(",", ""))
    assert size > 32_768
    assert len(rec.requests) >= 2
    check_bodies([b for _, b, _ in rec.requests], 475_000, 2_500)
    sent_sizes = [len(b) for _, b, _ in rec.requests]
    assert 4_475 * 100 < max(sent_sizes)  # batches are filled, not tiny


def test_b18_against_local_segment_no_400():
    with LocalSegment(KEY) as seg:
        result = send(b18_frame(), write_key=KEY, endpoint=seg.url, progress=False)
        reqs = seg.requests
        assert len(seg.messages) == 120
    assert result.sent == 120 and result.invalid == 1
    assert len(reqs) >= 2 and all(r.status == 200 for r in reqs)
    check_bodies([r.body for r in reqs], 475_000, 2_500)


def test_message_count_limit():
    rec = Recorder()
    result = do_send(frame(6_000), rec, gzip=False)
    assert [len(b["batch"]) for b in rec.bodies] == [2_500, 2_500, 1_000]
    assert result.sent == 6_000 and result.batches_sent == 3


def test_message_too_big_for_a_small_max_batch_bytes_is_invalid():
    rec = Recorder()
    result = do_send(frame(2, blob=["x" * 600, "y"]), rec, max_batch_bytes=700)
    assert list(result.rows["status"]) == ["invalid", "sent"]
    assert "max_batch_bytes" in result.rows["error"][0]


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 5_000), max_size=60),
    max_bytes=st.integers(100, 20_000),
    max_messages=st.integers(1, 10),
    with_integrations=st.booleans(),
)
def test_planned_batches_never_exceed_limits(sizes, max_bytes, max_messages, with_integrations):
    env = Envelope({"All": False, "Webhooks": True} if with_integrations else None)
    batches, too_big = plan_batches(sizes, env.overhead, max_bytes, max_messages)
    placed = [i for b in batches for i in b]
    assert sorted(placed + too_big) == list(range(len(sizes)))
    assert placed == sorted(placed)  # input order kept
    for b in batches:
        body = env.body([b"x" * sizes[i] for i in b], "2024-03-10T09:00:00.000Z")
        assert len(body) <= max_bytes and 1 <= len(b) <= max_messages
    for i in too_big:
        assert env.overhead + sizes[i] > max_bytes


# -- retries (B21, B22) ----------------------------------------------------------------------
def scripted(plan: dict[str, list]):
    """Answer by the first message's userId, from a list of responses/exceptions per batch."""

    def answer(rec, request, body):
        who = orjson.loads(body)["batch"][0]["userId"]
        step = plan[who].pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    return Recorder(answer)


def test_b22_retry_rules():
    rec = scripted(
        {
            "u0": [httpx.Response(429, headers={"Retry-After": "1"}), httpx.Response(200)],
            "u1": [httpx.Response(400, json={"success": False, "message": "Exceed payload limit"})],
            "u2": [httpx.Response(503), httpx.Response(503), httpx.Response(200)],
            "u3": [httpx.ConnectError("refused"), httpx.Response(200)],
        }
    )
    result = do_send(frame(4), rec, max_batch_messages=1)
    assert (result.batches_sent, result.batches_failed) == (3, 1)
    rows = result.rows
    assert list(rows["status"]) == ["sent", "failed", "sent", "sent"]
    assert list(rows["attempts"]) == [2, 1, 3, 2]
    assert rows["http_status"][1] == 400 and "Exceed payload limit" in rows["error"][1]
    who = [orjson.loads(b)["batch"][0]["userId"] for _, b, _ in rec.requests]
    assert who.count("u1") == 1  # a 400 is never resent
    t429 = [t for (_, b, t), w in zip(rec.requests, who) if w == "u0"]
    assert t429[1] - t429[0] >= 1.0  # waited Retry-After seconds
    for user in ("u0", "u2", "u3"):  # retries resend identical message bytes
        parts = {batch_part(b) for (_, b, _), w in zip(rec.requests, who) if w == user}
        assert len(parts) == 1


def test_400_splits_batch_and_isolates_the_bad_message():
    def answer(rec, request, body):
        batch = orjson.loads(body)["batch"]
        if any(m["properties"]["i"] == 6 for m in batch):
            return httpx.Response(400, json={"message": "invalid message"})
        return httpx.Response(200, json={"success": True})

    rec = Recorder(answer)
    result = do_send(frame(10), rec)
    assert result.sent == 9 and result.failed == 1
    assert result.rows["status"][6] == "failed"
    assert result.rows["error"][6] == "400: invalid message"
    parts = [batch_part(b) for _, b, _ in rec.requests]
    assert len(parts) == len(set(parts))  # never the same bytes twice
    assert result.batches_failed == 1


def test_other_4xx_fails_batch_without_retry():
    rec = Recorder(lambda r, q, b: httpx.Response(413, text="too large"))
    result = do_send(frame(2), rec)
    assert list(result.rows["status"]) == ["failed", "failed"]
    assert list(result.rows["http_status"]) == [413, 413] and len(rec.requests) == 1
    assert result.rows["error"][0] == "413: too large"


def test_retry_budget_is_bounded_and_later_batches_skipped():
    rec = Recorder(lambda r, q, b: httpx.Response(503))
    result = do_send(frame(3), rec, max_batch_messages=1, max_retry_time=0.3, backoff=0.05,
                     concurrency=1)
    assert list(result.rows["status"]) == ["failed", "skipped", "skipped"]
    assert "gave up" in result.rows["error"][0] and result.rows["http_status"][0] == 503
    assert 2 <= len(rec.requests) < 20


def test_retry_after_longer_than_budget_is_not_waited():
    rec = Recorder(lambda r, q, b: httpx.Response(429, headers={"Retry-After": "3600"}))
    result = do_send(frame(1), rec, max_retry_time=5)
    assert result.rows["status"][0] == "failed" and len(rec.requests) == 1
    assert "429" in result.rows["error"][0]


def test_b21_read_timeout_retry_resends_identical_message_bytes():
    stored: list[str] = []

    def answer(rec, request, body):
        stored.extend(m["messageId"] for m in orjson.loads(body)["batch"])
        if len(rec.requests) == 1:
            raise httpx.ReadTimeout("stored, but the answer was lost")
        return httpx.Response(200, json={"success": True})

    ids = [f"m-{i}" for i in range(50)]
    rec = Recorder(answer)
    result = do_send(frame(50, message_id=ids), rec)
    assert result.sent == 50 and list(result.rows["attempts"]) == [2] * 50
    assert stored == ids + ids  # caller's ids, never regenerated, identical on retry
    first, second = (b for _, b, _ in rec.requests)
    assert batch_part(first) == batch_part(second)


def test_b21_duplicate_message_ids_flagged_before_sending():
    ids = [f"m-{i}" for i in range(50)]
    ids[7] = ids[8] = "m-dup"
    rec = Recorder()
    result = do_send(frame(50, message_id=ids), rec)
    assert list(result.rows.loc[[7, 8], "status"]) == ["invalid", "invalid"]
    assert result.sent == 48
    assert "m-dup" not in {m["messageId"] for b in rec.bodies for m in b["batch"]}


def test_resending_same_rows_gives_same_message_ids():
    rec = Recorder()
    a = do_send(frame(5), rec)
    b = do_send(frame(5), rec)
    assert list(a.rows["messageId"]) == list(b.rows["messageId"])
    assert rec.bodies[0]["batch"] == rec.bodies[1]["batch"]


def test_dry_run_makes_no_request():
    rec = Recorder(lambda *a: pytest.fail("dry_run sent a request"))
    result = do_send(frame(5), rec, dry_run=True)
    assert list(result.rows["status"]) == ["skipped"] * 5
    assert result.requests == 0 and result.bytes_uncompressed > 0
    assert "dry run" in repr(result)


def test_result_repr_and_html_show_counts_and_problems():
    df = frame(3)
    df.loc[1, "user_id"] = None
    result = do_send(df, Recorder(), progress=True)
    assert (result.sent, result.invalid) == (2, 1)
    text = repr(result)
    assert "sent      2" in text and "row 1: invalid" in text
    html = result._repr_html_()
    assert "<table>" in html and "invalid" in html
    assert result.events_per_second > 0 and result.duration > 0


def test_result_rows_keep_the_input_index():
    df = frame(2)
    df.index = ["x", "y"]
    result = do_send(df, Recorder())
    assert list(result.rows.index) == ["x", "y"] and list(result.rows["row"]) == [0, 1]


# -- integration with LocalSegment ------------------------------------------------------------
def test_b22_against_local_segment():
    with LocalSegment(KEY) as seg:
        seg.script(
            [
                Reply(429, retry_after=1), Reply(200),
                Reply(400, message="Exceed payload limit"),
                Reply(503), Reply(503), Reply(200),
                Reply(disconnect=True), Reply(200),
            ]
        )
        # one request in flight, so the scripted replies meet the batches in order
        result = send(frame(4), write_key=KEY, endpoint=seg.url, max_batch_messages=1,
                      progress=False, backoff=0.01, concurrency=1)
        reqs = seg.requests
        got = [m["userId"] for m in seg.messages]
    assert (result.batches_sent, result.batches_failed) == (3, 1)
    assert got == ["u0", "u2", "u3"]
    assert result.rows["error"][1] == "400: Exceed payload limit"
    assert [r.status for r in reqs] == [429, 200, 400, 503, 503, 200, 0, 200]
    assert reqs[1].received_at - reqs[0].received_at >= 1.0


def test_b21_against_local_segment_timeout_after_store():
    with LocalSegment(KEY) as seg:
        seg.script([Reply(200, delay=1.5)])  # stored, but the client times out first
        result = send(frame(5), write_key=KEY, endpoint=seg.url, timeout=0.5,
                      progress=False, backoff=0.01)
        reqs = seg.requests
        ids = [m["messageId"] for m in seg.messages]
    assert result.sent == 5 and len(reqs) == 2
    assert ids[:5] == ids[5:] == list(result.rows["messageId"])
    assert batch_part(reqs[0].body) == batch_part(reqs[1].body)


def test_wrong_key_against_local_segment_is_reported():
    with LocalSegment(KEY) as seg:
        result = send(frame(3), write_key="wk_other_key_9999", endpoint=seg.url, progress=False)
        assert seg.messages == []
    assert result.failed == 3 and result.rows["http_status"][0] == 401


# -- input flavours and streaming -------------------------------------------------------------
def flavours(n: int):
    import duckdb
    import pyarrow as pa

    df = pd.DataFrame({"user_id": [f"u{i}" for i in range(n)], "event": ["E"] * n,
                       "amount": [i / 4 for i in range(n)]})
    table = pa.Table.from_pandas(df, preserve_index=False)
    con = duckdb.connect()
    rel = con.sql(f"SELECT 'u' || i AS user_id, 'E' AS event, i / 4 AS amount "
                  f"FROM range({n}) t(i) ORDER BY i")
    return {
        "pandas-numpy": df,
        "pandas-arrow": df.convert_dtypes(dtype_backend="pyarrow"),
        "arrow-table": table,
        "duckdb-relation": rel,
    }


@pytest.mark.parametrize("flavour", ["pandas-numpy", "pandas-arrow", "arrow-table",
                                     "duckdb-relation"])
def test_every_input_flavour_sends_the_same_messages(flavour):
    rec = Recorder()
    result = do_send(flavours(45_000)[flavour], rec)  # more rows than one chunk (20,000)
    assert result.sent == 45_000 and result.ok
    got = [m for b in rec.bodies for m in b["batch"]]
    got.sort(key=lambda m: int(m["userId"][1:]))
    assert [m["userId"] for m in got[:3]] == ["u0", "u1", "u2"]
    assert got[5]["properties"] == {"amount": 1.25}
    assert len({m["messageId"] for m in got}) == 45_000
    reference = do_send(flavours(45_000)["pandas-numpy"], Recorder(), dry_run=True)
    assert sorted(result.rows["messageId"]) == sorted(reference.rows["messageId"])


def test_duckdb_relation_is_streamed_in_record_batches():
    from cmdseg_nb._source import CHUNK_ROWS, Source

    source = Source(flavours(45_000)["duckdb-relation"])
    assert source.n_rows is None  # never counted or fetched whole
    sizes = [len(next(iter(cols.values()))) for _, cols in source.chunks()]
    assert sum(sizes) == 45_000 and max(sizes) <= CHUNK_ROWS and len(sizes) >= 3


# -- event loops: script, running loop (notebook), async ---------------------------------------
def test_send_works_inside_a_running_event_loop():
    import asyncio

    rec = Recorder()

    async def cell():  # what a notebook cell does: its kernel's loop is already running
        asyncio.get_running_loop()
        return do_send(frame(5), rec)

    result = asyncio.run(cell())
    assert result.sent == 5 and len(rec.requests) == 1


def test_send_async():
    import asyncio

    from cmdseg_nb._send import send_async

    rec = Recorder()
    result = asyncio.run(send_async(frame(7), write_key=KEY, transport=rec.transport(),
                                    progress=False, max_batch_messages=3))
    assert result.sent == 7 and [len(b["batch"]) for b in rec.bodies] == [3, 3, 1]
    with pytest.raises(TypeError):
        asyncio.run(send_async(frame(1), write_key=KEY, no_such_option=1))


# -- concurrency and rate -----------------------------------------------------------------------
def in_flight_recorder():
    import asyncio

    state = {"now": 0, "max": 0, "starts": []}

    async def handler(request):
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        state["starts"].append(time.monotonic())
        await asyncio.sleep(0.05)
        state["now"] -= 1
        return httpx.Response(200, json={"success": True})

    return state, httpx.MockTransport(handler)


@pytest.mark.parametrize("concurrency", [1, 2, 4])
def test_a_fixed_number_of_requests_in_flight(concurrency):
    state, transport = in_flight_recorder()
    result = send(frame(40), write_key=KEY, transport=transport, progress=False,
                  max_batch_messages=2, concurrency=concurrency)
    assert result.sent == 40 and result.requests == 20
    assert state["max"] == concurrency


def test_requests_per_second_cap():
    state, transport = in_flight_recorder()
    result = send(frame(6), write_key=KEY, transport=transport, progress=False,
                  max_batch_messages=1, max_requests_per_second=20)
    assert result.sent == 6
    starts = sorted(state["starts"])
    assert starts[-1] - starts[0] >= 5 / 20 - 0.01  # waited at least 0.25 s for 6 starts


# -- Ctrl-C --------------------------------------------------------------------------------------
def test_keyboard_interrupt_stops_cleanly_and_returns_what_was_sent():
    import _thread
    import asyncio

    seen = []

    async def handler(request):
        seen.append(1)
        if len(seen) == 3:
            _thread.interrupt_main()  # what Ctrl-C / "interrupt kernel" does
        await asyncio.sleep(0.2)
        return httpx.Response(200, json={"success": True})

    result = send(frame(50), write_key=KEY, transport=httpx.MockTransport(handler),
                  progress=False, max_batch_messages=2, concurrency=1)
    assert result.interrupted
    assert 2 <= result.sent < 50 and result.sent % 2 == 0
    statuses = set(result.rows["status"])
    assert statuses <= {"sent", "failed", "skipped"} and "skipped" in statuses
    in_flight = result.rows[result.rows["status"] == "failed"]
    assert len(in_flight) <= 2 and all("in flight" in e for e in in_flight["error"])
    assert len(seen) < 25
    assert "interrupted" in repr(result)


def test_cancel_flag_skips_the_remaining_batches():
    import threading as th

    flag = th.Event()
    snapshots = []

    def on_progress(p):
        snapshots.append(p)
        if p.sent >= 4:
            flag.set()

    rec = Recorder()
    result = do_send(frame(20), rec, max_batch_messages=2, concurrency=1, cancel=flag,
                     on_progress=on_progress)
    assert 4 <= result.sent < 20 and result.skipped == 20 - result.sent
    assert snapshots[-1].cancelled and snapshots[0].rows == 20
    assert "cancelled" in result.rows["error"].dropna().iloc[-1]


# -- progress ---------------------------------------------------------------------------------
def test_progress_bar_counts_rows_and_bytes(capsys):
    result = do_send(frame(30), Recorder(), progress=True, max_batch_messages=10)
    err = capsys.readouterr().err
    assert result.sent == 30 and "30/30" in err and "kB sent" in err
    do_send(frame(30), Recorder(), progress=False)
    assert capsys.readouterr().err == ""


def test_on_progress_snapshots_grow_to_the_totals():
    snaps = []
    result = do_send(frame(10), Recorder(), max_batch_messages=3, on_progress=snaps.append)
    last = snaps[-1]
    assert (last.sent, last.rows_done, last.batches, last.batches_done) == (10, 10, 4, 4)
    assert last.bytes_sent == result.bytes_sent > 0 and last.requests == 4


# -- the key never shows -----------------------------------------------------------------------
def test_write_key_never_in_logs_or_errors(caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    rec = Recorder(lambda r, q, b: (_ for _ in ()).throw(httpx.ConnectError("refused")))
    result = do_send(frame(2), rec, max_retry_time=0.2, backoff=0.01)
    assert result.failed == 2
    with pytest.raises(SendError) as info:
        send(frame(1), write_key=KEY, endpoint="ftp://nowhere", progress=False)
    texts = [caplog.text, str(info.value), repr(result), result.rows.to_csv()]
    b64 = base64.b64encode(f"{KEY}:".encode()).decode()
    for text in texts:
        assert KEY not in text and b64 not in text


# -- B15 through send ---------------------------------------------------------------------------
def test_b15_only_valid_json_goes_out():
    from conftest import load_case

    case = load_case("B15")
    df = pd.DataFrame(
        {"user_id": ["u_1013", "u_1014"], "event": ["Cart Viewed"] * 2,
         "amount": [float("nan"), 12.5], "discount": [float("inf"), 0.0],
         "coupon": pd.Series([None, "SPRING"], dtype=object),
         "seen_at": pd.to_datetime([None, "2024-03-10T09:00:00Z"], utc=True)}
    )
    rec = Recorder()
    from cmdseg_nb._errors import CmdsegWarning

    with pytest.warns(CmdsegWarning, match="infinite"):
        result = do_send(df, rec)
    assert result.sent == 2
    [body] = [b for _, b, _ in rec.requests]
    assert b"NaN" not in body and b"Infinity" not in body
    row0, row1 = orjson.loads(body)["batch"]
    assert row0.get("properties", {}) == case["expected"]["row0_properties"]
    assert row1["properties"] == case["expected"]["row1_properties"]


# -- fault injection against a real LocalSegment ----------------------------------------------------
def test_503_bursts_and_dropped_connections_lose_nothing_and_duplicate_nothing():
    with LocalSegment(KEY) as seg:
        seg.script([503, 503, 503, Reply(disconnect=True), 502, Reply(disconnect=True), 503])
        result = send(frame(300), write_key=KEY, endpoint=seg.url, progress=False,
                      max_batch_messages=25, backoff=0.01)
        ids = seg.message_ids
        statuses = [r.status for r in seg.requests]
    assert result.sent == 300 and result.ok
    assert sorted(ids) == sorted(result.rows["messageId"])  # every message once, none twice
    assert statuses.count(503) == 4 and statuses.count(0) == 2
    assert result.retries == 7


def test_stored_but_timed_out_batch_is_resent_with_the_same_ids():
    with LocalSegment(KEY) as seg:
        seg.script([Reply.stored_then_timeout(1.0)])
        result = send(frame(5), write_key=KEY, endpoint=seg.url, timeout=0.4,
                      progress=False, backoff=0.01, concurrency=1)
        ids = seg.message_ids
    assert result.sent == 5 and list(result.rows["attempts"]) == [2] * 5
    assert ids[:5] == ids[5:] == list(result.rows["messageId"])  # the only duplicates: same ids


def test_stale_keep_alive_connection_recovers():
    with LocalSegment(KEY) as seg:
        seg.script([Reply(200, close_after=True), Reply(200, close_after=True)])
        result = send(frame(8), write_key=KEY, endpoint=seg.url, progress=False,
                      max_batch_messages=2, concurrency=1, backoff=5)
        assert sorted(seg.message_ids) == sorted(result.rows["messageId"])
    assert result.sent == 8 and result.failed == 0


def test_flaky_server_loses_nothing():
    with LocalSegment(KEY, record="ids", flaky=0.3, seed=3) as seg:
        result = send(frame(2_000), write_key=KEY, endpoint=seg.url, progress=False,
                      max_batch_messages=50, backoff=0.01)
        stats = seg.stats()
    assert result.sent == 2_000 and result.retries > 0
    assert stats["unique_ids"] == 2_000 and stats["duplicates"] == 0
    assert stats["statuses"]["503"] == result.retries


def test_integrations_route_to_named_destinations_against_local_segment():
    with LocalSegment(KEY) as seg:
        send(frame(2), write_key=KEY, endpoint=seg.url, progress=False,
             integrations={"All": False, "Webhooks": True})
        [req] = seg.requests
    assert orjson.loads(req.body)["integrations"] == {"All": False, "Webhooks": True}


def test_sent_at_is_set_per_attempt_and_nothing_else_changes():
    import datetime as dt

    with LocalSegment(KEY) as seg:
        seg.script([Reply(429, retry_after=1)])
        result = send(frame(3), write_key=KEY, endpoint=seg.url, progress=False)
        first, second = (r.body for r in seg.requests)
    stamps = [dt.datetime.fromisoformat(orjson.loads(b)["sentAt"].replace("Z", "+00:00"))
              for b in (first, second)]
    assert (stamps[1] - stamps[0]).total_seconds() >= 0.99  # the retry's own send time
    assert batch_part(first) == batch_part(second) and result.sent == 3


def test_dry_run_result_says_what_would_be_sent_and_only_real_problems():
    df = pd.DataFrame({"userId": ["u1", None], "event": ["E", "E"]})
    r = send(df, write_key=KEY, endpoint="http://127.0.0.1:9", dry_run=True, progress=False)
    assert list(r.errors["row"]) == [1]  # the invalid row; the dry-run row is not a problem
    assert not r.ok
    assert "1 rows would be sent" in repr(r) and "would go on the wire" in repr(r)
    fine = send(df.iloc[:1], write_key=KEY, endpoint="http://127.0.0.1:9", dry_run=True,
                progress=False)
    assert fine.ok and fine.sent == 0 and fine.skipped == 1
