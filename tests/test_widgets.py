"""Headless tests of cmdseg_nb.widgets: no kernel (ipywidgets' dummy comm), real LocalSegment.

Each panel is driven the way a person does it (set values, ``Button.click()``), then its status
text, results, what LocalSegment received, and every widget's ``get_state()`` are checked.
"""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time

import ipywidgets as W
from ipywidgets.widgets.widget import _instances
import pandas as pd
import pytest

from cmdseg_nb import load_export
from cmdseg_nb._connection import TEST_EVENT_NAME, Connection
from cmdseg_nb._send import SendProgress
from cmdseg_nb.testing import LocalSegment, Reply
from conftest import TESTS, load_case

import cmdseg_nb.widgets as widgets

KEY = "wk_FAKE_0123456789abcdef"
B27 = "accepted by Segment (HTTP 200) — Segment does not validate write keys; look for messageId "
DATA = TESTS.parent / "data" / "rudderstack_tutorial"


def every_widget_state() -> str:
    """The synced state of every live widget in this process, as JSON text."""
    return json.dumps([w.get_state() for w in list(_instances.values())],
                      default=str, ensure_ascii=False)


def wait_until(predicate, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.fixture
def seg():
    with LocalSegment(KEY) as s:
        yield s


def connected(seg) -> widgets.ConnectPanel:
    panel = widgets.connect(endpoint=seg.url)
    panel.key.value = KEY
    panel.button.click()
    assert panel.connection is not None, panel.status.text
    return panel


# -- lazy import ------------------------------------------------------------------------------
def test_missing_ipywidgets_names_the_install_command(monkeypatch):
    saved = {k: v for k, v in sys.modules.items() if k.startswith("cmdseg_nb.widgets")}
    for k in saved:
        monkeypatch.delitem(sys.modules, k)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import ipywidgets -> ImportError
    try:
        with pytest.raises(ImportError, match=r"pip install 'cmdseg_nb\[widgets\]'"):
            importlib.import_module("cmdseg_nb.widgets")
    finally:
        monkeypatch.undo()
        sys.modules.update(saved)
    import cmdseg_nb
    assert "cmdseg_nb.widgets" in sys.modules  # restored for the other tests
    assert not hasattr(cmdseg_nb, "ipywidgets")


def test_package_does_not_import_widgets():
    code = ("import sys, cmdseg_nb, cmdseg_nb._connection; "
            "assert 'ipywidgets' not in sys.modules and 'cmdseg_nb.widgets' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=TESTS.parent, timeout=120)


# -- Connect panel ----------------------------------------------------------------------------
def test_b25_key_leaves_widget_state_on_connect(seg):
    case = load_case("B25")
    key = "wk_FAKE_0123456789abcdef"
    assert key in case["input"]["user_action"]
    panel = widgets.connect(endpoint=seg.url)
    assert panel.key.placeholder and key not in panel.key.placeholder
    panel.key.value = key
    panel.button.click()
    assert panel.key.value == ""
    assert isinstance(panel.connection, Connection)
    assert "wk_F…cdef" in repr(panel.connection) and key not in repr(panel.connection)
    assert panel.status.kind == "ok", panel.status.text
    assert "wk_F…cdef" in panel.status.text and key not in panel.status.text
    assert "verified" not in panel.status.text.lower()
    for w in panel.all_widgets():
        assert key not in json.dumps(w.get_state(), default=str)
        assert not (isinstance(w, W.Text) and w.value == key)  # never copied into a Text
    assert key not in every_widget_state()


def test_connect_trims_and_shows_the_region_check(seg):
    panel = widgets.connect(endpoint=seg.url, region="eu")
    panel.key.value = f"  {KEY}\n"
    panel.connect()
    assert panel.connection is not None and panel.key.value == ""
    assert panel.status.kind == "warn"
    assert "source is in US and you chose EU" in panel.status.text


@pytest.mark.parametrize("raw, words", [
    ("", "box is empty"),
    ("wk_FAKE:0123456789abcdef", "Connect failed: SendError"),
    (f'"{KEY}"', "quotes"),
])
def test_connect_errors_go_to_the_status_and_the_box_is_emptied(seg, raw, words):
    panel = widgets.connect(endpoint=seg.url)
    panel.key.value = raw
    panel.button.click()
    assert panel.connection is None
    assert panel.key.value == ""
    assert panel.status.kind == "error" and words in panel.status.text
    assert (KEY not in panel.status.text) and ("0123456789abcdef" not in panel.status.text)


def test_connect_unknown_key_and_offline_do_not_block(seg):
    panel = widgets.connect(endpoint=seg.url)
    panel.key.value = "wk_FAKE_doesnotexist"
    panel.button.click()
    assert panel.connection is not None
    assert panel.status.kind == "warn" and "does not know this key" in panel.status.text
    dead = f"http://127.0.0.1:{_free_port()}"
    panel.endpoint.value = dead
    panel.key.value = KEY
    panel.button.click()
    assert panel.connection is not None and panel.connection.endpoint == dead
    assert panel.status.kind == "warn" and "could not verify" in panel.status.text


def test_connect_with_an_empty_box_keeps_the_connection(seg):
    panel = connected(seg)
    panel.button.click()
    assert panel.connection is not None and panel.status.kind == "error"
    assert panel.status.text.endswith("still connected with key wk_F…cdef")


def test_connect_bad_endpoint_is_an_error_in_the_status(seg):
    panel = widgets.connect(endpoint="not a url")
    panel.key.value = KEY
    panel.button.click()
    assert panel.status.kind == "error" and "endpoint" in panel.status.text
    assert panel.key.value == ""


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- Test event panel -------------------------------------------------------------------------
def test_test_event_panel_sends_one_event_and_says_what_200_means(seg):
    panel = connected(seg)
    test = widgets.test_event(panel)
    test.button.click()
    result = test.result
    assert result is not None and result.ok
    assert test.status.kind == "ok"
    assert test.status.text.startswith(B27 + result.message_id + " in the Source Debugger")
    assert "HTTP status: 200" in test.status.text and "time: " in test.status.text
    assert "verified" not in test.status.text.lower()
    (msg,) = seg.messages
    assert msg["event"] == TEST_EVENT_NAME and msg["messageId"] == result.message_id
    assert msg["properties"]["library"] == "cmdseg_nb"
    assert KEY not in every_widget_state()


def test_test_event_before_connect_and_on_rejection(seg):
    source = widgets.connect(endpoint=seg.url)
    test = widgets.test_event(source)
    test.button.click()
    assert test.status.kind == "error" and "not connected" in test.status.text
    source.key.value = "wk_FAKE_doesnotexist"  # LocalSegment, stricter than Segment, says 401
    source.button.click()
    test.button.click()
    assert test.status.kind == "error" and test.status.text.startswith("rejected (HTTP 401)")
    assert seg.messages == []


def test_test_event_exception_is_shown_not_swallowed(seg, monkeypatch):
    panel = connected(seg)
    test = widgets.test_event(panel.connection)

    def boom(self, **kw):
        raise RuntimeError("boom")

    monkeypatch.setattr(Connection, "send_test_event", boom)
    test.button.click()
    assert test.status.kind == "error"
    assert test.status.text == "Send test event failed: RuntimeError: boom"


# -- Send panel -------------------------------------------------------------------------------
def frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"userId": [f"u{i}" for i in range(n)], "event": "Order Completed",
                         "total": range(n)})


def test_send_panel_runs_to_the_end(seg):
    panel = widgets.send_panel(frame(50), connected(seg), max_batch_messages=10, run_name="t")
    assert "50 rows ready" in panel.status.text
    result = panel.run()  # what the Send button's thread runs
    assert result is not None and result.sent == 50
    assert len(seg.messages) == 50
    assert panel.status.kind == "ok" and panel.status.text.startswith("done: 50 sent, 0 failed")
    assert panel.bar.value == 50 and panel.bar.max == 50
    assert "batches 5/5" in panel.counts.value and "retries 0" in panel.counts.value
    assert "SendResult" in panel.output.value
    assert not panel.send_button.disabled and panel.cancel_button.disabled


def test_send_panel_button_thread_counts_retries(seg):
    seg.script([Reply(503), Reply(429, retry_after=0)])
    panel = widgets.send_panel(frame(30), connected(seg).connection, max_batch_messages=10,
                               backoff=0.01)
    panel.send_button.click()
    assert panel.wait(30)
    assert panel.result is not None and panel.result.sent == 30, panel.status.text
    assert panel.progress.retries == 2 and "retries 2" in panel.counts.value
    assert len({m["messageId"] for m in seg.messages}) == 30


def test_send_panel_cancel_stops_cleanly(seg):
    seg.script([Reply(200, delay=0.3)] * 10)
    panel = widgets.send_panel(frame(100), connected(seg), max_batch_messages=10)
    panel.send_button.click()
    assert panel.running and not panel.cancel_button.disabled
    assert wait_until(lambda: panel.progress is not None and panel.progress.rows_done >= 10)
    panel.cancel_button.click()
    assert "Cancelling" in panel.status.text
    assert panel.wait(30)
    r = panel.result
    assert r is not None
    assert panel.status.kind == "warn" and panel.status.text.startswith("cancelled: ")
    assert r.skipped > 0 and r.sent + r.skipped == 100 and r.failed == 0
    assert set(r.rows.loc[r.rows.status == "skipped", "error"]) == {"not sent: cancelled"}
    assert len(seg.messages) == r.sent  # nothing sent that the result does not count
    assert panel.progress.cancelled
    panel.cancel_button.click()  # nothing running any more
    assert panel.status.text == "Nothing is being sent."


def test_send_panel_errors_go_to_the_status(seg):
    panel = widgets.send_panel(frame(3), widgets.connect(endpoint=seg.url))
    panel.send_button.click()
    assert panel.wait(10)
    assert panel.status.kind == "error" and "not connected" in panel.status.text
    bad = widgets.send_panel(pd.DataFrame({"x": [1]}), connected(seg))
    bad.run()
    assert bad.status.kind == "error" and bad.status.text.startswith("Send failed: MessageError")
    with pytest.raises(TypeError):
        widgets.send_panel(frame(1), connected(seg), write_key=KEY)


def test_send_hooks_report_progress_in_order(seg):
    conn = connected(seg).connection
    seen: list[SendProgress] = []
    conn.send(frame(25), progress=False, max_batch_messages=10, on_progress=seen.append)
    assert seen[0].rows == 25 and seen[0].rows_done == 0  # batches may be planned as it goes
    assert seen[-1].rows_done == 25 and seen[-1].sent == 25
    assert seen[-1].batches_done == seen[-1].batches == 3
    assert [p.rows_done for p in seen] == sorted(p.rows_done for p in seen)


# -- Mapping preview panel --------------------------------------------------------------------
@pytest.fixture(scope="module")
def export():
    return load_export(DATA)


def test_preview_default_config_on_an_export(export):
    panel = widgets.mapping_preview(export)
    assert panel.status.kind == "ok", panel.status.text
    event = panel.events[panel.event.value]
    assert event["type"] == "identify"  # the first event a mapping matches is picked
    (p,) = panel.previews
    assert p.mapping == "Identify traits" and p.properties
    assert "Identify traits" in panel.output.value and "user properties" in panel.output.value


def test_preview_user_picker(export):
    panel = widgets.mapping_preview(export)
    user = panel.user.options[1]
    panel.user.value = user
    assert all(e.get("userId") == user for e in panel.events)
    assert panel.user_properties, panel.status.text
    assert f"user {user} ends with {len(panel.user_properties)} properties" in panel.status.text


def test_preview_validation_errors_inline(export):
    panel = widgets.mapping_preview(export)
    good_output = panel.output.value
    panel.editor.value = "[{"
    assert panel.status.kind == "error" and "not valid JSON" in panel.status.text
    panel.editor.value = json.dumps([{"name": "Plan", "trigger": 'type = "identify"',
                                      "data": {"plan": {"@pth": "$.traits.plan"}}}])
    assert panel.status.kind == "error"
    assert "mapping 'Plan'" in panel.status.text and "$[0].data" in panel.status.text
    assert panel.output.value == good_output  # the last good preview stays
    panel.editor.value = json.dumps([{"name": "Plan", "trigger": 'type = "identify"',
                                      "data": {"userId": {"@path": "$.userId"},
                                               "traits": {"plan": "pro"}}}])
    assert panel.status.kind == "ok", panel.status.text
    assert panel.previews[0].properties == {"plan": "pro"}


def test_preview_on_a_list_of_events():
    events = [
        {"type": "track", "event": "x", "userId": "u1", "messageId": "m0"},
        {"type": "identify", "userId": "u1", "traits": {"plan": "pro"}, "messageId": "m1",
         "timestamp": "2024-01-01T00:00:00Z"},
    ]
    panel = widgets.mapping_preview(events)
    assert panel.event.value == 1 and panel.previews[0].properties == {"plan": "pro"}
    panel.event.value = 0
    assert panel.previews == [] and "0 match" in panel.status.text
    panel.user.value = "u1"
    assert panel.user_properties == {"plan": "pro"}
    assert KEY not in every_widget_state()


# -- the notebook, in a real kernel (nbclient; never written back) ----------------------------
def test_notebook_runs_in_a_kernel(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    path = TESTS.parent / "notebooks" / "01_connect_and_test_event.ipynb"
    before = path.read_bytes()
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        "the committed notebook must have its outputs cleared"
    monkeypatch.delenv("SEGMENT_WRITE_KEY", raising=False)
    monkeypatch.delenv("CMDSEG_ENDPOINT", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(TESTS.parent))
    client = NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=False,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    text = json.dumps(nb)
    assert "Sending to a LocalSegment at http://127.0.0.1:" in text
    assert "application/vnd.jupyter.widget-view+json" in text  # the panels were displayed
    assert '"output_type": "error"' not in text
    assert path.read_bytes() == before  # never written back
