"""The HTTP side of :class:`cmdseg_nb.testing.LocalSegment`: request handler and request record.

:class:`_Handler` serves each connection the way ``/work/shared/spec/segment-http-api.md``
describes Segment: ``GET /v1/projects/<writeKey>/settings``, ``POST /v1/batch`` and the
single-message paths (``/v1/identify``, ``/v1/track``, ...), gunzipping a body up to
``MAX_BODY_BYTES`` (Segment's 500 KB request limit) and refusing unread a body over
``MAX_WIRE_BYTES``; plus ``GET /_local/stats``. The checks themselves (auth, JSON, batch rules)
and the scripted replies are LocalSegment's: the handler reads the request, asks it, applies
the reply (status, delay, dropped or closed connection) and records a :class:`ReceivedRequest`.
Only :mod:`cmdseg_nb.testing` imports this module; it re-exports :class:`ReceivedRequest`.
"""
from __future__ import annotations

import dataclasses
import http.server
import socket
import time
import zlib
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from .testing import LocalSegment

__all__ = ["ReceivedRequest"]

MAX_BODY_BYTES = 500_000  # Segment: 500 KB per request (uncompressed)
MAX_WIRE_BYTES = 8_000_000  # refuse to read bigger request bodies at all
_TYPES = {"identify", "track", "page", "screen", "group", "alias"}
_SINGLE = {f"/v1/{t}": t for t in _TYPES}


@dataclasses.dataclass(frozen=True)
class ReceivedRequest:
    """One request as LocalSegment saw it.

    Attributes
    ----------
    path : str
    status : int
        Status answered (0 when the connection was dropped on purpose).
    body : bytes
        Request body after gunzip (the exact JSON bytes the client built).
    gzip : bool
        Whether it came with ``Content-Encoding: gzip``.
    wire_bytes : int
        Body size on the wire.
    message_count : int
        Messages in the batch (0 when unreadable).
    received_at : float
        ``time.monotonic()`` when the request arrived.
    error : str | None
        Why it was rejected.
    """

    path: str
    status: int
    body: bytes
    gzip: bool
    wire_bytes: int
    message_count: int
    received_at: float
    error: str | None = None


class _Rejected(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _gunzip(raw: bytes) -> bytes:
    """Decompress at most MAX_BODY_BYTES + 1 bytes (a larger body is over the limit anyway)."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(raw, MAX_BODY_BYTES + 1)
    except zlib.error as exc:
        raise _Rejected(400, f"Invalid gzip body: {exc}") from None
    if len(out) > MAX_BODY_BYTES:
        raise _Rejected(400, "Exceed payload limit")
    return out


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    segment: LocalSegment  # set on the subclass made by LocalSegment.start

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        # No Nagle delay: the status line and the body are separate writes, and Nagle plus the
        # client's delayed ACK would hold every answer back ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.segment._lock:
            self.segment._sockets.add(self.connection)

    def finish(self) -> None:
        with self.segment._lock:
            self.segment._sockets.discard(self.connection)
        super().finish()

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            self.close_connection = True

    def do_GET(self) -> None:
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts == ["_local", "stats"]:
            self._answer(200, orjson.dumps(self.segment.stats()))
            return
        if len(parts) == 4 and parts[:2] == ["v1", "projects"] and parts[3] == "settings":
            status, body = self.segment._settings(parts[2])
        else:
            status, body = 404, orjson.dumps({"message": "Not Found"})
        self._answer(status, body)

    def do_POST(self) -> None:
        seg = self.segment
        arrived = time.monotonic()
        path = self.path.split("?")[0].rstrip("/")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_WIRE_BYTES:
            self.close_connection = True
            self._answer(413, orjson.dumps({"message": "Request body too large"}))
            return
        raw = self.rfile.read(length) if length else b""
        if path != "/v1/batch" and path not in _SINGLE:
            self._answer(404, orjson.dumps({"message": "Not Found"}))
            return
        gz = "gzip" in (self.headers.get("Content-Encoding") or "").lower()
        reply = None
        body = raw
        status, message, messages, count = 200, None, None, 0
        try:
            if gz:
                body = _gunzip(raw)
            messages = seg._check(path, body, self.headers.get("Authorization"))
            count = len(messages)
        except _Rejected as exc:
            status, message = exc.status, exc.message
        if status == 200:
            reply = seg._next_reply()  # scripts apply to well-formed requests only
        if reply is not None:
            status = 0 if reply.disconnect else reply.status
            message = reply.message or ("" if status < 300 else f"scripted {status}")
            keep = reply.store if reply.store is not None else 200 <= status < 300
            if not keep:
                messages = None
        elif status != 200:
            messages = None
        seg._record(
            ReceivedRequest(path, status, body, gz, len(raw), count, arrived,
                            None if status in (200, 0) else message),
            messages,
        )
        if reply is not None:
            seg._wait(reply.delay)
        if status == 0:
            self.close_connection = True  # drop it without an answer
            return
        headers = {}
        if reply is not None and reply.retry_after is not None:
            headers["Retry-After"] = f"{reply.retry_after:g}"
        if 200 <= status < 300:
            self._answer(status, orjson.dumps({"success": True}), headers)
        else:
            self._answer(status, orjson.dumps({"success": False, "message": message}), headers)
        if reply is not None and reply.close_after:
            # Close without a "Connection: close" header: the client still thinks it is alive.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
