"""The course as a static web site: ``make site`` runs ``python book/build.py``.

The site is a Jupyter Book 1 (Sphinx + myst-nb) built from the notebooks' committed
outputs; nothing is executed, and nothing is fetched from the network (MathJax comes from
the ``sphinx-mathjax-offline`` package, the theme from ``sphinx-book-theme``). The book is
not built from ``notebooks/`` in place but from a staged copy, ``<out>/source``, laid out
like the repository (``notebooks/NN_*.ipynb`` beside ``index.md``), where:

* the table of contents is generated from ``notebooks/NN_*.ipynb`` (:func:`toc`): every
  numbered notebook is a chapter, under "Lessons", or "Appendix" for a notebook whose
  title starts with "Appendix";
* every cell tagged ``solution`` also gets the tag ``hide-cell``, so it is folded on the
  site even where the notebook forgot that tag (:func:`stage_notebook`);
* a link to another notebook stays a link between pages; a link to a file of the
  repository outside the book (``../README.md``, ``../results/fast/README.md``) becomes a
  download of that file, copied into the site, so it works offline and is checked like
  any other link; a link to a folder of the repository becomes its plain text; a link to
  nothing stays as it is and fails the build (:func:`rewrite_links`);
* a widget output becomes a note (its live view needs a kernel, and ipywidgets' HTML
  manager would come from a CDN): :data:`WIDGET_NOTE`.

Figures get their alt text from the notebooks' output metadata in the Sphinx extension
``book/_ext/starunet_book.py``. The build runs with ``--warningiserror``: a broken
reference fails it. Output: ``<out>/_build/html/index.html``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import urllib.parse
from pathlib import Path

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = ("*An interactive widget is here in the notebook. It needs a running Python kernel: "
               "open the notebook in JupyterLab to use it.*")
# the fold of a solution: its label folded and unfolded (myst-nb's cell-level options)
SOLUTION_PROMPTS = {"code_prompt_show": "Show the solution", "code_prompt_hide": "Hide the solution"}
# what the book needs besides the generated toc and the notebooks
BOOK_FILES = ("_config.yml", "index.md", "favicon.svg", "_ext/starunet_book.py")
# [text](target "title") and ![alt](target): the target may be <in angle brackets>
_LINK = re.compile(r"(?P<bang>!?)\[(?P<text>[^\]\n]*)\]\((?P<target><[^>\n]*>|[^)\s]+)(?P<title>\s+\"[^\"\n]*\")?\)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def notebook_paths(root: Path = ROOT) -> list[Path]:
    """The course's notebooks, ``notebooks/NN_*.ipynb``, in their reading order."""
    return sorted((root / "notebooks").glob(NOTEBOOK_GLOB))


def notebook_title(nb: dict) -> str:
    """The notebook's title: its first level-1 markdown heading (or "" if none)."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            for line in _source(cell).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return ""


def toc(notebooks: dict[str, str]) -> dict:
    """The Jupyter Book table of contents for ``{"notebooks/01_x": title, ...}``: the
    landing page, then every notebook as a chapter, under "Lessons", or under "Appendix"
    where its title has that word ("07 · Appendix: ..."), in the order given."""
    lessons = [name for name, title in notebooks.items() if not re.search(r"\bappendix\b", title, re.I)]
    appendix = [name for name in notebooks if name not in lessons]
    parts = [{"caption": caption, "chapters": [{"file": name} for name in names]}
             for caption, names in (("Lessons", lessons), ("Appendix", appendix)) if names]
    return {"format": "jb-book", "root": "index", "parts": parts}


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def anchor(fragment: str) -> str:
    """The site's id of a heading that JupyterLab calls ``#fragment``: JupyterLab keeps the
    heading's case and punctuation (``#05-·-The-answer``), MyST makes GitHub's slug
    (``#05--the-answer``); this slug of either is the site's id (slugs are unchanged by it)."""
    return re.sub(r"[^\w\- ]", "", urllib.parse.unquote(fragment).lower().replace(" ", "-"))


def rewrite_links(text: str, base: Path, root: Path = ROOT) -> tuple[str, set[Path]]:
    """``text`` (markdown of a file in folder ``base`` of the repository ``root``) with its
    relative links made to work on the site, and the repository files the site must copy.

    A link to a notebook (``05_metric_comparison.ipynb#anchor``) stays, its anchor as the
    site's id of that heading (:func:`anchor`; so for ``#anchor`` links in the page); a link to
    another file of the repository becomes ``path:`` (MyST's download link) and the file is
    copied; an image's file is copied; a link to a folder becomes its text; URLs, anchors and
    links to nothing are left alone (a broken one then fails the build)."""
    needed: set[Path] = set()

    def replace(match: re.Match) -> str:
        target = match["target"].strip("<>")
        if not target or _SCHEME.match(target) or match["bang"] and target.startswith("#"):
            return match[0]
        path, _, fragment = target.partition("#")
        if fragment and not match["bang"] and (not path or path.endswith(".ipynb")):
            target = f"{path}#{anchor(fragment)}"  # a section of this or another notebook
        same = match[0] if target == match["target"] else f"[{match['text']}]({target}{match['title'] or ''})"
        resolved = (base / path).resolve()
        if not path or not resolved.is_relative_to(root.resolve()) or not resolved.exists():
            return same  # an anchor in the page, or a link to nothing (the build fails on it)
        if resolved.is_dir():
            return same if match["bang"] else match["text"]
        relative = resolved.relative_to(root.resolve())
        if resolved.suffix == ".ipynb" and relative.parent == Path("notebooks"):
            return same
        needed.add(relative)
        return same if match["bang"] else f"[{match['text']}](path:{path}{match['title'] or ''})"

    return _LINK.sub(replace, text), needed


def stage_notebook(nb: dict, base: Path, root: Path = ROOT) -> tuple[dict, set[Path]]:
    """A copy of notebook ``nb`` (from folder ``base``) ready for the site, and the files of
    the repository that its links need: solutions folded, links rewritten
    (:func:`rewrite_links`, in markdown cells and markdown outputs), widgets as a note."""
    nb = copy.deepcopy(nb)
    needed: set[Path] = set()
    nb.get("metadata", {}).pop("widgets", None)  # no widget state: nothing loads ipywidgets' JS
    for cell in nb.get("cells", []):
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if "solution" in tags:
            if "hide-cell" not in tags:
                tags.append("hide-cell")
            cell["metadata"].setdefault("mystnb", {}).update(SOLUTION_PROMPTS)
        if cell.get("cell_type") == "markdown":
            cell["source"], files = rewrite_links(_source(cell), base, root)
            needed |= files
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_MIME in data:
                output["data"] = {"text/markdown": WIDGET_NOTE}
                output.get("metadata", {}).pop(WIDGET_MIME, None)
            elif "text/markdown" in data:
                text = data["text/markdown"]
                data["text/markdown"], files = rewrite_links("".join(text) if isinstance(text, list) else text,
                                                             base, root)
                needed |= files
    return nb, needed


def _write_if_changed(path: Path, data: bytes) -> None:
    """Write ``data`` unless the file already holds it: an unchanged page keeps its mtime,
    so Sphinx rebuilds only what changed."""
    if not (path.is_file() and path.read_bytes() == data):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def stage(source: Path, root: Path = ROOT, book: Path = BOOK) -> list[str]:
    """Lay out the book to build in ``source``: the book's files, the generated toc,
    the staged notebooks and the repository files they link to. Returns the
    notebooks' page names (``notebooks/01_data_preparation``, ...)."""
    import yaml  # a dependency of jupyter-book (and of the dev extra)

    source.mkdir(parents=True, exist_ok=True)
    for name in BOOK_FILES:
        _write_if_changed(source / name, (book / name).read_bytes())
    titles: dict[str, str] = {}
    needed: set[Path] = set()
    for path in notebook_paths(root):
        nb, files = stage_notebook(json.loads(path.read_text(encoding="utf-8")), path.parent, root)
        needed |= files
        relative = path.relative_to(root)
        titles[relative.with_suffix("").as_posix()] = notebook_title(nb)
        _write_if_changed(source / relative, json.dumps(nb, indent=1, ensure_ascii=False).encode())
    if not titles:
        raise FileNotFoundError(f"no notebooks {NOTEBOOK_GLOB} in {root / 'notebooks'}")
    for relative in sorted(needed):
        _write_if_changed(source / relative, (root / relative).read_bytes())
    _write_if_changed(source / "_toc.yml", yaml.safe_dump(toc(titles), sort_keys=False).encode())
    return list(titles)


def build(out: Path, root: Path = ROOT, strict: bool = True, quiet: bool = False) -> Path:
    """Build the site into ``out`` (staged sources in ``out/source``) and return the
    folder of its ``index.html``. ``strict``: any Sphinx warning (a broken link or
    reference, an unknown output type) fails the build, after reporting them all."""
    out = Path(out).resolve()
    source = out / "source"
    stage(source, root)
    command = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(source), "--path-output", str(out)]
    if strict:
        command += ["--warningiserror", "--keep-going"]
    if quiet:
        command += ["--quiet"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    subprocess.run(command, check=True, env=env)
    html = out / "_build" / "html"
    if not (html / "index.html").is_file():
        raise RuntimeError(f"the build wrote no {html / 'index.html'}")
    return html


def main(argv: list[str] | None = None) -> int:
    """``python book/build.py [--out site-output]``: build the site and say how to open it."""
    parser = argparse.ArgumentParser(description="Build the course as a static web site (Jupyter Book).")
    parser.add_argument("--out", type=Path, default=ROOT / "site-output", help="output folder (default: site-output)")
    parser.add_argument("--no-strict", action="store_true", help="do not fail on Sphinx warnings")
    args = parser.parse_args(argv)
    try:
        html = build(args.out, strict=not args.no_strict)
    except subprocess.CalledProcessError as error:
        print(f"error: the site did not build (exit code {error.returncode}); see the warnings above", file=sys.stderr)
        return 1
    shown = os.path.relpath(html, Path.cwd())
    print(f"\nThe site is in {shown}/. Serve it and open http://127.0.0.1:8000 in a browser:\n"
          f"    {os.path.relpath(sys.executable, Path.cwd())} -m http.server -d {shown} 8000\n"
          f"or open {shown}/index.html from disk (its search then shows no excerpts).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
