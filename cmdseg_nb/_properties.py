"""From canonical events to the user-property table Command AI would hold.

events --trigger--> matched events --mapping-kit data--> received objects ``P``
--receiver rules--> property assignments --which value wins--> long table --> wide table.

All of it is one DuckDB query built by pure functions (:func:`assignments_query`); pandas only
receives the result. Rules: ``../shared/spec/webhook-rules.md``.
"""
from __future__ import annotations

from typing import Any

import json
import os
import re

import duckdb
import numpy as np
import orjson
import pandas as pd

from . import _receiver
from ._db import QUERY_SETTINGS, duckdb_errors, ident, settings, sql_str
from ._errors import CmdsegError
from ._frame import long_frame

__all__ = ["LONG_COLUMNS", "PlanError", "explain", "to_wide", "user_properties", "assignments_query"]

class PlanError(CmdsegError, ValueError):
    """``engine="plan"`` was asked for a mapping or export the planner cannot analyse."""


#: Columns of the long user-property table and their pandas dtypes.
LONG_COLUMNS = {
    "user_id": "str",
    "property": "str",
    "value": "str (JSON text)",
    "value_type": "str: string|number|boolean|null|array|object",
    "updated_at": "datetime64[us, UTC]",
    "message_id": "str",
    "rule": "str: traits|user_property|user_property_event",
    "mapping": "str",
}

#: "Which value wins" (decided): the latest event by timestamp, then originalTimestamp, then
#: receivedAt, then message id (then a hash of the event, then mapping order, then rule 5).
_ORDER_DESC = ("event_time DESC NULLS LAST, original_timestamp DESC NULLS LAST, "
               "received_at DESC NULLS LAST, message_id DESC NULLS LAST, event_hash DESC, "
               "mapping_index DESC, rule_rank DESC")
_ORDER_ASC = _ORDER_DESC.replace("DESC NULLS LAST", "ASC NULLS FIRST").replace("DESC", "ASC")


def _config(config):
    from ._config import MappingConfig
    if config is None:
        return MappingConfig.default()
    if isinstance(config, MappingConfig):
        return config
    if isinstance(config, (dict, list)):
        return MappingConfig.from_dict(config)
    if isinstance(config, (str, os.PathLike)):
        return MappingConfig.from_json(config)
    raise TypeError(f"config must be a MappingConfig, a list of mappings, or a JSON file path "
                    f"or text, not {type(config).__name__}")


def objects_query(events: str, config) -> str:
    """SQL: one row per (event, matching mapping) with the received object ``p``.

    Columns: ``mapping_index`` INTEGER, ``mapping`` VARCHAR, ``message_id``, ``event_time``,
    ``original_timestamp``, ``received_at`` TIMESTAMPTZ, ``event_hash`` VARCHAR, ``p`` JSON,
    ``uid`` VARCHAR (receiver rule 1; NULL when skipped).
    """
    from ._fql import fql_to_sql
    from ._mappingkit import mapping_to_sql

    parts = []
    for i, m in enumerate(config.mappings):
        data = mapping_to_sql(m.data, "e.event_json")
        pred = fql_to_sql(m.trigger, "e.event_json")
        parts.append(f"""
            SELECT {i} AS mapping_index, {sql_str(m.name)} AS mapping, e.message_id,
                   COALESCE(e.timestamp, e.original_timestamp, e.received_at) AS event_time,
                   e.original_timestamp, e.received_at,
                   md5(CAST(e.event_json AS VARCHAR)) AS event_hash,
                   CAST({data} AS JSON) AS p
            FROM {events} AS e WHERE ({pred})""")
    union = " UNION ALL ".join(parts)
    return f"SELECT *, {_receiver.user_id_sql('p')} AS uid FROM ({union})"


def assignments_query(events: str, config, *, null_clears: bool = True, winners_only: bool = True) -> str:
    """The whole mapping as one SQL query over the canonical events relation ``events``.

    Returns columns of :data:`LONG_COLUMNS` (``value`` as JSON text) plus, when
    ``winners_only`` is False, every assignment with ``winner`` BOOLEAN.
    """
    objects = f"({objects_query(events, config)})"
    assigns = _receiver.assignments_sql(objects, null_clears=null_clears)
    select = (f"uid AS user_id, property, CAST(value AS VARCHAR) AS value, "
              f"{_receiver.value_type_sql('json_type(value)')} AS value_type, "
              f"event_time AS updated_at, message_id, rule, mapping")
    ranked = (f"SELECT *, row_number() OVER (PARTITION BY uid, property ORDER BY {_ORDER_DESC}) "
              f"AS _rn FROM ({assigns})")
    if winners_only:
        return f"SELECT {select} FROM ({ranked}) WHERE _rn = 1 ORDER BY user_id, property"
    return (f"SELECT {select}, _rn = 1 AS winner FROM ({ranked}) "
            f"ORDER BY user_id, property, {_ORDER_ASC}")


def _check_export(export) -> None:
    """Raise TypeError unless ``export`` is an Export (without materializing it)."""
    from ._export import Export
    if not isinstance(export, Export):
        raise TypeError(f"expected an Export from load_export(), got {type(export).__name__}")


def _events_of(export) -> tuple[duckdb.DuckDBPyConnection, str]:
    _check_export(export)
    return export.con, ident(export.table)


def _register(con) -> None:
    from ._mappingkit import register_udfs
    register_udfs(con)


def user_properties(export, config=None, *, null_clears: bool = True,
                    engine: str = "auto") -> pd.DataFrame:
    """The user properties Command AI would hold after receiving the export's events.

    Parameters
    ----------
    export : Export
        From :func:`cmdseg_nb.load_export`.
    config : MappingConfig, dict, list, str or path, optional
        The Webhooks destination's mappings; default :meth:`MappingConfig.default` (trigger
        ``type = "identify"``, data = whole event: traits become properties). Every mapping
        whose trigger matches an event produces one received object.
    null_clears : bool, default True
        Receiver rule 6: an explicit JSON null sets the property to null (it stays listed with
        ``value == "null"``). With False, explicit nulls are ignored like absent keys.
    engine : {"auto", "plan", "generic"}, default "auto"
        ``"plan"`` reads the warehouse columns the mappings use, keeps per user and column the
        latest event time, then ranks only the events at those times (``_plan``,
        ``_plan_run``); it handles warehouse tables with mappings made of ``@path``/literal
        keys (``userId``, ``traits``,
        ``user_property.*``, ``user_property_event``), the whole-event data, and triggers on
        ``type``/``event``/``name``; for raw events (NDJSON) it parses each line once
        (``_plan_raw``) when every mapping names the user by ``$.userId`` and uses
        ``@path``/``@if``/``@case``/``@replace``/literals; it raises :class:`PlanError`
        otherwise. ``"generic"``
        rebuilds every event as JSON (any mapping-kit directive, any trigger, raw events).
        ``"auto"`` uses the plan when it applies, else the generic path. Both give the same
        table; the memory limit and spill folder are the Export connection's
        (``load_export(memory_limit=, temp_directory=)``).

    Returns
    -------
    pandas.DataFrame
        Long table, one row per (user, property), sorted by ``user_id``, ``property``; text
        columns in pandas' default string dtype (``str`` on pandas 3, missing = NaN; ``object``
        with None on pandas 2): ``user_id`` str, ``property`` str, ``value`` str (compact
        JSON text of the winning value: ``'"CA"'``, ``'true'``, ``'null'``), ``value_type`` str (string, number,
        boolean, null, array, object), ``updated_at`` datetime64[us, UTC] (the winning
        event's time), ``message_id`` str, ``rule`` str (traits, user_property,
        user_property_event), ``mapping`` str (mapping name). ``df.attrs["skipped"]`` is a
        dict reason -> count of received objects or keys that made nothing (``no_user_id``,
        ``empty_user_property_name``, ``invalid_user_property_event``); ``df.attrs["objects"]``
        counts received objects (events x matching mappings).

    Raises
    ------
    MappingError
        When the configuration is invalid (names mapping and JSON path).
    CmdsegError
        When DuckDB fails to run the generated query.

    Notes
    -----
    Which value wins (decided in ``webhook-rules.md``): per (user, property) the assignment
    of the latest event, ordered by ``timestamp``, then ``originalTimestamp``, then
    ``receivedAt``, then message id; the row order of the files does not matter (case B04).
    Within one event, later mappings overwrite earlier ones, and receiver rule 5 applies.

    On the Export's connection the planned paths create temporary tables (``cmdseg_plan_*``,
    ``cmdseg_raw_*``) and drop them before returning; over warehouse tables they run in one
    transaction of their own (inside the caller's, when one is open), so an error rolls them
    back. The connection's settings are left as they were; the queries run with byte-order
    comparison, ascending ORDER BY and NULLs last whatever the caller's ``default_collation``,
    ``default_order`` and ``default_null_order`` (``_db.QUERY_SETTINGS``).
    """
    cfg = _config(config)
    if engine not in ("auto", "plan", "generic"):
        raise ValueError(f"engine must be 'auto', 'plan' or 'generic', got {engine!r}")
    _check_export(export)  # the events table is materialized by the generic engine only
    # the caller's collation and sort defaults do not apply (_db.QUERY_SETTINGS). DuckDB errors
    # outside the steps' own wrappers (the plan's look-ups of event names, a caller's aborted
    # transaction, an interrupt) are CmdsegError too.
    with duckdb_errors("computing user properties failed", CmdsegError), \
            settings(export.con, **QUERY_SETTINGS):
        return _run_engine(export, cfg, null_clears, engine)


def _run_engine(export, cfg, null_clears: bool, engine: str) -> pd.DataFrame:
    if engine != "generic":
        # the planned paths' SQL may call the mapping kit's macros too (``@replace`` on a
        # number spells it as JavaScript does: cmdseg_js_num)
        from ._mappingkit import register_macros
        register_macros(export.con)
        from . import _plan, _plan_raw, _plan_run
        reasons = []
        for runner in (_plan_run.run, _plan_raw.run):
            try:
                return runner(export, cfg, null_clears=null_clears)
            except _plan.Unplannable as exc:
                reasons.append(str(exc))
        if engine == "plan":
            raise PlanError(f"this mapping needs the generic path: {'; '.join(reasons)}")
    con, events = _events_of(export)
    _register(con)
    sql = assignments_query(events, cfg, null_clears=null_clears)
    with duckdb_errors("running the mapping query failed", CmdsegError):
        df = long_frame(con, sql)
        skipped, objects = _skipped(con, events, cfg)
    df.attrs["skipped"] = skipped
    df.attrs["objects"] = objects
    return df


def _skipped(con, events: str, cfg) -> tuple[dict[str, int], int]:
    # one scan of the received objects counts them and every skip reason
    n, *counts = con.execute(
        _receiver.issues_sql(f"({objects_query(events, cfg)})")).fetchall()[0]
    return {reason: int(c) for reason, c in zip(_receiver.ISSUES, counts)}, int(n)


def explain(export, user_id: str, property: str, config=None, *, null_clears: bool = True) -> pd.DataFrame:
    """Lineage of one user property: every event that set it, oldest first, winner marked.

    Returns
    -------
    pandas.DataFrame
        Columns of :func:`user_properties` plus ``winner`` bool (exactly one True row when the
        user has the property; empty frame otherwise).
    """
    cfg = _config(config)
    con, events = _events_of(export)
    _register(con)
    sql = assignments_query(events, cfg, null_clears=null_clears, winners_only=False)
    with duckdb_errors("running the lineage query failed", CmdsegError), settings(con, **QUERY_SETTINGS):
        return long_frame(con, f"SELECT * FROM ({sql}) WHERE user_id = ? AND property = ?",
                          [user_id, property])


def to_wide(long_df: pd.DataFrame) -> pd.DataFrame:
    """One row per user, one column per property, values parsed from JSON.

    Parameters
    ----------
    long_df : pandas.DataFrame
        The long table of :func:`user_properties` (needs ``user_id``, ``property``, ``value``).

    Returns
    -------
    pandas.DataFrame
        Index ``user_id`` (str), columns sorted property names, dtype object. A cell holds the
        Python value of the JSON (str, int, float, bool, list, dict); ``None`` means the
        property is an explicit JSON null (cleared), ``pd.NA`` means the user does not have it.
        :func:`cmdseg_nb.identify_frame` keeps that distinction when sending.

    Raises
    ------
    ValueError
        When a column is missing, or a row (named by its index label) has no ``user_id`` or
        ``property``, or a ``value`` that is not JSON text.
    """
    missing = {"user_id", "property", "value"} - set(long_df.columns)
    if missing:
        raise ValueError(f"to_wide needs the long table's columns; missing {sorted(missing)}")
    ucodes, users = pd.factorize(long_df["user_id"], sort=True)
    pcodes, props = pd.factorize(long_df["property"], sort=True)
    for name, codes in (("user_id", ucodes), ("property", pcodes)):
        if (codes < 0).any():
            raise ValueError(f"to_wide: row {long_df.index[int(np.argmax(codes < 0))]!r} has no {name}")
    values = _json_values(long_df)
    cells = np.full((len(users), len(props)), pd.NA, dtype=object)
    cells[ucodes, pcodes] = values
    return pd.DataFrame(cells, index=pd.Index(list(users), name="user_id", dtype=object),
                        columns=list(props), dtype=object)


def _json_values(long_df: pd.DataFrame) -> np.ndarray:
    """The Python values of the ``value`` column (an object array, row for row).

    Each distinct text is parsed once (5M events, custom mapping: 3.7M rows, of which about 2M
    are ``true``); an immutable result (str, int, float, bool, None) is shared by the rows of
    that text. A list or dict is parsed again for each of its rows, so that no two cells share
    a mutable object. A row without text, or a text that is not JSON, raises the ValueError of
    :func:`_json_value` naming the row (the first row of that text)."""
    col, labels = long_df["value"], long_df.index

    def parse(text, i: int):
        try:
            return _json_value(text, i)
        except ValueError:  # again, to name the row by its label (looked up only here)
            _json_value(text, labels[i])
            raise  # pragma: no cover - the same text fails the same way
    codes, texts = pd.factorize(col, use_na_sentinel=True)
    gap = np.flatnonzero(codes < 0)  # rows without text: the first one raises, in row order
    gap = int(gap[0]) if len(gap) else len(col)
    _, first = np.unique(codes[codes >= 0], return_index=True)
    first = np.flatnonzero(codes >= 0)[first]  # each text's first row, in row order
    parsed = np.empty(len(texts), dtype=object)
    for j, (text, i) in enumerate(zip(np.asarray(texts, dtype=object), first, strict=True)):
        if i > gap:
            break
        parsed[j] = parse(text, int(i))
    if gap < len(col):
        parse(col.iloc[gap], gap)  # raises: not JSON text
    values = parsed[codes]
    mutable = np.fromiter((isinstance(v, (list, dict)) for v in parsed), dtype=bool, count=len(parsed))
    if mutable.any():
        again = np.flatnonzero(mutable[codes])
        for i, text in zip(again, col.to_numpy(dtype=object)[again], strict=True):
            values[i] = parse(text, int(i))
    return values


#: 19 digits in a row: maybe an integer beyond 64 bits, which orjson reads as a float
_LONG_DIGITS = re.compile(r"[0-9]{19}")


def _json_value(text, row) -> Any:
    """The Python value of one long-table ``value``: orjson (5x the stdlib's speed), or the
    stdlib where it keeps integers beyond 64 bits exact or orjson refuses (lone surrogates)."""
    try:
        if isinstance(text, str) and len(text) >= 19 and _LONG_DIGITS.search(text):
            return json.loads(text)
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        try:
            return json.loads(text)
        except (TypeError, ValueError) as e:
            raise ValueError(f"to_wide: row {row!r}: value {text!r} is not JSON ({e})") from None
