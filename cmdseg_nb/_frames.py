"""Flat tables -> frames of Segment messages ready for :func:`cmdseg_nb.send`.

::

    wide user-property table (one row per user) ──identify_frame──▶ type, userId, traits
    table of facts (one row per event)          ──track_frame─────▶ type, event, userId, properties[, timestamp]
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._errors import MessageError
from ._serialize import is_missing

__all__ = ["identify_frame", "track_frame"]


def identify_frame(wide: pd.DataFrame, *, user_id_column: str = "user_id") -> pd.DataFrame:
    """Turn a wide user-property table into identify messages, ready for :func:`send`.

    Parameters
    ----------
    wide : pandas.DataFrame
        One row per user: a ``user_id_column`` (str or integer; or the index so named, as
        :func:`cmdseg_nb.to_wide` returns) and one column per user property. Cells are Python values as parsed from JSON (str, int, float, bool, list,
        dict, None), or any value :func:`send` can serialize. Use ``dtype=object`` columns to
        keep ``None`` apart from missing (pandas turns ``None`` into ``NaN`` in float columns).
    user_id_column : str
        Column holding the Segment ``userId``.

    Returns
    -------
    pandas.DataFrame
        Same index as ``wide``; columns ``type`` (str, always ``"identify"``), ``userId``
        (the user id cell, unchanged) and ``traits`` (object: a dict per row).

    Notes
    -----
    Null versus missing follows Segment's behaviour downstream (case B01): a trait sent as
    ``null`` clears the user's value, a trait left out keeps it. So a cell that **is None**
    means the property is an explicit JSON ``null`` and is sent as ``null``; a cell that is
    ``pd.NA``, ``NaN`` or ``NaT`` means the user does not have the property, and it is left out.
    Rows without a user id are kept, so :func:`send` reports them as invalid rows.

    Raises
    ------
    MessageError
        When ``user_id_column`` is not a column of ``wide``.
    """
    if not isinstance(wide, pd.DataFrame):
        raise MessageError(f"identify_frame takes a pandas.DataFrame, not {type(wide).__name__}")
    if user_id_column not in wide.columns and wide.index.name == user_id_column:
        wide = wide.reset_index()  # the index of to_wide(); a new frame, the input is untouched
    if user_id_column not in wide.columns:
        raise MessageError(f"no column or index {user_id_column!r} with the user ids",
                           column=user_id_column)
    props = [c for c in wide.columns if c != user_id_column]
    values = {c: wide[c].tolist() for c in props}
    traits = []
    for i in range(len(wide)):
        row = {}
        for c in props:
            v = values[c][i]
            if v is None:
                row[str(c)] = None  # explicit JSON null: clears the trait downstream
            elif isinstance(v, (Mapping, list, tuple, np.ndarray)) or not is_missing(v):
                row[str(c)] = v
        traits.append(row)
    return pd.DataFrame(
        {
            "type": pd.Series(["identify"] * len(wide), index=wide.index, dtype=object),
            "userId": pd.Series(wide[user_id_column].tolist(), index=wide.index, dtype=object),
            "traits": pd.Series(traits, index=wide.index, dtype=object),
        }
    )


def track_frame(
    df: pd.DataFrame,
    *,
    event: str,
    user_id_column: str = "user_id",
    timestamp_column: str | None = None,
    properties: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Turn a table of facts into track messages named ``event``, ready for :func:`send`.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per event, with a ``user_id_column``.
    event : str
        Event name of every row (Segment's ``event`` field, case-sensitive).
    user_id_column : str
        Column holding the ``userId``.
    timestamp_column : str | None
        Column with the event time (datetime64 or ISO text), sent as ``timestamp``.
    properties : sequence of str | None
        Columns to send as properties; default every other column. Missing cells are left out.

    Returns
    -------
    pandas.DataFrame
        Same index as ``df``; columns ``type`` (``"track"``), ``event``, ``userId``,
        ``properties`` (dict per row) and, when given, ``timestamp``.

    Raises
    ------
    MessageError
        When a named column is missing or ``event`` is empty.
    """
    if not isinstance(event, str) or not event.strip():
        raise MessageError("event must be a non-empty name", column="event")
    for col in [user_id_column, timestamp_column, *(properties or [])]:
        if col is not None and col not in df.columns:
            raise MessageError(f"no column {col!r}", column=col)
    skip = {user_id_column, timestamp_column}
    props = list(properties) if properties is not None else [c for c in df.columns if c not in skip]
    values = {c: df[c].tolist() for c in props}
    rows = []
    for i in range(len(df)):
        rows.append({str(c): values[c][i] for c in props if not _missing_scalar(values[c][i])})
    out = {
        "type": pd.Series(["track"] * len(df), index=df.index, dtype=object),
        "event": pd.Series([event] * len(df), index=df.index, dtype=object),
        "userId": pd.Series(df[user_id_column].tolist(), index=df.index, dtype=object),
        "properties": pd.Series(rows, index=df.index, dtype=object),
    }
    if timestamp_column is not None:
        out["timestamp"] = df[timestamp_column]
    return pd.DataFrame(out)


def _missing_scalar(v: Any) -> bool:
    if isinstance(v, (Mapping, list, tuple, np.ndarray)):
        return False
    return is_missing(v)
