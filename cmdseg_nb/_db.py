"""The one thin place where generated SQL meets DuckDB.

Everything else builds SQL with pure functions; this module owns connections, session
settings and the translation of DuckDB errors into cmdseg_nb's own (see ``_errors``).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import duckdb

from ._errors import CmdsegError

__all__ = ["connect", "ident", "json_path", "sql_str", "duckdb_errors"]


def connect(con: duckdb.DuckDBPyConnection | None = None, *,
            memory_limit: str | None = None,
            temp_directory: str | None = None) -> duckdb.DuckDBPyConnection:
    """Return a DuckDB connection set up for cmdseg_nb.

    The session time zone is set to UTC, so naive timestamps in exports are read as UTC
    (Segment's warehouse convention) and TIMESTAMPTZ values print in UTC. A connection the
    caller passes in gets the same setting (documented side effect).
    """
    if con is None:
        con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if memory_limit is not None:
        con.execute(f"SET memory_limit = {sql_str(memory_limit)}")
    if temp_directory is not None:
        con.execute(f"SET temp_directory = {sql_str(temp_directory)}")
    return con


def ident(name: str) -> str:
    """Quote a SQL identifier (double quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def sql_str(value: str) -> str:
    """Quote a SQL string literal (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def json_path(*keys: str) -> str:
    """A DuckDB JSON path literal with every key quoted and escaped (case B03).

    ``json_path("user_property.plan")`` gives ``'$."user_property.plan"'``, which reads the key
    literally; an unquoted path would split on the dot and silently return NULL.
    """
    parts = []
    for k in keys:
        esc = k.replace("\\", "\\\\").replace('"', '\\"')
        parts.append(f'."{esc}"')
    return sql_str("$" + "".join(parts))


@contextlib.contextmanager
def duckdb_errors(what: str, error_cls: type[CmdsegError] = CmdsegError, **attrs) -> Iterator[None]:
    """Turn a DuckDB error raised inside the block into ``error_cls`` saying ``what`` failed."""
    try:
        yield
    except duckdb.Error as exc:  # the one boundary for DuckDB errors
        raise error_cls(f"{what}: {exc}", **attrs) from exc
