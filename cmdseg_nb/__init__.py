"""cmdseg_nb: Segment exports -> Command AI user properties, and lossless bulk sends to Segment.

Backfill: :func:`load_export` -> :func:`user_properties` (with a :class:`MappingConfig`) ->
:func:`to_wide` / :func:`coverage` / :func:`explain` / :func:`preview`.
Send: :func:`send` (or :func:`send_async`) of a DataFrame, Arrow table or DuckDB relation of
Segment messages; :func:`identify_frame` / :func:`track_frame` build them from flat tables.
Connect: :func:`connect` (plain) or ``cmdseg_nb.widgets`` (Jupyter panels, imported on demand).
"""
from typing import TYPE_CHECKING as _TYPE_CHECKING

from ._config import Mapping, MappingConfig
from ._errors import (
    CmdsegError,
    CmdsegWarning,
    ExportError,
    MappingError,
    MessageError,
    SendError,
    TransportError,
)
from ._export import Export, LoadReport
from ._load import load_export
from ._properties import PlanError, explain, to_wide, user_properties

if _TYPE_CHECKING:  # imported on first use (PEP 562): the sender's HTTP stack, sqlglot, widgets
    from ._connection import Connection, TestEventResult, connect
    from ._coverage import Coverage, coverage
    from ._messages import identify_frame, track_frame
    from ._preview import MappingPreview, preview
    from ._send import SendProgress, SendResult, send, send_async
    from ._to_sql import ToSqlError, to_sql

_LAZY = {
    "Connection": "_connection", "TestEventResult": "_connection", "connect": "_connection",
    "Coverage": "_coverage", "coverage": "_coverage",
    "identify_frame": "_messages", "track_frame": "_messages",
    "MappingPreview": "_preview", "preview": "_preview",
    "SendProgress": "_send", "SendResult": "_send", "send": "_send", "send_async": "_send",
    "ToSqlError": "_to_sql", "to_sql": "_to_sql",
}


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'cmdseg_nb' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__version__ = "0.1.0"

__all__ = [
    "CmdsegError",
    "CmdsegWarning",
    "Connection",
    "Coverage",
    "Export",
    "ExportError",
    "LoadReport",
    "Mapping",
    "MappingConfig",
    "MappingError",
    "MappingPreview",
    "MessageError",
    "PlanError",
    "SendError",
    "SendProgress",
    "SendResult",
    "TestEventResult",
    "ToSqlError",
    "TransportError",
    "connect",
    "coverage",
    "explain",
    "identify_frame",
    "load_export",
    "preview",
    "send",
    "send_async",
    "to_sql",
    "to_wide",
    "track_frame",
    "user_properties",
]
