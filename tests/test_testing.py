"""Tests of cmdseg_nb.testing.LocalSegment, the loopback Segment."""
from __future__ import annotations

import base64
import gzip
import threading
import time

import httpx
import orjson
import pytest

from cmdseg_nb.testing import LocalSegment, Reply

KEY = "wk_local_0123456789"


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def track(i: int = 0, **extra) -> dict:
    return {"type": "track", "userId": f"u{i}", "event": "E", "messageId": f"m{i}", **extra}


def post(seg: LocalSegment, body, *, headers=None, raw: bytes | None = None, gz=False):
    content = raw if raw is not None else orjson.dumps(body)
    hdrs = {"Content-Type": "application/json", **(headers if headers is not None else auth())}
    if gz:
        content = gzip.compress(content)
        hdrs["Content-Encoding"] = "gzip"
    return httpx.post(f"{seg.url}/v1/batch", content=content, headers=hdrs, timeout=10)


@pytest.fixture
def seg():
    with LocalSegment(KEY) as server:
        yield server


def test_accepts_batch_and_records_it(seg):
    r = post(seg, {"batch": [track(0), track(1)], "sentAt": "2024-03-10T09:00:00.000Z"})
    assert r.status_code == 200 and r.json() == {"success": True}
    assert [m["userId"] for m in seg.messages] == ["u0", "u1"]
    [req] = seg.requests
    assert (req.path, req.status, req.gzip, req.message_count) == ("/v1/batch", 200, False, 2)
    assert orjson.loads(req.body)["batch"][0]["messageId"] == "m0"
    assert seg.url.startswith("http://127.0.0.1:")


def test_accepts_gzip(seg):
    r = post(seg, {"batch": [track(0)]}, gz=True)
    assert r.status_code == 200
    [req] = seg.requests
    assert req.gzip and req.wire_bytes < len(req.body) + 40 and req.message_count == 1


def test_wrong_or_missing_key_is_401_stricter_than_segment(seg):
    assert post(seg, {"batch": [track()]}, headers=auth("wk_wrong")).status_code == 401
    assert post(seg, {"batch": [track()]}, headers={}).status_code == 401
    assert seg.messages == []
    # a writeKey in the body is accepted, like Segment
    assert post(seg, {"batch": [track()], "writeKey": KEY}, headers={}).status_code == 200


@pytest.mark.parametrize(
    ("body", "raw", "message"),
    [
        (None, b"{not json", "Invalid JSON"),
        ({"batch": [track(i, p="x" * 300) for i in range(1_700)]}, None, "Exceed payload limit"),
        ({"batch": [track(i) for i in range(2_501)]}, None, "More than 2500"),
        ({"batch": [track(0, properties={"d": "x" * 33_000})]}, None, "exceeds 32768"),
        ({"batch": [{"type": "track", "event": "E"}]}, None, "userId or anonymousId"),
        ({"batch": [{"type": "nope", "userId": "u"}]}, None, "invalid type"),
    ],
)
def test_rejects_what_segment_rejects_with_400(seg, body, raw, message):
    r = post(seg, body, raw=raw)
    assert r.status_code == 400 and message in r.json()["message"]
    assert seg.messages == [] and seg.requests[0].status == 400


def test_script_applies_in_order_then_normal(seg):
    seg.script([Reply(429, retry_after=2), 503, Reply(disconnect=True)])
    r1 = post(seg, {"batch": [track()]})
    assert r1.status_code == 429 and r1.headers["Retry-After"] == "2"
    assert post(seg, {"batch": [track()]}).status_code == 503
    with pytest.raises(httpx.RemoteProtocolError):
        post(seg, {"batch": [track()]})
    assert post(seg, {"batch": [track(5)]}).status_code == 200
    assert [m["userId"] for m in seg.messages] == ["u5"]
    assert [r.status for r in seg.requests] == [429, 503, 0, 200]


def test_script_store_true_keeps_messages_of_a_failed_answer(seg):
    seg.script([Reply(500, store=True)])
    assert post(seg, {"batch": [track(1)]}).status_code == 500
    assert [m["userId"] for m in seg.messages] == ["u1"]


def test_settings_endpoint_known_and_unknown_key():
    for region, host in (("us", "api.segment.io/v1"), ("eu", "events.eu1.segmentapis.com/v1")):
        with LocalSegment(KEY, region=region) as seg:
            ok = httpx.get(f"{seg.url}/v1/projects/{KEY}/settings")
            missing = httpx.get(f"{seg.url}/v1/projects/wk_unknown/settings")
        assert ok.status_code == 200
        assert ok.json()["integrations"]["Segment.io"] == {"apiKey": KEY, "apiHost": host}
        assert missing.status_code == 404


def test_messages_are_thread_safe_and_complete(seg):
    def worker(w: int):
        with httpx.Client(timeout=10) as client:
            for j in range(5):
                body = orjson.dumps({"batch": [track(w * 100 + j) for _ in range(3)]})
                client.post(f"{seg.url}/v1/batch", content=body, headers=auth())

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(seg.messages) == 4 * 5 * 3 and len(seg.requests) == 20
    assert all(r.status == 200 for r in seg.requests)


def test_repr_masks_key_and_url_needs_running_server():
    seg = LocalSegment(KEY)
    assert KEY not in repr(seg) and "wk_l…6789" in repr(seg)
    with pytest.raises(RuntimeError):
        seg.url
    with seg:
        assert KEY not in repr(seg)
    with pytest.raises(RuntimeError):
        seg.url


def test_unknown_path_is_404(seg):
    r = httpx.post(f"{seg.url}/v2/nothing", content=b"{}", headers=auth())
    assert r.status_code == 404 and seg.requests == []


def test_stats_and_message_ids_count_duplicates(seg):
    post(seg, {"batch": [track(0), track(1)]})
    post(seg, {"batch": [track(1)]})
    assert seg.message_ids == ["m0", "m1", "m1"]
    stats = seg.stats()
    assert (stats["messages"], stats["unique_ids"], stats["duplicates"]) == (3, 2, 1)
    assert httpx.get(f"{seg.url}/_local/stats").json() == stats


def test_record_ids_keeps_no_bodies_or_messages():
    with LocalSegment(KEY, record="ids") as seg:
        post(seg, {"batch": [track(0)]})
        assert seg.messages == [] and seg.message_ids == ["m0"]
        assert seg.requests[0].body == b"" and seg.requests[0].message_count == 1


def test_flaky_answers_503_without_storing_and_is_seeded():
    def run():
        with LocalSegment(KEY, flaky=0.5, seed=11) as seg:
            codes = [post(seg, {"batch": [track(i)]}).status_code for i in range(20)]
            return codes, seg.message_ids
    codes, ids = run()
    assert set(codes) == {200, 503} and len(ids) == codes.count(200)
    assert run()[0] == codes


def test_stored_then_timeout_stores_before_the_late_answer(seg):
    seg.script([Reply.stored_then_timeout(1.0)])
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{seg.url}/v1/batch", content=orjson.dumps({"batch": [track(4)]}),
                   headers=auth(), timeout=0.3)
    assert seg.message_ids == ["m4"]


def test_close_after_leaves_the_client_a_stale_connection(seg):
    seg.script([Reply(200, close_after=True)])
    with httpx.Client(timeout=5) as client:
        body = orjson.dumps({"batch": [track(0)]})
        r1 = client.post(f"{seg.url}/v1/batch", content=body, headers=auth())
        assert r1.status_code == 200 and r1.headers.get("connection") != "close"
        time.sleep(0.1)
        r2 = client.post(f"{seg.url}/v1/batch", content=body, headers=auth())  # new connection
    assert r2.status_code == 200 and seg.message_ids == ["m0", "m0"]


def test_close_idle_connections(seg):
    with httpx.Client(timeout=5) as client:
        client.post(f"{seg.url}/v1/batch", content=orjson.dumps({"batch": [track(0)]}),
                    headers=auth())
        time.sleep(0.05)
        assert seg.close_idle_connections() == 1


def test_runs_in_its_own_process():
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "cmdseg_nb.testing", "--write-key", KEY,
                             "--max-seconds", "30"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        r = httpx.post(f"{url}/v1/batch", content=orjson.dumps({"batch": [track(0)]}),
                       headers=auth(), timeout=10)
        assert r.status_code == 200
        assert httpx.get(f"{url}/_local/stats").json()["unique_ids"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_batch_level_integrations_and_context_merge_into_messages(seg):
    own = track(1, integrations={"Amplitude": True})
    post(seg, {"batch": [track(0), own], "integrations": {"All": False, "Webhooks": True},
               "context": {"source": "backfill"}})
    first, second = seg.messages
    assert first["integrations"] == {"All": False, "Webhooks": True}
    assert second["integrations"] == {"All": False, "Webhooks": True, "Amplitude": True}
    assert first["context"] == {"source": "backfill"}


def test_record_scan_counts_ids_like_a_full_parse():
    import json

    with LocalSegment(KEY, record="scan") as lean, LocalSegment(KEY, record="ids") as full:
        compact = orjson.dumps({"batch": [track(i) for i in range(5)]})
        spaced = json.dumps({"batch": [track(i) for i in range(5, 8)]}).encode()  # ": " style
        for seg in (lean, full):
            assert post(seg, None, raw=compact, gz=True).status_code == 200
            assert post(seg, None, raw=spaced).status_code == 200
            assert post(seg, {"batch": [track(9)]}, headers=auth("wk_wrong_key_000")
                        ).status_code == 401
        assert lean.message_ids == full.message_ids == [f"m{i}" for i in range(8)]
        assert lean.stats() == full.stats()
        assert lean.messages == [] and lean.requests[0].body == b""
