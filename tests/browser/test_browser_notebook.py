"""The widgets in a real browser: JupyterLab on 127.0.0.1, Debian's chromium driven by Playwright.

A copy of notebooks/01_connect_and_test_event.ipynb is opened in a temp folder (the committed one is
never written), run, a write key is typed, Connect and Send test event are clicked against a
LocalSegment started here (the kernel finds it through ``CMDSEG_ENDPOINT``), the notebook is saved
with widget state, and the saved file is searched for the key. A screenshot of the panels is
written to tests/browser/output/panels.png (path printed).

Nothing is skipped: without /usr/bin/chromium (``apt-get install chromium``; ``make test`` does it),
JupyterLab or Playwright the test fails.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cmdseg_nb._connection import TEST_EVENT_NAME
from cmdseg_nb.testing import LocalSegment

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "01_connect_and_test_event.ipynb"
OUTPUT = Path(__file__).resolve().parent / "output"
CHROMIUM = os.environ.get("CMDSEG_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
KEY = "wk_BROWSER_0123456789abcdef"  # typed into the password box; must never reach the file
KEY_PLACEHOLDER = "Paste the source's write key"
B27_START = "accepted by Segment (HTTP 200) — Segment does not validate write keys"
SAVE_WIDGET_STATE = "@jupyter-widgets/jupyterlab-manager:saveWidgetState"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"JupyterLab did not answer {url} within {seconds:g} s")


@pytest.fixture
def segment():
    with LocalSegment(KEY) as seg:
        yield seg


@pytest.fixture
def lab(tmp_path, segment):
    """JupyterLab serving a temp folder holding a copy of the notebook; yields (url, folder)."""
    assert Path(CHROMIUM).exists(), (
        f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium); "
        "this test never downloads a browser")
    work = tmp_path / "nb"
    work.mkdir()
    shutil.copy(NOTEBOOK, work / NOTEBOOK.name)
    # Lab settings: save widget state with the notebook (what the test checks), no news prompt.
    settings = tmp_path / "lab_settings"
    for plugin, values in {
        "@jupyter-widgets/jupyterlab-manager/plugin": {"saveState": True},
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false"},
    }.items():
        f = settings / f"{plugin}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(values), encoding="utf-8")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "SEGMENT_WRITE_KEY"}
    env.update(
        CMDSEG_ENDPOINT=segment.url,  # read by the notebook's first cell
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter_config"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter_runtime"),
        IPYTHONDIR=str(tmp_path / "ipython"),
    )
    log = open(tmp_path / "jupyterlab.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         "--ServerApp.allow_root=True", "--IdentityProvider.token=", "--ServerApp.password=",
         f"--ServerApp.root_dir={work}", "--LabApp.expose_app_in_browser=True",
         f"--LabApp.user_settings_dir={settings}",
         f"--LabApp.workspaces_dir={tmp_path / 'lab_workspaces'}",
         "--LabApp.extension_manager=readonly"],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/status", proc, 90)
        yield f"http://127.0.0.1:{port}", work
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def test_connect_and_test_event_in_jupyterlab(lab, segment):
    from playwright.sync_api import expect, sync_playwright

    url, work = lab
    started = time.monotonic()
    saved = work / NOTEBOOK.name
    OUTPUT.mkdir(exist_ok=True)
    shot = OUTPUT / "panels.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.set_default_timeout(60_000)
            page.goto(f"{url}/lab/tree/{NOTEBOOK.name}")
            page.wait_for_function(
                """() => {
                    const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                    const k = w && w.sessionContext && w.sessionContext.session
                        && w.sessionContext.session.kernel;
                    return Boolean(k && k.connectionStatus === 'connected' && k.status === 'idle');
                }""", timeout=90_000)
            saves_state = page.evaluate("(cmd) => window.jupyterapp.commands.isToggled(cmd)",
                                        SAVE_WIDGET_STATE)
            assert saves_state, "JupyterLab is not set to save widget state with the notebook"
            ran = page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            assert ran, "notebook:run-all-cells did not run every cell"

            key_box = page.get_by_placeholder(KEY_PLACEHOLDER)
            expect(key_box).to_be_visible(timeout=90_000)
            key_box.fill(KEY)
            page.get_by_role("button", name="Connect", exact=True).click()
            expect(page.get_by_text("connected: key wk_B…cdef")).to_be_visible()
            expect(key_box).to_have_value("")

            page.get_by_role("button", name="Send test event").click()
            success = page.get_by_text(B27_START)
            expect(success).to_be_visible()
            status_text = success.inner_text()
            assert "look for messageId cmdseg-test-" in status_text
            assert "verified" not in status_text.lower()

            messages = segment.messages
            assert [m["event"] for m in messages] == [TEST_EVENT_NAME]
            assert messages[0]["messageId"] in status_text

            page.locator(".jp-OutputArea-output").filter(has=key_box).first \
                .scroll_into_view_if_needed()
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot of the panels: {shot}")

            before = saved.stat().st_mtime_ns
            page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
            deadline = time.monotonic() + 30
            while saved.stat().st_mtime_ns == before and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            browser.close()

    text = saved.read_text(encoding="utf-8")
    assert saved.stat().st_mtime_ns != before, "the notebook was not saved"
    assert KEY not in text and "0123456789abcdef" not in text.replace("wk_DEMO_0123456789abcdef", "")
    nb = json.loads(text)
    state = nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    models = {m["model_name"]: m["state"] for m in state.values()}
    password = [m["state"] for m in state.values() if m["model_name"] == "PasswordModel"]
    # Lab saves state with defaults dropped: an empty value may be left out entirely.
    assert password and all(p.get("value", "") == "" for p in password), "password not saved empty"
    assert "HTMLModel" in models  # the status areas were saved too
    assert NOTEBOOK.read_text(encoding="utf-8").count('"outputs": []') >= 1  # committed copy untouched
    print(f"browser test took {time.monotonic() - started:.1f} s")
