"""Tests of cmdseg_nb._connection: key cleaning, the settings-CDN probe, the test event (B27)."""
from __future__ import annotations

import base64
import pickle
import socket

import httpx
import orjson
import pandas as pd
import pytest

from cmdseg_nb import CmdsegWarning

from cmdseg_nb._connection import (
    CDN,
    TEST_EVENT_NAME,
    TEST_EVENT_PROPERTIES,
    Connection,
    clean_write_key,
    connect,
)
from cmdseg_nb._errors import SendError
from cmdseg_nb.testing import LocalSegment
from conftest import load_case

KEY = "wk_FAKE_0123456789abcdef"
B27_WORDING = ("accepted by Segment (HTTP 200) — Segment does not validate write keys; "
               "look for messageId {id} in the Source Debugger")


def closed_port_url() -> str:
    """A loopback URL nothing listens on (the port was just released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class SegmentLike:
    """MockTransport handler that answers like Segment: 200 for any key, settings by key."""

    def __init__(self, known: dict[str, str] | None = None, settings_status: int | None = None,
                 settings_body: bytes | None = None):
        self.known = known or {}
        self.settings_status = settings_status
        self.settings_body = settings_body
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "GET":
            if self.settings_status is not None:
                return httpx.Response(self.settings_status, content=self.settings_body or b"")
            key = request.url.path.split("/")[3]
            if key not in self.known:
                return httpx.Response(404, json={"message": "Not Found"})
            host = {"us": "api.segment.io/v1", "eu": "events.eu1.segmentapis.com/v1"}[self.known[key]]
            return httpx.Response(200, json={"integrations": {"Segment.io": {"apiHost": host}}})
        return httpx.Response(200, json={"success": True})


# -- the key ----------------------------------------------------------------------------------
@pytest.mark.parametrize("raw", [f"  {KEY}\n", f"\t{KEY} ", f"{KEY}\\n", f"  {KEY}\\r\\n",
                                 f"\\n{KEY}"])
def test_key_is_trimmed(raw):
    assert clean_write_key(raw).authorization() == clean_write_key(KEY).authorization()


@pytest.mark.parametrize("raw, words", [
    ("", "empty"), ("   \n", "empty"), (f'"{KEY}"', "quotes"), (f"'{KEY}'", "quotes"),
    ("wk_FAKE:0123456789abcdef", "characters"), ("wk_FAKE 0123456789abcdef", "characters"),
    ("wk_FAKE\\0123456789abcdef", "backslash"), ("wk_FAKE_é0123456789abcdef", "characters"),
])
def test_key_of_impossible_form_is_refused_and_masked(raw, words):
    with pytest.raises(SendError, match=words) as info:
        clean_write_key(raw)
    if len(raw.strip()) > 12:
        assert raw.strip().strip("\"'") not in str(info.value)


def test_key_from_environment(monkeypatch):
    monkeypatch.setenv("SEGMENT_WRITE_KEY", f" {KEY}\n")
    conn = connect(verify=False)
    assert conn.write_key == "wk_F…cdef"
    monkeypatch.delenv("SEGMENT_WRITE_KEY")
    with pytest.raises(SendError, match="SEGMENT_WRITE_KEY"):
        connect()


def test_repr_str_and_pickle_never_show_the_key():
    conn = connect(KEY, verify=False)
    for text in (repr(conn), str(conn), conn.summary, conn.write_key, repr(conn.check)):
        assert KEY not in text
    assert "wk_F…cdef" in repr(conn)
    with pytest.raises(TypeError):
        pickle.dumps(conn)
    with pytest.raises(AttributeError):  # __slots__: nothing else to hang a copy on
        conn.key_copy = KEY


def test_usual_form_note():
    assert connect(KEY, verify=False).notes  # 24 characters with underscores: a hint
    assert connect("a" * 16 + "B" * 8 + "0123456" + "9", verify=False).notes == ()


@pytest.mark.parametrize("kwargs, words", [
    ({"region": "asia"}, "region"), ({"endpoint": "ftp://x"}, "http"), ({"endpoint": "nope"}, "http"),
])
def test_bad_region_or_endpoint(kwargs, words):
    with pytest.raises(SendError, match=words):
        connect(KEY, verify=False, **kwargs)


# -- the settings-CDN probe -------------------------------------------------------------------
def test_probe_known_key_same_region_against_local_segment():
    with LocalSegment(KEY, region="eu") as seg:
        conn = connect(f"  {KEY}\n", region="eu", endpoint=seg.url)
    assert conn.check.outcome == "known"
    assert conn.check.region == "eu" and conn.check.region_matches is True
    assert not conn.check.warning
    assert KEY not in conn.check.url and "wk_F…cdef" in conn.check.url
    assert "verified" not in conn.summary.lower()


def test_probe_region_mismatch_is_a_warning_naming_both():
    with LocalSegment(KEY, region="eu") as seg:
        with pytest.warns(CmdsegWarning, match="wrong region"):
            conn = connect(KEY, region="us", endpoint=seg.url)
    assert conn.check.outcome == "known" and conn.check.region_matches is False
    assert conn.check.warning
    assert "EU" in conn.check.message and "US" in conn.check.message
    assert "dropped without an error" in conn.check.message
    assert "REGION MISMATCH" in repr(conn) and KEY not in repr(conn)


def test_probe_unknown_key_is_404_and_not_an_error():
    with LocalSegment(KEY) as seg:
        with pytest.warns(CmdsegWarning):
            conn = connect("wk_FAKE_doesnotexist", endpoint=seg.url)
    assert conn.check.outcome == "unknown" and conn.check.http_status == 404
    assert conn.check.warning and "does not know this key" in conn.check.message


def test_offline_is_could_not_verify_not_an_error():
    conn = connect(KEY, endpoint=closed_port_url(), timeout=2)
    assert conn.check.outcome == "could not verify"
    assert not conn.check.warning
    assert "could not verify" in conn.summary


@pytest.mark.parametrize("status, body", [(500, b"oops"), (200, b"not json"), (200, b"[1, 2]"),
                                          (403, b"")])
def test_odd_cdn_answers_are_could_not_verify(status, body):
    handler = SegmentLike(settings_status=status, settings_body=body)
    conn = connect(KEY, transport=httpx.MockTransport(handler))
    assert conn.check.outcome == "could not verify"


def test_default_probe_asks_segments_cdn_and_reads_the_region():
    handler = SegmentLike(known={KEY: "eu"})
    conn = connect(KEY, region="eu", transport=httpx.MockTransport(handler))
    (request,) = handler.requests
    assert str(request.url) == f"{CDN}/v1/projects/{KEY}/settings"
    assert conn.endpoint == "https://events.eu1.segmentapis.com"
    assert conn.check.outcome == "known" and conn.check.region_matches is True


def test_verify_false_makes_no_request():
    handler = SegmentLike()
    conn = connect(KEY, verify=False, transport=httpx.MockTransport(handler))
    assert conn.check.outcome == "not checked" and handler.requests == []


# -- the test event ---------------------------------------------------------------------------
def test_test_event_reaches_local_segment():
    with LocalSegment(KEY) as seg:
        conn = connect(KEY, endpoint=seg.url)
        result = conn.send_test_event()
        messages = seg.messages
    assert result.ok and result.http_status == 200
    (msg,) = messages
    assert msg["type"] == "track" and msg["event"] == TEST_EVENT_NAME == "cmdseg_nb Test Event"
    assert msg["properties"] == TEST_EVENT_PROPERTIES and msg["properties"]["library"] == "cmdseg_nb"
    assert msg["messageId"] == result.message_id
    assert "userId" not in msg and msg["anonymousId"]
    assert result.text == B27_WORDING.format(id=result.message_id)


def test_b27_trimmed_key_header_and_same_wording_for_a_made_up_key():
    case = load_case("B27")
    padded, made_up = case["input"]["keys"]
    handler = SegmentLike()  # Segment's edge: 200 for any key
    texts = []
    for raw in (padded, made_up):
        conn = connect(raw, transport=httpx.MockTransport(handler), verify=False)
        result = conn.send_test_event()
        assert result.ok
        assert result.text == B27_WORDING.format(id=result.message_id)
        assert "verified" not in result.text.lower()
        texts.append(result.text.replace(result.message_id, "<id>"))
    assert texts[0] == texts[1]
    first, second = (r for r in handler.requests if r.method == "POST")
    assert first.headers["authorization"] == case["expected"]["authorization_header_for_first_key"]
    assert first.headers["authorization"] == "Basic d2tfRkFLRV8wMTIzNDU2Nzg5YWJjZGVmOg=="
    assert base64.b64decode(second.headers["authorization"][6:]) == b"wk_FAKE_doesnotexist:"
    body = orjson.loads(first.read() if first.headers.get("content-encoding") != "gzip"
                        else __import__("gzip").decompress(first.read()))
    assert body["batch"][0]["event"] == TEST_EVENT_NAME


def test_test_event_rejected_and_offline():
    with LocalSegment(KEY) as seg:
        with pytest.warns(CmdsegWarning):
            rejected = connect("wk_FAKE_doesnotexist", endpoint=seg.url).send_test_event()
    assert rejected.outcome == "rejected" and rejected.http_status == 401
    assert rejected.text.startswith("rejected (HTTP 401)")
    offline = connect(KEY, endpoint=closed_port_url(), verify=False).send_test_event(timeout=1)
    assert offline.outcome == "failed" and offline.http_status is None
    assert offline.text.startswith("not sent: could not reach")


def test_connection_send_uses_its_key_and_endpoint():
    df = pd.DataFrame({"userId": ["u1", "u2"], "event": ["Signed Up", "Signed Up"]})
    with LocalSegment(KEY) as seg:
        conn = connect(KEY, endpoint=seg.url)
        result = conn.send(df, progress=False)
        assert result.sent == 2 and len(seg.messages) == 2
    assert KEY not in repr(result)
    with pytest.raises(TypeError, match="Connection"):
        conn.send(df, write_key="other")
    assert isinstance(conn, Connection)
