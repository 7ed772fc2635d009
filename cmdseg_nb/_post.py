"""One batch -> ``POST /v1/batch`` with Segment's retry rules; the write key; progress types.

::

    Batch ──Envelope.body(sentAt of this attempt)──▶ gzip ──▶ POST ──▶ _Outcome (sent | failed)
            │  429: wait Retry-After; 5xx (not 501/505), 408, timeouts, connection errors:
            │  exponential backoff + jitter, all within max_retry_time (tenacity)
            └─ 400: split in halves until the bad message(s) are alone; never resend the bytes

Every attempt resends the batch's exact message bytes (same messageIds); only ``sentAt``
changes. httpx errors become outcomes or :class:`SendError` here, in one place.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import dataclasses
import datetime as dt
import email.utils
import gzip as gziplib
import time
from collections.abc import AsyncIterator
from typing import Protocol

import httpx
import orjson
import tenacity

try:  # ISA-L's gzip: ~5x faster than zlib at level 1, smaller output; optional
    from isal import igzip as _igzip
except ImportError:  # pragma: no cover - depends on the environment
    _igzip = None

from ._batching import Batch, Envelope, now_iso
from ._errors import SendError
from ._result import FAILED, SENT

__all__ = ["SendProgress", "WriteKey", "mask"]

ENDPOINTS = {"us": "https://api.segment.io", "eu": "https://events.eu1.segmentapis.com"}
#: Segment's hard limits per request (spec "Limits").
SEGMENT_MAX_BATCH_BYTES = 500_000
SEGMENT_MAX_BATCH_MESSAGES = 2_500
_NO_RETRY_5XX = (501, 505)
_STOP_ALL_STATUSES = (401, 403, 404)  # every later batch would get the same answer


class WriteKey:
    """A Segment write key held in one object; ``repr``/``str`` show it masked only.

    Raises
    ------
    SendError
        When the key is empty or whitespace, or holds characters HTTP Basic auth cannot carry
        (``:`` or non-printable/non-ASCII). Segment itself answers 400 for empty keys.
    """

    __slots__ = ("_key",)

    def __init__(self, key: str):
        if not isinstance(key, str) or not key.strip():
            raise SendError("write_key is empty; copy it from the source's Settings > API Keys")
        key = key.strip()
        if ":" in key or not key.isascii() or not key.isprintable() or " " in key:
            raise SendError(
                f"write_key {mask(key)} has characters a write key never has "
                "(':' , spaces or non-ASCII); copy it again from the source's settings"
            )
        self._key = key

    @property
    def masked(self) -> str:
        return mask(self._key)

    @property
    def fingerprint(self) -> str:
        """First 16 hex digits of SHA-256 of the key: tells keys apart, cannot reveal one."""
        return hashlib.sha256(self._key.encode("utf-8")).hexdigest()[:16]

    def authorization(self) -> str:
        """``Basic base64(key + ":")``: the key as user name, empty password (spec "auth")."""
        return "Basic " + base64.b64encode(f"{self._key}:".encode("ascii")).decode("ascii")

    def __repr__(self) -> str:
        return f"WriteKey({self.masked})"

    __str__ = __repr__

    def __reduce__(self):  # pragma: no cover - never pickle a secret by accident
        raise TypeError("a WriteKey cannot be pickled")


def mask(key: str) -> str:
    """``wk_F…cdef`` for long keys, ``w…`` for short ones: never enough to use the key."""
    key = key.strip()
    if len(key) >= 12:
        return f"{key[:4]}…{key[-4:]}"
    return f"{key[:1]}…" if key else "…"


# -- progress and cancel hooks (used by the Send panel of cmdseg_nb.widgets) -------------------
class _CancelFlag(Protocol):
    def is_set(self) -> bool: ...


@dataclasses.dataclass(frozen=True)
class SendProgress:
    """A snapshot handed to ``send(on_progress=...)`` at the start and after each batch outcome.

    Attributes
    ----------
    rows : int
        Rows of the input (when known up front; else rows read so far).
    batches : int
        Batches formed so far.
    rows_done, batches_done : int
        Rows with a final outcome (sent or failed), and batches finished.
    sent, failed : int
        Rows sent / failed so far.
    requests, retries : int
        HTTP requests made so far, and how many of them were retries.
    bytes_sent : int
        Request body bytes on the wire so far (after gzip).
    cancelled : bool
        ``cancel`` was set (or the send interrupted); the remaining batches end ``skipped``.
    """

    rows: int
    batches: int
    rows_done: int = 0
    batches_done: int = 0
    sent: int = 0
    failed: int = 0
    requests: int = 0
    retries: int = 0
    bytes_sent: int = 0
    cancelled: bool = False


# -- posting ----------------------------------------------------------------------------------
class _Retryable(Exception):
    """One failed attempt that may succeed later (429, 5xx, 408, network)."""

    def __init__(self, message: str, *, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclasses.dataclass
class _Outcome:
    """What happened to some messages of a batch after all attempts."""

    batch: Batch
    status: int  # SENT | FAILED
    http_status: int | None
    error: str | None
    attempts: int
    stop_all: bool = False  # later batches cannot succeed either (auth, budget spent)


def _server_message(response: httpx.Response) -> str:
    text = response.text[:500].strip()
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return text
    if isinstance(data, dict):
        for key in ("message", "error", "errors"):
            if data.get(key):
                return str(data[key])[:500]
    return text


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


def gzip_bytes(body: bytes) -> bytes:
    """gzip at the fastest level: ISA-L when installed (``pip install isal``), else zlib."""
    if _igzip is not None:
        return _igzip.compress(body, 1)
    return gziplib.compress(body, compresslevel=1, mtime=0)


async def gzip_body(body: bytes) -> bytes:
    """:func:`gzip_bytes`; zlib runs on a worker thread (it releases the GIL, ISA-L is quick)."""
    if _igzip is not None:
        return _igzip.compress(body, 1)
    return await asyncio.get_running_loop().run_in_executor(None, gzip_bytes, body)


class _RateLimit:
    """At most ``per_second`` request starts per second (spaced evenly); ``None``: no cap."""

    def __init__(self, per_second: float | None):
        self.interval = 1.0 / per_second if per_second else 0.0
        self.next = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self.lock:
            now = time.monotonic()
            if self.next > now:
                await asyncio.sleep(self.next - now)
            self.next = max(now, self.next) + self.interval


class _Poster:
    """Posts batches to ``/v1/batch`` with Segment's retry rules; maps httpx errors in one place."""

    def __init__(self, client: httpx.AsyncClient, url: str, key: WriteKey, envelope: Envelope,
                 *, gzip: bool, max_retry_time: float, backoff: float, rate: _RateLimit):
        self.client = client
        self.url = url
        self.key = key
        self.envelope = envelope
        self.gzip = gzip
        self.max_retry_time = max_retry_time
        self.rate = rate
        self.requests = 0
        self.retries = 0
        self.bytes_sent = 0  # bytes on the wire (compressed when gzip)
        self.bytes_uncompressed = 0
        self._exponential = tenacity.wait_exponential_jitter(
            multiplier=backoff, max=30.0, jitter=backoff
        )

    async def _attempt(self, batch: Batch, attempt: int) -> httpx.Response:
        """One attempt: raises _Retryable, or returns the final response."""
        body = self.envelope.body(batch.bodies, now_iso())  # sentAt: the time of this attempt
        headers = {"Authorization": self.key.authorization(), "Content-Type": "application/json"}
        content = body
        if self.gzip:
            content = await gzip_body(body)
            headers["Content-Encoding"] = "gzip"
        await self.rate.wait()
        self.requests += 1
        self.retries += attempt > 1
        self.bytes_sent += len(content)
        self.bytes_uncompressed += len(body)
        try:
            response = await self.client.post(self.url, content=content, headers=headers)
        except httpx.TimeoutException as exc:
            # The server may have stored the batch; resending the same messageIds is safe
            # because Segment de-duplicates on them (case B21).
            raise _Retryable(f"timed out ({type(exc).__name__})") from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            # On a first attempt this is most often a stale keep-alive connection the server
            # closed while idle: retry at once on a fresh one; later, back off.
            raise _Retryable(f"connection failed ({type(exc).__name__}: {exc})",
                             retry_after=0.0 if attempt == 1 else None) from None
        except httpx.HTTPError as exc:
            raise SendError(f"request to {self.url} failed: {type(exc).__name__}: {exc}") from None
        status = response.status_code
        if status == 429:
            raise _Retryable(f"429 rate limited: {_server_message(response)}", status=status,
                             retry_after=_retry_after(response))
        if status == 408 or (status >= 500 and status not in _NO_RETRY_5XX):
            raise _Retryable(f"{status}: {_server_message(response)}", status=status)
        return response

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return exc.retry_after  # Segment's Retry-After, honoured exactly
        return self._exponential(state)

    async def post(self, batch: Batch) -> AsyncIterator[_Outcome]:
        """Post ``batch`` until sent or given up; a 400 splits it (never resends the bytes)."""
        attempts = 0

        async def attempt() -> httpx.Response:
            nonlocal attempts
            attempts += 1
            return await self._attempt(batch, attempts)

        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(_Retryable),
            wait=self._wait,
            stop=tenacity.stop_before_delay(self.max_retry_time),
            reraise=True,
        )
        try:
            response = await retrying(attempt)
        except _Retryable as exc:
            yield _Outcome(batch, FAILED, exc.status,
                           f"gave up after {attempts} attempt(s) within max_retry_time="
                           f"{self.max_retry_time:g} s; last: {exc}", attempts, stop_all=True)
            return
        except SendError as exc:
            yield _Outcome(batch, FAILED, None, str(exc), attempts, stop_all=True)
            return
        status = response.status_code
        if 200 <= status < 300:
            yield _Outcome(batch, SENT, status, None, attempts)
            return
        message = _server_message(response)
        if status == 400 and len(batch.rows) > 1:
            # Never resend the same bytes: split to isolate the bad message(s) (spec "400").
            half = len(batch.rows) // 2
            for part in (batch.part(0, half), batch.part(half, len(batch.rows))):
                async for outcome in self.post(part):
                    outcome.attempts += attempts
                    yield outcome
            return
        yield _Outcome(batch, FAILED, status, f"{status}: {message}", attempts,
                       stop_all=status in _STOP_ALL_STATUSES)
