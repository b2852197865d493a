"""Alt text for every figure the course shows, and an HTML export that uses it.

A matplotlib figure reaches a notebook as a PNG without any description, and
nbconvert's default (``lab``) HTML template writes no ``alt`` for output images, so
screen readers announce nothing. Two pieces fix that for every figure at once:

* :func:`register` wraps IPython's PNG formatter so each figure's output carries
  ``{"image/png": {"alt": ...}}`` metadata, written from the figure's own titles
  and axis labels (:func:`figure_alt_text`); ``python -m starunet course`` turns
  it on in each kernel;
* :func:`export_html` writes a notebook as HTML with nbconvert's ``lab`` template,
  adding that metadata as the ``alt`` of each image (``course --html``).
"""
from __future__ import annotations

from pathlib import Path

from IPython.core.formatters import PNGFormatter
from matplotlib.figure import Figure

ALT_LIMIT = 400  # characters: alt text is read aloud, so long legends are cut

# An extension of nbconvert's lab template: its PNG block with an alt attribute.
_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{% block data_png scoped %}
{%- set alttext = output | get_metadata('alt', 'image/png') -%}
{%- if alttext -%}{{ super() | replace('<img ', '<img alt="' ~ (alttext | escape_html) ~ '" ', 1) }}
{%- else -%}{{ super() }}{%- endif -%}
{% endblock data_png %}
"""


def _panel(ax) -> str | None:
    """One axes in words: its title and axis labels (None for colour bars)."""
    if ax.get_label() == "<colorbar>" or not ax.get_visible():
        return None
    title = ax.get_title() or ax.get_title("left") or ax.get_title("right") or "untitled panel"
    labels = [f"{name}: {text}" for name, text in (("x", ax.get_xlabel()), ("y", ax.get_ylabel())) if text]
    return f"{title} ({', '.join(labels)})" if labels else title


def figure_alt_text(fig, limit: int = ALT_LIMIT) -> str:
    """A short description of ``fig`` from its suptitle, panel titles and axis labels."""
    suptitle = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) is not None else ""
    panels = [p for p in (_panel(ax) for ax in fig.axes) if p]
    text = f"Figure: {suptitle}." if suptitle else "Figure."
    if panels:
        text += f" {len(panels)} panel{'s' if len(panels) > 1 else ''}: " + "; ".join(panels) + "."
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def register(shell=None) -> bool:
    """Make every matplotlib figure displayed in ``shell`` (default: the running
    IPython) carry alt text metadata. Idempotent; False outside IPython.

    The PNG formatter object is replaced by a subclass that keeps its registered
    printers, so the inline backend, which (re)registers its figure printer on that
    object whenever it is configured, keeps working through it.
    """
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    if shell is None:
        return False
    formatters = shell.display_formatter.formatters
    old = formatters["image/png"]
    if isinstance(old, AltPNGFormatter):
        return True
    new = AltPNGFormatter(parent=shell.display_formatter)
    new.type_printers, new.deferred_printers = old.type_printers, old.deferred_printers
    new.enabled = old.enabled
    formatters["image/png"] = new
    return True


class AltPNGFormatter(PNGFormatter):
    """IPython's PNG formatter, returning ``(png, {"alt": ...})`` for matplotlib figures."""

    def __call__(self, obj):
        data = super().__call__(obj)
        if data is None or isinstance(data, tuple) or not isinstance(obj, Figure):
            return data
        return data, {"alt": figure_alt_text(obj)}


def export_html(notebook_path: str | Path, html_path: str | Path) -> Path:
    """Write ``notebook_path`` as HTML (nbconvert's lab template) with the alt text
    metadata of each figure as its image's ``alt``; return ``html_path``."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    from starunet.io import write_text_atomic

    exporter = HTMLExporter(template_name="lab", template_file="starunet_alt.html.j2",
                            extra_loaders=[DictLoader({"starunet_alt.html.j2": _TEMPLATE})])
    html, _ = exporter.from_notebook_node(nbformat.read(notebook_path, as_version=4))
    write_text_atomic(html_path, html)
    return Path(html_path)
