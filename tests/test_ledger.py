"""Tests of cmdseg_nb._ledger and resume: acknowledged messageIds are recorded as each batch is
acknowledged, and a later send with the same ledger sends only what was not acknowledged."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import duckdb
import httpx
import orjson
import pandas as pd
import pytest

from cmdseg_nb._errors import SendError
from cmdseg_nb._ledger import Ledger
from cmdseg_nb._messages import prepare
from cmdseg_nb._send import send
from cmdseg_nb.testing import LocalSegment, Reply

KEY = "wk_LEDGER_0123456789abcdef"
ROOT = Path(__file__).resolve().parents[1]


def frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [f"u{i}" for i in range(n)], "event": ["E"] * n,
                         "i": range(n)})


def test_ledger_records_and_finds_ids_across_reopen(tmp_path):
    path = tmp_path / "sent.duckdb"
    ledger = Ledger(path)
    ledger.record(["a", "b"], 0)
    ledger.record(["c"], 1)
    assert ledger.known(["a", "c", "z"]) == {"a", "c"} and ledger.count() == 3
    ledger.close()
    again = Ledger(str(path))
    assert again.known(["b", "y"]) == {"b"} and again.known([]) == set()
    again.close()


def test_ledger_that_cannot_be_opened_is_a_send_error(tmp_path):
    bad = tmp_path / "not-a-db.duckdb"
    bad.write_bytes(b"this is not a duckdb file" * 100)
    with pytest.raises(SendError, match="ledger"):
        send(frame(1), write_key=KEY, ledger=bad, progress=False,
             transport=httpx.MockTransport(lambda r: httpx.Response(200)))


def test_second_send_with_the_same_ledger_sends_nothing(tmp_path):
    path = tmp_path / "sent.duckdb"
    posts = []

    def handler(request):
        posts.append(request)
        return httpx.Response(200, json={"success": True})

    kw = dict(write_key=KEY, ledger=path, progress=False, max_batch_messages=4,
              transport=httpx.MockTransport(handler))
    first = send(frame(10), **kw)
    assert first.sent == 10 and len(posts) == 3
    second = send(frame(10), **kw)
    assert len(posts) == 3 and second.requests == 0
    assert second.previously_sent == 10 and second.sent == 0 and second.ok
    assert set(second.rows["status"]) == {"previously_sent"}
    assert "previously sent" in repr(second)
    con = duckdb.connect(str(path))
    ids = {r[0] for r in con.execute("SELECT message_id FROM acknowledged").fetchall()}
    con.close()
    assert ids == set(first.rows["messageId"])


def test_resend_after_failures_sends_only_the_unacknowledged_rows(tmp_path):
    path = tmp_path / "sent.duckdb"
    bad_user = {"u3"}
    got: list[str] = []

    def handler(request):
        batch = orjson.loads(request.read())["batch"]
        if any(m["userId"] in bad_user for m in batch):
            return httpx.Response(400, json={"message": "invalid"})
        got.extend(m["userId"] for m in batch)
        return httpx.Response(200, json={"success": True})

    kw = dict(write_key=KEY, ledger=path, progress=False, max_batch_messages=4, gzip=False,
              transport=httpx.MockTransport(handler))
    first = send(frame(10), **kw)
    assert first.failed == 1 and first.sent == 9
    bad_user.clear()
    got.clear()
    second = send(frame(10), **kw)
    assert got == ["u3"]  # only the row Segment did not acknowledge
    assert second.sent == 1 and second.previously_sent == 9 and second.ok


CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    import pandas as pd
    from cmdseg_nb._send import send
    n = {n}
    df = pd.DataFrame({{"user_id": [f"u{{i}}" for i in range(n)], "event": ["E"] * n,
                        "i": range(n)}})
    r = send(df, write_key={key!r}, endpoint=sys.argv[1], ledger=sys.argv[2],
             max_batch_messages={batch}, concurrency={concurrency}, progress=False)
    print(r.sent, r.previously_sent, r.failed, flush=True)
    """
)


def test_killed_mid_send_then_rerun_loses_nothing_and_resends_no_acknowledged_batch(tmp_path):
    n, batch, concurrency = 6_000, 50, 2
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(ROOT), n=n, key=KEY, batch=batch,
                                   concurrency=concurrency))
    ledger_path = tmp_path / "sent.duckdb"
    expected = set(prepare(frame(n)).message_ids)  # ids are derived, so known in advance
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with LocalSegment(KEY, record="ids") as seg:
        seg.script([Reply(200, delay=0.03)] * 400)  # slow enough to kill midway
        child = subprocess.Popen([sys.executable, str(script), seg.url, str(ledger_path)],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while len(seg.requests) < 30 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)  # a kernel killed mid-send
        child.wait(timeout=10)
        assert child.returncode == -signal.SIGKILL
        time.sleep(0.3)  # let the server finish storing what it had fully received
        first_run = seg.message_ids
        con = duckdb.connect(str(ledger_path))
        acked = {r[0] for r in con.execute("SELECT message_id FROM acknowledged").fetchall()}
        con.close()
        assert 0 < len(acked) < n and acked <= set(first_run)

        rerun = subprocess.run([sys.executable, str(script), seg.url, str(ledger_path)],
                               env=env, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        everything = seg.message_ids
    second_run = everything[len(first_run):]
    sent, previously, failed = map(int, rerun.stdout.split())
    assert set(everything) == expected  # every message arrived
    assert acked.isdisjoint(second_run)  # no acknowledged message was sent again
    assert previously == len(acked) and sent == n - len(acked) and failed == 0
    repeats = [mid for mid, k in Counter(everything).items() if k > 1]
    # the only repeats: batches in flight at the kill (stored, never acknowledged), same ids
    assert len(repeats) <= concurrency * batch
    assert acked.isdisjoint(repeats)


def test_ledger_is_kept_per_destination(tmp_path):
    """Ids acknowledged by a LocalSegment are not skipped when the ledger points elsewhere."""
    path = tmp_path / "sent.duckdb"
    df = frame(5)
    with LocalSegment(KEY) as a, LocalSegment(KEY) as b, LocalSegment("wk_OTHER_abcdef0123") as c:
        first = send(df, write_key=KEY, endpoint=a.url, ledger=path, progress=False)
        again = send(df, write_key=KEY, endpoint=a.url, ledger=path, progress=False)
        other_endpoint = send(df, write_key=KEY, endpoint=b.url, ledger=path, progress=False)
        other_key = send(df, write_key="wk_OTHER_abcdef0123", endpoint=c.url, ledger=path,
                         progress=False)
    assert first.sent == 5 and again.previously_sent == 5 and again.sent == 0
    assert other_endpoint.sent == 5 and len(b.messages) == 5
    assert other_key.sent == 5 and len(c.messages) == 5
    stored = duckdb.connect(str(path)).execute(
        "SELECT DISTINCT destination FROM acknowledged").fetchall()
    assert len(stored) == 3 and not any(KEY in d for (d,) in stored)


def test_region_is_checked_even_with_an_endpoint():
    with pytest.raises(SendError, match="region must be one of"):
        send(frame(1), write_key=KEY, endpoint="http://127.0.0.1:9", region="xx", progress=False)
