"""Generate Segment-like events at any size: raw NDJSON.gz and a warehouse layout in Parquet.

    python benchmarks/generate.py --events 1000000 --out out/bench/1m [--seed 7] [--users N]
        [--formats parquet,ndjson]

Seeded and bounded (the number of rows written is ``--events`` plus the duplicates, about 1%).
The same events are written twice:

* ``<out>/raw/part-NNNN.json.gz``: Segment S3-archive style, one full event per line
  (``type, messageId, userId, anonymousId, event|name, traits|properties, context, timestamp,
  originalTimestamp, sentAt, receivedAt``). Trait keys include spaces and non-ASCII characters,
  nested objects, arrays and explicit nulls.
* ``<out>/warehouse/<table>.parquet``: Segment's warehouse connector layout: ``identifies``
  (14-17 trait columns, nested objects flattened with ``_``, arrays as JSON text, names
  snake_cased with non-ASCII dropped, nulls as NULL cells), ``tracks`` (common columns only),
  one table per track event name (50 names, properties as columns) and ``pages``.

Features: ~20% identify / ~60% track / ~20% page; about 5% of users are anonymous-only (no
``userId`` on any event); ~1% duplicated rows (same ``id``, received later, or at the same time
with different content: ties); events of one user sharing a timestamp (ties broken by message
id); rows shuffled inside each chunk (out of order).
"""
from __future__ import annotations

import argparse
import functools
import gzip
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

CHUNK = 500_000
N_EVENT_NAMES = 50
PLANS = np.array(["free", "starter", "pro", "enterprise", "trial"])
CITIES = np.array(["Paris", "Zürich", "São Paulo", "Berlin", "New York", "Tokyo", "Lagos"])
COUNTRIES = np.array(["FR", "CH", "BR", "DE", "US", "JP", "NG"])
COLORS = np.array(["red", "green", "blue", "black", "white"])
EVENT_NAMES = ["Plan Changed", "Order Completed", "Extension Installed"] + [
    f"Feature {i:02d} Used" for i in range(N_EVENT_NAMES - 3)]
PAGE_NAMES = np.array(["home", "pricing", "docs", "signup", "settings", "billing"])
EPOCH = 1_700_000_000_000  # ms


@functools.lru_cache(maxsize=4096)
def snake(name: str) -> str:
    """Segment's warehouse column naming, simplified: camelCase and spaces to snake_case, non-ASCII dropped."""
    s = name.encode("ascii", "ignore").decode()
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    s = re.sub(r"[^A-Za-z0-9]+", "_", s).strip("_").lower()
    return s


def iso(ms: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms", timezone="UTC")


def _chunk(rng: np.random.Generator, start: int, n: int, n_users: int) -> dict:
    """Columns of ``n`` events (numpy arrays), with ids ``start..start+n``."""
    kind = rng.choice(3, size=n, p=[0.2, 0.6, 0.2])  # 0 identify, 1 track, 2 page
    user = rng.integers(0, n_users, size=n)
    anon_only = (user % 20) == 19  # ~5% of users never identified
    ts = EPOCH + rng.integers(0, 180 * 86_400_000, size=n)
    # ties: ~2% of events share a round timestamp with other events of the same user
    tie = rng.random(n) < 0.02
    ts = np.where(tie, EPOCH + (user % 97) * 3_600_000, ts)
    lag = rng.integers(0, 5_000, size=n)
    late = rng.random(n) < 0.01  # historical imports received months later
    rat = ts + lag + np.where(late, 90 * 86_400_000, 0)
    ids = np.char.add("m", np.char.zfill((np.arange(start, start + n)).astype(str), 10))
    return dict(kind=kind, user=user, anon_only=anon_only, ts=ts, rat=rat, ids=ids,
                plan=rng.integers(0, len(PLANS), size=n), seats=rng.integers(1, 500, size=n),
                mrr=np.round(rng.random(n) * 1000, 2), admin=rng.random(n) < 0.3,
                city=rng.integers(0, len(CITIES), size=n), color=rng.integers(0, len(COLORS), size=n),
                visits=rng.integers(0, 10_000, size=n), score=rng.random(n),
                nullmask=rng.random((n, 6)) < 0.1, ev=_event_index(rng, n),
                amount=np.round(rng.random(n) * 300, 2), qty=rng.integers(1, 9, size=n),
                page=rng.integers(0, len(PAGE_NAMES), size=n), ip=rng.integers(0, 2**32, size=n))


def _event_index(rng, n):
    # a Zipf-like spread over the 50 names; Plan Changed ~5%
    p = 1.0 / np.arange(1, N_EVENT_NAMES + 1) ** 0.6
    p /= p.sum()
    return rng.choice(N_EVENT_NAMES, size=n, p=p)


def _duplicates(rng, c: dict) -> np.ndarray:
    """Row indices to write twice (~1%); a tenth of them with the same receivedAt (a tie)."""
    n = len(c["ids"])
    return np.nonzero(rng.random(n) < 0.01)[0]


def raw_events(c: dict, idx: np.ndarray) -> list[dict]:
    out = []
    ts_iso, rat_iso = iso(c["ts"][idx]), iso(c["rat"][idx])
    for j, i in enumerate(idx):
        u = int(c["user"][i])
        uid = None if c["anon_only"][i] else f"user-{u:07d}"
        nm = c["nullmask"][i]
        e = {"messageId": str(c["ids"][i]), "anonymousId": f"anon-{u:07d}", "userId": uid,
             "timestamp": str(ts_iso[j]), "originalTimestamp": str(ts_iso[j]),
             "sentAt": str(ts_iso[j]), "receivedAt": str(rat_iso[j]),
             "context": {"ip": f"10.{(int(c['ip'][i]) >> 16) & 255}.{(int(c['ip'][i]) >> 8) & 255}.{int(c['ip'][i]) & 255}",
                         "library": {"name": "analytics.js", "version": "4.1.0"},
                         "page": {"url": f"https://app.example.com/{PAGE_NAMES[c['page'][i]]}"}}}
        if uid is None:
            del e["userId"]
        k = c["kind"][i]
        if k == 0:
            e["type"] = "identify"
            city = int(c["city"][i])
            traits = {
                "email": f"user{u}@example.com", "firstName": f"Name{u % 1000}",
                "plan": str(PLANS[c["plan"][i]]), "seats": int(c["seats"][i]),
                "mrr": float(c["mrr"][i]), "isAdmin": bool(c["admin"][i]),
                "address": {"city": str(CITIES[city]), "country": str(COUNTRIES[city]),
                            "street": f"{u % 300} Main St"},
                "favorite color": str(COLORS[c["color"][i]]),
                "café visits": int(c["visits"][i]), "score": float(c["score"][i]),
                "tags": ["beta", str(PLANS[c["plan"][i]])] if c["admin"][i] else ["basic"],
                "company": {"name": f"Company {u % 5000}", "size": int(c["seats"][i]) * 3},
                "createdAt": str(iso(np.array([EPOCH - u * 1000]))[0]),
                "locale": "fr-FR" if city == 0 else "en-US",
            }
            for col, key in enumerate(("plan", "seats", "mrr", "favorite color", "score", "locale")):
                if nm[col]:
                    traits[key] = None  # an explicit null clears the property
            if nm[0] and nm[1]:
                del traits["plan"]  # and sometimes the key is just not sent
            e["traits"] = traits
        elif k == 1:
            name = EVENT_NAMES[int(c["ev"][i])]
            e["type"] = "track"
            e["event"] = name
            props = {"amount": float(c["amount"][i]), "quantity": int(c["qty"][i]),
                     "item": f"sku-{int(c['qty'][i]) * 7}", "source page": str(PAGE_NAMES[c["page"][i]])}
            if name == "Plan Changed":
                props["plan"] = str(PLANS[c["plan"][i]])
                props["previous plan"] = str(PLANS[(c["plan"][i] + 1) % len(PLANS)])
            if nm[2]:
                props["amount"] = None
            e["properties"] = props
        else:
            e["type"] = "page"
            pn = str(PAGE_NAMES[c["page"][i]])
            e["name"] = pn
            e["properties"] = {"path": f"/{pn}", "url": f"https://app.example.com/{pn}",
                               "title": pn.title(), "referrer": None if nm[3] else "https://google.com"}
        out.append(e)
    return out


def _flatten(obj: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in obj.items():
        name = _col(prefix, k)
        if isinstance(v, dict):
            out.update(_flatten(v, name))
        elif isinstance(v, list):
            out[name] = orjson.dumps(v).decode()
        else:
            out[name] = v
    return out


@functools.lru_cache(maxsize=4096)
def _col(prefix: str, key: str) -> str:
    return f"{prefix}_{snake(key)}" if prefix else snake(key)


_SYS = ("id", "user_id", "anonymous_id", "received_at", "sent_at", "timestamp",
        "original_timestamp", "uuid_ts")


def warehouse_rows(events: list[dict]) -> dict[str, list[dict]]:
    """Segment's warehouse rows per table for raw events (tracks are written twice)."""
    tables: dict[str, list[dict]] = {}
    for e in events:
        row = {"id": e["messageId"], "user_id": e.get("userId"), "anonymous_id": e["anonymousId"],
               "received_at": e["receivedAt"], "sent_at": e["sentAt"], "timestamp": e["timestamp"],
               "original_timestamp": e["originalTimestamp"], "uuid_ts": e["receivedAt"]}
        row.update({f"context_{k}": v for k, v in _flatten(e["context"]).items()})
        if e["type"] == "identify":
            row.update(_flatten(e["traits"]))
            tables.setdefault("identifies", []).append(row)
        elif e["type"] == "track":
            slug = snake(e["event"])
            row.update({"event": slug, "event_text": e["event"]})
            tables.setdefault("tracks", []).append(dict(row))
            row.update(_flatten(e["properties"]))
            tables.setdefault(slug, []).append(row)
        else:
            row["name"] = e["name"]
            row.update(_flatten(e["properties"]))
            tables.setdefault("pages", []).append(row)
    return tables


_TS_COLS = ("received_at", "sent_at", "timestamp", "original_timestamp", "uuid_ts")


class _ParquetSink:
    """One ParquetWriter per table; columns unified over the table's known columns."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.schemas: dict[str, pa.Schema] = {}

    def write(self, table: str, rows: list[dict]) -> None:
        cols: dict[str, list] = {}
        names = list(dict.fromkeys(k for r in rows[:2000] for k in r))
        for r in rows:
            for k in r:
                if k not in cols and k not in names:
                    names.append(k)
        if table in self.schemas:
            names = self.schemas[table].names
        for k in names:
            cols[k] = [r.get(k) for r in rows]
        arrays = {}
        for k, v in cols.items():
            if k in _TS_COLS:
                arrays[k] = pa.array(np.array([x.rstrip("Z") for x in v], dtype="datetime64[ms]")).cast(
                    pa.timestamp("ms", tz="UTC"))
            else:
                arrays[k] = pa.array(v)
        t = pa.table(arrays)
        if table not in self.writers:
            schema = pa.schema([pa.field(f.name, pa.string() if pa.types.is_null(f.type) else f.type)
                                for f in t.schema])
            self.schemas[table] = schema
            self.writers[table] = pq.ParquetWriter(self.folder / f"{table}.parquet", schema,
                                                   compression="zstd")
        self.writers[table].write_table(t.cast(self.schemas[table]))

    def close(self) -> None:
        for w in self.writers.values():
            w.close()


def generate(n_events: int, out: str | os.PathLike, *, seed: int = 7,
             formats: tuple[str, ...] = ("parquet", "ndjson"), chunk: int = CHUNK,
             n_users: int | None = None) -> dict:
    """Write ``n_events`` events (plus ~1% duplicates) under ``out``; returns counts per table."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    n_users = n_users or max(10, n_events // 40)
    raw_dir, wh_dir = out / "raw", out / "warehouse"
    if "ndjson" in formats:
        raw_dir.mkdir(parents=True, exist_ok=True)
    if "parquet" in formats:
        wh_dir.mkdir(parents=True, exist_ok=True)
    sink = _ParquetSink(wh_dir) if "parquet" in formats else None
    counts: dict[str, int] = {}
    n_chunks = (n_events + chunk - 1) // chunk
    for ci in range(n_chunks):  # bounded: one pass per chunk
        start = ci * chunk
        n = min(chunk, n_events - start)
        c = _chunk(rng, start, n, n_users)
        idx = np.arange(n)
        dup = _duplicates(rng, c)
        events = raw_events(c, idx)
        copies = []
        for d in dup:
            e = orjson.loads(orjson.dumps(events[d]))
            if rng.random() < 0.1:  # same receivedAt, different content: a de-duplication tie
                e["context"]["ip"] = "10.0.0.1"
            else:
                e["receivedAt"] = str(iso(np.array([c["rat"][d] + 86_400_000]))[0])
            copies.append(e)
        events.extend(copies)
        order = rng.permutation(len(events))  # out-of-order rows
        events = [events[i] for i in order]
        counts["events"] = counts.get("events", 0) + len(events)
        if "ndjson" in formats:
            with gzip.open(raw_dir / f"part-{ci:04d}.json.gz", "wb", compresslevel=1) as fh:
                fh.write(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
        if sink is not None:
            for table, rows in warehouse_rows(events).items():
                sink.write(table, rows)
                counts[table] = counts.get(table, 0) + len(rows)
    if sink is not None:
        sink.close()
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--formats", default="parquet,ndjson")
    ap.add_argument("--users", type=int, default=None,
                    help="distinct users (default: events / 40)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    counts = generate(args.events, args.out, seed=args.seed, formats=tuple(args.formats.split(",")),
                      n_users=args.users)
    print(f"wrote {counts['events']:,} events to {args.out} in {time.perf_counter() - t0:.1f}s "
          f"({len(counts) - 1} warehouse tables)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
