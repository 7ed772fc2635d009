"""Frames -> Segment ``/v1/batch``: the public ``send`` and ``send_async``.

::

    send(data, write_key=..., ...) ──▶ run_blocking(Engine)   (helper thread, its own event loop)
    await send_async(data, ...)    ──▶ Engine.run()           (the caller's event loop)
                                         └──▶ SendResult (one row per input row)

The engine (``_engine``) streams the input in slices, batches within Segment's limits, keeps
``concurrency`` requests in flight and records acknowledged batches in the ledger. Because
:func:`send` runs it on a helper thread and waits, it works from a plain script and from a
notebook whose event loop is already running, and a Ctrl-C (KeyboardInterrupt) becomes a clean
stop that returns what was sent so far.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import httpx

from ._engine import Engine, _Settings, make_settings, run_blocking
from ._messages import emit_warnings
from ._post import ENDPOINTS, SendProgress, WriteKey, _CancelFlag, mask
from ._result import SendResult

__all__ = ["ENDPOINTS", "SendProgress", "SendResult", "WriteKey", "mask", "send", "send_async"]


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
    return run_blocking(Engine(kw.pop("data"), _make_settings(kw)))


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
    result = await Engine(data, _make_settings(kw)).run()
    emit_warnings(result.warnings, stacklevel=3)
    return result


_PREPARE = ("tz", "run_name", "allow_duplicate_message_ids", "binary")
_DEFAULTS = {
    name: p.default for name, p in inspect.signature(send).parameters.items()
    if name != "data"
}


def _make_settings(kw: dict) -> _Settings:
    prepare = {name: kw.pop(name) for name in _PREPARE}
    return make_settings(kw.pop("write_key"), kw.pop("endpoint"), kw.pop("region"),
                     prepare=prepare, **kw)
