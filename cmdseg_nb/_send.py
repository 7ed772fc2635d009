"""Serialized messages -> batches -> ``POST /v1/batch``, with retries, splitting and results.

::

    Prepared (bytes per message) ──_plan_batches──▶ [Batch] ──_Poster.post──▶ _Outcome per batch
                                                                │  429/5xx/408/network: retry (tenacity)
                                                                └─ 400: split in halves, recurse
    outcomes ──▶ SendResult (one row per input row)

Each message is serialized once (in ``_messages``); a batch body is those exact bytes joined
inside a fixed envelope, so every retry resends identical message bytes with identical
messageIds and only ``sentAt`` changes (Segment de-duplicates on messageId, spec "Identity,
dedup and time"). ``sentAt`` always has the same length, so the size budget is exact.

The loop in :func:`send` is synchronous and posts one batch at a time; the planner, the poster
and the result builder are separate so an in-flight window or an async poster can replace the
loop without touching them.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import email.utils
import gzip as gziplib
import html
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import httpx
import orjson
import pandas as pd
import tenacity

from ._errors import SendError, TransportError
from ._messages import prepare

__all__ = ["SendProgress", "SendResult", "send"]

ENDPOINTS = {"us": "https://api.segment.io", "eu": "https://events.eu1.segmentapis.com"}
#: Segment's hard limits per request (spec "Limits").
SEGMENT_MAX_BATCH_BYTES = 500_000
SEGMENT_MAX_BATCH_MESSAGES = 2_500
_SENT_AT_LEN = len("2024-03-10T09:00:00.000Z")
_NO_RETRY_5XX = (501, 505)
_STOP_ALL_STATUSES = (401, 403, 404)  # every later batch would get the same answer


def _now_iso() -> str:
    now = dt.datetime.now(dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


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


# -- batches ----------------------------------------------------------------------------------
@dataclasses.dataclass
class Batch:
    """Positions (into ``Prepared.bodies``) of the messages of one planned batch."""

    number: int
    items: list[int]


class _Envelope:
    """Builds ``{"batch":[...],"sentAt":"...","integrations":{...}}`` from message bytes."""

    def __init__(self, integrations: dict | None):
        self.tail = b"" if not integrations else b',"integrations":' + orjson.dumps(integrations)
        # Size of the envelope with an empty batch; sentAt has a fixed length.
        self.overhead = len(self.body([], "x" * _SENT_AT_LEN))

    def body(self, messages: list[bytes], sent_at: str) -> bytes:
        return b"".join(
            (b'{"batch":[', b",".join(messages), b'],"sentAt":"', sent_at.encode(), b'"',
             self.tail, b"}")
        )


def _plan_batches(
    sizes: list[int], overhead: int, max_bytes: int, max_messages: int
) -> tuple[list[Batch], list[int]]:
    """Greedy batches in input order; (batches, positions too large for any batch).

    A message is added only if the body *with it* stays within ``max_bytes`` (the size is
    measured before adding, so no batch ever exceeds it; the official library checks after
    appending and sends ~508 KB batches, spec "official Python library").
    """
    batches: list[Batch] = []
    too_big: list[int] = []
    current: list[int] = []
    size = overhead
    for pos, n in enumerate(sizes):
        if overhead + n > max_bytes:
            too_big.append(pos)
            continue
        extra = n + (1 if current else 0)  # the comma
        if current and (size + extra > max_bytes or len(current) >= max_messages):
            batches.append(Batch(len(batches), current))
            current, size, extra = [], overhead, n
        current.append(pos)
        size += extra
    if current:
        batches.append(Batch(len(batches), current))
    return batches, too_big


# -- posting ----------------------------------------------------------------------------------
class _Retryable(Exception):
    """One failed attempt that may succeed later (429, 5xx, 408, network)."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclasses.dataclass
class _Outcome:
    """What happened to some messages of a batch after all attempts."""

    items: list[int]
    status: str  # "sent" | "failed"
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
        when = email.utils.parsedate_to_datetime(value)
        if when is None:  # pragma: no cover - unparseable header
            return None
        return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


class _Poster:
    """Posts bodies to ``/v1/batch`` with Segment's retry rules; one place maps httpx errors."""

    def __init__(
        self,
        client: httpx.Client | None,
        url: str,
        key: WriteKey,
        envelope: _Envelope,
        bodies: list[bytes],
        *,
        gzip: bool,
        max_retry_time: float,
        backoff: float,
    ):
        self.client = client
        self.url = url
        self.key = key
        self.envelope = envelope
        self.bodies = bodies
        self.gzip = gzip
        self.max_retry_time = max_retry_time
        self.backoff = backoff
        self.requests = 0
        self.bytes_sent = 0  # bytes on the wire (compressed when gzip)
        self.bytes_uncompressed = 0
        self._exponential = tenacity.wait_exponential_jitter(
            multiplier=backoff, max=30.0, jitter=backoff
        )

    # One attempt: raises _Retryable, or returns the final response.
    def _attempt(self, items: list[int]) -> httpx.Response:
        body = self.envelope.body([self.bodies[i] for i in items], _now_iso())
        headers = {"Authorization": self.key.authorization(), "Content-Type": "application/json"}
        content = body
        if self.gzip:
            content = gziplib.compress(body, compresslevel=1, mtime=0)
            headers["Content-Encoding"] = "gzip"
        self.requests += 1
        self.bytes_sent += len(content)
        self.bytes_uncompressed += len(body)
        assert self.client is not None
        try:
            response = self.client.post(self.url, content=content, headers=headers)
        except httpx.TimeoutException as exc:
            # The server may have stored the batch; resending the same messageIds is safe
            # because Segment de-duplicates on them (case B21).
            raise _Retryable(f"timed out ({type(exc).__name__})") from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise _Retryable(f"connection failed ({type(exc).__name__}: {exc})") from None
        except httpx.HTTPError as exc:
            raise TransportError(
                f"request to {self.url} failed: {type(exc).__name__}: {exc}", retryable=False
            ) from None
        status = response.status_code
        if status == 429:
            raise _Retryable(
                f"429 rate limited: {_server_message(response)}",
                status=status,
                retry_after=_retry_after(response),
            )
        if status == 408 or (status >= 500 and status not in _NO_RETRY_5XX):
            raise _Retryable(f"{status}: {_server_message(response)}", status=status)
        return response

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return exc.retry_after  # Segment's Retry-After, honoured exactly
        return self._exponential(state)

    def post(self, items: list[int]) -> Iterator[_Outcome]:
        """Post ``items`` until sent or given up; a 400 splits the batch (never resends it)."""
        attempts = 0

        def counted() -> httpx.Response:
            nonlocal attempts
            attempts += 1
            return self._attempt(items)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Retryable),
            wait=self._wait,
            stop=tenacity.stop_before_delay(self.max_retry_time),
            reraise=True,
        )
        try:
            response = retrying(counted)
        except _Retryable as exc:
            yield _Outcome(
                items, "failed", exc.status,
                f"gave up after {attempts} attempt(s) within max_retry_time="
                f"{self.max_retry_time:g} s; last: {exc}",
                attempts, stop_all=True,
            )
            return
        except TransportError as exc:
            yield _Outcome(items, "failed", None, str(exc), attempts, stop_all=True)
            return
        status = response.status_code
        if 200 <= status < 300:
            yield _Outcome(items, "sent", status, None, attempts)
            return
        message = _server_message(response)
        if status == 400 and len(items) > 1:
            # Never resend the same bytes: split to isolate the bad message(s) (spec "400").
            half = len(items) // 2
            for part in (items[:half], items[half:]):
                for outcome in self.post(part):
                    outcome.attempts += attempts
                    yield outcome
            return
        yield _Outcome(
            items, "failed", status, f"{status}: {message}", attempts,
            stop_all=status in _STOP_ALL_STATUSES,
        )


# -- results ----------------------------------------------------------------------------------
class SendResult:
    """What :func:`send` did, one row per input row.

    Attributes
    ----------
    rows : pandas.DataFrame
        Indexed like the input. Columns: ``row`` (int, 0-based position), ``messageId`` (str or
        None), ``status`` (``"sent"``, ``"failed"``, ``"invalid"`` — never sent because the row
        breaks a rule — or ``"skipped"`` — valid but not sent: dry run, or the send stopped),
        ``error`` (str or None, with the server's message for failures), ``column`` (the column
        at fault for invalid rows), ``batch`` (planned batch number or None), ``attempts``
        (HTTP attempts that carried the row), ``http_status`` (last status or None),
        ``bytes`` (serialized message size in bytes).
    sent, failed, invalid, skipped : int
        Row counts per status.
    batches_sent, batches_failed : int
        Planned batches whose rows were all sent / that have at least one failed row.
    requests : int
        HTTP requests made, retries and split halves included.
    bytes_sent : int
        Request body bytes on the wire (after gzip). ``bytes_uncompressed``: before gzip.
    duration : float
        Seconds from start to end of the send.
    events_per_second : float
        ``sent / duration``.
    """

    def __init__(self, rows: pd.DataFrame, *, endpoint: str, write_key: str, requests: int,
                 bytes_sent: int, bytes_uncompressed: int, duration: float, dry_run: bool,
                 warnings: list[str]):
        self.rows = rows
        self.endpoint = endpoint
        self.write_key = write_key  # masked text only
        self.requests = requests
        self.bytes_sent = bytes_sent
        self.bytes_uncompressed = bytes_uncompressed
        self.duration = duration
        self.dry_run = dry_run
        self.warnings = warnings
        counts = rows["status"].value_counts()
        self.sent = int(counts.get("sent", 0))
        self.failed = int(counts.get("failed", 0))
        self.invalid = int(counts.get("invalid", 0))
        self.skipped = int(counts.get("skipped", 0))
        planned = rows.dropna(subset=["batch"])
        by_batch = planned.groupby("batch")["status"]
        self.batches_sent = int(by_batch.apply(lambda s: bool((s == "sent").all())).sum())
        self.batches_failed = int(by_batch.apply(lambda s: bool((s == "failed").any())).sum())

    @property
    def events_per_second(self) -> float:
        return self.sent / self.duration if self.duration > 0 else 0.0

    @property
    def ok(self) -> bool:
        """True when every row was sent."""
        return self.sent == len(self.rows)

    @property
    def errors(self) -> pd.DataFrame:
        """The rows that were not sent, with their reasons."""
        return self.rows[self.rows["status"] != "sent"]

    def _summary(self) -> list[tuple[str, str]]:
        return [
            ("endpoint", self.endpoint + (" (dry run: nothing sent)" if self.dry_run else "")),
            ("write key", self.write_key),
            ("rows", f"{len(self.rows):,}"),
            ("sent", f"{self.sent:,}"),
            ("failed", f"{self.failed:,}"),
            ("invalid", f"{self.invalid:,}"),
            ("skipped", f"{self.skipped:,}"),
            ("batches", f"{self.batches_sent:,} sent, {self.batches_failed:,} failed"),
            ("requests", f"{self.requests:,}"),
            ("bytes", f"{self.bytes_sent:,} on the wire ({self.bytes_uncompressed:,} uncompressed)"),
            ("duration", f"{self.duration:.2f} s ({self.events_per_second:,.0f} events/s)"),
        ]

    def __repr__(self) -> str:
        lines = ["SendResult"] + [f"  {k:<9} {v}" for k, v in self._summary()]
        errs = self.errors
        if len(errs):
            lines.append("  first problems:")
            for _, r in errs.head(5).iterrows():
                lines.append(f"    row {r['row']}: {r['status']}: {r['error']}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        cells = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>"
            f"{html.escape(v)}</td></tr>" for k, v in self._summary()
        )
        out = f"<div><strong>SendResult</strong><table>{cells}</table>"
        errs = self.errors
        if len(errs):
            out += "<p>First problems:</p>" + errs.head(10)[
                ["row", "status", "column", "error", "http_status"]
            ].to_html(escape=True)
        return out + "</div>"


# -- progress and cancel hooks (used by the Send panel of cmdseg_nb.widgets) -------------------
class _CancelFlag(Protocol):
    def is_set(self) -> bool: ...


@dataclasses.dataclass(frozen=True)
class SendProgress:
    """A snapshot handed to ``send(on_progress=...)`` before the first batch and after each outcome.

    Attributes
    ----------
    rows, batches : int
        Valid rows planned into batches, and planned batches.
    rows_done, batches_done : int
        Rows with a final outcome (sent or failed), and batches finished.
    sent, failed : int
        Rows sent / failed so far.
    requests, retries : int
        HTTP requests made so far, and how many of them were retries.
    bytes_sent : int
        Request body bytes on the wire so far (after gzip).
    cancelled : bool
        ``cancel`` was set; the remaining batches end ``skipped``.
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


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="msg", desc="send", disable=not enabled, leave=True)


def send(
    data: Any,
    *,
    write_key: str,
    endpoint: str | None = None,
    region: str = "us",
    gzip: bool = True,
    max_batch_bytes: int = 475_000,
    max_batch_messages: int = 2_500,
    timeout: float = 30.0,
    max_retry_time: float = 120.0,
    backoff: float = 0.5,
    integrations: dict | None = None,
    run_name: str | None = None,
    tz: Any = None,
    allow_duplicate_message_ids: bool = False,
    binary: str = "error",
    progress: bool = True,
    dry_run: bool = False,
    transport: httpx.BaseTransport | None = None,
    on_progress: Callable[[SendProgress], None] | None = None,
    cancel: _CancelFlag | None = None,
) -> SendResult:
    """Send the rows of a frame to Segment's HTTP Tracking API as batches.

    Parameters
    ----------
    data : pandas.DataFrame | pyarrow.Table
        One message per row (pandas with numpy or Arrow dtypes, ``pyarrow.Table``/``RecordBatch``,
        or anything with ``to_arrow()``). Columns use Segment Spec names (``type``, ``userId``,
        ``anonymousId``, ``event``, ``name``, ``category``, ``groupId``, ``previousId``,
        ``traits``, ``properties``, ``context``, ``integrations``, ``timestamp``,
        ``messageId``) or warehouse names (``user_id``, ``anonymous_id``, ``group_id``,
        ``previous_id``, ``message_id``). Without a ``type`` column, an ``event`` column makes
        every row a track. Other columns go into ``properties`` (track, page, screen) or
        ``traits`` (identify, group), winning over a same-named key of a dict column.
        ``sentAt``/``receivedAt`` columns (and snake_case) are set by the sender/Segment and
        are ignored with a warning. ``identify_frame`` and ``track_frame`` build such frames.
    write_key : str
        The source's write key (trimmed). Sent as HTTP Basic user with an empty password; shown
        only masked (``wk_F…cdef``) in reprs, errors and the result.
    endpoint : str | None
        Base URL; default by ``region``: ``us`` https://api.segment.io, ``eu``
        https://events.eu1.segmentapis.com. Segment drops events sent to the wrong region
        without an error, so set the region explicitly.
    gzip : bool
        Compress bodies (``Content-Encoding: gzip``, level 1).
    max_batch_bytes : int
        Largest uncompressed request body in bytes, envelope and ``sentAt`` included
        (Segment's limit is 500 KB; the default leaves room). At most 500,000.
    max_batch_messages : int
        Most messages per request; at most 2,500 (above it Segment answers 200 and drops them).
    timeout : float
        Seconds per HTTP request.
    max_retry_time : float
        Seconds a batch may keep retrying (429, 5xx except 501/505, 408, timeouts, connection
        errors); a wait that would end past it is not started. When a batch runs out of time,
        the remaining batches are ``skipped`` rather than each waiting again.
    backoff : float
        First exponential-backoff wait in seconds (doubles per attempt, up to 30 s, plus up
        to ``backoff`` seconds of jitter). 429 waits ``Retry-After`` seconds instead.
    integrations : dict | None
        Batch-level ``integrations`` merged by Segment into every message, e.g.
        ``{"All": False, "Webhooks": True}`` (destination names are case-sensitive).
    run_name : str | None
        Mixed into derived messageIds: the same rows with the same run name get the same ids,
        so re-running a cell is de-duplicated by Segment (about 24 h); a new name sends anew.
    tz : str | tzinfo | None
        Zone of naive datetimes. ``None`` takes them as UTC with one ``CmdsegWarning``.
    allow_duplicate_message_ids : bool
        Send rows that share a caller-given messageId (Segment keeps only one of them).
    binary : {"error", "base64"}
        ``bytes`` cells are an invalid row naming the column, or sent as base64 text.
    progress : bool
        Show a ``tqdm.auto`` progress bar (messages).
    dry_run : bool
        Validate, serialize and batch, but make no HTTP request; valid rows end ``skipped``.
    transport : httpx.BaseTransport | None
        For tests (``httpx.MockTransport``) or custom networking.
    on_progress : callable(SendProgress) | None
        Called in the sending thread before the first batch and after each batch outcome.
    cancel : threading.Event | None
        Checked before each batch; once set, no new batch starts and the remaining rows end
        ``skipped`` ("not sent: cancelled"). A batch already in flight finishes (clean stop).

    Returns
    -------
    SendResult
        Per-row statuses and totals; see :class:`SendResult`.

    Raises
    ------
    SendError
        Before anything is sent: empty or malformed write key, unknown region, bad endpoint,
        limits above Segment's.
    MessageError
        When the frame as a whole cannot be read (no ``type``/``event`` column, a column under
        two spellings, an unsupported object). Bad rows never raise: they are ``invalid`` rows.

    Notes
    -----
    messageIds: a ``messageId``/``message_id`` column is used as given, never regenerated
    (an empty cell gets a derived id); ids shared by several rows make those rows invalid
    unless allowed (case B21). Other rows get a UUID derived from the message content and
    ``run_name``. Ids are set before the first attempt and every retry resends identical
    message bytes, so Segment's messageId de-duplication makes retries safe.

    A 400 is never retried: the batch is split in halves until the rejected messages are
    alone; those end ``failed`` with the server's message, the rest are sent. Other 4xx fail
    their batch; 401/403/404 also skip the remaining batches. Segment answers 200 even for a
    wrong write key, so ``sent`` means "accepted", not "delivered to the right source".
    """
    key = WriteKey(write_key)
    if endpoint is None:
        if region not in ENDPOINTS:
            raise SendError(f"region must be one of {sorted(ENDPOINTS)}, not {region!r}")
        endpoint = ENDPOINTS[region]
    endpoint = endpoint.rstrip("/")
    try:
        url = httpx.URL(endpoint + "/v1/batch")
    except httpx.InvalidURL as exc:
        raise SendError(f"endpoint {endpoint!r} is not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise SendError(f"endpoint {endpoint!r} must be an http(s) URL such as {ENDPOINTS['us']}")
    if not 0 < max_batch_messages <= SEGMENT_MAX_BATCH_MESSAGES:
        raise SendError(f"max_batch_messages must be 1..{SEGMENT_MAX_BATCH_MESSAGES}")
    if not 0 < max_batch_bytes <= SEGMENT_MAX_BATCH_BYTES:
        raise SendError(f"max_batch_bytes must be 1..{SEGMENT_MAX_BATCH_BYTES:,} bytes")

    started = time.monotonic()
    prepared = prepare(
        data, tz=tz, run_name=run_name, binary=binary,
        allow_duplicate_message_ids=allow_duplicate_message_ids,
    )
    envelope = _Envelope(integrations)
    sizes = [len(b) for b in prepared.bodies]
    batches, too_big = _plan_batches(sizes, envelope.overhead, max_batch_bytes, max_batch_messages)

    n = prepared.n_rows
    status: list[str | None] = [None] * n
    error: list[str | None] = [None] * n
    column: list[str | None] = [None] * n
    batch_of: list[int | None] = [None] * n
    attempts = [0] * n
    http_status: list[int | None] = [None] * n
    ids: list[str | None] = [None] * n
    nbytes: list[int | None] = [None] * n
    for exc in prepared.errors:
        status[exc.row], error[exc.row], column[exc.row] = "invalid", exc.reason, exc.column
    for i, pos in enumerate(prepared.rows):
        ids[pos], nbytes[pos] = prepared.message_ids[i], sizes[i]
    for i in too_big:
        pos = prepared.rows[i]
        status[pos] = "invalid"
        error[pos] = (
            f"message is {sizes[i]:,} bytes; with the batch envelope it does not fit in "
            f"max_batch_bytes={max_batch_bytes:,}"
        )
    for b in batches:
        for i in b.items:
            batch_of[prepared.rows[i]] = b.number

    def record(outcome: _Outcome) -> None:
        for i in outcome.items:
            pos = prepared.rows[i]
            status[pos], error[pos] = outcome.status, outcome.error
            attempts[pos], http_status[pos] = outcome.attempts, outcome.http_status

    poster = _Poster(
        None, str(url), key, envelope, prepared.bodies, gzip=gzip,
        max_retry_time=max_retry_time, backoff=backoff,
    )
    total = sum(len(b.items) for b in batches)
    with _progress(total, progress) as bar:
        if dry_run:
            for b in batches:
                body = envelope.body([prepared.bodies[i] for i in b.items], _now_iso())
                poster.bytes_uncompressed += len(body)
                poster.bytes_sent += len(gziplib.compress(body, 1, mtime=0)) if gzip else len(body)
                for i in b.items:
                    pos = prepared.rows[i]
                    status[pos], error[pos] = "skipped", "dry run: not sent"
                bar.update(len(b.items))
        else:
            with httpx.Client(transport=transport, timeout=timeout) as client:
                poster.client = client
                stopped: str | None = None
                done = SendProgress(total, len(batches))
                if on_progress is not None:
                    on_progress(done)
                for b in batches:
                    if stopped is None and cancel is not None and cancel.is_set():
                        stopped = "not sent: cancelled"
                        done = dataclasses.replace(done, cancelled=True)
                    if stopped is not None:
                        for i in b.items:
                            pos = prepared.rows[i]
                            status[pos], error[pos] = "skipped", stopped
                        continue
                    for outcome in poster.post(b.items):
                        record(outcome)
                        bar.update(len(outcome.items))
                        if outcome.stop_all and stopped is None:
                            stopped = f"not sent: batch {b.number} failed with {outcome.error}"
                        ok = outcome.status == "sent"
                        done = dataclasses.replace(
                            done, rows_done=done.rows_done + len(outcome.items),
                            sent=done.sent + (len(outcome.items) if ok else 0),
                            failed=done.failed + (0 if ok else len(outcome.items)),
                            requests=poster.requests, bytes_sent=poster.bytes_sent,
                            retries=done.retries + max(0, outcome.attempts - 1),
                        )
                        if on_progress is not None:
                            on_progress(done)
                    done = dataclasses.replace(done, batches_done=done.batches_done + 1)
                if on_progress is not None:
                    on_progress(done)

    rows = pd.DataFrame(
        {
            "row": range(n),
            "messageId": pd.Series(ids, dtype=object),
            "status": pd.Series(status, dtype=object),
            "error": pd.Series(error, dtype=object),
            "column": pd.Series(column, dtype=object),
            "batch": pd.array(batch_of, dtype="Int64"),
            "attempts": attempts,
            "http_status": pd.array(http_status, dtype="Int64"),
            "bytes": pd.array(nbytes, dtype="Int64"),
        }
    )
    rows.index = prepared.index
    return SendResult(
        rows,
        endpoint=endpoint,
        write_key=key.masked,
        requests=poster.requests,
        bytes_sent=poster.bytes_sent,
        bytes_uncompressed=poster.bytes_uncompressed,
        duration=time.monotonic() - started,
        dry_run=dry_run,
        warnings=prepared.warnings,
    )

