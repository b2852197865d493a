"""The web site's staging (book/build.py) and its alt-text extension, without building:
the table of contents from the notebooks, links, folded solutions, widgets, alt text.
The build itself and the pages in a browser: tests/browser/test_site_browser.py."""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


site = _load("starunet_site_build", ROOT / "book" / "build.py")


def _md(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def _code(source: str = "x = 1", tags=(), outputs=()) -> dict:
    return {"cell_type": "code", "metadata": {"tags": list(tags)} if tags else {}, "source": source,
            "outputs": list(outputs), "execution_count": 1}


def _repo(tmp_path: Path) -> Path:
    (tmp_path / "notebooks").mkdir(parents=True)
    (tmp_path / "results" / "fast").mkdir(parents=True)
    (tmp_path / "README.md").write_text("# readme\n")
    (tmp_path / "results" / "fast" / "README.md").write_text("# fast\n")
    (tmp_path / "notebooks" / "figure.png").write_bytes(b"png")
    for name in ("01_a.ipynb", "02_b.ipynb"):
        (tmp_path / "notebooks" / name).write_text(json.dumps({"cells": [], "metadata": {}}))
    return tmp_path


def test_the_toc_lists_every_numbered_notebook_and_puts_appendices_last():
    titles = {"notebooks/01_a": "01 · Data", "notebooks/02_b": "02 · Model",
              "notebooks/07_c": "07 · Appendix: how the experiments are made reproducible"}
    assert site.toc(titles) == {"format": "jb-book", "root": "index", "parts": [
        {"caption": "Lessons", "chapters": [{"file": "notebooks/01_a"}, {"file": "notebooks/02_b"}]},
        {"caption": "Appendix", "chapters": [{"file": "notebooks/07_c"}]}]}
    assert [p["caption"] for p in site.toc({"notebooks/01_a": "01"})["parts"]] == ["Lessons"]
    assert site.toc({"notebooks/08_d": "Appendix B"})["parts"][0]["caption"] == "Appendix"
    assert site.toc({"notebooks/02_e": "02 · Appendices of U-Nets"})["parts"][0]["caption"] == "Lessons"


def test_the_toc_of_the_course_is_its_notebooks(tmp_path):
    """Staging writes one chapter per notebooks/NN_*.ipynb (none hard-coded), every
    notebook has a title, and the book's files are there."""
    names = site.stage(tmp_path / "source")
    expected = [p.relative_to(ROOT).with_suffix("").as_posix() for p in sorted((ROOT / "notebooks").glob("*.ipynb"))
                if re.match(r"\d\d_", p.name)]
    assert names == expected and len(names) >= 6
    toc = yaml.safe_load((tmp_path / "source" / "_toc.yml").read_text())
    assert [c["file"] for part in toc["parts"] for c in part["chapters"]] == expected
    for name in names:
        assert site.notebook_title(json.loads((tmp_path / "source" / f"{name}.ipynb").read_text())), name
    for name in site.BOOK_FILES:
        assert (tmp_path / "source" / name).is_file()


def test_links_between_notebooks_stay_and_links_to_repo_files_become_downloads(tmp_path):
    root = _repo(tmp_path)
    base = root / "notebooks"
    text = ("See [the next lesson](02_b.ipynb#the-answer), [also](../notebooks/01_a.ipynb), "
            "[JupyterLab's anchor](02_b.ipynb#05-·-The-Answer), [here](#Exercise-1), "
            "[README](../README.md), [fast results](../results/fast/README.md \"tables\"), "
            "[the folder](../results/fast/), ![a figure](figure.png), [paper](https://arxiv.org/abs/1), "
            "[above](#top), [gone](missing.ipynb) and [outside](../../elsewhere.md).")
    out, needed = site.rewrite_links(text, base, root)
    assert "[the next lesson](02_b.ipynb#the-answer)" in out and "[also](../notebooks/01_a.ipynb)" in out
    assert "[JupyterLab's anchor](02_b.ipynb#05--the-answer)" in out and "[here](#exercise-1)" in out
    assert "[README](path:../README.md)" in out
    assert '[fast results](path:../results/fast/README.md "tables")' in out
    assert "the folder," in out and "(../results/fast/)" not in out  # a folder: its text, no link
    assert "![a figure](figure.png)" in out  # an image keeps its path; its file is copied
    for kept in ("(https://arxiv.org/abs/1)", "(#top)", "(missing.ipynb)", "(../../elsewhere.md)"):
        assert kept in out  # URLs, anchors, and broken links (the strict build fails on those)
    assert needed == {Path("README.md"), Path("results/fast/README.md"), Path("notebooks/figure.png")}


def test_anchors_become_the_sites_heading_ids():
    assert site.anchor("05-·-The-Answer") == "05--the-answer" == site.anchor("05--the-answer")
    assert site.anchor("Exercise%201") == "exercise-1" and site.anchor("ConvBlock,-in-code") == "convblock-in-code"


def test_a_staged_notebook_folds_solutions_and_shows_widgets_as_a_note(tmp_path):
    root = _repo(tmp_path)
    widget = {"output_type": "display_data", "metadata": {},
              "data": {site.WIDGET_MIME: {"model_id": "abc", "version_major": 2, "version_minor": 0},
                       "text/plain": "VBox(children=(Dropdown(...),))"}}
    markdown_output = {"output_type": "display_data", "metadata": {},
                       "data": {"text/markdown": ["see [README](../README.md)"], "text/plain": "..."}}
    nb = {"metadata": {"widgets": {"application/vnd.jupyter.widget-state+json": {"state": {}}}},
          "cells": [_md("# 01 · A\n\n### Exercise 1\n\n[README](../README.md)"),
                    _code(tags=["solution"]), _code(tags=["solution", "hide-cell"]),
                    _code("show()", outputs=[widget, markdown_output])]}
    staged, needed = site.stage_notebook(nb, root / "notebooks", root)
    assert nb["cells"][1]["metadata"]["tags"] == ["solution"]  # the original is left alone
    cells = staged["cells"]
    for cell in cells[1:3]:
        assert cell["metadata"]["tags"].count("hide-cell") == 1
        assert cell["metadata"]["mystnb"] == site.SOLUTION_PROMPTS
    assert "tags" not in cells[3]["metadata"] or "hide-cell" not in cells[3]["metadata"]["tags"]
    assert "widgets" not in staged["metadata"]
    assert cells[3]["outputs"][0]["data"] == {"text/markdown": site.WIDGET_NOTE}
    assert cells[3]["outputs"][1]["data"]["text/markdown"] == "see [README](path:../README.md)"
    assert cells[0]["source"].endswith("[README](path:../README.md)")
    assert needed == {Path("README.md")}


def test_output_alt_texts_are_keyed_by_the_image_bytes_myst_nb_names_files_by():
    ext = _load("starunet_book_ext", ROOT / "book" / "_ext" / "starunet_book.py")
    png, jpeg = base64.b64encode(b"\x89PNG fake").decode(), base64.b64encode(b"\xff\xd8 fake").decode()
    nb = {"cells": [_code(outputs=[
        {"output_type": "display_data", "data": {"image/png": png}, "metadata": {"image/png": {"alt": "Figure: A."}}},
        {"output_type": "display_data", "data": {"image/jpeg": [jpeg]}, "metadata": {"image/jpeg": {"alt": "Photo."}}},
        {"output_type": "display_data", "data": {"image/png": base64.b64encode(b"no alt").decode()}, "metadata": {}},
    ])]}
    assert ext.output_alt_texts(nb) == {hashlib.sha256(b"\x89PNG fake").hexdigest(): "Figure: A.",
                                        hashlib.sha256(b"\xff\xd8 fake").hexdigest(): "Photo."}


def test_the_site_extra_is_pinned_to_jupyter_book_1_and_its_output_is_ignored():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = [re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0] for r in extras["site"]]
    assert "jupyter-book" in names and "sphinx-mathjax-offline" in names
    (jb,) = [r for r in extras["site"] if r.startswith("jupyter-book")]
    assert ">=1" in jb and "<2" in jb  # Jupyter Book 2 fetches its theme at build time
    assert "/site-output/" in (ROOT / ".gitignore").read_text().splitlines()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^site:", makefile, re.M) and "book/build.py" in makefile


@pytest.mark.parametrize("target", ["README.md", "../README.md"])
def test_a_link_is_only_rewritten_when_it_resolves_inside_the_repository(tmp_path, target):
    root = _repo(tmp_path / "repo")
    out, needed = site.rewrite_links(f"[x]({target})", root, root)
    assert (out, needed) == (("[x](path:README.md)", {Path("README.md")}) if target == "README.md"
                             else (f"[x]({target})", set()))
