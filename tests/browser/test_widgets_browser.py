"""The notebooks' widgets in a real browser: JupyterLab on 127.0.0.1, headless
Chromium through Playwright, the notebooks run in smoke mode, one control of each
widget changed, and the output must change with no traceback anywhere.

Not part of ``make test`` (the ``browser`` marker is deselected by default): run
``make browser-test``. Needs Playwright (``.[dev]``) and a Chromium binary:
Debian's ``chromium`` package at ``/usr/bin/chromium`` (Playwright's own browser
download is not used), or ``$STARUNET_CHROMIUM``. Screenshots of each widget land
in ``$STARUNET_BROWSER_SHOTS`` if set. Everything waits on the page's state, not on
sleeps, with generous timeouts: a 2-core CPU running other jobs is slow.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("STARUNET_CHROMIUM", "/usr/bin/chromium")
# Quiet, offline Chromium: without the background-networking switches it keeps
# calling Google's services, which a closed network answers with floods of errors.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MINUTE = 60_000  # Playwright timeouts are in milliseconds
NOTEBOOK_TIMEOUT = 15 * MINUTE  # running a whole notebook in smoke mode on a busy 2-core CPU
WIDGET_TIMEOUT = 3 * MINUTE  # one widget recomputing (a smoke training for the launcher)

# JupyterLab settings for the test: every cell in the DOM (the default windowing
# leaves off-screen cells out), no autosave (the copies are throwaway anyway), no
# news fetched from the internet.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)  # polling the server's status endpoint until it answers
    raise TimeoutError(f"JupyterLab did not answer {url} within {timeout} s")


def _copy_without_outputs(src: Path, dst: Path) -> None:
    """The committed outputs would look like a finished run (every prompt numbered),
    and JupyterLab shows them untrusted: the test must see only what it ran. The
    exercises' solutions are shown too (collapsed in the committed notebooks): a
    collapsed cell shows no prompt, and the wait for every prompt to be numbered counts them."""
    nb = json.loads(src.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
            cell.get("metadata", {}).pop("jupyter", None)
    dst.write_text(json.dumps(nb))


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[dict]:
    """A JupyterLab server on 127.0.0.1 with a token, serving copies of the
    notebooks (a browser session must never write into notebooks/), in smoke mode."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set STARUNET_CHROMIUM)")
    pytest.importorskip("playwright.sync_api")
    base = tmp_path_factory.mktemp("lab")
    root, settings = base / "notebooks", base / "settings"
    root.mkdir()
    for notebook in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        _copy_without_outputs(notebook, root / notebook.name)
    for name, values in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "STARUNET_SMOKE": "1", "STARUNET_RUNS": str(base / "runs"),
           "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
           "JUPYTER_RUNTIME_DIR": str(base / "runtime")}
    env.pop("MPLBACKEND", None)  # the kernel must draw inline figures (see starunet.course)
    log = open(base / "jupyterlab.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
         f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for_server(f"{url}/api/status?token={token}", process)
        yield {"url": url, "token": token, "log": base / "jupyterlab.log"}
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server and its kernels
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def open_notebook(lab, browser):
    """``open_notebook(name)``: a page with the notebook open and all its cells run."""
    pages = []

    def run(name: str):
        page = browser.new_page(viewport={"width": 1400, "height": 2400})
        pages.append(page)
        page.set_default_timeout(WIDGET_TIMEOUT)
        page.goto(f"{lab['url']}/lab/tree/{name}?token={lab['token']}&reset")
        _run_all_cells(page)
        return page

    yield run
    for page in pages:
        page.close()


def _run_all_cells(page) -> None:
    """Run > Run All Cells, then wait until every code cell has an execution count
    (an error output stops the wait at once: the cells after it would never run)."""
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=5 * MINUTE)
    page.locator(".jp-Notebook .jp-Cell").first.click()  # focus the notebook: the Run menu acts on it
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.wait_for_function(
        """() => {
            // JupyterLab renders an error as stderr text: stop waiting at the first traceback
            const stderr = [...document.querySelectorAll('.jp-Notebook [data-mime-type="application/vnd.jupyter.stderr"]')];
            if (stderr.some(e => e.textContent.includes('Traceback'))) return true;
            const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')];
            return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
        }""", timeout=NOTEBOOK_TIMEOUT, polling=1000)
    _assert_no_traceback(page)


def _assert_no_traceback(page) -> None:
    text = page.locator(".jp-Notebook").inner_text()
    for bad in ("Traceback", "Error displaying widget"):
        assert bad not in text, f"{bad!r} on the page: ...{text[max(0, text.find(bad) - 300):text.find(bad) + 800]}"
    assert page.locator(".jp-Notebook [data-mime-type='application/vnd.jupyter.stderr']").filter(
        has_text=re.compile("Error|Exception")).count() == 0


def _widget(page, has_text: str):
    """The live widget (the widget-view output) that shows a control labelled ``has_text``."""
    return page.locator(".jp-OutputArea-output .jupyter-widgets.widget-container").filter(
        has=page.locator(".widget-label", has_text=re.compile(f"^{re.escape(has_text)}$"))).first


def _select(widget, label: str, value: str) -> None:
    dropdown = widget.locator(".widget-dropdown").filter(
        has=widget.page.locator(".widget-label", has_text=re.compile(f"^{re.escape(label)}$")))
    dropdown.locator("select").select_option(value)


def _image_of(widget) -> str:
    """The src of the (last) figure in the widget's output area."""
    return widget.locator(".widget-output img").last.get_attribute("src") or ""


def _wait_for_new_image(widget, before: str) -> None:
    widget.page.wait_for_function(
        "([el, before]) => { const imgs = el.querySelectorAll('.widget-output img');"
        " return imgs.length && imgs[imgs.length - 1].src !== before; }",
        arg=[widget.element_handle(), before], timeout=WIDGET_TIMEOUT, polling=250)


def _wait_until_idle(widget) -> None:
    """Until the widget's first control is enabled again (the busy state is over)."""
    widget.page.wait_for_function("el => !el.querySelector('select').disabled", arg=widget.element_handle())


def _screenshot(widget, name: str) -> None:
    folder = os.environ.get("STARUNET_BROWSER_SHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        widget.scroll_into_view_if_needed()
        widget.screenshot(path=str(Path(folder) / f"{name}.png"))


def _watch_status(widget) -> None:
    """Record every text the widget's status line shows (busy states last a moment)."""
    widget.evaluate("""el => {
        el.seen = [];
        const status = el.querySelector('.widget-html-content');
        new MutationObserver(() => el.seen.push(status.textContent))
            .observe(status, {childList: true, subtree: true, characterData: true});
    }""")


def test_notebook_01_patch_explorer_samples_other_patches(open_notebook):
    page = open_notebook("01_data_preparation.ipynb")
    explorer = _widget(page, "patch size")
    before = _image_of(explorer)
    _select(explorer, "patch size", "64")
    _wait_for_new_image(explorer, before)
    _wait_until_idle(explorer)
    _assert_no_traceback(page)


def test_notebook_02_playground_retrains_on_another_fusion(open_notebook):
    page = open_notebook("02_star_operation.ipynb")
    playground = _widget(page, "fusion")
    before = _image_of(playground)
    _watch_status(playground)
    _select(playground, "fusion", "sum")
    _wait_for_new_image(playground, before)
    assert "training…" in playground.evaluate("el => el.seen")  # the busy state was shown
    _wait_until_idle(playground)
    _screenshot(playground, "02_playground")
    _assert_no_traceback(page)


def test_notebook_03_explorer_builds_another_variant(open_notebook):
    page = open_notebook("03_relu_free_unet.ipynb")
    explorer = _widget(page, "narrow")
    before = _image_of(explorer)
    _select(explorer, "fusion", "sum")
    _wait_for_new_image(explorer, before)
    _wait_until_idle(explorer)
    _screenshot(explorer, "03_explorer")
    _assert_no_traceback(page)


def test_notebook_04_launcher_trains_stops_resumes_and_obeys_kernel_interrupt(open_notebook):
    page = open_notebook("04_training.ipynb")
    launcher = _widget(page, "preset")
    launch = launcher.get_by_role("button", name="train (or reuse)")
    stop = launcher.get_by_role("button", name="stop")
    status = launcher.locator(".widget-html-content").last
    seed = launcher.locator(".widget-text").filter(has=page.locator(".widget-label", has_text="seed"))

    def train_seed(value: int) -> None:
        seed.locator("input").fill(str(value))
        seed.locator("input").press("Enter")
        launch.click()
        page.wait_for_function("el => !el.disabled", arg=stop.element_handle())  # training started

    def wait_until_done(before: str) -> str:
        # one condition over the three widgets, checked in the page: right after a click the
        # kernel may not have answered yet, and "train enabled" alone would still be the
        # state from before the click
        page.wait_for_function(
            """([go, halt, line, before]) => !go.disabled && halt.disabled && line.innerText !== before
                                            && !/^(training|stopping)/.test(line.innerText)""",
            arg=[launch.element_handle(), stop.element_handle(), status.element_handle(), before],
            timeout=WIDGET_TIMEOUT)
        return status.inner_text()

    # seed 7 was not trained by the notebook: a new run, stopped by the button
    train_seed(7)
    before = status.inner_text()
    stop.click()
    text = wait_until_done(before)
    assert re.fullmatch(r"stopped (after epoch \d of 2|before the first epoch ended \(nothing saved\)) in "
                        r"\S+; click “train \(or reuse\)” to (resume|start it again)", text), text
    _screenshot(launcher, "04_launcher_stopped")
    # the same button resumes it to the end; its curves are drawn
    launch.click()
    text = wait_until_done(text)
    assert text.startswith("star-none: trained 2 epochs") and "run folder:" in text, text
    assert launcher.locator(".widget-output img").count() == 1  # the new curves, not the stopped run's too
    _screenshot(launcher, "04_launcher_finished")
    # Kernel > Interrupt stops a training the same way (the kernel is idle meanwhile)
    train_seed(8)
    before = status.inner_text()
    page.get_by_role("menuitem", name="Kernel", exact=True).click()
    page.get_by_role("menuitem", name=re.compile(r"^Interrupt Kernel")).click()
    text = wait_until_done(before)
    assert text.startswith("stopped "), text
    _assert_no_traceback(page)


def test_notebook_05_comparison_shows_another_pair(open_notebook):
    page = open_notebook("05_metric_comparison.ipynb")
    comparison = _widget(page, "run B")
    table = comparison.locator(".widget-output table").first
    before = table.inner_text()
    options = comparison.locator(".widget-dropdown").filter(
        has=page.locator(".widget-label", has_text=re.compile("^run B$"))).locator("option").all_inner_texts()
    # a run of the second seed: the grid saved no probability maps for it, and says so
    other = [o for o in options if o.startswith("star-relu")][-1]
    _select(comparison, "run B", other)
    page.wait_for_function("([el, before]) => { const t = el.querySelector('.widget-output table');"
                           " return t && t.innerText !== before; }",
                           arg=[comparison.element_handle(), before], timeout=WIDGET_TIMEOUT)
    _wait_until_idle(comparison)
    assert other in table.inner_text()
    if len(options) > 4:  # more than one seed
        assert comparison.get_by_text("No probability or error maps for test image").count() == 1
    _screenshot(comparison, "05_comparison")
    _assert_no_traceback(page)
