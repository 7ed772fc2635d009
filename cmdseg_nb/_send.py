"""Frames -> Segment ``/v1/batch``: the send engine and the public ``send`` / ``send_async``.

::

    producer (one task): Source.chunks ──Preparer.chunk (worker thread)──▶ Chunk
        ──ledger.known──▶ Batcher (<= max_batch_bytes, <= max_batch_messages) ──▶ bounded queue
    ``concurrency`` workers: queue ──_Poster.post──▶ outcome ──▶ RowLog, ledger.record, progress
    RowLog ──▶ SendResult

Memory stays flat: one chunk is prepared at a time and the queue holds at most
``2 * concurrency`` batches. The engine is asyncio; :func:`send` runs it on a helper thread and
waits, so it works from a plain script and from a notebook whose event loop is already
running, and a Ctrl-C (KeyboardInterrupt) in the waiting thread becomes a clean stop that
returns what was sent so far. :func:`send_async` is the same engine for ``await``.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import inspect
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from ._batching import Batch, Batcher, Envelope, now_iso
from ._errors import SendError
from ._ledger import Ledger
from ._messages import emit_warnings, start
from ._post import (
    ENDPOINTS,
    SEGMENT_MAX_BATCH_BYTES,
    SEGMENT_MAX_BATCH_MESSAGES,
    SendProgress,
    WriteKey,
    _CancelFlag,
    _Outcome,
    _Poster,
    _RateLimit,
    gzip_bytes,
    mask,
)
from ._result import FAILED, INVALID, PREVIOUS, SENT, SKIPPED, RowLog, SendResult

__all__ = ["ENDPOINTS", "SendProgress", "SendResult", "WriteKey", "mask", "send", "send_async"]

#: Rows prepared per slice on the event loop (~20 ms of work).
PRODUCE_ROWS = 4_096
_INTERRUPTED = "not sent: interrupted"
_IN_FLIGHT = ("interrupted while in flight: Segment may or may not have it; sending again is "
              "safe (same messageIds, de-duplicated)")


@dataclasses.dataclass
class _Settings:
    key: WriteKey
    endpoint: str
    url: str
    gzip: bool
    max_batch_bytes: int
    max_batch_messages: int
    concurrency: int
    max_requests_per_second: float | None
    timeout: float
    max_retry_time: float
    backoff: float
    integrations: dict | None
    progress: bool
    dry_run: bool
    ledger: str | None
    transport: Any
    on_progress: Callable[[SendProgress], None] | None
    cancel: _CancelFlag | None
    prepare: dict


def _settings(write_key: str, endpoint: str | None, region: str, **kw: Any) -> _Settings:
    key = WriteKey(write_key)
    if endpoint is None:
        if region not in ENDPOINTS:
            raise SendError(f"region must be one of {sorted(ENDPOINTS)}, not {region!r}")
        endpoint = ENDPOINTS[region]
    endpoint = endpoint.strip().rstrip("/")
    try:
        url = httpx.URL(endpoint + "/v1/batch")
    except httpx.InvalidURL as exc:
        raise SendError(f"endpoint {endpoint!r} is not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise SendError(f"endpoint {endpoint!r} must be an http(s) URL such as {ENDPOINTS['us']}")
    if not 0 < kw["max_batch_messages"] <= SEGMENT_MAX_BATCH_MESSAGES:
        raise SendError(f"max_batch_messages must be 1..{SEGMENT_MAX_BATCH_MESSAGES}")
    if not 0 < kw["max_batch_bytes"] <= SEGMENT_MAX_BATCH_BYTES:
        raise SendError(f"max_batch_bytes must be 1..{SEGMENT_MAX_BATCH_BYTES:,} bytes")
    if not 1 <= kw["concurrency"] <= 64:
        raise SendError("concurrency must be 1..64 requests in flight")
    rps = kw["max_requests_per_second"]
    if rps is not None and not rps > 0:
        raise SendError("max_requests_per_second must be > 0 (or None for no cap)")
    transport = kw["transport"]
    if transport is not None and not hasattr(transport, "handle_async_request"):
        raise SendError("transport must be an httpx.AsyncBaseTransport "
                        "(httpx.MockTransport and httpx.AsyncHTTPTransport are)")
    ledger = kw.pop("ledger")
    return _Settings(key=key, endpoint=endpoint, url=str(url),
                     ledger=None if ledger is None else str(ledger), **kw)


class _Engine:
    """One send: producer, workers, ledger thread, results; ``interrupt()`` from any thread."""

    def __init__(self, data: Any, s: _Settings):
        self.data = data
        self.s = s
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopped: str | None = None
        self.interrupted = False
        self.warnings: list[str] = []
        self._interrupt_requested = False
        self._tasks: list[asyncio.Future] = []
        self.error: BaseException | None = None

    # -- control ---------------------------------------------------------------------------
    def interrupt(self) -> None:
        """Stop as soon as possible (thread-safe): in-flight requests are abandoned."""
        self._interrupt_requested = True
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._interrupt)
            except RuntimeError:  # the loop just closed: nothing left to stop
                pass

    def _interrupt(self) -> None:
        self.interrupted = True
        self.stopped = self.stopped or _INTERRUPTED
        for task in self._tasks:
            task.cancel()

    def _should_stop(self) -> bool:
        if self.stopped is None and self.s.cancel is not None and self.s.cancel.is_set():
            self.stopped = "not sent: cancelled"
            self.interrupted = True
        return self.stopped is not None

    # -- run -------------------------------------------------------------------------------
    async def run(self) -> SendResult:
        s = self.s
        started = time.monotonic()
        self.loop = asyncio.get_running_loop()
        source, preparer = start(self.data, **s.prepare)
        self.log = RowLog(source.n_rows)
        self.n_rows = source.n_rows
        self.envelope = Envelope(s.integrations)
        self.batcher = Batcher(self.envelope, s.max_batch_bytes, s.max_batch_messages)
        self.queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=2 * s.concurrency)
        self.done = SendProgress(rows=source.n_rows or 0, batches=0)
        self.ledger_pool = concurrent.futures.ThreadPoolExecutor(1, "cmdseg-ledger")
        self.ledger: Ledger | None = None
        self.bar = _progress_bar(source.n_rows, s.progress)
        client = None
        try:
            if s.ledger is not None:
                self.ledger = await self._in_ledger(Ledger, s.ledger)
            if not s.dry_run:
                limits = httpx.Limits(max_connections=s.concurrency,
                                      max_keepalive_connections=s.concurrency)
                transport = s.transport
                if transport is None:
                    # TCP_NODELAY: httpx writes headers and body apart; with Nagle's algorithm
                    # the body waits for the server's (delayed) ACK: ~2x slower on loopback.
                    transport = httpx.AsyncHTTPTransport(
                        limits=limits,
                        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
                client = httpx.AsyncClient(transport=transport, timeout=s.timeout,
                                           limits=limits)
            self.poster = _Poster(client, s.url, s.key, self.envelope, gzip=s.gzip,  # type: ignore[arg-type]
                                  max_retry_time=s.max_retry_time, backoff=s.backoff,
                                  rate=_RateLimit(s.max_requests_per_second))
            self._notify()
            producer = asyncio.ensure_future(self._produce(source, preparer))
            workers = [asyncio.ensure_future(self._work(w)) for w in range(s.concurrency)]
            self._tasks = [producer, *workers]
            if self._interrupt_requested:
                self._interrupt()
            try:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            except asyncio.CancelledError:  # the caller cancelled send_async itself
                self._interrupt()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                raise
            if self.error is not None:
                raise self.error
            self._notify()
        finally:
            if client is not None:
                await client.aclose()
            if self.ledger is not None:
                await self._in_ledger(self.ledger.close)
            self.ledger_pool.shutdown(wait=True)
            self.bar.close()
        self._finish(preparer)
        poster = self.poster
        return SendResult(
            self.log.frame(source.index), endpoint=s.endpoint, write_key=s.key.masked,
            requests=poster.requests, retries=poster.retries, bytes_sent=poster.bytes_sent,
            bytes_uncompressed=poster.bytes_uncompressed, duration=time.monotonic() - started,
            dry_run=s.dry_run, warnings=self.warnings, interrupted=self.interrupted,
            ledger=s.ledger,
        )

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.stopped = self.stopped or f"not sent: {type(exc).__name__}"
        for task in self._tasks:
            task.cancel()

    def _finish(self, preparer) -> None:
        self.log.finish(self.stopped or _INTERRUPTED)
        self.warnings = preparer.warnings()
        preparer.release()  # the messageId bookkeeping is not needed for the result

    async def _in_ledger(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.ledger_pool, fn, *args)

    # -- producer --------------------------------------------------------------------------
    async def _produce(self, source, preparer) -> None:
        # Preparation runs on the event loop's own thread, one slice of rows at a time, with a
        # yield to the loop between slices. (On a worker thread it would fight the loop for
        # the GIL: every step of every request would wait up to a switch interval.)
        chunks = source.chunks(PRODUCE_ROWS)
        try:
            while not self._should_stop():
                item = next(chunks, None)
                if item is None:
                    break
                chunk = preparer.chunk(*item)
                await self._add_chunk(chunk)
                await asyncio.sleep(0)  # let responses in before the next slice
            if not self._should_stop():
                last = self.batcher.flush()
                if last is not None:
                    await self._enqueue(last)
            for _ in range(self.s.concurrency):  # tell every worker there is no more
                await self.queue.put(None)
        except asyncio.CancelledError:
            return  # interrupted: the workers are cancelled too
        except Exception as exc:  # noqa: BLE001 - re-raised by run() after a clean stop
            self._fail(exc)

    async def _add_chunk(self, chunk) -> None:
        log = self.log
        sizes = [len(b) for b in chunk.bodies]
        log.add_chunk(chunk.offset, chunk.n_rows, chunk.rows, chunk.message_ids, sizes,
                      chunk.errors)
        if self.n_rows is None:
            self.done = dataclasses.replace(self.done, rows=log.n)
        self.bar.update(len(chunk.errors))
        known: set[str] = set()
        if self.ledger is not None:
            known = await self._in_ledger(self.ledger.known, chunk.message_ids)
        rows, ids, bodies, previous = [], [], [], []
        limit = self.s.max_batch_bytes - self.envelope.overhead
        for row, mid, body in zip(chunk.rows, chunk.message_ids, chunk.bodies):
            if len(body) > limit:
                log.set(row, INVALID,
                        f"message is {len(body):,} bytes; with the batch envelope it does not "
                        f"fit in max_batch_bytes={self.s.max_batch_bytes:,}")
                self.bar.update(1)
            elif known and mid in known:
                previous.append(row)
            else:
                rows.append(row)
                ids.append(mid)
                bodies.append(body)
        if previous:
            log.set_many(previous, PREVIOUS, "acknowledged by an earlier send (ledger)")
            self.bar.update(len(previous))
        for batch in self.batcher.add_many(rows, ids, bodies):
            await self._enqueue(batch)
            if self._should_stop():
                return

    async def _enqueue(self, batch: Batch) -> None:
        self.log.set_many(batch.rows, 0, batch=batch.number)
        self.done = dataclasses.replace(self.done, batches=self.done.batches + 1)
        await self.queue.put(batch)

    # -- workers ---------------------------------------------------------------------------
    async def _work(self, worker: int) -> None:
        s = self.s
        while True:
            batch = await self.queue.get()
            if batch is None:
                return
            if self._should_stop():
                self.log.set_many(batch.rows, SKIPPED, self.stopped, batch=batch.number)
                self.bar.update(len(batch.rows))
                continue
            if s.dry_run:
                await self._dry(batch)
                continue
            try:
                async for outcome in self.poster.post(batch):
                    await self._record(outcome)
            except asyncio.CancelledError:
                pending = [r for r in batch.rows if self.log.status[r] == 0]
                self.log.set_many(pending, FAILED, _IN_FLIGHT, batch=batch.number)
                return
            except Exception as exc:  # noqa: BLE001 - re-raised by run() after a clean stop
                self._fail(exc)
                return
            self.done = dataclasses.replace(self.done, batches_done=self.done.batches_done + 1)
            self._notify()

    async def _dry(self, batch: Batch) -> None:
        body = self.envelope.body(batch.bodies, now_iso())
        self.poster.bytes_uncompressed += len(body)
        self.poster.bytes_sent += len(gzip_bytes(body)) if self.s.gzip else len(body)
        self.log.set_many(batch.rows, SKIPPED, "dry run: not sent")
        self.bar.update(len(batch.rows))

    async def _record(self, outcome: _Outcome) -> None:
        rows = outcome.batch.rows
        if outcome.status == SENT and self.ledger is not None:
            # Recorded as acknowledged before anything else happens to this batch.
            await asyncio.shield(self._in_ledger(self.ledger.record, outcome.batch.ids,
                                                 outcome.batch.number))
        self.log.set_many(rows, outcome.status, outcome.error, attempts=outcome.attempts,
                          http=outcome.http_status or 0)
        if outcome.stop_all and self.stopped is None:
            self.stopped = (f"not sent: batch {outcome.batch.number} failed with "
                            f"{outcome.error}")
        ok = outcome.status == SENT
        p = self.poster
        self.done = dataclasses.replace(
            self.done, rows_done=self.done.rows_done + len(rows),
            sent=self.done.sent + (len(rows) if ok else 0),
            failed=self.done.failed + (0 if ok else len(rows)),
            requests=p.requests, retries=p.retries, bytes_sent=p.bytes_sent,
        )
        self.bar.update(len(rows))
        self.bar.set_postfix_str(f"{_size(p.bytes_sent)} sent", refresh=False)
        self._notify()

    def _notify(self) -> None:
        if self.s.on_progress is not None:
            self.s.on_progress(dataclasses.replace(self.done, cancelled=self.interrupted))


class _NoBar:
    """Stands in for tqdm when progress=False (and spares its import)."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int | None, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="row", desc="send", leave=True)


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} GB"


def _run_blocking(engine: _Engine) -> SendResult:
    """Run the engine on a helper thread with its own event loop, and wait for it here.

    Waiting in short joins keeps this thread able to receive KeyboardInterrupt (Ctrl-C in a
    script, "interrupt kernel" in Jupyter); it then stops the engine and returns its result.
    """
    box: dict[str, Any] = {}
    finished = threading.Event()

    def target() -> None:
        try:
            box["result"] = asyncio.run(engine.run())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            box["error"] = exc
        finally:
            finished.set()

    thread = threading.Thread(target=target, name="cmdseg-send", daemon=True)
    thread.start()
    try:
        # Event.wait, not Thread.join: an interrupted join can mark a running thread stopped.
        while not finished.wait(0.1):
            pass
    except KeyboardInterrupt:
        engine.interrupt()
        # In-flight requests are cancelled at once; what is left is closing the client and
        # the ledger. A second Ctrl-C here gives up waiting.
        if not finished.wait(engine.s.timeout + 30.0):
            raise
    if "error" in box:
        raise box["error"]
    result = box["result"]
    emit_warnings(result.warnings, stacklevel=4)
    return result


def send(
    data: Any,
    *,
    write_key: str,
    endpoint: str | None = None,
    region: str = "us",
    gzip: bool = True,
    max_batch_bytes: int = 475_000,
    max_batch_messages: int = 2_500,
    concurrency: int = 4,
    max_requests_per_second: float | None = None,
    timeout: float = 30.0,
    max_retry_time: float = 120.0,
    backoff: float = 0.5,
    integrations: dict | None = None,
    run_name: str | None = None,
    ledger: Any = None,
    tz: Any = None,
    allow_duplicate_message_ids: bool = False,
    binary: str = "error",
    progress: bool = True,
    dry_run: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    on_progress: Callable[[SendProgress], None] | None = None,
    cancel: _CancelFlag | None = None,
) -> SendResult:
    """Send the rows of a frame to Segment's HTTP Tracking API as batches; lose nothing.

    Parameters
    ----------
    data : pandas.DataFrame | pyarrow.Table | duckdb.DuckDBPyRelation
        One message per row: pandas with numpy or Arrow dtypes, ``pyarrow.Table``/``RecordBatch``,
        a DuckDB relation (streamed in Arrow record batches, never fetched whole), or anything
        with ``to_arrow()`` (polars). Columns use Segment Spec names (``type``, ``userId``,
        ``anonymousId``, ``event``, ``name``, ``category``, ``groupId``, ``previousId``,
        ``traits``, ``properties``, ``context``, ``integrations``, ``timestamp``,
        ``messageId``) or warehouse names (``user_id``, ``anonymous_id``, ``group_id``,
        ``previous_id``, ``message_id``). Without a ``type`` column, an ``event`` column makes
        every row a track. Other columns go into ``properties`` (track, page, screen) or
        ``traits`` (identify, group), winning over a same-named key of a dict column.
        ``sentAt``/``receivedAt`` columns (and snake_case) are ignored with a warning.
        ``identify_frame`` and ``track_frame`` build such frames.
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
        Largest uncompressed request body in bytes, measured on the exact body with envelope
        and ``sentAt`` (Segment's limit is 500 KB; the default leaves room). At most 500,000.
    max_batch_messages : int
        Most messages per request; at most 2,500 (above it Segment answers 200 and drops them).
    concurrency : int
        Requests in flight at once (1..64), each on its own keep-alive connection.
    max_requests_per_second : float | None
        Cap on request starts per second, retries included (Segment allows ~1,000/s per
        workspace and answers 429 beyond).
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
    ledger : str | os.PathLike | None
        A DuckDB file. The messageIds of each batch Segment acknowledges are recorded there as
        it is acknowledged; rows whose messageId is already there are not sent again (status
        ``previously_sent``). A send killed midway and run again sends only what was not
        acknowledged.
    tz : str | tzinfo | None
        Zone of naive datetimes. ``None`` takes them as UTC with one ``CmdsegWarning``.
    allow_duplicate_message_ids : bool
        Send rows that share a caller-given messageId (Segment keeps only one of them).
    binary : {"error", "base64"}
        ``bytes`` cells are an invalid row naming the column, or sent as base64 text.
    progress : bool
        Show a ``tqdm.auto`` progress bar (rows, with MB sent).
    dry_run : bool
        Validate, serialize and batch, but make no HTTP request; valid rows end ``skipped``.
    transport : httpx.AsyncBaseTransport | None
        For tests (``httpx.MockTransport``) or custom networking.
    on_progress : callable(SendProgress) | None
        Called (on the sending thread) at the start and after each batch outcome.
    cancel : threading.Event | None
        Checked before each batch; once set, no new batch starts and the remaining rows end
        ``skipped`` ("not sent: cancelled"). Batches already in flight finish.

    Returns
    -------
    SendResult
        Per-row statuses and totals; see :class:`SendResult`. After Ctrl-C, the rows sent so
        far are ``sent``, those in flight ``failed`` (safe to resend) and the rest ``skipped``;
        ``interrupted`` is True.

    Raises
    ------
    SendError
        Before anything is sent: empty or malformed write key, unknown region, bad endpoint,
        limits above Segment's, a ledger that cannot be opened.
    MessageError
        When the frame as a whole cannot be read (no ``type``/``event`` column, a column under
        two spellings, an unsupported object). Bad rows never raise: they are ``invalid`` rows.

    Notes
    -----
    messageIds: a ``messageId``/``message_id`` column is used as given, never regenerated
    (an empty cell gets a derived id); ids shared by several rows make those rows invalid
    unless allowed (case B21). Other rows get a UUID-shaped id derived from the message
    content and ``run_name``. Ids are set before the first attempt and every retry resends
    identical message bytes, so Segment's messageId de-duplication makes retries safe.

    A 400 is never retried: the batch is split in halves until the rejected messages are
    alone; those end ``failed`` with the server's message, the rest are sent. Other 4xx fail
    their batch; 401/403/404 also skip the remaining batches. Segment answers 200 even for a
    wrong write key, so ``sent`` means "accepted", not "delivered to the right source".

    ``send`` blocks until done and works inside a running event loop (Jupyter): the engine runs
    on a helper thread. In ``async`` code, ``await send_async(...)`` instead.
    """
    kw = dict(locals())
    return _run_blocking(_Engine(kw.pop("data"), _make_settings(kw)))


async def send_async(data: Any, **kwargs: Any) -> SendResult:
    """``await``-able :func:`send`: same parameters, same result, on the running event loop.

    If the awaiting task is cancelled, in-flight requests are abandoned, acknowledged batches
    stay recorded in the ledger, and ``asyncio.CancelledError`` propagates.
    """
    kw = dict(_DEFAULTS)
    unknown = set(kwargs) - set(kw)
    if unknown:
        raise TypeError(f"send_async() got unexpected keyword argument(s) {sorted(unknown)}")
    kw.update(kwargs)
    if "write_key" not in kwargs:
        raise TypeError("send_async() missing required keyword argument: 'write_key'")
    result = await _Engine(data, _make_settings(kw)).run()
    emit_warnings(result.warnings, stacklevel=3)
    return result


_PREPARE = ("tz", "run_name", "allow_duplicate_message_ids", "binary")
_DEFAULTS = {
    name: p.default for name, p in inspect.signature(send).parameters.items()
    if name != "data"
}


def _make_settings(kw: dict) -> _Settings:
    prepare = {name: kw.pop(name) for name in _PREPARE}
    return _settings(kw.pop("write_key"), kw.pop("endpoint"), kw.pop("region"),
                     prepare=prepare, **kw)
