"""Mapping preview panel: edit a MappingConfig as JSON and see what it does to real events."""
from __future__ import annotations

import html
import json
from typing import Any

import ipywidgets as W

from .._db import ident, sql_str
from ._common import Panel, Status, title

# MappingConfig and the Python preview are imported when a panel is made, so the Connect and
# Send panels never depend on the mapping modules.

__all__ = ["MappingPreviewPanel", "mapping_preview"]

SAMPLE = "(sample events)"


def _label(i: int, ev: dict) -> str:
    kind = ev.get("type") or "?"
    what = ev.get("event") or ev.get("name") or ""
    who = ev.get("userId") or ev.get("anonymousId") or "no id"
    when = str(ev.get("timestamp") or ev.get("originalTimestamp") or "")[:19]
    return f"{i + 1}. {kind} {what} · {who} · {when}".replace("  ", " ")


def _pre(value: Any) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return f"<pre style='margin:0;white-space:pre-wrap'>{html.escape(text)}</pre>"


class _Events:
    """Sample events and users of an Export, or of a list of event dicts."""

    def __init__(self, source: Any, limit: int):
        self._export = source if hasattr(source, "event_dicts") else None
        self.sample: list[dict] = (self._export.event_dicts(limit=limit) if self._export
                                   else [dict(e) for e in list(source)[:limit]])
        if self._export is not None:
            rows = self._export.con.execute(
                f"SELECT DISTINCT user_id FROM {ident(self._export.table)} WHERE user_id IS NOT NULL "
                f"ORDER BY user_id LIMIT {int(limit)}").fetchall()
            self.users = [r[0] for r in rows]
        else:
            self.users = sorted({str(e["userId"]) for e in self.sample if e.get("userId")})

    def of_user(self, user: str) -> list[dict]:
        if self._export is not None:
            return self._export.event_dicts(where=f"user_id = {sql_str(user)}")
        return [e for e in self.sample if str(e.get("userId")) == user]


class MappingPreviewPanel(Panel):
    """A JSON editor for a :class:`MappingConfig` and live previews on real events.

    Pick one event (the data object each matching mapping produces, its user id and user
    properties) or a user (the user properties all their events end with, by Command AI's
    "which value wins" order). An invalid configuration is shown inline with the mapping name
    and JSON path from :class:`MappingError`; the last good output stays below it.

    Parameters
    ----------
    events : Export | list[dict]
        A loaded export (``load_export``) or Segment events as dicts.
    config : MappingConfig | dict | list | str | None
        Initial configuration; default :meth:`MappingConfig.default`.
    limit : int
        Sample events and users offered in the pickers.

    Attributes
    ----------
    editor : ipywidgets.Textarea   the configuration as JSON
    user : ipywidgets.Dropdown     "(sample events)" or a userId
    event : ipywidgets.Dropdown    an event of the sample or of the user (index into ``events``)
    output : ipywidgets.HTML       the preview
    status : Status
    config : MappingConfig | None  last valid configuration
    previews : list                last previews (MappingPreview) of the picked event
    user_properties : dict         last user properties (user mode)
    """

    def __init__(self, events: Any, config: Any = None, *, limit: int = 200):
        from .._config import MappingConfig

        self._events = _Events(events, limit)
        if config is None:
            config = MappingConfig.default()
        elif not isinstance(config, MappingConfig):
            config = (MappingConfig.from_json(config) if isinstance(config, str)
                      else MappingConfig.from_dict(config))
        self.config: Any = config  # MappingConfig
        self.events: list[dict] = self._events.sample
        self.previews: list = []
        self.user_properties: dict = {}
        self.editor = W.Textarea(value=config.to_json(), description="Mapping",
                                 layout=W.Layout(width="100%", height="14em"))
        self.user = W.Dropdown(options=[SAMPLE, *self._events.users], value=SAMPLE,
                               description="User")
        self.event = W.Dropdown(description="Event", layout=W.Layout(width="100%"))
        self.output = W.HTML()
        self.status = Status()
        self.editor.observe(lambda _c: self.refresh(), names="value")
        self.user.observe(lambda _c: self.pick_user(), names="value")
        self.event.observe(lambda _c: self.refresh(), names="value")
        self.widget = W.VBox([title("Mapping preview"), self.editor, self.user, self.event,
                              self.status.widget, self.output])
        self.pick_user()

    def pick_user(self) -> None:
        """Fill the event picker with the sample or the chosen user's events; refresh."""
        with self.status.reporting("Pick user"):
            chosen = self.user.value
            self.events = (self._events.sample if chosen == SAMPLE
                           else self._events.of_user(chosen))
            options = [(_label(i, e), i) for i, e in enumerate(self.events)]
            self.event.options = options
            self.event.value = self._first_match() if options else None
            self.refresh()

    def _first_match(self) -> int:
        """Index of the first event some mapping matches (0 when none or the JSON is bad)."""
        from .._config import MappingConfig
        from .._preview import preview

        try:
            config = MappingConfig.from_json(self.editor.value)
        except ValueError:
            return 0
        return next((i for i, e in enumerate(self.events) if preview(e, config)), 0)

    def refresh(self) -> None:
        """Validate the editor's JSON and show the previews (errors inline in ``status``)."""
        from .._config import MappingConfig
        from .._preview import preview, reference_user_properties

        with self.status.reporting("Preview"):
            try:
                self.config = MappingConfig.from_json(self.editor.value)
            except ValueError as exc:  # MappingError (ValueError): name and JSON path in it
                self.status.show("error", f"invalid mapping configuration: {exc}")
                return
            if not self.events or self.event.value is None:
                self.status.show("warn", "no event to preview: pick another user or load events")
                self.output.value = ""
                return
            event = self.events[self.event.value]
            self.previews = preview(event, self.config)
            parts = [f"<details><summary>event</summary>{_pre(event)}</details>"]
            if not self.previews:
                parts.append("<p>No mapping's trigger matches this event.</p>")
            for p in self.previews:
                issues = f"<br>issues: {html.escape(', '.join(p.issues))}" if p.issues else ""
                parts.append(
                    f"<h4 style='margin:6px 0 2px'>{html.escape(p.mapping)}</h4>"
                    f"<b>data object</b>{_pre(p.data)}"
                    f"<b>user id</b> <code>{html.escape(str(p.user_id))}</code>{issues}"
                    f"<br><b>user properties</b>{_pre(p.properties)}"
                )
            n_ok = len(self.previews)
            n = len(self.config)
            message = (f"valid configuration ({n} mapping{'s' if n != 1 else ''}); {n_ok} "
                       f"match{'es' if n_ok == 1 else ''} this event")
            if self.user.value != SAMPLE:
                props = reference_user_properties(self.events, self.config)
                self.user_properties = props.get(str(self.user.value), {})
                parts.append(f"<h4 style='margin:6px 0 2px'>user {html.escape(self.user.value)} "
                             f"after all {len(self.events)} events</h4>{_pre(self.user_properties)}")
                message += f"; user {self.user.value} ends with {len(self.user_properties)} properties"
            self.output.value = "".join(parts)
            self.status.show("ok", message)


def mapping_preview(events: Any, config: Any = None, *, limit: int = 200) -> MappingPreviewPanel:
    """A Mapping preview panel over ``events`` (an Export or a list of event dicts)."""
    return MappingPreviewPanel(events, config, limit=limit)
