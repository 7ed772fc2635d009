"""Jupyter panels on top of cmdseg_nb: connect, send a test event, watch a send, preview mappings.

::

    connect()            ConnectPanel      write key (password box, emptied on Connect), region,
                                           endpoint -> a Connection (the key lives only there)
    test_event(source)   TestEventPanel    one "cmdseg_nb Test Event" track: HTTP status,
                                           messageId, time, and why a 200 proves no key
    send_panel(data, source)  SendPanel    progress (rows, bytes, batches, retries), Cancel,
                                           the SendResult
    mapping_preview(events)   MappingPreviewPanel   MappingConfig JSON editor, sample event or
                                           user picker, data objects and user properties

Every panel is displayed by putting it last in a cell (or ``display(panel)``). Each button's
handler is a one-line delegate to a plain method (``panel.connect()``, ``panel.send()``, ...)
that writes its outcome, exceptions included, into the panel's own ``status`` area, because
ipywidgets swallows callback exceptions. The panels hold no logic of their own: they call
:func:`cmdseg_nb.connect`-style functions in ``cmdseg_nb._connection``, ``send`` and ``preview``.

Needs ipywidgets 8 (``pip install 'cmdseg_nb[widgets]'``); importing this package without it
raises ImportError naming that command.
"""
from __future__ import annotations

try:
    import ipywidgets  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by a test that hides ipywidgets
    raise ImportError(
        "cmdseg_nb.widgets needs ipywidgets 8; install it with: pip install 'cmdseg_nb[widgets]'"
    ) from exc

from ._connect import ConnectPanel, TestEventPanel, connect, test_event
from ._preview import MappingPreviewPanel, mapping_preview
from ._sendpanel import SendPanel, send_panel

__all__ = [
    "ConnectPanel",
    "MappingPreviewPanel",
    "SendPanel",
    "TestEventPanel",
    "connect",
    "mapping_preview",
    "send_panel",
    "test_event",
]
