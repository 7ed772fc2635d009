"""cmdseg_nb: Segment exports -> Command AI user properties, and lossless bulk sends to Segment."""
from ._errors import (
    CmdsegError,
    CmdsegWarning,
    ExportError,
    MappingError,
    MessageError,
    SendError,
    TransportError,
)
from ._load import Export, LoadReport, load_export
from ._properties import explain, to_wide, user_properties

__all__ = [
    "CmdsegError",
    "CmdsegWarning",
    "Export",
    "ExportError",
    "LoadReport",
    "MappingError",
    "MessageError",
    "SendError",
    "TransportError",
    "explain",
    "load_export",
    "to_wide",
    "user_properties",
]
