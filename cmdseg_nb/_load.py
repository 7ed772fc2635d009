"""Load exported Segment event tables into one canonical DuckDB relation of events.

Reads warehouse tables (CSV, Parquet or NDJSON files named by table: ``identifies``,
``tracks``, ``pages``, ``screens``, ``groups``, ``aliases``, per-event track tables) and raw
Segment events (NDJSON, ``.json``, ``.gz``), rebuilds warehouse rows into Segment events
(``_warehouse``), de-duplicates on message id keeping the copy received last, and reports
what it read. Source of the rules: ``../shared/spec/warehouse-exports.md`` and
``webhook-rules.md`` ("Before mapping, events are de-duplicated on message id").
"""
from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Iterable

import duckdb
import pandas as pd

from . import _receiver
from ._db import connect, duckdb_errors, ident, json_path, sql_str
from ._errors import ExportError
from ._warehouse import (
    SNAPSHOT_TABLES,
    TABLE_TYPES,
    context_path,
    is_system_column,
    json_value_sql,
    nested_object_sql,
    non_empty_sql,
    object_sql,
    per_event_tables,
    scalar_text_sql,
)

__all__ = ["EVENT_COLUMNS", "Export", "LoadReport", "WarehouseTable", "load_export"]

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

_CSV_EXT = (".csv", ".csv.gz", ".tsv")
_PARQUET_EXT = (".parquet", ".pq")
_JSON_EXT = (".ndjson", ".jsonl", ".json", ".ndjson.gz", ".jsonl.gz", ".json.gz", ".gz")


@dataclasses.dataclass
class LoadReport:
    """What :func:`load_export` read.

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
        :meth:`events` and the other accessors, not by :func:`load_export`: the planned path
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


@dataclasses.dataclass
class _Source:
    name: str            # table name (warehouse) or file name (raw)
    paths: list[str]
    fmt: str             # csv | parquet | json
    kind: str            # warehouse | raw


def _strip_ext(fname: str) -> str:
    low = fname.lower()
    for ext in sorted(_CSV_EXT + _PARQUET_EXT + _JSON_EXT, key=len, reverse=True):
        if low.endswith(ext):
            return fname[: -len(ext)]
    return fname


def _fmt(path: str) -> str | None:
    low = path.lower()
    if low.endswith(_CSV_EXT):
        return "csv"
    if low.endswith(_PARQUET_EXT):
        return "parquet"
    if low.endswith(_JSON_EXT):
        return "json"
    return None


def _discover(source) -> list[_Source]:
    if isinstance(source, (str, os.PathLike)):
        items = [os.fspath(source)]
    else:
        items = [os.fspath(s) for s in source]
    files: list[str] = []
    for item in items:
        if os.path.isdir(item):
            for root, _dirs, names in os.walk(item):
                for n in sorted(names):
                    if _fmt(n) and not n.startswith("."):
                        files.append(os.path.join(root, n))
        elif any(ch in item for ch in "*?["):
            files.extend(sorted(glob.glob(item, recursive=True)))
        elif os.path.exists(item):
            files.append(item)
        else:
            raise ExportError(f"no such file or folder: {item!r}", source=item)
    if not files:
        raise ExportError(f"no CSV, Parquet or JSON files found in {items!r}", source=str(items))
    by_table: dict[tuple[str, str], list[str]] = {}
    sources: list[_Source] = []
    for f in sorted(files):
        fmt = _fmt(f)
        if fmt is None:
            continue
        if fmt == "json" and _looks_raw(f):
            sources.append(_Source(os.path.basename(f), [f], "json", "raw"))
            continue
        # Warehouse table named by its file (or its folder, for partitioned folders of parts).
        stem = _strip_ext(os.path.basename(f)).lower()
        if stem.startswith("part-") or stem.startswith("part_") or stem.isdigit():
            stem = os.path.basename(os.path.dirname(f)).lower()
        by_table.setdefault((stem, fmt), []).append(f)
    for (stem, fmt), paths in by_table.items():
        sources.append(_Source(stem, paths, fmt, "warehouse"))
    return sources


def _looks_raw(path: str) -> bool:
    """Raw Segment events carry camelCase Spec keys; warehouse rows carry snake_case columns."""
    import gzip
    import orjson
    opener = gzip.open if path.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(65536)
    except (OSError, EOFError) as exc:
        raise ExportError(f"cannot read {path!r}: {exc} (a truncated or corrupt file?)",
                          source=path) from exc
    text = head.lstrip()
    if text.startswith(b"["):
        return True  # a JSON array of events
    line = text.split(b"\n", 1)[0]
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return True  # let the raw reader report the bad line
    if not isinstance(obj, dict):
        return True
    spec = {"userId", "anonymousId", "messageId", "traits", "properties", "receivedAt",
            "originalTimestamp", "previousId", "groupId"}
    return bool(spec & obj.keys()) or ("type" in obj and "user_id" not in obj)


def _check_csv_header(src: _Source) -> None:
    """DuckDB renames a repeated CSV column (``plan`` -> ``plan_1``); refuse it instead."""
    import csv
    import gzip
    for path in src.paths:
        opener = gzip.open if path.lower().endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", newline="") as fh:
            header = next(csv.reader(fh), [])
        seen: dict[str, str] = {}
        for name in header:
            low = name.lower()
            if low in seen:
                raise ExportError(f"table {src.name!r} ({path}): columns {seen[low]!r} and "
                                  f"{name!r} collide after folding case", source=src.name)
            seen[low] = name


def _csv_options(path: str) -> str:
    """Explicit dialect, so a ragged row is rejected instead of the sniffer falling back to one
    column holding whole lines; types are sniffed over all rows (never a sample)."""
    delim = "\\t" if path.lower().endswith(".tsv") else ","
    return (f"header=true, delim='{delim}', quote='\"', escape='\"', sample_size=-1, "
            f"ignore_errors=true")


def _reader_sql(src: _Source) -> str:
    files = "[" + ", ".join(sql_str(p) for p in src.paths) + "]"
    if src.fmt == "csv":
        return f"read_csv({files}, union_by_name=true, {_csv_options(src.paths[0])})"
    if src.fmt == "parquet":
        return f"read_parquet({files}, union_by_name=true)"
    return (f"read_json({files}, format='newline_delimited', union_by_name=true, "
            f"sample_size=-1, ignore_errors=true)")


def _parquet_footers(con, read: list) -> list:
    """Fill the columns (name, DuckDB type) and row counts of the Parquet tables in ``read``
    (``(source, view, None, None)``) with two queries for all of them: the views' columns, and
    the files' row counts from their footers (no data pages are read)."""
    todo = [(i, src, view) for i, (src, view, desc, _n) in enumerate(read) if desc is None]
    if not todo:
        return read
    names = ", ".join(sql_str(view) for _i, _s, view in todo)
    cols: dict[str, list] = {}
    for view, name, dtype in con.execute(
            f"SELECT table_name, column_name, data_type FROM information_schema.columns "
            f"WHERE table_name IN ({names}) ORDER BY table_name, ordinal_position").fetchall():
        cols.setdefault(view, []).append((name, dtype))
    files = [p for _i, src, _v in todo for p in src.paths]
    with duckdb_errors("cannot read the Parquet footers", ExportError):
        rows = dict(con.execute(
            f"SELECT file_name, sum(num_rows) FROM parquet_file_metadata("
            f"[{', '.join(sql_str(p) for p in files)}]) GROUP BY file_name").fetchall())
    out = list(read)
    for i, src, view in todo:
        if all(p in rows for p in src.paths):
            n = int(sum(rows[p] for p in src.paths))
        else:  # a path spelled otherwise by DuckDB: count the view
            with duckdb_errors(f"cannot read table {src.name!r} from {src.paths}", ExportError,
                               source=src.name):
                n = con.execute(f"SELECT count(*) FROM {ident(view)}").fetchall()[0][0]
        out[i] = (src, view, cols.get(view, []), n)
    return out


def _csv_rejects(con, src: _Source) -> list[tuple[str, int, str]]:
    """Rows of a table's CSV files that could not be read: ``(file, line, reason)``, by line."""
    out: list[tuple[str, int, str]] = []
    for path in src.paths:
        con.execute(f"SELECT count(*) FROM read_csv({sql_str(path)}, {_csv_options(path)}, "
                    f"store_rejects=true, rejects_table='cmdseg_rejects', "
                    f"rejects_scan='cmdseg_rejects_scan')").fetchall()
        rows = con.execute(
            "SELECT line, min(error_type || ': ' || error_message) "
            "FROM cmdseg_rejects GROUP BY line ORDER BY line").fetchall()
        out.extend((path, int(line), reason) for line, reason in rows)
    return out


def _bad_json_lines(path: str, limit: int = 10) -> tuple[list[int], int]:
    """Line numbers (1-based) of lines that are not JSON, the first ``limit`` of them, and the
    count. Only run when DuckDB reported unreadable lines, to name them."""
    import gzip
    import orjson
    opener = gzip.open if path.lower().endswith(".gz") else open
    bad: list[int] = []
    n = 0
    try:
        with opener(path, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    orjson.loads(line)
                except orjson.JSONDecodeError:
                    n += 1
                    if len(bad) < limit:
                        bad.append(lineno)
    except (OSError, EOFError) as exc:
        raise ExportError(f"cannot read {path!r}: {exc} (a truncated or corrupt file?)",
                          source=path) from exc
    return bad, n


def _ts(expr: str) -> str:
    """SQL casting a value to TIMESTAMPTZ; a naive value is UTC (session time zone is UTC)."""
    return f"TRY_CAST({expr} AS TIMESTAMPTZ)"


def _iso(expr: str) -> str:
    return f"to_json(strftime({expr}, '%Y-%m-%dT%H:%M:%S.%gZ'))"


def _scalar_sql(cols: dict[str, str], table_type: str) -> dict[str, str]:
    """The canonical scalar columns of a warehouse table as SQL over alias ``t`` (one place, so
    the full and the lean selects cannot drift apart)."""
    def col(c: str) -> str:
        return f"CAST(t.{ident(cols[c])} AS VARCHAR)" if c in cols else "CAST(NULL AS VARCHAR)"

    out = {"message_id": col("id") if "id" in cols else col("message_id"),
           "user_id": col("user_id"), "anonymous_id": col("anonymous_id")}
    for c in ("timestamp", "original_timestamp", "received_at", "sent_at"):
        out[c] = _ts(f"t.{ident(cols[c])}") if c in cols else "CAST(NULL AS TIMESTAMPTZ)"
    if table_type == "track":
        out["event"] = (f"COALESCE({col('event_text')}, {col('event')})" if "event_text" in cols
                        else col("event"))
    else:
        out["event"] = "CAST(NULL AS VARCHAR)"
    page_like = table_type in ("page", "screen")
    out["name"] = col("name") if page_like else "CAST(NULL AS VARCHAR)"
    out["category"] = col("category") if page_like else "CAST(NULL AS VARCHAR)"
    out["type"] = (col("type") if "type" in cols and table_type not in TABLE_TYPES.values()
                   else sql_str(table_type))
    return out


def _scalar_select(sc: dict[str, str], cols: dict[str, str], passthrough: Iterable[str]) -> tuple[str, str]:
    """The SELECT list of the canonical scalar columns (``sc``: :func:`_scalar_sql`), and that
    of the ``passthrough`` cells as ``"col:<name>"`` (to append after any other columns)."""
    head = (f"{sc['message_id']} AS message_id, CAST({sc['type']} AS VARCHAR) AS type, "
            f"{sc['user_id']} AS user_id, {sc['anonymous_id']} AS anonymous_id, "
            f"{sc['event']} AS event, {sc['name']} AS name, {sc['timestamp']} AS timestamp, "
            f"{sc['original_timestamp']} AS original_timestamp, {sc['received_at']} AS received_at")
    extra = "".join(f", t.{ident(cols[c])} AS {ident('col:' + c)}" for c in passthrough)
    return head, extra


def _warehouse_select(src_name: str, view: str, cols: dict[str, str], types: dict[str, str],
                      table_type: str, report: LoadReport, passthrough: Iterable[str] = ()) -> str:
    """SELECT producing canonical event columns from one warehouse table view.

    ``passthrough`` names (lower-case) columns also selected unchanged as ``"col:<name>"``,
    for the planner (``_plan``) which reads cells without rebuilding the event JSON.
    """
    def has(c: str) -> bool:
        return c in cols

    def col(c: str, cast: str = "VARCHAR") -> str:
        return f"CAST(t.{ident(cols[c])} AS {cast})" if has(c) else f"CAST(NULL AS {cast})"

    payload_cols = [c for c in cols if not is_system_column(c, table_type)]
    payload_sql = object_sql([(c, _cell_json(f"t.{ident(cols[c])}", types[c]))
                              for c in payload_cols])
    ctx_entries, unrestored = [], []
    for c in cols:
        if c.startswith("context_"):
            path, ok = context_path(c)
            ctx_entries.append((path, _cell_json(f"t.{ident(cols[c])}", types[c])))
            if not ok:
                unrestored.append(c)
    if unrestored:
        report.unrestored_names[src_name] = unrestored
    context_sql = nested_object_sql(ctx_entries) if ctx_entries else "json('{}')"

    sc = _scalar_sql(cols, table_type)
    msg_id, event_name, name, category = sc["message_id"], sc["event"], sc["name"], sc["category"]
    ts, ots, rat, sat = (sc[c] for c in ("timestamp", "original_timestamp", "received_at",
                                         "sent_at"))
    type_sql = sc["type"]

    if table_type in ("identify", "group"):
        traits_sql, props_sql = payload_sql, "CAST(NULL AS JSON)"
    elif table_type == "alias":
        traits_sql, props_sql = "CAST(NULL AS JSON)", "CAST(NULL AS JSON)"
    else:
        traits_sql, props_sql = "CAST(NULL AS JSON)", payload_sql

    def j(v: str) -> str:
        return f"to_json({v})"

    top = [
        ("type", j(f"CAST({type_sql} AS VARCHAR)")),
        ("messageId", j(msg_id)),
        ("userId", j(sc["user_id"])),
        ("anonymousId", j(sc["anonymous_id"])),
        ("event", j(event_name)),
        ("name", j(name)),
        ("category", j(category)),
        ("groupId", j(col("group_id"))),
        ("previousId", j(col("previous_id"))),
        ("traits", traits_sql),
        ("properties", props_sql),
        ("context", non_empty_sql(context_sql)),
        ("timestamp", _iso(ts)),
        ("originalTimestamp", _iso(ots)),
        ("sentAt", _iso(sat)),
        ("receivedAt", _iso(rat)),
        ("channel", j(col("channel"))),
    ]
    event_json = object_sql(top)
    head, extra = _scalar_select(sc, cols, passthrough)
    return f"""
        SELECT {head},
               {event_json} AS event_json, {sql_str(src_name)} AS source{extra}
        FROM {ident(view)} AS t"""


def _lean_select(view: str, cols: dict[str, str], table_type: str,
                 passthrough: Iterable[str] = ()) -> str:
    """Like :func:`_warehouse_select` without rebuilding the event: the canonical scalar
    columns (same SQL expressions) and the ``passthrough`` cells as ``"col:<name>"``."""
    head, extra = _scalar_select(_scalar_sql(cols, table_type), cols, passthrough)
    return f"""
        SELECT {head}{extra}
        FROM {ident(view)} AS t"""


def _cell_json(qualified: str, duck_type: str) -> str:
    # json_value_sql quotes a bare column name; here the column is already qualified.
    return json_value_sql("\0", duck_type).replace(ident("\0"), qualified)


def _raw_select(src: _Source) -> str:
    files = "[" + ", ".join(sql_str(p) for p in src.paths) + "]"
    fmt = "auto"
    j = "CAST(r.json AS JSON)"

    def s(key: str) -> str:
        # Text of a top-level string/number field; objects/arrays/booleans are not ids.
        return scalar_text_sql(f"json_type({j}, {json_path(key)})", f"json_extract_string({j}, {json_path(key)})")

    return f"""
        SELECT {s('messageId')} AS message_id, {s('type')} AS type, {s('userId')} AS user_id,
               {s('anonymousId')} AS anonymous_id, {s('event')} AS event, {s('name')} AS name,
               {_ts(f"json_extract_string({j}, {json_path('timestamp')})")} AS timestamp,
               {_ts(f"json_extract_string({j}, {json_path('originalTimestamp')})")} AS original_timestamp,
               {_ts(f"json_extract_string({j}, {json_path('receivedAt')})")} AS received_at,
               {j} AS event_json, {sql_str(src.name)} AS source
        FROM read_json_objects({files}, format={sql_str(fmt)}, ignore_errors=true) AS r
        WHERE r.json IS NOT NULL"""


def _note_bad_json(con, name: str, path: str, report: "LoadReport", *, warehouse: bool) -> int:
    """Count the lines DuckDB could not parse in one JSON file and name the first of them.

    Returns the number of lines that are JSON (the rows a raw-events file yields).
    """
    with duckdb_errors(f"cannot read {path!r}", ExportError, source=name):
        try:
            n_bad, n_good = con.execute(
                f"SELECT count(*) FILTER (WHERE json IS NULL), count(*) FILTER (WHERE json IS NOT NULL) "
                f"FROM read_json_objects({sql_str(path)}, format='auto', ignore_errors=true)").fetchall()[0]
        except duckdb.IOException as exc:  # e.g. a truncated gzip stream
            raise ExportError(f"cannot read {path!r}: {exc} (a truncated or corrupt file?)",
                              source=name) from exc
    if n_bad:
        lines, _n = _bad_json_lines(path)
        for line in lines:
            report.add_rejected(name, path, line, "not valid JSON")
        report.rejected_rows[name] = report.rejected_rows.get(name, 0) - len(lines) + int(n_bad)
    return int(n_good)


def _count_raw(con, raw: list[_Source], report: LoadReport) -> int:
    """One pass over the raw files: per file the lines that are JSON (``rows_read``) and those
    that are not (``rejected_rows``, the first of them named by line). Returns the lines that
    are JSON (the rows the raw selects yield)."""
    per_file = " UNION ALL ".join(
        f"SELECT {i} AS _f, json IS NULL AS bad FROM read_json_objects({sql_str(src.paths[0])}, "
        f"format='auto', ignore_errors=true)" for i, src in enumerate(raw))
    try:
        with duckdb_errors("cannot read the raw event files", ExportError):
            got = {f: (int(good), int(bad)) for f, good, bad in con.execute(
                f"SELECT _f, count(*) FILTER (WHERE NOT bad), count(*) FILTER (WHERE bad) "
                f"FROM ({per_file}) GROUP BY _f").fetchall()}
    except ExportError:
        for src in raw:  # name the file that cannot be read
            _note_bad_json(con, src.name, src.paths[0], LoadReport(), warehouse=False)
        raise
    for i, src in enumerate(raw):
        good, bad = got.get(i, (0, 0))
        report.rows_read[src.name] = report.rows_read.get(src.name, 0) + good
        if bad:
            lines, _n = _bad_json_lines(src.paths[0])
            for line in lines:
                report.add_rejected(src.name, src.paths[0], line, "not valid JSON")
            report.rejected_rows[src.name] = report.rejected_rows.get(src.name, 0) - len(lines) + bad
    return sum(good for good, _bad in got.values())


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
        ``export.events()`` is the canonical relation with columns :data:`EVENT_COLUMNS`:
        ``message_id`` VARCHAR, ``type`` VARCHAR, ``user_id`` VARCHAR (normalized by receiver
        rule 1; NULL when missing), ``anonymous_id``, ``event``, ``name`` VARCHAR,
        ``timestamp``, ``original_timestamp``, ``received_at`` TIMESTAMPTZ (naive values are
        UTC), ``traits``, ``properties``, ``context``, ``event_json`` JSON (the whole
        rebuilt Segment event), ``source`` VARCHAR. ``export.report`` is a :class:`LoadReport`.

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


def _twin_filters(per_event_selects: Iterable[str]) -> tuple[str, str, str]:
    """The per-event tables' rows (``pe``: message id, event, user, anonymous id, time) and the
    two conditions matching a ``tracks`` row ``w`` to its twin ``x`` there: by id, by content."""
    pe = " UNION ALL ".join(
        f"SELECT message_id, event, user_id, anonymous_id, timestamp FROM ({q})"
        for q in per_event_selects)
    by_id = "x.message_id = w.message_id"
    by_content = ("x.event = w.event AND x.user_id IS NOT DISTINCT FROM w.user_id AND "
                  "x.anonymous_id IS NOT DISTINCT FROM w.anonymous_id AND "
                  "x.timestamp = w.timestamp")
    return pe, by_id, by_content


def table_selects(tables: Iterable[WarehouseTable], *, report: LoadReport | None = None,
                  passthrough: dict[str, list[str]] | None = None,
                  lean: bool = False, twins: bool = True) -> list[tuple[str, str]]:
    """Per event table, the SELECT of its rows as canonical event columns (pure SQL).

    ``tracks`` rows whose event is also in a per-event table are left out (see
    :func:`load_export`). ``passthrough`` maps a table name to lower-case columns also
    selected unchanged as ``"col:<name>"``. Returns ``[(table name, sql), ...]``; the columns
    are those of :data:`EVENT_COLUMNS` but ``traits``, ``properties``, ``context`` and the
    receiver's ``user_id`` (here the raw ``user_id`` cell as VARCHAR). With ``lean`` the
    event JSON is not built either (no ``event_json``, ``source``). With ``twins=False``,
    ``tracks`` keeps every row (a superset, for look-ups that tolerate one).
    """
    report = report if report is not None else LoadReport()
    passthrough = passthrough or {}
    out: list[tuple[str, str]] = []
    per_event_sql: list[str] = []
    tracks_sql: str | None = None
    for t in tables:
        if t.event_type is None:
            continue
        ttype = TABLE_TYPES.get(t.name, "track")  # any other table is a per-event track table
        if lean:
            sel = _lean_select(t.view, t.columns, ttype, passthrough.get(t.name, ()))
        else:
            sel = _warehouse_select(t.name, t.view, t.columns, t.types, ttype, report,
                                    passthrough.get(t.name, ()))
        if t.name == "tracks":
            tracks_sql = sel
            continue
        if t.name not in TABLE_TYPES:
            per_event_sql.append(sel)
        out.append((t.name, sel))
    if tracks_sql is not None:
        if per_event_sql and twins:
            # A track event is written twice: to `tracks` (common columns) and to its per-event
            # table (the same plus properties). Keep the per-event row. Twins share `id` in
            # Segment's warehouses; some loaders write different ids, so an (event, userId,
            # anonymousId, timestamp) match counts too. Two anti-joins (not one OR) so that
            # DuckDB hash-joins them.
            pe, by_id, by_content = _twin_filters(per_event_sql)
            tracks_sql = (f"SELECT * FROM ({tracks_sql}) AS w "
                          f"WHERE NOT EXISTS (SELECT 1 FROM ({pe}) AS x WHERE {by_id}) "
                          f"AND NOT EXISTS (SELECT 1 FROM ({pe}) AS x WHERE {by_content})")
        out.append(("tracks", tracks_sql))
    return out


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
