"""Send panel: a send in a background thread, with progress, a Cancel button and the SendResult."""
from __future__ import annotations

import html
import threading
from typing import Any

import ipywidgets as W

from .._connection import Connection
from .._send import SendProgress, SendResult
from ._common import Panel, Status, title

__all__ = ["SendPanel", "send_panel"]


def _rows(data: Any) -> int | None:
    for attr in ("num_rows", "shape"):
        value = getattr(data, attr, None)
        if isinstance(value, int):
            return value
        if isinstance(value, tuple) and value:
            return int(value[0])
    try:
        return len(data)
    except TypeError:
        return None


class SendPanel(Panel):
    """Send ``data`` through a connection, showing progress, with a Cancel that stops cleanly.

    The send runs in a background thread so the kernel stays free to receive the Cancel click.
    Cancel lets the batch in flight finish and starts no new one; the rows not sent end
    ``skipped`` in the result ("not sent: cancelled").

    Parameters
    ----------
    data : pandas.DataFrame | pyarrow.Table
        The rows to send (columns as :func:`cmdseg_nb.send` takes them).
    source : ConnectPanel | Connection
        Where the connection comes from; a ConnectPanel is read when Send is clicked.
    **send_kwargs
        Passed to :func:`cmdseg_nb.send` (``run_name``, ``integrations``, ``gzip``, ...).

    Attributes
    ----------
    send_button, cancel_button : ipywidgets.Button
    bar : ipywidgets.IntProgress   rows with an outcome / rows planned
    counts : ipywidgets.HTML       rows, sent, failed, batches, requests, retries, bytes
    output : ipywidgets.HTML       the SendResult's HTML when done
    status : Status
    progress : SendProgress | None  last snapshot
    result : SendResult | None
    """

    def __init__(self, data: Any, source, **send_kwargs: Any):
        for name in ("write_key", "endpoint", "region", "progress", "on_progress", "cancel"):
            if name in send_kwargs:
                raise TypeError(f"SendPanel sets {name} itself")
        self.data = data
        self._source = source
        self._kwargs = send_kwargs
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self.progress: SendProgress | None = None
        self.result: SendResult | None = None
        n = _rows(data)
        self.send_button = W.Button(description="Send", button_style="primary")
        self.cancel_button = W.Button(description="Cancel", button_style="warning",
                                      disabled=True)
        self.bar = W.IntProgress(value=0, min=0, max=max(n or 1, 1), description="rows")
        self.counts = W.HTML()
        self.output = W.HTML()
        ready = f"{n:,} rows ready to send." if n is not None else "Ready to send."
        self.status = Status(ready + " Click Send.")
        self.send_button.on_click(lambda _b: self.start())
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.widget = W.VBox([title("Send to Segment"),
                              W.HBox([self.send_button, self.cancel_button]), self.bar,
                              self.counts, self.status.widget, self.output])

    def _connection(self) -> Connection | None:
        if isinstance(self._source, Connection):
            return self._source
        return getattr(self._source, "connection", None)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> threading.Thread | None:
        """Start :meth:`run` in a background thread (what the Send button does)."""
        with self.status.reporting("Send"):
            if self.running:
                self.status.show("warn", "A send is already running; Cancel it or wait.")
                return None
            self._cancel.clear()
            self.cancel_button.disabled = False
            self.send_button.disabled = True
            self._thread = threading.Thread(target=self.run, name="cmdseg_nb SendPanel",
                                            daemon=True)
            self._thread.start()
            return self._thread
        return None

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a started send to end; True when it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def cancel(self) -> None:
        """Ask the running send to stop after the batch in flight (what Cancel does)."""
        with self.status.reporting("Cancel"):
            if not self.running:
                self.status.show("info", "Nothing is being sent.")
                return
            self._cancel.set()
            self.cancel_button.disabled = True
            self.status.show("warn", "Cancelling: the batch in flight finishes, no new batch "
                                     "starts…")

    def _on_progress(self, p: SendProgress) -> None:
        self.progress = p
        self.bar.max = max(p.rows, 1)
        self.bar.value = min(p.rows_done, self.bar.max)
        self.counts.value = html.escape(
            f"rows {p.rows_done:,}/{p.rows:,} · sent {p.sent:,} · failed {p.failed:,} · "
            f"batches {p.batches_done:,}/{p.batches:,} · requests {p.requests:,} · "
            f"retries {p.retries:,} · {p.bytes_sent:,} bytes on the wire"
        )

    def run(self) -> SendResult | None:
        """Send in this thread; report progress, the outcome and any exception in ``status``."""
        try:
            with self.status.reporting("Send"):
                conn = self._connection()
                if conn is None:
                    self.status.show("error", "Send failed: not connected; click Connect first")
                    return None
                self.status.show("info", f"Sending to {conn.endpoint} with key "
                                         f"{conn.write_key}…")
                result = conn.send(self.data, progress=False, on_progress=self._on_progress,
                                   cancel=self._cancel, **self._kwargs)
                self.result = result
                self.output.value = result._repr_html_()
                self.status.show(*self._outcome(result))
                return result
            return None
        finally:
            self.send_button.disabled = False
            self.cancel_button.disabled = True

    def _outcome(self, r: SendResult) -> tuple[str, str]:
        counts = (f"{r.sent:,} sent, {r.failed:,} failed, {r.invalid:,} invalid, "
                  f"{r.skipped:,} not sent (skipped) of {len(r.rows):,} rows in "
                  f"{r.duration:.1f} s")
        if self.progress is not None and self.progress.cancelled:
            return "warn", f"cancelled: {counts}; send again to continue (same messageIds)"
        if r.ok:
            return "ok", f"done: {counts} — accepted by Segment, which does not validate write keys"
        return "error", f"done with problems: {counts}; see panel.result.errors"


def send_panel(data: Any, source, **send_kwargs: Any) -> SendPanel:
    """A Send panel for ``data`` through ``source`` (a ConnectPanel or a Connection)."""
    return SendPanel(data, source, **send_kwargs)
