"""The send engine: one producer preparing chunks, N workers posting batches, on asyncio.

::

    producer: Source.chunks ──Preparer.chunk (slices on the loop thread)──▶ Chunk
        ──ledger.known──▶ Batcher (<= max_batch_bytes, <= max_batch_messages) ──▶ bounded queue
    ``concurrency`` workers: queue ──_Poster.post──▶ outcome ──▶ RowLog, ledger.record, progress
    RowLog ──▶ SendResult

Memory stays flat: one slice of rows is prepared at a time and the queue holds at most
``2 * concurrency`` batches. ``run_blocking`` runs the engine on a helper thread with its own
loop and waits for it, turning Ctrl-C in the waiting thread into a clean stop.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
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
)
from ._result import DRY_RUN, FAILED, INVALID, PREVIOUS, SENT, SKIPPED, RowLog, SendResult

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


def make_settings(write_key: str, endpoint: str | None, region: str, **kw: Any) -> _Settings:
    key = WriteKey(write_key)
    if region not in ENDPOINTS:
        raise SendError(f"region must be one of {sorted(ENDPOINTS)}, not {region!r}")
    if endpoint is None:
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


class Engine:
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
                self.ledger = await self._in_ledger(
                    Ledger, s.ledger, f"{s.endpoint} key:{s.key.fingerprint}")
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
        every = not known and (not sizes or max(sizes) <= limit)
        if every:  # the common case: every valid row goes on to a batch, as it is
            rows, ids, bodies = chunk.rows, chunk.message_ids, chunk.bodies
        for row, mid, body in zip(chunk.rows, chunk.message_ids, chunk.bodies) if not every else ():
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
        self.log.set_many(batch.rows, SKIPPED, DRY_RUN)
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


def run_blocking(engine: Engine) -> SendResult:
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
