"""Load exported Segment event tables into one canonical DuckDB relation of events.

Reads warehouse tables (CSV, Parquet or NDJSON files named by table: ``identifies``,
``tracks``, ``pages``, ``screens``, ``groups``, ``aliases``, per-event track tables) and raw
Segment events (NDJSON, ``.json``, ``.gz``), rebuilds warehouse rows into Segment events
(``_warehouse``), de-duplicates on message id keeping the copy received last, and reports
what it read. Source of the rules: ``../shared/spec/warehouse-exports.md`` and
``webhook-rules.md`` ("Before mapping, events are de-duplicated on message id").

The pieces: ``_export`` (the :class:`~cmdseg_nb._export.Export` returned and its
:class:`~cmdseg_nb._export.LoadReport`), ``_files`` (finding and reading the files, counting
the rows that cannot be read), ``_selects`` (the SQL of each table's events); here
:func:`load_export` and the building of the canonical events table.
"""
from __future__ import annotations

import os
from collections.abc import Iterable

import duckdb

from . import _receiver
from ._db import connect, duckdb_errors, ident, json_path
from ._errors import ExportError
from ._export import Export, LoadReport, WarehouseTable
from ._files import (
    _check_csv_header,
    _count_raw,
    _csv_rejects,
    _discover,
    _note_bad_json,
    _parquet_footers,
    _reader_sql,
    _Source,
)
from ._selects import _raw_select, _twin_filters, table_selects
from ._warehouse import SNAPSHOT_TABLES, TABLE_TYPES, per_event_tables

__all__ = ["load_export"]


def load_export(source: str | os.PathLike | Iterable[str | os.PathLike], *,
                con: duckdb.DuckDBPyConnection | None = None,
                table: str = "cmdseg_events",
                memory_limit: str | None = None,
                temp_directory: str | None = None) -> Export:
    """Load exported Segment event tables or raw events into one canonical DuckDB table.

    Parameters
    ----------
    source
        A folder (searched recursively), a file, a glob, or a list of them. Warehouse tables
        are CSV (``.csv``, ``.csv.gz``), Parquet or NDJSON files named by table
        (``identifies.csv``, ``tracks.parquet``, ``order_completed.csv``; a folder of
        ``part-*`` files is named by the folder); column names in any case (Snowflake's
        UPPER-CASE is folded to lower case). Raw Segment events are NDJSON, ``.json`` (an
        array or one event per line) or gzipped (``.json.gz``, Segment's S3 archives); a JSON
        file is raw when its first record has Spec keys (``userId``, ``messageId``, ...).
    con
        A DuckDB connection to load into; a new in-memory one by default. Its ``TimeZone``
        is set to UTC and its ``default_collation`` to none (ids compare byte for byte).
    table
        Name of the canonical events table created (replaced if it exists).
    memory_limit, temp_directory
        DuckDB ``memory_limit`` (e.g. ``"2GB"``) and spill folder, for exports larger than memory.

    Returns
    -------
    Export
        ``export.events()`` is the canonical relation with columns :data:`~cmdseg_nb._export.EVENT_COLUMNS`:
        ``message_id`` VARCHAR, ``type`` VARCHAR, ``user_id`` VARCHAR (normalized by receiver
        rule 1; NULL when missing), ``anonymous_id``, ``event``, ``name`` VARCHAR,
        ``timestamp``, ``original_timestamp``, ``received_at`` TIMESTAMPTZ (naive values are
        UTC), ``traits``, ``properties``, ``context``, ``event_json`` JSON (the whole
        rebuilt Segment event), ``source`` VARCHAR. ``export.report`` is a :class:`~cmdseg_nb.LoadReport`.

    Raises
    ------
    ExportError
        When the source has no readable files, a file cannot be parsed, or a table's column
        names collide after case folding. Raw event files are only opened here (their first
        64 KB); a raw file that is corrupt further on raises ``ExportError`` naming it when it
        is read (``user_properties``, ``export.report``), and lines that are not JSON are
        counted and named in ``export.report`` (the raw fast path warns with
        :class:`CmdsegWarning` when it meets some).

    Notes
    -----
    De-duplication keeps, per event type and message id, the copy with the latest ``received_at`` (ties:
    the smallest hash of the event JSON, so the result does not depend on row order), as
    Segment's warehouses do. Rows without a message id are all kept. Traits and properties
    are never read through a sampled schema (case B06): raw events are read with
    ``read_json_objects`` and kept as JSON, and CSV types are sniffed over all rows.
    """
    con = connect(con, memory_limit=memory_limit, temp_directory=temp_directory)
    report = LoadReport()
    sources = _discover(source)
    selects: list[str] = []
    wh = [s for s in sources if s.kind == "warehouse"]
    views: dict[str, tuple[_Source, dict[str, str], dict[str, str], str]] = {}
    read: list[tuple[_Source, str, list | None, int | None]] = []
    for i, src in enumerate(wh):
        view = f"cmdseg_src_{i}"
        with duckdb_errors(f"cannot read table {src.name!r} from {src.paths}", ExportError,
                           source=src.name):
            con.execute(f"CREATE OR REPLACE TEMP VIEW {ident(view)} AS SELECT * FROM {_reader_sql(src)}")
            if src.fmt == "parquet":  # columns and row counts from the footers, below, at once
                read.append((src, view, None, None))
                continue
            desc = con.execute(f"DESCRIBE {ident(view)}").fetchall()
            n = con.execute(f"SELECT count(*) FROM {ident(view)}").fetchall()[0][0]
        if src.fmt == "csv":
            _check_csv_header(src)
            with duckdb_errors(f"cannot read table {src.name!r} from {src.paths}", ExportError,
                               source=src.name):
                for path, line, reason in _csv_rejects(con, src):
                    report.add_rejected(src.name, path, line, reason)
        elif src.fmt == "json":
            for path in src.paths:
                _note_bad_json(con, src.name, path, report, warehouse=True)
        read.append((src, view, desc, n))
    read = _parquet_footers(con, read)
    for src, view, desc, n in read:
        cols: dict[str, str] = {}
        types: dict[str, str] = {}
        for name, dtype, *_ in desc:
            low = name.lower()
            if low in cols:
                raise ExportError(f"table {src.name!r}: columns {cols[low]!r} and {name!r} "
                                  f"collide after folding case", source=src.name)
            cols[low] = name
            types[low] = dtype
        report.rows_read[src.name] = n
        views[src.name] = (src, cols, types, view)

    tables = tuple(
        WarehouseTable(name, view, cols, types,
                       None if name in SNAPSHOT_TABLES else TABLE_TYPES.get(name, "track"),
                       tuple(src.paths))
        for name, (src, cols, types, view) in views.items())
    for t in tables:
        if t.event_type is None:
            report.ignored_tables[t.name] = ("an upserted snapshot of the latest traits, not "
                                             "events; properties are computed from identifies")
    selects = [sql for _name, sql in table_selects(tables, report=report)]
    raw = [s for s in sources if s.kind == "raw"]
    # raw files are not read here: their lines are counted (and the bad ones named) when the
    # report is first needed; the raw fast path of user_properties reads them once by itself
    raw_selects = [_raw_select(src) for src in raw]
    if not selects and not raw_selects:
        raise ExportError("no event tables found (only snapshot tables such as users/accounts)",
                          source=str(source))
    if wh:
        report.notes.append(
            "warehouse tables: trait/property names are kept as exported (snake_case, nested "
            "objects flattened with '_'); original camelCase or dotted names and explicit nulls "
            "cannot be recovered, and NULL cells are read as 'not sent'.")
    raw_files = tuple(p for s in raw for p in s.paths)

    raw_rows: list[int] = []  # counted once, even when building the table fails and is retried

    def finish(export: Export) -> None:
        if raw and not raw_rows:
            raw_rows.append(_count_raw(con, raw, report))
        _materialize(con, table, tables, selects, report, raw_selects, sum(raw_rows))

    return Export(con, table, report, tables, raw_files, finish=finish)


def _materialize(con, table: str, tables: tuple, selects: list[str], report: LoadReport,
                 raw_selects: list[str] = (), raw_rows: int = 0) -> None:
    """Create the canonical events table and fill the report's counts (``raw_rows``: the rows
    the ``raw_selects`` yield, counted before)."""
    names = {t.name for t in tables if t.event_type is not None}
    per_event = per_event_tables(tables)
    if "tracks" in names and per_event:
        pe, by_id, by_content = _twin_filters(sql for _name, sql in table_selects(per_event))
        tracks = [t for t in tables if t.name == "tracks"]
        tracks_raw = table_selects(tracks)[0][1]
        with duckdb_errors("cannot match tracks rows to their per-event tables", ExportError,
                           source="tracks"):
            n_id, n_content = con.execute(f"""
                SELECT count(*) FILTER (WHERE EXISTS (SELECT 1 FROM ({pe}) x WHERE {by_id})),
                       count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM ({pe}) x WHERE {by_id})
                                        AND EXISTS (SELECT 1 FROM ({pe}) x WHERE {by_content}))
                FROM ({tracks_raw}) w""").fetchall()[0]
        report.track_twins = {"by_id": int(n_id), "by_event_user_time": int(n_content)}
    counted = " UNION ALL BY NAME ".join(f"({s})" for s in selects)
    union = " UNION ALL BY NAME ".join(f"({s})" for s in [*selects, *raw_selects])
    canon = f"""
        WITH raw AS ({union}),
        ranked AS (
            SELECT *, row_number() OVER (
                PARTITION BY type, message_id ORDER BY received_at DESC NULLS LAST, md5(CAST(event_json AS VARCHAR)) ASC) AS _dup
            FROM raw)
        SELECT message_id, type,
               {_receiver.user_id_sql("event_json")} AS user_id,
               anonymous_id, event, name, timestamp, original_timestamp, received_at,
               json_extract(event_json, {json_path('traits')}) AS traits,
               json_extract(event_json, {json_path('properties')}) AS properties,
               json_extract(event_json, {json_path('context')}) AS context,
               event_json, source
        FROM ranked WHERE _dup = 1 OR message_id IS NULL"""
    with duckdb_errors("cannot build the canonical events table", ExportError):
        total = raw_rows + (con.execute(f"SELECT count(*) FROM ({counted})").fetchall()[0][0]
                            if selects else 0)
        con.execute(f"CREATE OR REPLACE TABLE {ident(table)} AS {canon}")
        report.events, report.rows_without_user_id = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE user_id IS NULL) FROM {ident(table)}").fetchall()[0]
    report.duplicates_removed = total - report.events
    with duckdb_errors("cannot count message id collisions", ExportError):
        report.message_id_collisions = con.execute(
            f"SELECT count(*) FROM (SELECT message_id FROM {ident(table)} WHERE message_id IS NOT NULL "
            f"GROUP BY message_id HAVING count(DISTINCT type) > 1)").fetchall()[0][0]
