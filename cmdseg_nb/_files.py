"""The files of an export: discovery, formats, DuckDB readers and bad-line accounting.

Finds the CSV, Parquet and JSON files of an export (a folder, file, glob or list of them),
tells raw Segment events (camelCase Spec keys) from warehouse tables (snake_case columns),
groups warehouse files by table (named by file, or by folder for ``part-*`` files), and
writes the DuckDB reader of each table. Rows that cannot be read are skipped and counted, the
first of them named by file and line, in the :class:`~cmdseg_nb._export.LoadReport` ("Nothing
is dropped silently"). Used by ``_load``. Source of the rules:
``../shared/spec/warehouse-exports.md``.
"""
from __future__ import annotations

import dataclasses
import glob
import os

import duckdb

from ._db import duckdb_errors, ident, sql_str
from ._errors import ExportError
from ._export import LoadReport

_CSV_EXT = (".csv", ".csv.gz", ".tsv")
_PARQUET_EXT = (".parquet", ".pq")
_JSON_EXT = (".ndjson", ".jsonl", ".json", ".ndjson.gz", ".jsonl.gz", ".json.gz", ".gz")


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
