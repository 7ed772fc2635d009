"""A DuckDB file of acknowledged messageIds, so a re-run sends only what was not acknowledged.

::

    batch answered 2xx ──Ledger.record──▶ INSERT its messageIds (committed before the next batch
                                           of that worker is posted)
    next send          ──Ledger.known───▶ rows whose messageId is there end ``previously_sent``

Acknowledgements are kept per destination (the endpoint and a fingerprint of the write key):
ids acknowledged by a LocalSegment or another source are not skipped when the same ledger is
pointed at a real source. Each ``record`` is its own committed DuckDB transaction (written to DuckDB's write-ahead log),
so a process killed at any point keeps every acknowledgement recorded before it. A batch that
was in flight at the kill is sent again by the re-run, with the same messageIds, so Segment's
messageId de-duplication drops any copy it already had. All calls happen on one thread.
"""
from __future__ import annotations

import os

import duckdb
import pyarrow as pa

from ._errors import SendError

_TABLE = "acknowledged"


class Ledger:
    """Acknowledged messageIds in a DuckDB file.

    Parameters
    ----------
    path : str | os.PathLike
        DuckDB database file; created with its table when missing.
    destination : str
        Where the ids were acknowledged (endpoint and key fingerprint); ``known`` only finds
        ids recorded for the same destination.

    Raises
    ------
    SendError
        When the file cannot be opened (another process holds it, not a DuckDB file).
    """

    def __init__(self, path: str | os.PathLike, destination: str = ""):
        self.path = os.fspath(path)
        self.destination = destination
        try:
            self.con = duckdb.connect(self.path)
            self.con.execute(
                f"CREATE TABLE IF NOT EXISTS {_TABLE} (message_id VARCHAR NOT NULL, "
                "batch INTEGER, acknowledged_at TIMESTAMPTZ DEFAULT current_timestamp, "
                "destination VARCHAR NOT NULL DEFAULT '')"
            ).fetchall()
        except duckdb.Error as exc:
            raise SendError(
                f"cannot open the ledger {self.path!r}: {exc}. Close other sends using it, "
                "or pass another path"
            ) from None

    def known(self, ids: list[str]) -> set[str]:
        """The ``ids`` already recorded as acknowledged."""
        if not ids:
            return set()
        probe = pa.table({"message_id": pa.array(ids, pa.string())})
        try:
            self.con.register("_probe", probe)
            rows = self.con.execute(
                f'SELECT p.message_id FROM _probe p SEMI JOIN {_TABLE} a '
                "ON a.message_id = p.message_id AND a.destination = $1", [self.destination]
            ).fetchall()
            self.con.unregister("_probe")
        except duckdb.Error as exc:
            raise SendError(f"cannot read the ledger {self.path!r}: {exc}") from None
        return {r[0] for r in rows}

    def record(self, ids: list[str], batch: int) -> None:
        """Record ``ids`` as acknowledged (one committed transaction)."""
        if not ids:
            return
        rows = pa.table({"message_id": pa.array(ids, pa.string()),
                         "batch": pa.array([batch] * len(ids), pa.int32())})
        try:
            self.con.register("_acked", rows)
            self.con.execute(
                f"INSERT INTO {_TABLE} (message_id, batch, destination) "
                "SELECT message_id, batch, $1 FROM _acked", [self.destination]
            ).fetchall()
            self.con.unregister("_acked")
        except duckdb.Error as exc:
            raise SendError(f"cannot write the ledger {self.path!r}: {exc}") from None

    def count(self) -> int:
        """Number of acknowledged messageIds recorded for this destination."""
        return int(self.con.execute(f"SELECT count(*) FROM {_TABLE} WHERE destination = $1",
                                    [self.destination]).fetchall()[0][0])

    def close(self) -> None:
        self.con.close()

    def __repr__(self) -> str:
        return f"Ledger({self.path!r})"
