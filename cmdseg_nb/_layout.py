"""Which column of an input is which Segment Spec field, and the rules of each message type.

The accepted spellings of each Spec field (Spec camelCase first, then warehouse snake_case),
the columns set by the sender or by Segment (never taken from a frame), where the columns
that are not Spec fields go (``traits`` or ``properties``, by message type), the field each
type requires, and Segment's limits on one message (bytes serialized, messageId length).
:class:`Layout` reads them off an input's column names once, before any row is converted.
Split from ``_messages``; used by ``_messages`` (``Layout.of`` in ``start``) and ``_preparer``. Source of the rules: the Segment Spec (its
common fields and the identify, track, page, screen, group and alias calls) and the limits
Segment's tracking API applies to a message.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ._errors import MessageError

__all__ = ["MAX_MESSAGE_BYTES", "MAX_MESSAGE_ID_CHARS", "MESSAGE_TYPES", "Layout"]

#: Largest serialized message Segment accepts (bytes of UTF-8 JSON).
MAX_MESSAGE_BYTES = 32_768
#: messageId must be shorter than this many characters.
MAX_MESSAGE_ID_CHARS = 100

MESSAGE_TYPES = ("identify", "track", "page", "screen", "group", "alias")

# Segment Spec name -> accepted column names (Spec name first, then warehouse snake_case).
_FIELD_COLUMNS: dict[str, tuple[str, ...]] = {
    "type": ("type",),
    "userId": ("userId", "user_id"),
    "anonymousId": ("anonymousId", "anonymous_id"),
    "event": ("event",),
    "name": ("name",),
    "category": ("category",),
    "groupId": ("groupId", "group_id"),
    "previousId": ("previousId", "previous_id"),
    "traits": ("traits",),
    "properties": ("properties",),
    "context": ("context",),
    "integrations": ("integrations",),
    "timestamp": ("timestamp",),
    "messageId": ("messageId", "message_id"),
}
# Set by the sender or by Segment itself; never taken from a frame.
_IGNORED_COLUMNS = frozenset(
    {"sentAt", "sent_at", "receivedAt", "received_at", "uuid_ts", "loaded_at", "writeKey"}
)
_ID_FIELDS = ("userId", "anonymousId", "groupId", "previousId")
_TEXT_FIELDS = ("event", "name", "category")
_OBJECT_FIELDS = ("traits", "properties", "context", "integrations")
# Where columns that are not Spec fields go, by message type.
_EXTRA_TARGET = {
    "identify": "traits",
    "group": "traits",
    "track": "properties",
    "page": "properties",
    "screen": "properties",
    "alias": None,
}
_REQUIRED = {"track": "event", "group": "groupId", "alias": "previousId"}


# -- layout: which column is which field ------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Layout:
    """Spec field -> column name, the extra (property/trait) columns and the ignored ones."""

    fields: dict[str, str]
    extra: list[str]
    ignored: list[str]
    default_type: str | None

    @classmethod
    def of(cls, names: Sequence[str]) -> Layout:
        fields: dict[str, str] = {}
        for field, spellings in _FIELD_COLUMNS.items():
            present = [s for s in spellings if s in names]
            if len(present) > 1:
                raise MessageError(
                    f"both {present[0]!r} and {present[1]!r} are present; keep one of them",
                    column=present[1],
                )
            if present:
                fields[field] = present[0]
        taken = set(fields.values())
        ignored = [n for n in names if n in _IGNORED_COLUMNS]
        extra = [n for n in names if n not in taken and n not in _IGNORED_COLUMNS]
        default_type = None
        if "type" not in fields:
            if "event" not in fields:
                raise MessageError(
                    "no 'type' column and no 'event' column: add a type column (identify, "
                    "track, page, screen, group, alias), or use identify_frame/track_frame",
                    column="type",
                )
            default_type = "track"  # a frame of events without a type is a frame of tracks
        return cls(fields, extra, ignored, default_type)
