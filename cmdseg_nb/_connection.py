"""A write key, a region and an endpoint held in one object, checked as far as Segment allows.

::

    connect(write_key | $SEGMENT_WRITE_KEY) ──trim, check form──▶ WriteKey (masked everywhere)
        └──GET <cdn>/v1/projects/<key>/settings──▶ Connection.check: known / unknown / could not verify
    Connection.send(frame)        -> SendResult  (cmdseg_nb.send with the key, region, endpoint)
    Connection.send_test_event()  -> TestEventResult ("accepted by Segment (HTTP 200) — ...")

Segment's tracking API answers 200 for any non-empty key, right or wrong (spec "Responses and
retries"; case B27), so nothing here ever says a key is verified. The settings CDN (undocumented)
answers 404 for unknown keys and JSON for known ones; its answer is a hint, and being offline is
"could not verify", never an error. The key is never stored in anything but a ``WriteKey``.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import warnings
import re
import uuid
from typing import Any

import httpx
import orjson

from ._errors import CmdsegWarning, SendError
from ._send import ENDPOINTS, SendResult, WriteKey, send

__all__ = [
    "CDN",
    "Connection",
    "KeyCheck",
    "TEST_EVENT_NAME",
    "TEST_EVENT_PROPERTIES",
    "TestEventResult",
    "clean_write_key",
    "connect",
]

#: Segment's analytics.js settings CDN (spec "Checking a key").
CDN = "https://cdn.segment.com"
#: The name of the one track event :meth:`Connection.send_test_event` sends.
TEST_EVENT_NAME = "cmdseg_nb Test Event"
#: Its anonymousId: no userId, so Command AI's receiver ignores it (rule 1) and no user is made.
TEST_EVENT_ANONYMOUS_ID = "cmdseg_nb-test-event"
#: Its properties, naming the toolkit.
TEST_EVENT_PROPERTIES = {"library": "cmdseg_nb", "purpose": "connection test"}
_USUAL_FORM = re.compile(r"[A-Za-z0-9]{32}")
# Escapes pasted literally from a .env file or a JSON string ("...\n"), never part of a key.
_LITERAL_ESCAPES = re.compile(r"^(?:\\[nrt])+|(?:\\[nrt])+$")
_QUOTES = "\"'`“”‘’"


def clean_write_key(raw: str) -> WriteKey:
    """Trim a pasted write key and check its form; the result is a masked :class:`WriteKey`.

    Whitespace and literal ``\\n``/``\\r``/``\\t`` escapes at either end are removed (keys
    pasted from ``.env`` files or JSON strings carry them; case B27).

    Raises
    ------
    SendError
        Empty key; quotes around it; characters a write key never has (``:``, spaces,
        backslashes, non-ASCII). The message shows the key masked only.
    """
    if not isinstance(raw, str):
        raise SendError(f"write_key must be text, not {type(raw).__name__}")
    key = raw.strip()
    key = _LITERAL_ESCAPES.sub("", key).strip()
    if key and (key[0] in _QUOTES or key[-1] in _QUOTES):
        raise SendError("the write key is in quotes; paste it without the quotes")
    if "\\" in key:
        raise SendError("the write key has a backslash, which write keys never have; copy it again "
                        "from the source's Settings > API Keys")
    return WriteKey(key)  # empty, ':', spaces, non-ASCII: SendError with the key masked


@dataclasses.dataclass(frozen=True)
class KeyCheck:
    """What Segment's settings CDN said about a key (a hint: the endpoint is undocumented).

    Attributes
    ----------
    outcome : {"known", "unknown", "could not verify", "not checked"}
        ``known``: the CDN answered settings JSON for the key; ``unknown``: it answered 404;
        ``could not verify``: offline, timeout or an unexpected answer; ``not checked``:
        ``verify=False``.
    url : str | None
        The settings URL asked, with the key masked.
    http_status : int | None
    region : {"us", "eu"} | None
        Region of the key's source, from ``integrations["Segment.io"].apiHost``.
    region_matches : bool | None
        Whether ``region`` equals the region chosen for sending (None when unknown).
    message : str
        One sentence for people, with what to do next.
    """

    outcome: str
    url: str | None
    http_status: int | None
    region: str | None
    region_matches: bool | None
    message: str

    @property
    def warning(self) -> bool:
        """True when the user should act: unknown key or a region mismatch."""
        return self.outcome == "unknown" or self.region_matches is False


def _region_of(api_host: Any) -> str | None:
    if not isinstance(api_host, str):
        return None
    host = api_host.lower()
    if "eu1" in host or ".eu." in host:
        return "eu"
    if "api.segment.io" in host or "us1" in host:
        return "us"
    return None


def _probe(key: WriteKey, region: str, base: str, *, timeout: float,
           transport: httpx.BaseTransport | None) -> KeyCheck:
    """Ask ``<base>/v1/projects/<key>/settings``; every failure is "could not verify"."""
    shown = f"{base}/v1/projects/{key.masked}/settings"
    url = f"{base}/v1/projects/{key._key}/settings"
    try:
        with httpx.Client(transport=transport, timeout=timeout) as client:
            response = client.get(url)
    except (httpx.HTTPError, ValueError) as exc:
        # Offline, DNS, refused, timeout, bad URL: nothing is known about the key either way.
        return KeyCheck("could not verify", shown, None, None, None,
                        f"could not verify the key: Segment's settings CDN was not reachable "
                        f"({type(exc).__name__}); you can still send a test event")
    status = response.status_code
    if status == 404:
        return KeyCheck("unknown", shown, 404, None, None,
                        "Segment's settings CDN does not know this key (HTTP 404): check that you "
                        "copied the write key of the right source (Settings > API Keys)")
    if status != 200:
        return KeyCheck("could not verify", shown, status, None, None,
                        f"could not verify the key: the settings CDN answered HTTP {status}")
    try:
        settings = orjson.loads(response.content)
        api_host = settings["integrations"]["Segment.io"].get("apiHost")
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return KeyCheck("could not verify", shown, status, None, None,
                        "could not verify the key: the settings CDN answered something other "
                        "than source settings")
    found = _region_of(api_host)
    if found is None:
        return KeyCheck("known", shown, status, None, None,
                        "Segment's settings CDN knows this key; its region could not be read "
                        f"from apiHost {api_host!r}, so make sure {region.upper()} is right")
    if found != region:
        return KeyCheck("known", shown, status, found, False,
                        f"Segment's settings CDN knows this key, but its source is in "
                        f"{found.upper()} and you chose {region.upper()}: events sent to the "
                        f"wrong region are dropped without an error; choose {found.upper()}")
    return KeyCheck("known", shown, status, found, True,
                    f"Segment's settings CDN knows this key (region {found.upper()}, as chosen)")


@dataclasses.dataclass(frozen=True)
class TestEventResult:
    """The outcome of :meth:`Connection.send_test_event`.

    Attributes
    ----------
    outcome : {"accepted", "rejected", "failed"}
        ``accepted``: HTTP 2xx (which does not prove the key is right); ``rejected``: another
        HTTP answer; ``failed``: no answer (network).
    http_status : int | None
    message_id : str
        The event's messageId, to look up in the source's Debugger.
    sent_at : datetime.datetime
        UTC time the event was sent.
    endpoint : str
    error : str | None
        The server's message or the network error.
    """

    __test__ = False  # not a pytest test class

    outcome: str
    http_status: int | None
    message_id: str
    sent_at: dt.datetime
    endpoint: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "accepted"

    @property
    def text(self) -> str:
        """The sentence shown to people (case B27's wording for any 2xx)."""
        if self.ok:
            return (f"accepted by Segment (HTTP {self.http_status}) — Segment does not validate "
                    f"write keys; look for messageId {self.message_id} in the Source Debugger")
        if self.outcome == "rejected":
            return (f"rejected (HTTP {self.http_status}) by {self.endpoint}: {self.error}; "
                    f"messageId {self.message_id} was not stored")
        return f"not sent: {self.error}"


class Connection:
    """A Segment source to send to: write key (masked in every repr), region and endpoint.

    Build it with :func:`connect`. The key lives only here, in a :class:`WriteKey`.

    Attributes
    ----------
    region : {"us", "eu"}
    endpoint : str
        Base URL of the tracking API (``https://api.segment.io`` for US,
        ``https://events.eu1.segmentapis.com`` for EU, or the given one).
    check : KeyCheck
        What the settings CDN said when connecting.
    notes : tuple[str, ...]
        Hints about the key's form (Segment write keys are usually 32 letters and digits).
    """

    __slots__ = ("_key", "region", "endpoint", "check", "notes", "_transport")

    def __init__(self, key: WriteKey, *, region: str, endpoint: str, check: KeyCheck,
                 notes: tuple[str, ...] = (), transport: httpx.BaseTransport | None = None):
        self._key = key
        self.region = region
        self.endpoint = endpoint
        self.check = check
        self.notes = notes
        self._transport = transport

    @property
    def write_key(self) -> str:
        """The key, masked (``wk_F…cdef``)."""
        return self._key.masked

    def __repr__(self) -> str:
        mismatch = ", REGION MISMATCH" if self.check.region_matches is False else ""
        return (f"Connection(write_key={self._key.masked}, region={self.region!r}, "
                f"endpoint={self.endpoint!r}, check={self.check.outcome!r}{mismatch})")

    __str__ = __repr__

    def __reduce__(self):  # never pickle a secret by accident
        raise TypeError("a Connection holds a write key and cannot be pickled")

    @property
    def summary(self) -> str:
        """One line for people: masked key, region, endpoint and the CDN's answer."""
        return (f"connected: key {self._key.masked}, region {self.region.upper()}, "
                f"endpoint {self.endpoint} — {self.check.message}")

    def send(self, data: Any, **kwargs: Any) -> SendResult:
        """:func:`cmdseg_nb.send` with this connection's key, region and endpoint.

        Every keyword of :func:`cmdseg_nb.send` except ``write_key``/``endpoint``/``region``
        passes through; see it for the frame's columns and what is raised.
        """
        for name in ("write_key", "endpoint", "region"):
            if name in kwargs:
                raise TypeError(f"{name} comes from the Connection; use connect() for another")
        kwargs.setdefault("transport", self._transport)
        return send(data, write_key=self._key._key, endpoint=self.endpoint, **kwargs)

    def send_test_event(self, *, timeout: float = 10.0) -> TestEventResult:
        """Send one track event named :data:`TEST_EVENT_NAME` and report what Segment answered.

        The event has ``anonymousId`` ``"cmdseg_nb-test-event"`` (no userId, so Command AI
        makes no user from it), a fresh random ``messageId`` and properties
        :data:`TEST_EVENT_PROPERTIES` (``{"library": "cmdseg_nb", "purpose": "connection test"}``;
        ``context.library`` names the toolkit and its version too).
        Network failures are not raised: they come back as ``outcome="failed"``.

        Returns
        -------
        TestEventResult
            Its ``text`` says "accepted by Segment (HTTP 200) — Segment does not validate write
            keys; look for messageId <id> in the Source Debugger" for any 2xx: a wrong key
            gets 200 too (case B27).
        """
        import pandas as pd

        message_id = f"cmdseg-test-{uuid.uuid4()}"
        now = dt.datetime.now(dt.timezone.utc)
        frame = pd.DataFrame({
            "type": ["track"],
            "event": [TEST_EVENT_NAME],
            "anonymousId": [TEST_EVENT_ANONYMOUS_ID],
            "messageId": [message_id],
            "timestamp": [now],
            "properties": [dict(TEST_EVENT_PROPERTIES)],
        })
        result = self.send(frame, progress=False, timeout=timeout, max_retry_time=timeout,
                           backoff=0.2)
        row = result.rows.iloc[0]
        status = row["http_status"]
        status = None if pd.isna(status) else int(status)
        if row["status"] == "sent":
            outcome, error = "accepted", None
        elif status is not None:
            outcome, error = "rejected", row["error"]
        else:
            outcome, error = "failed", f"could not reach {self.endpoint}: {row['error']}"
        return TestEventResult(outcome, status, message_id, now, self.endpoint, error)


def connect(write_key: str | None = None, *, region: str = "us", endpoint: str | None = None,
            verify: bool = True, cdn: str | None = None, timeout: float = 5.0,
            transport: httpx.BaseTransport | None = None) -> Connection:
    """Hold a write key for sending, after checking its form and asking Segment's settings CDN.

    Parameters
    ----------
    write_key : str | None
        The source's write key; default the ``SEGMENT_WRITE_KEY`` environment variable.
        Trimmed (see :func:`clean_write_key`).
    region : {"us", "eu"}
        Region of the source's workspace. Events sent to the wrong region are dropped by
        Segment without an error, so it is compared with what the CDN says.
    endpoint : str | None
        Tracking API base URL; default by region (``https://api.segment.io``,
        ``https://events.eu1.segmentapis.com``). A :class:`cmdseg_nb.testing.LocalSegment`'s
        ``url`` for tests and demos.
    verify : bool
        Ask the settings CDN (``GET <cdn>/v1/projects/<key>/settings``). Its answer is a hint;
        offline or unreachable gives ``check.outcome == "could not verify"``, not an error.
    cdn : str | None
        Base URL of the settings CDN; default ``endpoint`` when one is given (LocalSegment
        answers the settings path), else ``https://cdn.segment.com``.
    timeout : float
        Seconds for the settings request.
    transport : httpx.BaseTransport | None
        For tests; used for the probe and for sends made through the connection.

    Returns
    -------
    Connection
        Its repr shows the key masked (``wk_F…cdef``).

    Warns
    -----
    CmdsegWarning
        When the CDN does not know the key (404) or names another region than ``region``:
        Segment would accept the events with HTTP 200 and drop them.

    Raises
    ------
    SendError
        No key given and ``SEGMENT_WRITE_KEY`` unset; a key of impossible form (empty, in
        quotes, ``:``, spaces, backslash, non-ASCII); unknown region; an endpoint that is not
        an http(s) URL. The CDN's answer never raises.
    """
    if write_key is None:
        write_key = os.environ.get("SEGMENT_WRITE_KEY")
        if write_key is None:
            raise SendError("no write key: pass connect(write_key=...) or set SEGMENT_WRITE_KEY")
    key = clean_write_key(write_key)
    if region not in ENDPOINTS:
        raise SendError(f"region must be one of {sorted(ENDPOINTS)}, not {region!r}")
    base = (endpoint if endpoint is not None else ENDPOINTS[region]).strip().rstrip("/")
    try:
        parsed = httpx.URL(base)
    except httpx.InvalidURL as exc:
        raise SendError(f"endpoint {base!r} is not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise SendError(f"endpoint {base!r} must be an http(s) URL such as {ENDPOINTS[region]}")
    notes = ()
    if not _USUAL_FORM.fullmatch(key._key):
        notes = (f"this key ({len(key._key)} characters) does not look like most Segment write "
                 "keys (32 letters and digits); check that you copied all of it",)
    if verify:
        probe_base = (cdn or (base if endpoint is not None else CDN)).rstrip("/")
        check = _probe(key, region, probe_base, timeout=timeout, transport=transport)
    else:
        check = KeyCheck("not checked", None, None, None, None,
                         "not checked with Segment's settings CDN (verify=False)")
    if check.warning:
        # An unknown key or the wrong region loses every event without an error from
        # Segment: say so where a notebook user sees it, not only in `check`.
        warnings.warn(f"connect(): {check.message}", CmdsegWarning, stacklevel=2)
    return Connection(key, region=region, endpoint=base, check=check, notes=notes,
                      transport=transport)
