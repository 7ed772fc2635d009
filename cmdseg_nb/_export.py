"""What :func:`cmdseg_nb.load_export` returns: the :class:`Export` and its :class:`LoadReport`.

The canonical events relation (:data:`EVENT_COLUMNS`), the warehouse tables of an export as
read (:class:`WarehouseTable`), the report of what was read, skipped and de-duplicated
(:class:`LoadReport`), and the :class:`Export` that builds the canonical events table on first
use. Split from ``_load`` (which reads the files and builds the table) so that these result
types stand apart from the loading. Source of the rules: ``../shared/spec/warehouse-exports.md``
and ``webhook-rules.md`` ("Before mapping, events are de-duplicated on message id").
"""
from __future__ import annotations

import dataclasses
import os

import duckdb
import pandas as pd

from ._db import ident

__all__ = ["EVENT_COLUMNS", "Export", "LoadReport", "WarehouseTable"]

#: Columns of the canonical events relation, in order, with their DuckDB types.
EVENT_COLUMNS = {
    "message_id": "VARCHAR",
    "type": "VARCHAR",
    "user_id": "VARCHAR",
    "anonymous_id": "VARCHAR",
    "event": "VARCHAR",
    "name": "VARCHAR",
    "timestamp": "TIMESTAMPTZ",
    "original_timestamp": "TIMESTAMPTZ",
    "received_at": "TIMESTAMPTZ",
    "traits": "JSON",
    "properties": "JSON",
    "context": "JSON",
    "event_json": "JSON",
    "source": "VARCHAR",
}


@dataclasses.dataclass
class LoadReport:
    """What :func:`cmdseg_nb.load_export` read.

    Attributes
    ----------
    rows_read : dict[str, int]
        Rows read per table (warehouse) or per file (raw events).
    events : int
        Events in the canonical relation after de-duplication.
    duplicates_removed : int
        Rows dropped because another row of the same type had the same message id (the copy
        received last is kept), as Segment's warehouses de-duplicate each table on ``id``.
    message_id_collisions : int
        Message ids shared by events of different types (e.g. copied examples). They are not
        duplicates of one event; all are kept. Segment's live pipeline would keep only one.
    rows_without_user_id : int
        Events whose ``userId`` is missing, null, empty or whitespace (receiver rule 1).
    rejected_rows : dict[str, int]
        Per table or file, rows (lines) that could not be read and were skipped: ragged CSV
        rows, lines that are not JSON. The other rows still load.
    rejected_examples : list[tuple[str, str, int, str]]
        The first skipped rows: ``(table, file, line number, reason)``.
    track_twins : dict[str, int]
        ``tracks`` rows dropped because their per-event table holds the same event with its
        properties: ``by_id`` (same ``id``, Segment's layout) and ``by_event_user_time`` (same
        event, userId, anonymousId and timestamp, for loaders that write different ids).
    ignored_tables : dict[str, str]
        Tables read but not turned into events, with the reason (``users``, ``accounts``).
    unrestored_names : dict[str, list[str]]
        Per table, ``context_*`` columns whose original Spec name could not be restored.
    notes : list[str]
        Plain-language limits of this export (e.g. names kept as exported).
    """

    rows_read: dict[str, int] = dataclasses.field(default_factory=dict)
    events: int = 0
    duplicates_removed: int = 0
    rows_without_user_id: int = 0
    message_id_collisions: int = 0
    track_twins: dict[str, int] = dataclasses.field(default_factory=dict)
    rejected_rows: dict[str, int] = dataclasses.field(default_factory=dict)
    rejected_examples: list[tuple[str, str, int, str]] = dataclasses.field(default_factory=list)
    ignored_tables: dict[str, str] = dataclasses.field(default_factory=dict)
    unrestored_names: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    def add_rejected(self, table: str, path: str, line: int, reason: str) -> None:
        """Count one skipped row, keeping the first 20 as examples."""
        self.rejected_rows[table] = self.rejected_rows.get(table, 0) + 1
        if len(self.rejected_examples) < 20:
            self.rejected_examples.append((table, path, line, reason))

    def __str__(self) -> str:
        lines = [f"rows read: {sum(self.rows_read.values()):,} "
                 f"({', '.join(f'{k} {v:,}' for k, v in self.rows_read.items())})",
                 f"duplicates removed: {self.duplicates_removed:,}",
                 *([f"message ids shared by events of different types (kept): "
                    f"{self.message_id_collisions:,}"] if self.message_id_collisions else []),
                 f"events: {self.events:,}",
                 f"events without userId: {self.rows_without_user_id:,}"]
        if self.track_twins:
            lines.append(f"tracks rows replaced by their per-event table row: "
                         f"{self.track_twins.get('by_id', 0):,} by id, "
                         f"{self.track_twins.get('by_event_user_time', 0):,} by event+user+time")
        for t, n in self.rejected_rows.items():
            lines.append(f"SKIPPED {n:,} unreadable row(s) of {t}")
        for t, path, line, reason in self.rejected_examples:
            lines.append(f"  {os.path.basename(path)} line {line}: {reason}")
        for t, why in self.ignored_tables.items():
            lines.append(f"ignored table {t}: {why}")
        for t, names in self.unrestored_names.items():
            lines.append(f"{t}: names not restored to the Spec: {', '.join(names)}")
        lines.extend(self.notes)
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class WarehouseTable:
    """One warehouse table of an export, as read (before rebuilding rows into events).

    Attributes
    ----------
    name : str
        Table name, lower case (``identifies``, ``tracks``, ``order_completed``...).
    view : str
        DuckDB view reading the files in the Export's connection.
    columns : dict[str, str]
        Lower-case column name -> the name as found in the files.
    types : dict[str, str]
        Lower-case column name -> DuckDB type.
    event_type : str | None
        Segment event type the rows are (``identify``, ``track``, ...); None for snapshots.
    paths : tuple[str, ...]
        Files read.
    """

    name: str
    view: str
    columns: dict
    types: dict
    event_type: str | None
    paths: tuple


class Export:
    """Canonical events of one export, held in DuckDB.

    Attributes
    ----------
    tables : tuple[WarehouseTable, ...]
        The warehouse tables read (empty for raw events only).
    raw_files : tuple[str, ...]
        The raw event files read.
    con : duckdb.DuckDBPyConnection
        The connection holding the table ``table`` (default ``cmdseg_events``).
    table : str
        Name of the canonical events table; columns are :data:`EVENT_COLUMNS`. The table
        (every event rebuilt as JSON) is created on first access of ``table``, ``report``,
        :meth:`events` and the other accessors, not by :func:`~cmdseg_nb.load_export`: the planned path
        of :func:`cmdseg_nb.user_properties` reads the warehouse columns directly.
    report : LoadReport
        What was read (its counts also build the canonical table on first access).
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, table: str, report: LoadReport,
                 tables: tuple = (), raw_files: tuple = (), *, finish=None):
        self.con = con
        self._table = table
        self._report = report
        self.tables = tuple(tables)
        self.raw_files = tuple(raw_files)
        self._finish = finish  # builds the canonical table on first use (None once built)

    @property
    def materialized(self) -> bool:
        """Whether the canonical events table exists yet (it is built on first use)."""
        return self._finish is None

    def _ensure(self) -> None:
        if self._finish is not None:
            finish, self._finish = self._finish, None
            try:
                finish(self)
            except BaseException:
                self._finish = finish
                raise

    @property
    def table(self) -> str:
        """Name of the canonical events table; building it on first access."""
        self._ensure()
        return self._table

    @property
    def report(self) -> LoadReport:
        """What was read; the counts need the canonical table, built on first access."""
        self._ensure()
        return self._report

    def events(self) -> duckdb.DuckDBPyRelation:
        """The canonical events as a DuckDB relation (columns: :data:`EVENT_COLUMNS`)."""
        return self.con.table(self.table)

    def to_df(self) -> pd.DataFrame:
        """The canonical events as a DataFrame; JSON columns are JSON text (``str``)."""
        return self.con.execute(f"SELECT * FROM {ident(self.table)} ORDER BY source, message_id").df()

    def event_dicts(self, where: str = "TRUE", limit: int | None = None) -> list[dict]:
        """Events as Python dicts (the rebuilt Segment event), oldest first.

        Parameters
        ----------
        where : str
            A SQL condition over the canonical columns, e.g. ``"type = 'track' AND user_id IS
            NOT NULL"``.
        limit : int, optional
            At most this many events.
        """
        import orjson
        if not isinstance(where, str):
            raise TypeError(f"where must be a SQL condition string, not {type(where).__name__}; "
                            f"use limit= for a number of events")
        lim = f" LIMIT {int(limit)}" if limit is not None else ""
        rows = self.con.execute(
            f"SELECT CAST(event_json AS VARCHAR) FROM {ident(self.table)} WHERE {where}"
            f" ORDER BY timestamp NULLS FIRST, message_id{lim}").fetchall()
        return [orjson.loads(r[0]) for r in rows]

    def __len__(self) -> int:
        return self.report.events

    def __repr__(self) -> str:
        if not self.materialized:  # raw files are not read (nor counted) before
            parts = []
            if self.tables:
                rows = sum(n for t, n in self._report.rows_read.items() if t in {x.name for x in self.tables})
                parts.append(f"{len(self.tables)} tables ({rows:,} rows)")
            if self.raw_files:
                parts.append(f"{len(self.raw_files)} raw event file{'s' if len(self.raw_files) != 1 else ''}")
            return f"<Export of {' and '.join(parts)}, not yet materialized>"
        return (f"<Export {self.report.events:,} events from "
                f"{len(self.report.rows_read)} tables/files in {self.table!r}>")
