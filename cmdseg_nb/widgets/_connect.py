"""Connect panel (write key, region, endpoint) and Test event panel."""
from __future__ import annotations

import warnings

import ipywidgets as W

from .._connection import TEST_EVENT_NAME, Connection, TestEventResult
from .._connection import connect as _connect
from .._errors import CmdsegWarning
from ._common import Panel, Status, title

__all__ = ["ConnectPanel", "TestEventPanel", "connect", "test_event"]

KEY_PLACEHOLDER = "Paste the source's write key (Settings > API Keys)"
ENDPOINT_PLACEHOLDER = "Leave empty for the region's Segment endpoint"


class ConnectPanel(Panel):
    """Write key, region and endpoint, and a Connect button that makes a :class:`Connection`.

    After :meth:`connect` the password box is emptied (whether or not the key was good), so the
    key is never in widget state and never lands in a saved notebook (case B25). The key then
    lives only in ``panel.connection``, whose repr masks it.

    Attributes
    ----------
    key : ipywidgets.Password
    region : ipywidgets.Dropdown   ("us" / "eu")
    endpoint : ipywidgets.Text     (empty: the region's Segment endpoint)
    button : ipywidgets.Button     ("Connect")
    status : Status
    connection : Connection | None
    """

    def __init__(self, *, region: str = "us", endpoint: str | None = None, verify: bool = True,
                 timeout: float = 5.0, transport=None):
        self._verify = verify
        self._timeout = timeout
        self._transport = transport
        self.connection: Connection | None = None
        self.key = W.Password(placeholder=KEY_PLACEHOLDER, description="Write key",
                              layout=W.Layout(width="32em"))
        self.region = W.Dropdown(options=[("US", "us"), ("EU", "eu")], value=region,
                                 description="Region")
        self.endpoint = W.Text(value=endpoint or "", placeholder=ENDPOINT_PLACEHOLDER,
                               description="Endpoint", layout=W.Layout(width="32em"))
        advanced = W.Accordion(children=[self.endpoint], titles=("Advanced: endpoint URL",))
        self.button = W.Button(description="Connect", button_style="primary")
        self.status = Status("Paste the write key, choose the region, then click Connect.")
        self.button.on_click(lambda _b: self.connect())
        self.widget = W.VBox([title("Connect to a Segment source"), self.key, self.region,
                              advanced, self.button, self.status.widget])

    def connect(self) -> Connection | None:
        """Make the Connection from the boxes; empty the password box; report in ``status``."""
        raw, self.key.value = self.key.value, ""  # the key leaves widget state first
        with self.status.reporting("Connect"):
            if not raw.strip():
                still = (f"; still connected with key {self.connection.write_key}"
                         if self.connection is not None else "")
                self.status.show("error", "Connect failed: the write key box is empty; paste the "
                                          f"write key first{still}")
                return self.connection
            self.status.show("info", "Connecting…")
            self.connection = None
            with warnings.catch_warnings():
                # the panel shows the CDN's warning itself, in its status area
                warnings.simplefilter("ignore", CmdsegWarning)
                conn = _connect(raw, region=self.region.value,
                                endpoint=self.endpoint.value.strip() or None,
                                verify=self._verify, timeout=self._timeout,
                                transport=self._transport)
            self.connection = conn
            good = conn.check.outcome == "known" and conn.check.region_matches is not False
            kind = "ok" if good else "warn"  # never "error": the CDN's answer is only a hint
            self.status.show(kind, conn.summary, *conn.notes,
                             "Next: send a test event and look for it in the source's Debugger.")
            return conn
        return None


class TestEventPanel(Panel):
    """A "Send test event" button: one track event named ``"cmdseg_nb Test Event"``.

    The status shows the HTTP status, the messageId and the time, and says that a 200 does not
    prove the key is right (Segment answers 200 for any key; case B27): look the messageId up
    in the source's Debugger.

    Parameters
    ----------
    source : ConnectPanel | Connection
        Where the connection comes from; a ConnectPanel is read at click time.

    Attributes
    ----------
    button : ipywidgets.Button    ("Send test event")
    status : Status
    result : TestEventResult | None
    """

    __test__ = False  # not a pytest test class

    def __init__(self, source: ConnectPanel | Connection):
        self._source = source
        self.result: TestEventResult | None = None
        self.button = W.Button(description="Send test event")
        self.status = Status(f"Sends one track event named {TEST_EVENT_NAME!r}.")
        self.button.on_click(lambda _b: self.send())
        self.widget = W.VBox([title("Test event"), self.button, self.status.widget])

    def _connection(self) -> Connection | None:
        if isinstance(self._source, Connection):
            return self._source
        return getattr(self._source, "connection", None)

    def send(self) -> TestEventResult | None:
        """Send the test event with the current connection and report in ``status``."""
        with self.status.reporting("Send test event"):
            conn = self._connection()
            if conn is None:
                self.status.show("error", "Send test event failed: not connected; click Connect "
                                          "first")
                return None
            self.status.show("info", f"Sending {TEST_EVENT_NAME!r} to {conn.endpoint}…")
            self.result = r = conn.send_test_event()
            when = r.sent_at.strftime("%Y-%m-%d %H:%M:%S UTC")
            status = "none (no answer)" if r.http_status is None else str(r.http_status)
            self.status.show(
                "ok" if r.ok else "error", r.text,
                f"HTTP status: {status} · messageId: {r.message_id} · time: {when} · "
                f"endpoint: {r.endpoint}",
            )
            return r
        return None


def connect(*, region: str = "us", endpoint: str | None = None, verify: bool = True,
            timeout: float = 5.0) -> ConnectPanel:
    """A Connect panel. Display it, paste the key, click Connect; then use ``panel.connection``.

    Parameters
    ----------
    region : {"us", "eu"}
        Initial region choice.
    endpoint : str | None
        Initial endpoint URL (e.g. a LocalSegment's ``url``); empty means the region's default.
    verify : bool
        Ask Segment's settings CDN about the key (a hint; offline is "could not verify").
    timeout : float
        Seconds for that request.
    """
    return ConnectPanel(region=region, endpoint=endpoint, verify=verify, timeout=timeout)


def test_event(source: ConnectPanel | Connection) -> TestEventPanel:
    """A Test event panel sending through ``source`` (a ConnectPanel or a Connection)."""
    return TestEventPanel(source)


test_event.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
