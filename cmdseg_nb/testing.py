"""A local stand-in for Segment's HTTP Tracking API, for tests, notebooks, demos and benchmarks.

:class:`LocalSegment` is a real HTTP server on ``127.0.0.1`` (an ephemeral port) that speaks
``POST /v1/batch`` and ``GET /v1/projects/<writeKey>/settings`` the way the spec in
``/work/shared/spec/segment-http-api.md`` describes Segment, and records what it received.
Scripted replies (:class:`Reply`) inject faults per request: a status, a ``Retry-After``, a
delay, a dropped connection, "stored but the reply times out", a keep-alive connection closed
after answering (stale for the client's next request); ``flaky=`` makes a share of requests
fail transiently at random. ``python -m cmdseg_nb.testing`` serves one in its own process
(benchmarks), with counts at ``GET /_local/stats``. Nothing in the package imports this module
except the CLI demo.

The HTTP request handler and :class:`ReceivedRequest` (the record it keeps of each request)
are in :mod:`cmdseg_nb._local_segment_http`; both names stay importable from here.
"""
from __future__ import annotations

import argparse
import base64
import collections
import dataclasses
import http.server
import random
import re
import socket
import threading
from collections.abc import Iterable
from typing import Any

import orjson

from ._local_segment_http import (
    _SINGLE,
    _TYPES,
    MAX_BODY_BYTES,
    ReceivedRequest,
    _Handler,
    _Rejected,
)

__all__ = ["LocalSegment", "ReceivedRequest", "Reply"]

MAX_MESSAGE_BYTES = 32_768  # Segment: 32 KB per message
MAX_MESSAGES = 2_500  # Segment: messages per batch (Segment itself answers 200 and drops them)
MAX_DELAY = 60.0
_MESSAGE_ID = re.compile(rb'"messageId"\s*:\s*"([^"\\]*)"')  # record="scan"
_API_HOSTS = {"us": "api.segment.io/v1", "eu": "events.eu1.segmentapis.com/v1"}


@dataclasses.dataclass(frozen=True)
class Reply:
    """One scripted answer to the next ``/v1/batch`` request.

    Parameters
    ----------
    status : int
        HTTP status to answer. With 200 the request is also checked and stored as usual.
    retry_after : float | None
        ``Retry-After`` header value, in seconds.
    delay : float
        Seconds to wait before answering (at most 60). Longer than the client's timeout, it
        makes the client see a read timeout.
    message : str | None
        Message in the JSON body of a non-200 answer.
    store : bool | None
        Keep the messages of this request. Default: only for 2xx. ``store=True`` with a
        5xx or a long delay reproduces "the server stored it but the client saw a failure".
    disconnect : bool
        Close the connection without answering (the client sees a connection error).
    close_after : bool
        Answer normally, keep-alive and all, then close the connection: the client's next
        request on it finds a stale connection.
    """

    status: int = 200
    retry_after: float | None = None
    delay: float = 0.0
    message: str | None = None
    store: bool | None = None
    disconnect: bool = False
    close_after: bool = False

    @classmethod
    def stored_then_timeout(cls, delay: float = 2.0) -> Reply:
        """Store the batch, then answer only after ``delay`` seconds (set the client's timeout
        below it): the client sees a timeout although the server has the messages."""
        return cls(200, delay=delay, store=True)


class LocalSegment:
    """A loopback Segment: ``POST /v1/batch`` and the settings endpoint, on 127.0.0.1.

    Parameters
    ----------
    write_key : str
        The only write key it accepts.
    region : {"us", "eu"}
        Region reported by the settings endpoint (``apiHost``).
    record : {"all", "ids", "scan"}
        ``"all"`` keeps every message and request body; ``"ids"`` keeps only messageIds and
        request metadata (flat memory for benchmarks: ``messages`` is then empty). ``"scan"``
        is ``"ids"`` for throughput benchmarks on a shared machine: a Basic-auth ``/v1/batch``
        request is checked for auth, gzip and the 500,000-byte limit, and its messageIds are
        found by a byte scan for ``"messageId":"..."`` instead of a JSON parse (~10x less CPU
        taken from the sender being measured; the JSON itself is not validated).
    flaky : float
        Share (0..1) of well-formed requests answered 503 without storing, at random, when no
        scripted reply is queued.
    seed : int | None
        Seed of the ``flaky`` draws.

    Attributes
    ----------
    url : str
        Base URL, e.g. ``http://127.0.0.1:54321``; pass it as ``send(endpoint=...)``.
    messages : list[dict]
        Copy of every stored message, in order of arrival.
    requests : list[ReceivedRequest]
        Copy of every request to a ``/v1/`` tracking path, in order of arrival.

    Notes
    -----
    Batch-level ``context``/``integrations`` are merged into each stored message, as Segment
    does. Like Segment it checks HTTP Basic auth (``base64(writeKey + ":")``, or a ``writeKey`` in
    the body), accepts ``Content-Encoding: gzip``, answers ``{"success": true}`` on 200 and 400
    for invalid JSON, a body over 500,000 bytes uncompressed, more than 2,500 messages, a
    message over 32,768 bytes (measured as compact JSON re-serialized here, which matches
    cmdseg_nb's own serialization) or a message without a known ``type`` or without both
    ``userId`` and ``anonymousId``. **Stricter than Segment, on purpose:** a wrong write key
    gets 401 (Segment answers 200 and silently drops the events), and more than 2,500
    messages get 400 (Segment answers 200 and drops them), so tests can see these mistakes.

    ``GET /v1/projects/<key>/settings`` answers like Segment's settings CDN: JSON with
    ``integrations["Segment.io"]`` for the known key, 404 otherwise.

    Examples
    --------
    >>> with LocalSegment("wk_test") as seg:                       # doctest: +SKIP
    ...     seg.script([Reply(429, retry_after=1), Reply(200)])
    ...     send(df, write_key="wk_test", endpoint=seg.url)
    ...     assert len(seg.messages) == len(df)
    """

    def __init__(self, write_key: str, *, region: str = "us", record: str = "all",
                 flaky: float = 0.0, seed: int | None = None):
        if region not in _API_HOSTS:
            raise ValueError(f"region must be one of {sorted(_API_HOSTS)}, not {region!r}")
        if record not in ("all", "ids", "scan"):
            raise ValueError(f"record must be 'all', 'ids' or 'scan', not {record!r}")
        if not 0.0 <= flaky < 1.0:
            raise ValueError("flaky must be in [0, 1)")
        self._key = write_key
        self.region = region
        self.record = record
        self.flaky = flaky
        self._random = random.Random(seed)
        self._ids: list[str] = []
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._messages: list[dict] = []
        self._requests: list[ReceivedRequest] = []
        self._script: collections.deque[Reply] = collections.deque()
        self._stopping = threading.Event()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        key = f"{self._key[:4]}…{self._key[-4:]}" if len(self._key) >= 12 else f"{self._key[:1]}…"
        where = self.url if self._server else "not started"
        return f"LocalSegment({key}, {where}, {len(self._messages)} messages)"

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> LocalSegment:
        """Start serving on an ephemeral port of 127.0.0.1 (in a daemon thread)."""
        if self._server is not None:
            return self
        handler = type("_Handler", (_Handler,), {"segment": self})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        self._stopping.clear()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name="LocalSegment", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; recorded messages stay readable."""
        if self._server is None:
            return
        self._stopping.set()  # wakes scripted delays
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> LocalSegment:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("LocalSegment is not running; use it in a `with` block or call start()")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- what it saw -----------------------------------------------------------------------
    @property
    def messages(self) -> list[dict]:
        with self._lock:
            return list(self._messages)

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def message_ids(self) -> list[str]:
        """messageId of every stored message, in order of arrival (kept in both modes)."""
        with self._lock:
            ids = list(self._ids)
        return [i.decode() if isinstance(i, bytes) else i for i in ids]

    def stats(self) -> dict[str, Any]:
        """Counts: stored ``messages``, ``unique_ids``, ``duplicates`` (stored more than once),
        ``requests`` and requests per answered ``statuses``."""
        with self._lock:
            ids = list(self._ids)
            statuses = collections.Counter(str(r.status) for r in self._requests)
            n_requests = len(self._requests)
        unique = len(set(ids))
        return {"messages": len(ids), "unique_ids": unique, "duplicates": len(ids) - unique,
                "requests": n_requests, "statuses": dict(statuses)}

    def close_idle_connections(self) -> int:
        """Close every open client connection now (as a server's idle timeout does)."""
        with self._lock:
            socks = list(self._sockets)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return len(socks)

    def reset(self) -> None:
        """Forget received messages, requests and unused scripted replies."""
        with self._lock:
            self._messages.clear()
            self._requests.clear()
            self._script.clear()
            self._ids.clear()

    def script(self, replies: Iterable[Reply | int]) -> None:
        """Queue answers for the next ``/v1/`` tracking requests, one per request, in order.

        An ``int`` is short for ``Reply(status)``. When the queue is empty, requests get the
        normal behaviour.
        """
        items = [Reply(r) if isinstance(r, int) else r for r in replies]
        for r in items:
            if not isinstance(r, Reply):
                raise TypeError(f"script takes Reply objects or status codes, not {r!r}")
            if not 0 <= r.delay <= MAX_DELAY:
                raise ValueError(f"delay must be 0..{MAX_DELAY} seconds")
        with self._lock:
            self._script.extend(items)

    # -- used by the handler ---------------------------------------------------------------
    def _next_reply(self) -> Reply | None:
        with self._lock:
            if self._script:
                return self._script.popleft()
            if self.flaky and self._random.random() < self.flaky:
                return Reply(503, message="flaky: transient failure")
            return None

    def _record(self, request: ReceivedRequest, messages: list | None) -> None:
        if self.record != "all":
            request = dataclasses.replace(request, body=b"")
        with self._lock:
            self._requests.append(request)
            if messages:
                if self.record == "all":
                    self._messages.extend(messages)
                if isinstance(messages[0], bytes):  # record="scan": the ids themselves
                    self._ids.extend(messages)
                else:
                    self._ids.extend(str(m.get("messageId")) for m in messages)

    def _check_auth(self, header: str | None, body_key: Any) -> None:
        if header:
            scheme, _, value = header.partition(" ")
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                raise _Rejected(401, "Invalid Authorization header") from None
            user, sep, _ = decoded.partition(":")
            if scheme.lower() != "basic" or not sep:
                raise _Rejected(401, "Authorization must be Basic base64(writeKey + ':')")
            if user != self._key:
                raise _Rejected(401, "Invalid write key")
            return
        if body_key is None:
            raise _Rejected(401, "No write key: send Basic auth or a writeKey field")
        if body_key != self._key:
            raise _Rejected(401, "Invalid write key")

    def _settings(self, key: str) -> tuple[int, bytes]:
        if key != self._key:
            return 404, orjson.dumps({"message": "Not Found"})
        body = {
            "integrations": {
                "Segment.io": {"apiKey": key, "apiHost": _API_HOSTS[self.region]}
            }
        }
        return 200, orjson.dumps(body)

    def _check(self, path: str, body: bytes, auth: str | None) -> list:
        if len(body) > MAX_BODY_BYTES:
            raise _Rejected(400, "Exceed payload limit")
        if self.record == "scan" and auth and path == "/v1/batch":
            self._check_auth(auth, None)
            ids = _MESSAGE_ID.findall(body)
            if len(ids) > MAX_MESSAGES:
                raise _Rejected(400, f"More than {MAX_MESSAGES} messages in one batch")
            return ids
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _Rejected(400, "Invalid JSON") from None
        if not isinstance(data, dict):
            raise _Rejected(400, "Body must be a JSON object")
        self._check_auth(auth, data.get("writeKey"))
        if path == "/v1/batch":
            batch = data.get("batch")
            if not isinstance(batch, list):
                raise _Rejected(400, "batch must be an array")
        else:
            batch = [{"type": _SINGLE[path], **data}]
        if len(batch) > MAX_MESSAGES:
            raise _Rejected(400, f"More than {MAX_MESSAGES} messages in one batch")
        small = len(body) <= MAX_MESSAGE_BYTES  # then no message in it can be too big
        for i, msg in enumerate(batch):
            if not isinstance(msg, dict):
                raise _Rejected(400, f"batch[{i}] is not an object")
            if not small and len(orjson.dumps(msg)) > MAX_MESSAGE_BYTES:
                raise _Rejected(400, f"batch[{i}]: message exceeds {MAX_MESSAGE_BYTES} bytes")
            if msg.get("type") not in _TYPES:
                raise _Rejected(400, f"batch[{i}]: invalid type {msg.get('type')!r}")
            if not msg.get("userId") and not msg.get("anonymousId"):
                raise _Rejected(400, f"batch[{i}]: userId or anonymousId is required")
        # Like Segment, batch-level context/integrations merge into every message (the
        # message's own keys win).
        shared = {k: data[k] for k in ("context", "integrations")
                  if path == "/v1/batch" and isinstance(data.get(k), dict)}
        if shared:
            batch = [{**msg, **{k: {**v, **(msg.get(k) or {})} for k, v in shared.items()}}
                     for msg in batch]
        return batch

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(min(seconds, MAX_DELAY))


def main(argv: list[str] | None = None) -> None:
    """Serve a LocalSegment in this process until killed; print its URL on the first line."""
    parser = argparse.ArgumentParser(prog="python -m cmdseg_nb.testing")
    parser.add_argument("--write-key", required=True)
    parser.add_argument("--record", default="ids", choices=["all", "ids", "scan"])
    parser.add_argument("--flaky", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args(argv)
    seg = LocalSegment(args.write_key, record=args.record, flaky=args.flaky, seed=args.seed)
    with seg:
        print(seg.url, flush=True)
        seg._stopping.wait(args.max_seconds)  # bounded: a forgotten server ends by itself


if __name__ == "__main__":
    main()
