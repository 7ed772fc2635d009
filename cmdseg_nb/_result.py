"""Per-row outcomes of a send, kept compactly while it runs, and the :class:`SendResult`.

::

    Chunk (ids, invalid rows) ──RowLog.add_chunk──▶ compact arrays, one slot per input row
    outcome of a batch        ──RowLog.outcome────▶ status, attempts, HTTP status, error
    RowLog ──SendResult──▶ rows DataFrame + counts + bytes + duration + events/s + HTML repr

Statuses: ``sent`` (Segment answered 2xx), ``failed`` (it did not, after retries, or the batch
was in flight when the send was interrupted), ``invalid`` (the row breaks a rule and was never
sent), ``skipped`` (valid but not sent: dry run, stopped, interrupted) and ``previously_sent``
(its messageId is in the ledger: acknowledged by an earlier send).
"""
from __future__ import annotations

import html

import numpy as np
import pandas as pd
import pyarrow as pa

STATUSES = ("pending", "sent", "failed", "invalid", "skipped", "previously_sent")
#: The error text of rows a dry run did not send (everything else about them was done).
DRY_RUN = "dry run: not sent"
PENDING, SENT, FAILED, INVALID, SKIPPED, PREVIOUS = range(6)


class RowLog:
    """Outcome of every input row, in numpy arrays that grow by doubling (flat per row)."""

    def __init__(self, n_rows: int | None):
        cap = max(16, n_rows or 0)
        self.n = n_rows or 0  # rows of chunks never read (a stopped send) still get a row
        self.status = np.zeros(cap, np.int8)
        self.batch = np.full(cap, -1, np.int32)
        self.attempts = np.zeros(cap, np.int16)
        self.http = np.zeros(cap, np.int16)
        self.nbytes = np.full(cap, -1, np.int32)
        self.ids: list[pa.Array] = []
        self.errors: dict[int, str] = {}
        self.columns: dict[int, str] = {}

    def _grow(self, n: int) -> None:
        if n <= len(self.status):
            return
        cap = max(n, 2 * len(self.status))
        for name, fill in (("status", 0), ("batch", -1), ("attempts", 0), ("http", 0),
                           ("nbytes", -1)):
            old = getattr(self, name)
            new = np.full(cap, fill, old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def add_chunk(self, offset: int, n_rows: int, rows: list[int], ids: list[str],
                  sizes: list[int], errors) -> None:
        """Record a prepared chunk: messageIds and sizes of valid rows, invalid rows."""
        self._grow(offset + n_rows)
        self.n = max(self.n, offset + n_rows)
        if len(rows) == n_rows:  # every row valid: rows are offset, offset + 1, ...
            self.ids.append(pa.array(ids, pa.string()))
            self.nbytes[offset:offset + n_rows] = sizes
        else:
            full: list[str | None] = [None] * n_rows
            for r, mid in zip(rows, ids):
                full[r - offset] = mid
            self.ids.append(pa.array(full, pa.string()))
            if rows:
                self.nbytes[np.asarray(rows)] = sizes
        for exc in errors:
            self.set(exc.row, INVALID, exc.reason)
            self.columns[exc.row] = exc.column

    def set(self, row: int, status: int, error: str | None = None) -> None:
        self.status[row] = status
        if error is not None:
            self.errors[row] = error

    def set_many(self, rows: list[int], status: int, error: str | None = None, *,
                 attempts: int | None = None, http: int | None = None,
                 batch: int | None = None) -> None:
        idx = np.asarray(rows, dtype=np.int64)
        self.status[idx] = status
        if attempts is not None:
            self.attempts[idx] = attempts
        if http is not None:
            self.http[idx] = http
        if batch is not None:
            self.batch[idx] = batch
        if error is not None:
            self.errors.update(dict.fromkeys(rows, error))
        elif self.errors:
            for r in rows:
                self.errors.pop(r, None)

    def finish(self, reason: str) -> None:
        """Rows never reached (the send stopped): ``skipped`` with ``reason``."""
        pending = np.flatnonzero(self.status[: self.n] == PENDING)
        for r in pending.tolist():
            self.errors[r] = reason
        self.status[pending] = SKIPPED

    def frame(self, index: pd.Index | None) -> pd.DataFrame:
        n = self.n
        have = sum(len(a) for a in self.ids)
        chunks = [*self.ids, pa.nulls(max(0, n - have), pa.string())]
        ids = pa.chunked_array(chunks, pa.string())  # no copy of the chunks
        batch, http, nbytes = self.batch[:n], self.http[:n], self.nbytes[:n]
        errors = np.full(n, None, dtype=object)
        columns = np.full(n, None, dtype=object)
        for r, e in self.errors.items():
            errors[r] = e
        for r, c in self.columns.items():
            columns[r] = c
        rows = pd.DataFrame(
            {
                "row": np.arange(n, dtype=np.int64),
                "messageId": pd.arrays.ArrowExtensionArray(ids),
                "status": pd.Categorical.from_codes(self.status[:n], STATUSES),
                "error": errors,
                "column": columns,
                "batch": pd.arrays.IntegerArray(batch.copy(), batch < 0),
                "attempts": self.attempts[:n].astype(np.int32),
                "http_status": pd.arrays.IntegerArray(http.astype(np.int32), http == 0),
                "bytes": pd.arrays.IntegerArray(nbytes.copy(), nbytes < 0),
            },
            copy=False,
        )
        if index is not None and len(index) == n:
            rows.index = index
        return rows


class SendResult:
    """What :func:`send` did, one row per input row.

    Attributes
    ----------
    rows : pandas.DataFrame
        Indexed like the input (a RangeIndex for Arrow and DuckDB input). Columns: ``row``
        (int, 0-based position), ``messageId`` (string or missing for invalid rows),
        ``status`` (categorical: ``"sent"``, ``"failed"``, ``"invalid"``, ``"skipped"``,
        ``"previously_sent"``), ``error`` (str or None; the server's message for failures),
        ``column`` (the column at fault for invalid rows), ``batch`` (Int32, batch number),
        ``attempts`` (int32, HTTP attempts that carried the row), ``http_status`` (Int32, last
        status), ``bytes`` (Int32, serialized message size in bytes).
    sent, failed, invalid, skipped, previously_sent : int
        Row counts per status.
    batches_sent, batches_failed : int
        Batches whose rows were all sent / that have at least one failed row.
    requests, retries : int
        HTTP requests made (retries and split halves included), and how many were retries.
    bytes_sent, bytes_uncompressed : int
        Request body bytes on the wire (after gzip), and before gzip.
    duration : float
        Seconds from start to end of the send.
    events_per_second : float
        ``sent / duration``.
    interrupted : bool
        The send was stopped by Ctrl-C / KeyboardInterrupt (or ``cancel``); ``rows`` says what
        was sent so far.
    """

    def __init__(self, rows: pd.DataFrame, *, endpoint: str, write_key: str, requests: int,
                 retries: int = 0, bytes_sent: int, bytes_uncompressed: int, duration: float,
                 dry_run: bool, warnings: list[str], interrupted: bool = False,
                 ledger: str | None = None):
        self.rows = rows
        self.endpoint = endpoint
        self.write_key = write_key  # masked text only
        self.requests = requests
        self.retries = retries
        self.bytes_sent = bytes_sent
        self.bytes_uncompressed = bytes_uncompressed
        self.duration = duration
        self.dry_run = dry_run
        self.warnings = warnings
        self.interrupted = interrupted
        self.ledger = ledger
        counts = rows["status"].value_counts()
        self.sent = int(counts.get("sent", 0))
        self.failed = int(counts.get("failed", 0))
        self.invalid = int(counts.get("invalid", 0))
        self.skipped = int(counts.get("skipped", 0))
        self.previously_sent = int(counts.get("previously_sent", 0))
        # per batch, without copying the frame (it can have millions of rows)
        batch = rows["batch"].to_numpy(dtype=np.int64, na_value=-1)
        planned = batch >= 0
        sent = (rows["status"] == "sent").to_numpy(dtype=bool)
        failed = (rows["status"] == "failed").to_numpy(dtype=bool)
        all_batches = np.unique(batch[planned])
        not_sent = np.unique(batch[planned & ~sent])
        self.batches_failed = int(len(np.unique(batch[planned & failed])))
        self.batches_sent = int(len(all_batches) - len(not_sent))

    @property
    def events_per_second(self) -> float:
        return self.sent / self.duration if self.duration > 0 else 0.0

    @property
    def ok(self) -> bool:
        """True when every row was sent (now or, with a ledger, by an earlier send); for a dry
        run, when every row would be sent (none invalid)."""
        if self.dry_run:
            return len(self.errors) == 0
        return self.sent + self.previously_sent == len(self.rows)

    def _would_send(self) -> pd.Series:
        return (self.rows["status"] == "skipped") & (self.rows["error"] == DRY_RUN)

    @property
    def errors(self) -> pd.DataFrame:
        """The rows that were not sent, with their reasons (for a dry run: the rows that would
        not be sent)."""
        bad = ~self.rows["status"].isin(["sent", "previously_sent"])
        if self.dry_run:
            bad &= ~self._would_send()
        return self.rows[bad]

    def _summary(self) -> list[tuple[str, str]]:
        out = [
            ("endpoint", self.endpoint + (" (dry run: nothing sent)" if self.dry_run else "")),
            ("write key", self.write_key),
            ("rows", f"{len(self.rows):,}"),
            ("sent", f"{self.sent:,}"),
            ("failed", f"{self.failed:,}"),
            ("invalid", f"{self.invalid:,}"),
            ("skipped", f"{self.skipped:,}"),
        ]
        if self.ledger is not None:
            out.append(("previously sent", f"{self.previously_sent:,} (ledger {self.ledger})"))
        if self.dry_run:
            out += [("to send", f"{int(self._would_send().sum()):,} rows would be sent"),
                    ("bytes", f"{self.bytes_sent:,} would go on the wire "
                              f"({self.bytes_uncompressed:,} uncompressed)")]
        else:
            out.append(("bytes", f"{self.bytes_sent:,} on the wire "
                                 f"({self.bytes_uncompressed:,} uncompressed)"))
        out += [
            ("batches", f"{self.batches_sent:,} sent, {self.batches_failed:,} failed"),
            ("requests", f"{self.requests:,} ({self.retries:,} retries)"),
            ("duration", f"{self.duration:.2f} s ({self.events_per_second:,.0f} events/s)"),
        ]
        if self.interrupted:
            out.append(("stopped", "interrupted: rows not sent are 'skipped' or 'failed'"))
        return out

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
