"""Sphinx extension of the course's site (book/_config.yml): alt text for output figures,
and each inline script once per page.

myst-nb writes each image output of a notebook to a file named by the SHA-256 of its
bytes, and takes an image's ``alt`` only from cell-level options, never from the output's
own metadata, where the course keeps it (``{"image/png": {"alt": ...}}``, written by
``starunet.alt_text``). This extension reads the notebook, maps each image's hash to its
alt text, and gives every output image on the page that text. An image without saved alt
text gets a generic one naming its notebook section (so no ``<img>`` is ever without alt),
and the build says how many did, at its end.

Jupyter Book 1's stack registers two inline scripts twice (sphinx-thebe's
``const THEBE_JS_URL`` and sphinx-togglebutton's selector); the second ``const`` is a
JavaScript error on every page, so :func:`drop_duplicate_scripts` keeps one of each.
"""
from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)
IMAGE_MIMES = ("image/png", "image/jpeg", "image/gif")


def output_alt_texts(nb: dict) -> dict[str, str]:
    """``{sha256 of an image output's bytes: its saved alt text}`` for notebook ``nb``."""
    alts = {}
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            for mime in IMAGE_MIMES:
                data = output.get("data", {}).get(mime)
                alt = (output.get("metadata", {}).get(mime) or {}).get("alt")
                if data and alt:
                    raw = "".join(data) if isinstance(data, list) else data
                    alts[hashlib.sha256(base64.b64decode(raw)).hexdigest()] = str(alt)
    return alts


def _section_title(node: nodes.Node) -> str:
    while node is not None and not isinstance(node, nodes.section):
        node = node.parent
    if node is None or not node.children or not isinstance(node[0], nodes.title):
        return ""
    return node[0].astext()


def set_alt_texts(app: Sphinx, doctree: nodes.document) -> None:
    """``doctree-read``: the alt text of every output image of a notebook page."""
    source = Path(app.env.doc2path(app.env.docname))
    if source.suffix != ".ipynb":
        return
    alts = output_alt_texts(json.loads(source.read_text(encoding="utf-8")))
    missing = app.env.starunet_missing_alt = getattr(app.env, "starunet_missing_alt", {})
    missing.pop(app.env.docname, None)
    for image in doctree.findall(nodes.image):
        digest = Path(image["uri"]).stem
        if len(digest) != 64 or image.get("alt"):  # not an output image, or alt set in the cell
            continue
        if digest in alts:
            image["alt"] = alts[digest]
        else:
            section = _section_title(image) or app.env.docname
            image["alt"] = f"Figure in “{section}” (no description saved)"
            missing.setdefault(app.env.docname, 0)
            missing[app.env.docname] += 1


def report_missing(app: Sphinx, exception: Exception | None) -> None:
    """``build-finished``: how many figures had no alt text of their own."""
    missing = getattr(app.env, "starunet_missing_alt", {})
    if exception is None and any(missing.values()):
        counts = ", ".join(f"{doc}: {n}" for doc, n in sorted(missing.items()) if n)
        logger.info(f"figures without saved alt text (given a generic one): {counts}")


def _script_key(script) -> tuple:
    attributes = getattr(script, "attributes", {}) or {}
    filename = getattr(script, "filename", script) or ""  # None and "" both mean an inline script
    return str(filename), tuple(sorted((k, str(v)) for k, v in attributes.items()))


def drop_duplicate_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """``html-page-context``: each script of the page once (the first of equal ones)."""
    scripts = context.get("script_files")
    if isinstance(scripts, list):
        seen: set[tuple] = set()
        scripts[:] = [s for s in scripts if not (_script_key(s) in seen or seen.add(_script_key(s)))]


def setup(app: Sphinx) -> dict:
    # this file's own hash as an "env" config value: a changed extension re-reads every page
    # (Sphinx otherwise rebuilds only pages whose sources changed)
    app.add_config_value("starunet_book_version", hashlib.sha256(Path(__file__).read_bytes()).hexdigest(), "env")
    app.connect("doctree-read", set_alt_texts)
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)  # after those that add scripts
    app.connect("build-finished", report_missing)
    return {"version": "1", "parallel_read_safe": False, "parallel_write_safe": True}
