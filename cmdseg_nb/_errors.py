"""The one exception tree of cmdseg_nb.

::

    CmdsegError                      base of everything this package raises on purpose
    ├── ExportError(ValueError)      an export could not be read (no tables, bad file, bad column)
    ├── MappingError(ValueError)     a mapping configuration Segment itself would reject
    ├── MessageError(ValueError)     a message could not be built or serialized (names row/column)
    └── SendError                    a send could not go on at all (bad key form, bad endpoint)
        └── TransportError           the network failed; ``retryable`` says whether trying again can help

    CmdsegWarning(UserWarning)       lossy-but-allowed input (naive times taken as UTC, ...)

Exceptions keep their inputs as attributes and say what to do next. Errors from
third-party libraries (DuckDB, httpx) are turned into these at one boundary each.
"""
from __future__ import annotations

__all__ = [
    "CmdsegError",
    "CmdsegWarning",
    "ExportError",
    "MappingError",
    "MessageError",
    "SendError",
    "TransportError",
]


class CmdsegError(Exception):
    """Base class of every error cmdseg_nb raises on purpose."""

    retryable: bool = False


class ExportError(CmdsegError, ValueError):
    """An export (folder, file or table) could not be read.

    Attributes
    ----------
    source : str | None
        The file or table concerned.
    """

    def __init__(self, message: str, *, source: str | None = None):
        super().__init__(message)
        self.source = source


class MappingError(CmdsegError, ValueError):
    """A mapping configuration that Segment's Webhooks (Actions) destination would reject.

    Attributes
    ----------
    mapping : str | None
        Name of the mapping concerned.
    path : str | None
        JSON path of the bad part inside the configuration, e.g. ``$.data.plan["@path"]``.
    """

    def __init__(self, message: str, *, mapping: str | None = None, path: str | None = None):
        where = []
        if mapping is not None:
            where.append(f"mapping {mapping!r}")
        if path is not None:
            where.append(f"at {path}")
        full = f"{', '.join(where)}: {message}" if where else message
        super().__init__(full)
        self.mapping = mapping
        self.path = path
        self.reason = message


class MessageError(CmdsegError, ValueError):
    """A message could not be built, validated or serialized.

    Attributes
    ----------
    row : int | None
        Position of the row in the input (0-based).
    column : str | None
        Column concerned, where one is.
    """

    def __init__(self, message: str, *, row: int | None = None, column: str | None = None):
        where = []
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        full = f"{', '.join(where)}: {message}" if where else message
        super().__init__(full)
        self.row = row
        self.column = column
        self.reason = message


class SendError(CmdsegError):
    """A send could not go on at all (for example a write key of impossible form)."""


class TransportError(SendError):
    """The network failed. ``retryable`` tells whether trying again can help."""

    def __init__(self, message: str, *, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


class CmdsegWarning(UserWarning):
    """Input was accepted with an assumption the user should know (e.g. naive time as UTC)."""
