"""Benchmark: the same synthetic track messages sent to the same LocalSegment by cmdseg_nb and by
the official library (segment-analytics-python), side by side in one run.

    python benchmarks/send.py                 # 200,000 messages (default)
    python benchmarks/send.py --n 50000       # smaller
    python benchmarks/send.py --memory 1000000  # also: peak memory of cmdseg_nb for 1M messages

Prints, per contender: events/s for message preparation and end to end (counted at the server),
the ratio to the official library, peak memory (max RSS of a fresh process) and events lost /
duplicated. LocalSegment runs in its own process (``python -m cmdseg_nb.testing``) so that the
server's work is not charged to the sender. Each contender runs in a fresh child process.
The server shares the machine's cores with the sender (Segment's own servers would not), so for
the throughput runs it takes as little CPU as it can, the same for every contender
(``--record scan``: auth, gzip and size checked, messageIds found by a byte scan, no JSON
parse); one more cmdseg_nb run and the fault-injection run use the fully parsing server
(``--record ids``), so the ids counted by the scan can be compared with a full parse.
The official library is used if importable (``pip install segment-analytics-python``); if not,
a naive ``json.dumps``-per-row sender stands in for it.

This is a script that prints numbers, not a test: nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEY = "wk_BENCH_0123456789abcdef"
PY = sys.executable


# -- data ---------------------------------------------------------------------------------------
def frame(n: int):
    """n track events: user id, event name, timestamp and four properties."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    return pd.DataFrame(
        {
            "user_id": [f"user_{i % 50_000}" for i in range(n)],
            "event": "Order Completed",
            "timestamp": pd.date_range("2024-01-01", periods=n, freq="s", tz="UTC"),
            "order_id": [f"o-{i}" for i in range(n)],
            "revenue": np.round(rng.random(n) * 100, 2),
            "quantity": rng.integers(1, 9, n),
            "sku": [f"sku-{i % 500}" for i in range(n)],
        }
    )


def relation(n: int):
    """The same kind of rows as a DuckDB relation (streamed by send, never materialized)."""
    import duckdb

    con = duckdb.connect()
    return con.sql(
        f"""SELECT 'user_' || (i % 50000) AS user_id, 'Order Completed' AS event,
                   TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_seconds(i) AS timestamp,
                   'o-' || i AS order_id, round(random() * 100, 2) AS revenue,
                   (i % 8 + 1)::BIGINT AS quantity, 'sku-' || (i % 500) AS sku
            FROM range({n}) t(i)"""
    )


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# -- server -------------------------------------------------------------------------------------
class Server:
    """LocalSegment in its own process; counts read from GET /_local/stats."""

    def __init__(self, flaky: float = 0.0, record: str = "scan"):
        args = [PY, "-m", "cmdseg_nb.testing", "--write-key", KEY, "--record", record,
                "--max-seconds", "3600"]
        if flaky:
            args += ["--flaky", str(flaky), "--seed", "1"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
        self.url = self.proc.stdout.readline().strip()  # first line: the URL
        if not self.url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"LocalSegment did not start: {self.url!r}")

    def stats(self) -> dict:
        import httpx

        return httpx.get(f"{self.url}/_local/stats", timeout=60).json()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


# -- contenders (each runs in a fresh child process) --------------------------------------------
def child_cmdseg(url: str, n: int, source: str) -> dict:
    sys.path.insert(0, str(ROOT))
    from cmdseg_nb._messages import prepare
    from cmdseg_nb._send import send

    data = frame(n) if source == "pandas" else relation(n)
    t = time.perf_counter()
    result = send(data, write_key=KEY, endpoint=url, progress=False, backoff=0.05)
    seconds = time.perf_counter() - t
    peak = peak_mb()  # of the send alone: measured before the preparation-only timing below
    prep = None
    if source == "pandas":
        t = time.perf_counter()
        prepare(data)
        prep = n / (time.perf_counter() - t)
    return {"prep": prep, "seconds": seconds, "sent": result.sent, "failed": result.failed,
            "requests": result.requests, "retries": result.retries,
            "bytes_sent": result.bytes_sent, "bytes_uncompressed": result.bytes_uncompressed,
            "peak_mb": peak}


def child_official(url: str, n: int, settings: dict) -> dict:
    df = frame(n)
    try:
        from segment.analytics import Client
    except ImportError:
        return child_naive(url, n, df)
    cols = [df[c].tolist() for c in ("user_id", "event", "timestamp", "order_id", "revenue",
                                     "quantity", "sku")]
    # preparation: the library's own track() (validation, message building) without sending
    dry = Client(KEY, host=url, send=False)
    t = time.perf_counter()
    for uid, ev, ts, oid, rev, qty, sku in zip(*cols):
        dry.track(user_id=uid, event=ev, timestamp=ts.to_pydatetime(),
                  properties={"order_id": oid, "revenue": rev, "quantity": qty, "sku": sku})
    prep = n / (time.perf_counter() - t)
    client = Client(KEY, host=url, **settings)
    dropped = 0
    t = time.perf_counter()
    for uid, ev, ts, oid, rev, qty, sku in zip(*cols):
        ok, _ = client.track(user_id=uid, event=ev, timestamp=ts.to_pydatetime(),
                             properties={"order_id": oid, "revenue": rev, "quantity": qty,
                                         "sku": sku})
        dropped += not ok
    client.flush()
    seconds = time.perf_counter() - t
    client.shutdown()
    return {"prep": prep, "seconds": seconds, "dropped_at_enqueue": dropped,
            "peak_mb": peak_mb()}


def child_naive(url: str, n: int, df=None) -> dict:
    """Stand-in when the official library is not installed: json.dumps per row, 100 per POST."""
    import httpx

    df = frame(n) if df is None else df
    t = time.perf_counter()
    rows = df.to_dict("records")
    bodies = [json.dumps({"type": "track", "userId": r["user_id"], "event": r["event"],
                          "timestamp": r["timestamp"].isoformat(),
                          "properties": {k: r[k] for k in ("order_id", "revenue", "sku")}
                          | {"quantity": int(r["quantity"])}}) for r in rows]
    prep = n / (time.perf_counter() - t)
    auth = httpx.BasicAuth(KEY, "")
    t = time.perf_counter()
    with httpx.Client(auth=auth, timeout=30) as client:
        for i in range(0, n, 100):
            client.post(f"{url}/v1/batch", content=('{"batch":[' + ",".join(bodies[i:i + 100])
                                                    + "]}").encode())
    return {"prep": prep, "seconds": time.perf_counter() - t, "dropped_at_enqueue": 0,
            "peak_mb": peak_mb(), "naive": True}


def run_child(kind: str, url: str, n: int, extra: dict | None = None) -> dict:
    payload = json.dumps({"kind": kind, "url": url, "n": n, "extra": extra or {}})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([PY, __file__, "--child", payload], capture_output=True, text=True,
                         env=env, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measured(kind: str, n: int, extra: dict | None = None, flaky: float = 0.0,
             record: str = "scan") -> dict:
    """Run one contender against a fresh server; add server-side counts."""
    server = Server(flaky, record)
    try:
        res = run_child(kind, server.url, n, extra)
        st = server.stats()
    finally:
        server.close()
    res["received"] = st["unique_ids"]
    res["duplicates"] = st["duplicates"]
    res["lost"] = n - st["unique_ids"]
    res["requests_seen"] = st["requests"]
    res["statuses"] = st["statuses"]
    res["e2e"] = st["unique_ids"] / res["seconds"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--memory", type=int, default=0,
                    help="also send this many messages from a DuckDB relation, for peak memory")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        job = json.loads(args.child)
        if job["kind"] == "cmdseg":
            res = child_cmdseg(job["url"], job["n"], job["extra"].get("source", "pandas"))
        else:
            res = child_official(job["url"], job["n"], job["extra"])
        print(json.dumps(res))
        return

    n = min(args.n, 2_000_000)  # bounded
    try:
        import segment.analytics  # noqa: F401

        peer = "segment-analytics-python"
    except ImportError:
        peer = "naive json.dumps per row (official library not installed)"
    print(f"{n:,} track messages to LocalSegment (own process); peer: {peer}\n")
    rows = []
    ours = measured("cmdseg", n)
    rows.append(("cmdseg_nb send() defaults (gzip, 4 in flight)", ours))
    defaults = measured("official", n, {})
    rows.append(("official, defaults", defaults))
    best = None
    for settings in ({"max_queue_size": n + 1, "upload_size": 100},
                     {"max_queue_size": n + 1, "upload_size": 1000},
                     {"max_queue_size": n + 1, "upload_size": 2500},
                     {"max_queue_size": n + 1, "upload_size": 1000, "thread": 4},
                     {"max_queue_size": n + 1, "upload_size": 1000, "gzip": True}):
        res = measured("official", n, settings)
        label = "official, " + ", ".join(f"{k}={v}" for k, v in settings.items()
                                         if k != "max_queue_size") + ", queue=n+1"
        rows.append((label, res))
        if res["lost"] == 0 and (best is None or res["e2e"] > best[1]["e2e"]):
            best = (label, res)
    again = measured("cmdseg", n)  # once more at the end: the machine may be shared
    rows.append(("cmdseg_nb send() defaults, run again", again))
    if again["e2e"] > ours["e2e"]:
        ours = again
    parsed = measured("cmdseg", n, record="ids")
    rows.append(("cmdseg_nb defaults, server JSON-parses every message", parsed))
    flaky = measured("cmdseg", n, flaky=0.1, record="ids")
    rows.append(("cmdseg_nb, 10% of requests answered 503 (server parses)", flaky))

    head = (f"{'contender':<58} {'prep ev/s':>10} {'e2e ev/s':>10} {'lost':>8} {'dup ids':>8}"
            f" {'peak MB':>8}")
    print(head)
    print("-" * len(head))
    for label, r in rows:
        prep = f"{r['prep']:,.0f}" if r.get("prep") else "-"
        print(f"{label:<58} {prep:>10} {r['e2e']:>10,.0f} {r['lost']:>8,} {r['duplicates']:>8,}"
              f" {r['peak_mb']:>8,.0f}")
    print()
    if best is not None:
        print(f"official best (0 lost): {best[0]}")
        print(f"ratio end to end, cmdseg_nb (better of 2 runs) / official best: "
              f"{ours['e2e'] / best[1]['e2e']:.1f}x")
        print(f"ratio preparation, cmdseg_nb / official track(): "
              f"{ours['prep'] / best[1]['prep']:.1f}x")
    print(f"ratio end to end, cmdseg_nb / official defaults: {ours['e2e'] / defaults['e2e']:.1f}x"
          f" (defaults lost {defaults['lost']:,} of {n:,}; "
          f"{defaults.get('dropped_at_enqueue', 0):,} refused by a full queue)")
    print(f"cmdseg_nb bytes: {ours['bytes_sent']:,} on the wire, {ours['bytes_uncompressed']:,} "
          f"uncompressed, {ours['requests']:,} requests")
    print(f"10% transient failures: {flaky['retries']:,} retries, lost {flaky['lost']:,}, "
          f"duplicated ids {flaky['duplicates']:,}, statuses {flaky['statuses']}")
    if args.memory:
        m = min(args.memory, 5_000_000)
        big = measured("cmdseg", m, {"source": "duckdb"})
        print(f"\n{m:,} messages from a DuckDB relation: {big['e2e']:,.0f} events/s end to end, "
              f"peak memory {big['peak_mb']:,.0f} MB, lost {big['lost']:,}, "
              f"duplicated ids {big['duplicates']:,}")


if __name__ == "__main__":
    main()
