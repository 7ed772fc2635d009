"""cmdseg_nb: Segment exports -> Command AI user properties, and lossless bulk sends to Segment."""
from ._coverage import Coverage, coverage
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
from ._messages import identify_frame, track_frame
from ._properties import explain, to_wide, user_properties
from ._send import SendResult, send

__all__ = [
    "CmdsegError",
    "CmdsegWarning",
    "Coverage",
    "Export",
    "ExportError",
    "LoadReport",
    "MappingError",
    "MessageError",
    "SendError",
    "SendResult",
    "TransportError",
    "coverage",
    "explain",
    "identify_frame",
    "load_export",
    "send",
    "to_wide",
    "track_frame",
    "user_properties",
]
