"""The same rules in plain Python for one event: previews, and the second implementation in tests.

:func:`preview` runs triggers (``_fql.fql_matches``), the mapping-kit data field
(``_mappingkit_transform.transform``) and the receiver rules (``_receiver.receive``) on one
Segment event.
:func:`reference_user_properties` applies them to a list of events with the same "which value
wins" order as the SQL path; tests compare the two on every input.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from . import _receiver

__all__ = ["MappingPreview", "preview", "reference_user_properties"]


@dataclasses.dataclass(frozen=True)
class MappingPreview:
    """What one mapping does with one event.

    Attributes
    ----------
    mapping : str
        Mapping name.
    data : Any
        The resolved data object Segment would send to Command AI (mapping-kit ``transform``).
    user_id : str | None
        Receiver rule 1 applied to ``data``; None when Command AI would ignore it.
    properties : dict[str, Any]
        The user properties the object sets (after rule 5's precedence).
    rules : dict[str, str]
        Property -> the rule that set it (traits, user_property, user_property_event).
    issues : tuple[str, ...]
        Reasons for keys that made nothing (no_user_id, empty_user_property_name, ...).
    """

    mapping: str
    data: Any
    user_id: str | None
    properties: dict[str, Any]
    rules: dict[str, str]
    issues: tuple[str, ...] = ()

    def __iter__(self):  # unpacks as (mapping name, data object, user_id, properties)
        return iter((self.mapping, self.data, self.user_id, self.properties))


def _config(config):
    from ._properties import _config as cfg
    return cfg(config)


def preview(event: dict, config=None, *, null_clears: bool = True) -> list[MappingPreview]:
    """Run every mapping whose trigger matches ``event`` and the receiver rules, in Python.

    Parameters
    ----------
    event : dict
        One Segment event (Segment Spec shape: ``type``, ``userId``, ``traits``, ...).
    config : MappingConfig, dict, list, str or path, optional
        Default :meth:`MappingConfig.default`.

    Returns
    -------
    list[MappingPreview]
        One entry per matching mapping, in configuration order; each unpacks as
        ``(mapping name, data object, user_id, properties)``.

    Raises
    ------
    MappingError
        When the configuration is invalid.
    """
    from ._fql import fql_matches
    from ._mappingkit_transform import transform

    out = []
    for m in _config(config).mappings:
        if not fql_matches(m.trigger, event):
            continue
        data = transform(m.data, event)
        uid, assigns, issues = _receiver.receive(data, null_clears=null_clears)
        props: dict[str, Any] = {}
        rules: dict[str, str] = {}
        for prop, value, rule in assigns:
            props[prop] = value
            rules[prop] = rule
        out.append(MappingPreview(m.name, data, uid, props, rules, tuple(issues)))
    return out


def _time(value) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def reference_user_properties(events: list[dict], config=None, *, null_clears: bool = True
                              ) -> dict[str, dict[str, Any]]:
    """Python reference of :func:`cmdseg_nb.user_properties` for a list of (de-duplicated) events.

    Returns ``{user_id: {property: value}}`` using the same "which value wins" order:
    event time (timestamp, else originalTimestamp, else receivedAt), then originalTimestamp,
    then receivedAt, then messageId, with events lacking a value sorted first.
    """
    import hashlib
    import json

    def key(ev: dict):
        ts, ots, rat = (_time(ev.get(k)) for k in ("timestamp", "originalTimestamp", "receivedAt"))
        et = ts or ots or rat
        mid = ev.get("messageId")
        h = hashlib.md5(json.dumps(ev, sort_keys=True).encode()).hexdigest()
        return tuple((x is not None, x or 0) for x in (et, ots, rat, mid)) + (h,)

    result: dict[str, dict[str, Any]] = {}
    for ev in sorted(events, key=key):
        for p in preview(ev, config, null_clears=null_clears):
            if p.user_id is not None:
                result.setdefault(p.user_id, {}).update(p.properties)
    return result
