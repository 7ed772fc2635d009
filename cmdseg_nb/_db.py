"""The one thin place where generated SQL meets DuckDB.

Everything else builds SQL with pure functions; this module owns connections, session
settings and the translation of DuckDB errors into cmdseg_nb's own (see ``_errors``).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import duckdb

from ._errors import CmdsegError

__all__ = ["QUERY_SETTINGS", "connect", "ident", "json_path", "sql_str", "duckdb_errors", "drop_temp",
           "scratch", "settings"]

#: The settings every user-property query runs with (``settings(con, **QUERY_SETTINGS)``),
#: whatever the caller set on its connection: ids and names compare byte for byte (a
#: ``default_collation`` of 'nocase' would merge the users 'u1' and 'U1'), and an ORDER BY
#: without a direction sorts ascending, NULLs last (a ``default_order`` of 'DESC' would reverse
#: the which-value-wins order of tied events and the result's row order).
QUERY_SETTINGS = {"default_collation": "", "default_order": "ASCENDING", "default_null_order": "NULLS_LAST"}


def connect(con: duckdb.DuckDBPyConnection | None = None, *,
            memory_limit: str | None = None,
            temp_directory: str | None = None) -> duckdb.DuckDBPyConnection:
    """Return a DuckDB connection set up for cmdseg_nb.

    The session time zone is set to UTC, so naive timestamps in exports are read as UTC
    (Segment's warehouse convention) and TIMESTAMPTZ values print in UTC, and the default
    collation to none (byte order), so that message ids and user ids that differ only in case
    stay apart. A connection the caller passes in gets the same settings (documented side
    effect).
    """
    if con is None:
        con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET default_collation = ''")
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


@contextlib.contextmanager
def settings(con: duckdb.DuckDBPyConnection, **values: object) -> Iterator[None]:
    """Set DuckDB settings for the block, then put back the values they had.

    Used for settings that only serve one of cmdseg_nb's own queries (``arrow_large_buffer_size``
    for the hand-over to pandas), so a connection the caller passed in is left as it was. A
    setting already at the value is not touched. The value put back is the one DuckDB shows
    (``current_setting``): exact for flags, to its display precision for sizes.
    """
    before = {}
    for name, value in values.items():
        old = con.execute(f"SELECT current_setting({sql_str(name)})").fetchall()[0][0]
        if str(old).lower() != str(value).lower():
            before[name] = old
            con.execute(f"SET {name} = {sql_str(str(value))}")
    try:
        yield
    finally:
        for name, old in before.items():
            _put_back(con, name, old)


def _put_back(con: duckdb.DuckDBPyConnection, name: str, old: object) -> None:
    """``SET name = old``. After an error inside a transaction, ``con`` refuses every statement
    until a ROLLBACK; the settings cmdseg_nb changes are global to the database, so they are
    then put back through a second connection to it (``con.cursor()``)."""
    sql = f"SET {name} = {sql_str(str(old))}"
    try:
        con.execute(sql)
    except duckdb.TransactionException:
        with contextlib.closing(con.cursor()) as other:
            other.execute(sql)


def drop_temp(con: duckdb.DuckDBPyConnection, tables: Iterable[str]) -> None:
    """Drop the temporary ``tables`` that exist (``temp.main``: never a table of the caller's
    with the same name)."""
    for t in tables:
        con.execute(f"DROP TABLE IF EXISTS temp.main.{t}")


@contextlib.contextmanager
def scratch(con: duckdb.DuckDBPyConnection, tables: Iterable[str], *,
            transaction: bool = True) -> Iterator[None]:
    """Run a planned path's queries in one transaction, then drop its temporary ``tables``.

    In autocommit mode every ``CREATE TEMP TABLE`` commits, and DuckDB checkpoints (compresses)
    the temporary tables each time 16 MiB of changes pile up: 0.5-0.9 s of a 9 s run at 5M
    events (custom mapping), for tables dropped a moment later. In one transaction nothing is
    checkpointed, and on an error the rollback takes the tables away. When the caller already
    has a transaction open on ``con`` (two reads of ``current_transaction_id()`` agree), the
    queries run inside it and the tables are dropped at the end. With ``transaction=False``
    the queries run as they come (autocommit) and the tables are dropped at the end: the raw
    path's lean table, written once and then DELETEd from, is slower in a transaction (1M
    events: 4.6 s against 4.1 s).
    """
    q = "SELECT current_transaction_id()"
    own = transaction and con.execute(q).fetchall() != con.execute(q).fetchall()
    if own:
        con.execute("BEGIN TRANSACTION")
    ok = False
    try:
        yield
        ok = True
    finally:
        if own and not ok:
            con.execute("ROLLBACK")
        else:
            try:
                drop_temp(con, tables)
            except duckdb.Error:
                if own:  # leave the connection usable, without the tables
                    con.execute("ROLLBACK")
                # in the caller's transaction after an error: every statement fails until
                # they roll back (which takes the tables away); the error to see is theirs
                if ok:
                    raise
            else:
                if own:
                    con.execute("COMMIT")
