"""The panel in a real JupyterLab page, driven by headless Debian Chromium (Playwright).

JupyterLab runs on 127.0.0.1 with LM Studio pointed at a fake OpenAI-compatible
server and every other local provider at a closed port; the kernel starts with
Ollama (down) as its default, so only a choice made in the rendered Dropdown can
make the next prompt reach the fake server. Screenshot: artifacts/browser/panel-pick.png.

At 1280×900 (a laptop's browser) the status table (`%llm_providers --status`) and the
panel's table must be readable at a glance: no cell taller than three lines of text and
every provider row in one viewport, measured in the page. Screenshots:
artifacts/browser/status.png and artifacts/browser/panel.png.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakeserver import FakeLLMServer

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/lib/chromium/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = Path(__file__).with_name("panel.ipynb")
STATUS_NOTEBOOK = Path(__file__).with_name("status.ipynb")
SCREENSHOT = REPO / "artifacts" / "browser" / "panel-pick.png"
STATUS_SHOT = REPO / "artifacts" / "browser" / "status.png"
FIT_SHOT = REPO / "artifacts" / "browser" / "panel.png"
LAPTOP = {"width": 1280, "height": 900}
REPLY = "Bonjour from the fake LM Studio (7f3a-panel)"
TOKEN = "nbllm-browser-test"
SETTLE_SECONDS = 2.0 + 2.0 + 5.0
"""The default health timeout, the panel's margin and a few seconds for the page."""
_PROVIDER_PREFIXES = ("OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_", "GROK_", "XAI_", "LMSTUDIO_", "OLLAMA_",
                      "LLAMACPP_", "NBLLM_", "EMBEDDED_")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def llm_server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(reply=REPLY, models=["panel-model"], loaded="panel-model") as server:
        yield server


@pytest.fixture
def lab_url(llm_server: FakeLLMServer, tmp_path: Path) -> Iterator[str]:
    """JupyterLab on a free port with a known token, in a temp root; always shut down."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / "panel.ipynb")
    shutil.copy(STATUS_NOTEBOOK, root / "status.ipynb")
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    # No news or update toasts over the page.
    quiet = {"checkForUpdates": False, "fetchNews": "false"}
    (settings / "notification.jupyterlab-settings").write_text(json.dumps(quiet))

    env = {k: v for k, v in os.environ.items() if not k.startswith(_PROVIDER_PREFIXES)}
    closed = f"http://127.0.0.1:{_free_port()}"
    # The default health timeout (no NBLLM_HEALTH_TIMEOUT): Run All also runs the %%llm cell,
    # whose first pydantic-ai import competes with the panel's first health check.
    env.update({
        "LMSTUDIO_BASE_URL": llm_server.url + "/v1", "OLLAMA_BASE_URL": closed, "LLAMACPP_BASE_URL": closed,
        "EMBEDDED_BASE_URL": closed,
        "NBLLM_PROVIDER": "ollama", "NBLLM_CONFIG": str(tmp_path / "nbllm.json"),
        # The kernel's call log and replay cache stay in the test's folder, never the user's.
        "NBLLM_HISTORY": str(tmp_path / "history.sqlite"), "NBLLM_CACHE": str(tmp_path / "cache.sqlite"),
        "LMSTUDIO_MAX_RETRIES": "0", "OLLAMA_MAX_RETRIES": "0", "LMSTUDIO_TIMEOUT": "10",
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
    })
    port = _free_port()
    command = [
        sys.executable, "-m", "jupyter", "lab", f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port_retries=0", "--ServerApp.open_browser=False", "--ServerApp.allow_root=True", f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={root}", f"--LabApp.user_settings_dir={tmp_path / 'lab-settings'}",
        f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}", "--LabApp.news_url=",
    ]
    log = (tmp_path / "jupyterlab.log").open("w")
    proc = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(base, proc, tmp_path / "jupyterlab.log")
        yield f"{base}/lab/tree/panel.ipynb?token={TOKEN}&reset"
    finally:
        _stop(proc)
        log.close()


def _wait_for_server(base: str, proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"JupyterLab did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM lets the server shut its kernels down; the process group is killed if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(5)


@pytest.fixture
def page():
    """A headless Debian Chromium page (never a downloaded browser); always closed."""
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    browser = None
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        page.set_default_timeout(20_000)
        try:
            yield page
        finally:  # what the page showed last, for a failing run
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT.with_name("last.png")))
    finally:
        if browser is not None:
            browser.close()
        playwright.stop()


def test_panel_choice_becomes_the_kernel_default(lab_url: str, page, llm_server: FakeLLMServer) -> None:
    page.goto(lab_url)
    page.get_by_text("| Idle").wait_for()  # the kernel is up: Run All will not ask for one
    page.get_by_role("menuitem", name="Run").click()
    page.locator('[data-command="runmenu:run-all"]').click()

    # The panel rendered as real ipywidgets, and the background health check's
    # results (applied from nbllm's loop thread) reached the page.
    provider = page.locator(".nbllm-panel .widget-dropdown select").first
    provider.wait_for()
    page.locator(".nbllm-panel option", has_text="LM Studio — available").wait_for(state="attached")
    page.locator(".nbllm-panel .nbllm-health", has_text="panel-model").wait_for()
    assert page.locator(".nbllm-panel .nbllm-current").inner_text() != "lmstudio"  # not before the pick
    _assert_table_settled(page)

    provider.select_option("LM Studio — available")
    page.locator(".nbllm-panel .nbllm-current", has_text="lmstudio").wait_for()

    # Run the prompt cell and the one that prints the kernel's default.
    cells = page.locator(".jp-Notebook .jp-Cell")
    cells.nth(1).locator(".jp-InputPrompt").click()
    page.keyboard.press("Shift+Enter")
    page.keyboard.press("Shift+Enter")
    page.locator(".jp-OutputArea-output", has_text=REPLY).wait_for()
    page.locator(".jp-OutputArea-output", has_text="KERNEL DEFAULT = lmstudio").wait_for()
    assert llm_server.chat_requests(), "the prompt never reached the LM Studio test server"
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    cells.nth(0).scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOT))

    # And back: nbllm.use() in a cell moves the rendered selector.
    page.keyboard.press("Shift+Enter")
    page.locator(".nbllm-panel .nbllm-current", has_text="llamacpp").wait_for()
    selected = provider.evaluate("select => select.options[select.selectedIndex].text")
    assert selected.startswith("llama.cpp")


def _assert_table_settled(page) -> None:
    """After Run All every row of the health table has a result (none left "checking…"),
    and the default line names the kernel's default (Ollama, down) with its reason."""
    table = page.locator(".nbllm-panel .nbllm-health")
    deadline = time.monotonic() + SETTLE_SECONDS
    while "checking…" in table.inner_text() and time.monotonic() < deadline:
        time.sleep(0.25)
    rows = table.locator("tbody tr").all_inner_texts()
    stuck = [row for row in rows if "checking…" in row]
    assert not stuck, f"rows still checking {SETTLE_SECONDS:g} s after Run All: {stuck}"
    assert "checking…" not in table.inner_text()
    by_provider = {row.split("\t")[0].strip(): row for row in rows}
    assert "available" in by_provider["lmstudio"] and "panel-model" in by_provider["lmstudio"]
    for name in ("ollama", "llamacpp"):
        assert "down" in by_provider[name], by_provider[name]
    default = page.locator(".nbllm-panel .nbllm-default").inner_text()
    assert "Kernel-wide default: ollama" in default
    assert "ollama is down" in default


_MEASURE = """table => {
    const px = v => parseFloat(v) || 0;
    const cells = [...table.querySelectorAll('th, td')].map(cell => {
        const style = getComputedStyle(cell);
        const line = style.lineHeight === 'normal' ? 1.2 * px(style.fontSize) : px(style.lineHeight);
        const padding = px(style.paddingTop) + px(style.paddingBottom) + px(style.borderTopWidth)
            + px(style.borderBottomWidth);
        return {text: cell.innerText.slice(0, 60), height: cell.getBoundingClientRect().height,
                limit: 3 * line + padding + 1};
    });
    const rows = [...table.querySelectorAll('tbody tr')].map(row => row.getBoundingClientRect());
    return {cells, rows: rows.length, span: rows.length ? rows[rows.length - 1].bottom - rows[0].top : 0,
            viewport: window.innerHeight};
}"""


def _assert_fits(table, what: str) -> int:
    """No cell of `table` taller than three lines of its text, and all its rows within one viewport."""
    table.scroll_into_view_if_needed()
    got = table.evaluate(_MEASURE)
    tall = [c for c in got["cells"] if c["height"] > c["limit"]]
    assert not tall, f"{what}: cells taller than three lines: {tall[:5]}"
    assert got["rows"] >= 8, f"{what}: only {got['rows']} provider rows"
    assert got["span"] <= got["viewport"], f"{what}: {got['rows']} rows take {got['span']:.0f} px of {got['viewport']}"
    return got["rows"]


def test_status_table_and_panel_fit_one_laptop_screen(lab_url: str, page) -> None:
    page.set_viewport_size(LAPTOP)
    page.goto(lab_url.replace("/panel.ipynb", "/status.ipynb"))
    page.get_by_text("| Idle").wait_for()
    page.get_by_role("menuitem", name="Run").click()
    page.locator('[data-command="runmenu:run-all"]').click()

    status = page.locator(".jp-OutputArea-output table.nbllm-table").first
    status.wait_for()
    assert "not configured" in status.inner_text() and "available" in status.inner_text()
    _assert_fits(status, "the status table")
    th = status.locator("th").first.evaluate("cell => getComputedStyle(cell).textAlign")
    assert th in ("left", "start"), th
    STATUS_SHOT.parent.mkdir(parents=True, exist_ok=True)
    status.scroll_into_view_if_needed()
    page.screenshot(path=str(STATUS_SHOT))

    panel = page.locator(".nbllm-panel")
    table = panel.locator(".nbllm-health")
    panel.locator(".nbllm-health", has_text="panel-model").wait_for()
    page.locator(".nbllm-panel button", has_text="Refresh").wait_for()  # the first check applied
    _assert_fits(table, "the panel's table")
    # The header is one row of whole controls (none shortened to "…"); the check's summary is one line.
    header = panel.locator(".nbllm-controls")
    button = header.locator("button", has_text="Refresh")
    assert header.bounding_box()["height"] <= button.bounding_box()["height"] * 1.6
    clipped = header.evaluate("""box => [...box.querySelectorAll('button, select')]
        .filter(el => el.scrollWidth > el.clientWidth + 1).map(el => el.innerText || el.value)""")
    assert not clipped, f"controls too narrow for their labels: {clipped}"
    summary = panel.locator(".nbllm-summary")
    assert "available · checked" in summary.inner_text()
    lines = summary.evaluate("el => el.querySelector('.widget-html-content span span').getClientRects().length")
    assert lines == 1, f"the summary took {lines} lines: {summary.inner_text()}"

    # Refresh shows that it is checking, then goes back.
    button.click()
    page.locator(".nbllm-panel button", has_text="Checking…").wait_for()
    page.locator(".nbllm-panel button", has_text="Refresh").wait_for()
    page.evaluate("el => el.scrollIntoView({block: 'start'})", panel.element_handle())
    page.screenshot(path=str(FIT_SHOT))
