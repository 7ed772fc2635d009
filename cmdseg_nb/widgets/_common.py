"""What every panel shares: a status area that also catches exceptions, and display plumbing."""
from __future__ import annotations

import contextlib
import html
from collections.abc import Iterator

import ipywidgets as W

_STYLES = {
    "info": ("#1f4e79", "#eef4fb", "ℹ"),
    "ok": ("#1e5e20", "#eef8ee", "✓"),
    "warn": ("#7a4d00", "#fff6e0", "⚠"),
    "error": ("#8b1a1a", "#fdeeee", "✗"),
}


class Status:
    """A panel's status area: an ``ipywidgets.HTML`` whose text tests and people read.

    Attributes
    ----------
    widget : ipywidgets.HTML
    kind : {"", "info", "ok", "warn", "error"}
        Kind of the last message.
    text : str
        The last message as plain text (lines joined by newlines).
    """

    def __init__(self, initial: str = ""):
        self.widget = W.HTML(layout=W.Layout(width="100%"))
        self.kind = ""
        self.text = ""
        if initial:
            self.show("info", initial)

    def show(self, kind: str, *lines: str) -> None:
        """Show ``lines`` (plain text; escaped here) with the style of ``kind``."""
        color, background, icon = _STYLES[kind]
        self.kind = kind
        self.text = "\n".join(lines)
        body = "<br>".join(html.escape(line) for line in lines)
        self.widget.value = (
            f"<div class='cmdseg-status cmdseg-status-{kind}' style='color:{color};"
            f"background:{background};padding:4px 8px;border-radius:3px;line-height:1.45;"
            f"white-space:normal'>"
            f"{icon} {body}</div>"
        )

    def clear(self) -> None:
        self.kind, self.text = "", ""
        self.widget.value = ""

    @contextlib.contextmanager
    def reporting(self, action: str) -> Iterator[None]:
        """Run the block; an exception becomes an error line here instead of vanishing.

        ipywidgets swallows exceptions raised in callbacks (and ``print`` from a callback is
        often invisible), so this is where they are shown. The exception is not re-raised.
        """
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - shown to the user, that is the point
            self.show("error", f"{action} failed: {type(exc).__name__}: {exc}")


class Panel:
    """Base of the panels: ``widget`` is the box shown; ``status`` its status area."""

    widget: W.Box
    status: Status

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def all_widgets(self) -> list[W.Widget]:
        """Every widget of the panel, the box first (for tests that inspect ``get_state()``)."""
        out: list[W.Widget] = []
        todo: list[W.Widget] = [self.widget]
        while todo:
            w = todo.pop(0)
            out.append(w)
            todo.extend(c for c in getattr(w, "children", ()) if isinstance(c, W.Widget))
        return out


def title(text: str) -> W.HTML:
    return W.HTML(f"<b>{html.escape(text)}</b>")
