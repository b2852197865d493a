"""The course's web site in a real browser: built as ``make site`` builds it (book/build.py)
into a temporary folder, served on 127.0.0.1, and every page opened in headless Chromium:
no broken internal link, no missing image, no console error, every solution folded, every
output figure with alt text, and the search finds pages for "star".

Two sites are checked: the course itself, and a small demo book made here from two
notebooks that hold what the course's notebooks may or may not hold at a given time (an
exercise whose solution lacks the ``hide-cell`` tag, a widget output with saved state, a
figure without alt text, links to another notebook's section, to a repository file and to a
folder), so the checks always have something to check. A broken link must fail the build.

Not part of ``make test`` (the ``browser`` marker): ``make browser-test`` runs it. Needs the
site extra (``.[site]``), Playwright (``.[dev]``) and Debian's ``/usr/bin/chromium`` (or
``$STARUNET_CHROMIUM``); Playwright's own browser download is not used.
"""
from __future__ import annotations

import base64
import functools
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("STARUNET_CHROMIUM", "/usr/bin/chromium")
# Quiet, offline Chromium (as tests/browser/test_widgets_browser.py)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT = 60_000  # ms: a page of the site on a busy 2-core CPU


def _build_module():
    spec = importlib.util.spec_from_file_location("starunet_site_build", ROOT / "book" / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


site_build = _build_module()


def _png(colour: tuple[int, int, int]) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _notebook(cells: list[dict], metadata: dict | None = None) -> str:
    meta = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python", "pygments_lexer": "ipython3"}, **(metadata or {})}
    for i, cell in enumerate(cells):
        cell.setdefault("metadata", {})
        cell["id"] = f"cell-{i}"
        if cell["cell_type"] == "code":
            cell.setdefault("outputs", [])
            cell.setdefault("execution_count", i)
    return json.dumps({"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5})


def _md(text: str) -> dict:
    return {"cell_type": "markdown", "source": text}


def _display(data: dict, metadata: dict | None = None) -> dict:
    return {"output_type": "display_data", "data": data, "metadata": metadata or {}}


DEMO_ALT = "Figure: a demo figure. 1 panel: red (x: time, y: stars)."


def make_demo_repository(root: Path) -> Path:
    """A repository with two notebooks (a lesson and an appendix) that hold every case the
    site must handle; see the module's docstring."""
    (root / "notebooks").mkdir(parents=True)
    (root / "results" / "demo").mkdir(parents=True)
    (root / "README.md").write_text("# The demo\n")
    (root / "results" / "demo" / "README.md").write_text("# Demo results\n")
    widget = {"application/vnd.jupyter.widget-view+json": {"model_id": "m1", "version_major": 2, "version_minor": 0},
              "text/plain": "VBox(children=(Dropdown(description='fusion'),))"}
    state = {"application/vnd.jupyter.widget-state+json": {"version_major": 2, "version_minor": 0, "state": {
        "m1": {"model_name": "VBoxModel", "model_module": "@jupyter-widgets/controls",
               "model_module_version": "2.0.0", "state": {}}}}}
    lesson = [
        _md("# 01 · A demo lesson about the star operation\n\nRead on in [the appendix's section]"
            "(02_appendix.ipynb#A-section) (JupyterLab's anchor), the [README](../README.md), the [demo results]"
            "(../results/demo/README.md) in the [results folder](../results/), and $a \\star b = a \\cdot b$."),
        {"cell_type": "code", "source": "plot()", "outputs": [
            _display({"image/png": _png((200, 30, 30)), "text/plain": "<Figure>"}, {"image/png": {"alt": DEMO_ALT}}),
            _display({"image/png": _png((30, 30, 200)), "text/plain": "<Figure>"})]},
        {"cell_type": "code", "source": "explorer()", "outputs": [_display(widget)]},
        _md("## Exercises\n\n### Exercise 1\n\nWhat is 1 + 1?"),
        {"cell_type": "code", "source": "answer = 1 + 1\nassert answer == 2\nanswer",
         "metadata": {"tags": ["solution"]},
         "outputs": [{"output_type": "execute_result", "data": {"text/plain": "2"}, "metadata": {},
                      "execution_count": 5}]},
        _md("### Exercise 2\n\nAnd 2 × 3?"),
        {"cell_type": "code", "source": "assert 2 * 3 == 6", "metadata": {
            "tags": ["solution", "hide-cell"], "jupyter": {"source_hidden": True, "outputs_hidden": True}}},
    ]
    appendix = [_md("# Appendix · How the demo is made\n\n## A section\n\nBack to [the lesson](01_demo.ipynb).")]
    (root / "notebooks" / "01_demo.ipynb").write_text(_notebook(lesson, {"widgets": state}))
    (root / "notebooks" / "02_appendix.ipynb").write_text(_notebook(appendix))
    return root


def _solution_cells(root: Path) -> int:
    return sum("solution" in cell.get("metadata", {}).get("tags", [])
               for path in site_build.notebook_paths(root)
               for cell in json.loads(path.read_text(encoding="utf-8"))["cells"])


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no line per request in the test's output
        pass


@pytest.fixture(scope="module")
def built_sites(tmp_path_factory):
    """``get(name)``: the site ``course`` or ``demo``, built on first use and served on
    127.0.0.1 until the module's tests are done: ``{"url", "html", "root", "name"}``."""
    pytest.importorskip("jupyter_book", reason="needs the site extra: pip install -e '.[site]'")
    sites, servers = {}, []

    def get(name: str) -> dict:
        if name not in sites:
            base = tmp_path_factory.mktemp(f"site-{name}")
            root = ROOT if name == "course" else make_demo_repository(base / "repo")
            html = site_build.build(base / "out", root=root, quiet=True)
            server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(html)))
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
            sites[name] = {"url": f"http://127.0.0.1:{server.server_address[1]}/", "html": html, "root": root,
                           "name": name}
        return sites[name]

    yield get
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(params=["course", "demo"])
def site(request, built_sites):
    return built_sites(request.param)


@pytest.fixture()
def demo(built_sites):
    return built_sites("demo")


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set STARUNET_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _open(browser, url: str):
    """A page at ``url`` and the list its console errors, page errors and failed requests go to."""
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.set_default_timeout(TIMEOUT)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url} ({r.failure})"))
    page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    page.goto(url, wait_until="load")
    return page, errors


_IMAGES = """async () => {
    const images = [...document.images];
    await Promise.all(images.map(img => {
        img.loading = 'eager';  // a lazy image below the fold must load too
        return img.complete ? null : new Promise(done => { img.onload = img.onerror = done; });
    }));
    return images.map(img => ({src: img.currentSrc || img.src, loaded: img.complete && img.naturalWidth > 0,
                               alt: img.getAttribute('alt'), output: !!img.closest('.cell_output')}));
}"""


class _Links:
    """Every internal link target fetched once over HTTP, its ids remembered for anchors."""

    def __init__(self, base: str):
        self.base, self.pages = base, {}

    def problem(self, href: str) -> str | None:
        url, _, fragment = href.partition("#")
        if not url.startswith(self.base):
            return None  # an external link: not fetched (the test runs offline)
        if url not in self.pages:
            try:
                with urllib.request.urlopen(url, timeout=30) as response:
                    body = response.read()
                self.pages[url] = (response.status, body.decode("utf-8", "replace"))
            except urllib.error.HTTPError as error:
                self.pages[url] = (error.code, "")
        status, body = self.pages[url]
        if status != 200:
            return f"{href}: HTTP {status}"
        path = urllib.parse.urlparse(url).path
        if fragment and (path.endswith((".html", "/"))) and not re.search(
                rf"""\bid=["']{re.escape(urllib.parse.unquote(fragment))}["']""", body):
            return f"{href}: no element with id {fragment!r}"
        return None


def _pages(html: Path) -> list[str]:
    return sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html")
                  if not p.relative_to(html).parts[0].startswith("_"))


def test_every_page_has_working_links_loaded_images_with_alt_text_and_no_console_error(site, browser):
    pages = _pages(site["html"])
    notebooks = [p.relative_to(site["root"]).with_suffix(".html").as_posix()
                 for p in site_build.notebook_paths(site["root"])]
    assert set(pages) == set(notebooks) | {"index.html", "search.html"}
    links, problems, internal, figures = _Links(site["url"]), [], 0, 0
    for name in pages:
        page, errors = _open(browser, site["url"] + name)
        for image in page.evaluate(_IMAGES):
            if not image["loaded"]:
                problems.append(f"{name}: image not loaded: {image['src']}")
            if image["output"]:
                figures += 1
                if not (image["alt"] or "").strip():
                    problems.append(f"{name}: output figure without alt text: {image['src']}")
        for href in page.eval_on_selector_all("a[href]", "els => els.map(a => a.href)"):
            internal += href.startswith(site["url"])
            if problem := links.problem(href):
                problems.append(f"{name}: broken link {problem}")
        page.close()
        problems += [f"{name}: {e}" for e in errors]
    assert not problems, "\n".join(problems)
    assert internal > 10 * len(pages) and figures > 0


def test_every_solution_is_folded(site, browser):
    """As many folded solutions on the pages as cells tagged ``solution`` in the notebooks
    (the demo's two); each closed, its code hidden until its fold is opened."""
    found = 0
    for path in site_build.notebook_paths(site["root"]):
        page, errors = _open(browser, site["url"] + path.relative_to(site["root"]).with_suffix(".html").as_posix())
        solutions = page.locator(".cell.tag_solution")
        for i in range(solutions.count()):
            solution = solutions.nth(i)
            # the whole cell, code and output, inside one closed fold
            assert solution.evaluate("""el => { const d = el.querySelector(':scope > details');
                return !!d && !d.open && [...el.children].every(c => c === d); }"""), path.name
            assert not solution.locator(".cell_input").is_visible()
            assert "Show the solution" in solution.inner_text()
        if solutions.count():
            first = solutions.first
            first.locator("summary").click()
            first.locator(".cell_input").wait_for(state="visible")
        found += solutions.count()
        assert not errors, errors
        page.close()
    assert found == _solution_cells(site["root"])
    if site["name"] == "demo":
        assert found == 2


def test_search_finds_pages_about_the_star_operation(site, browser):
    page, errors = _open(browser, site["url"] + "search.html?q=star")
    page.wait_for_function("document.querySelectorAll('#search-results li').length > 0")
    hrefs = page.eval_on_selector_all("#search-results li a", "els => els.map(a => a.getAttribute('href'))")
    assert any("notebooks/" in href for href in hrefs), hrefs
    assert not errors, errors
    page.close()


def test_the_demo_shows_its_cases_as_the_site_should(demo, browser):
    """Figure alt text from the output metadata (a generic one without it), a widget as a
    note, the appendix in its own part, the README as a download, math typeset offline."""
    page, errors = _open(browser, demo["url"] + "notebooks/01_demo.html")
    alts = page.eval_on_selector_all(".cell_output img", "els => els.map(i => i.alt)")
    assert alts[0] == DEMO_ALT and alts[1].startswith("Figure in ") and len(alts) == 2, alts
    assert page.get_by_text("An interactive widget is here in the notebook").count() == 1
    assert "VBox(children" not in page.content()
    downloads = page.eval_on_selector_all("a.download", "els => els.map(a => a.getAttribute('href'))")
    assert any(h.endswith("/README.md") for h in downloads) and len(downloads) == 2, downloads
    assert page.locator("a", has_text="results folder").count() == 0  # a folder: its text, no link
    page.wait_for_selector("mjx-container")  # MathJax, from the site itself, typeset the formula
    assert page.locator(".bd-sidebar-primary").get_by_text("Appendix", exact=True).count() == 1
    assert not errors, errors
    page.close()


@pytest.mark.parametrize("link", ["[gone](03_gone.ipynb)", "[no section](02_real.ipynb#no-such-section)",
                                  "[no heading](#no-such-heading)", "[no file](../results/none.md)"])
def test_a_broken_link_fails_the_build(tmp_path, link):
    pytest.importorskip("jupyter_book", reason="needs the site extra: pip install -e '.[site]'")
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    (root / "notebooks" / "01_only.ipynb").write_text(_notebook([_md(f"# 01 · Only\n\nSee {link}.")]))
    (root / "notebooks" / "02_real.ipynb").write_text(_notebook([_md("# 02 · Real\n\n## A section")]))
    with pytest.raises(subprocess.CalledProcessError):
        site_build.build(tmp_path / "out", root=root, quiet=True)
