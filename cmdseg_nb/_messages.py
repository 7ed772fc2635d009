"""DataFrame / Arrow table / DuckDB relation -> validated, serialized Segment messages, in chunks.

::

    input ──Source.chunks──▶ Arrow arrays / Python lists per column (a few thousand rows at a time)
          ──Serializer.convert_*──▶ JSON-safe column values (bulk, per column)
          ──Preparer.chunk──▶ Chunk: exact message bytes + messageIds of valid rows, MessageError per bad row

Everything here is pure (no HTTP). ``_send`` batches and posts the bytes of each :class:`~cmdseg_nb._preparer.Chunk`,
so a message is serialized exactly once and every retry resends the same bytes. Memory stays
flat: only one chunk of rows is converted at a time. Value rules live in ``_serialize``.

messageIds (case B21): a ``messageId``/``message_id`` column is used as given (duplicates in it
are found over the whole input before anything is sent); otherwise the id is derived from the
message's canonical JSON (sorted keys, without ``context.library``), the ``run_name`` and the
occurrence of identical messages, so the same rows always get the same ids.

The pieces: ``_layout`` (which column is which Spec field, the rules of each message type,
Segment's limits), ``_preparer`` (the :class:`~cmdseg_nb._preparer.Preparer` of chunks and the :class:`~cmdseg_nb._preparer.Chunk` it
returns); here :func:`start`, :func:`prepare` and the :class:`Prepared` it returns, and :func:`emit_warnings`.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import pandas as pd

from ._errors import CmdsegWarning, MessageError
from ._frames import identify_frame, track_frame
from ._layout import Layout
from ._preparer import Preparer
from ._source import CHUNK_ROWS, Source

__all__ = ["identify_frame", "track_frame"]


def emit_warnings(texts: list[str], stacklevel: int = 3) -> None:
    for text in texts:
        warnings.warn(text, CmdsegWarning, stacklevel=stacklevel)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` returns: all chunks of an input joined (for small inputs and tests).

    Attributes
    ----------
    n_rows : int
    index : pandas.Index
        Labels of the input rows (a RangeIndex for Arrow input).
    rows, message_ids, bodies : list
        As in :class:`~cmdseg_nb._preparer.Chunk`, for the whole input.
    errors : list[MessageError]
    warnings : list[str]
    """

    n_rows: int
    index: pd.Index
    rows: list[int]
    message_ids: list[str]
    bodies: list[bytes]
    errors: list[MessageError]
    warnings: list[str]


def start(data: Any, *, tz: Any = None, run_name: str | None = None,
          allow_duplicate_message_ids: bool = False, binary: str = "error",
          library: bool = True) -> tuple[Source, Preparer]:
    """Read the input's shape and check it as a whole; raises :class:`MessageError`."""
    source = Source(data)
    layout = Layout.of(source.names)
    dupes = {}
    if "messageId" in layout.fields and not allow_duplicate_message_ids:
        dupes = source.duplicate_ids(layout.fields["messageId"])
    preparer = Preparer(layout, tz=tz, run_name=run_name, binary=binary, library=library,
                        duplicate_ids=dupes,
                        allow_duplicate_message_ids=allow_duplicate_message_ids)
    return source, preparer


def prepare(data: Any, *, tz: Any = None, run_name: str | None = None,
            allow_duplicate_message_ids: bool = False, binary: str = "error",
            library: bool = True, chunk_rows: int = CHUNK_ROWS) -> Prepared:
    """Validate and serialize every row of ``data``; see :func:`cmdseg_nb.send` for the rules.

    Raises
    ------
    MessageError
        Only for problems of the whole frame (no ``type`` nor ``event`` column, a column under
        two spellings, an unsupported object). Row problems are collected in ``errors``.
    """
    source, preparer = start(data, tz=tz, run_name=run_name, binary=binary, library=library,
                             allow_duplicate_message_ids=allow_duplicate_message_ids)
    rows, ids, bodies, errors = [], [], [], []
    n = 0
    for offset, cols in source.chunks(chunk_rows):
        c = preparer.chunk(offset, cols)
        rows += c.rows
        ids += c.message_ids
        bodies += c.bodies
        errors += c.errors
        n = offset + c.n_rows
    texts = preparer.warnings()
    emit_warnings(texts)
    n_rows = source.n_rows if source.n_rows is not None else n
    index = source.index if source.index is not None else pd.RangeIndex(n_rows)
    return Prepared(n_rows, index, rows, ids, bodies, errors, texts)
