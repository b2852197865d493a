"""Show the code a notebook is about to call, as d2l does: the course teaches the
code it runs, read from the package itself, so the listing cannot drift from it."""
from __future__ import annotations

import inspect
import textwrap
from typing import Any

from IPython.display import Markdown


def source_text(obj: Any) -> str:
    """The source code of a function, method or class, dedented."""
    try:
        return textwrap.dedent(inspect.getsource(obj)).rstrip()
    except (TypeError, OSError) as err:
        raise TypeError(f"cannot show the source of {obj!r}: pass a function, method or class "
                        f"defined in a Python file ({err})") from None


def show_source(*objects: Any) -> Markdown:
    """The source of each object as one syntax-highlighted Python listing (Markdown), with
    the module it lives in, e.g. ``show_source(su.FUSIONS["star_bn"])`` in a notebook."""
    parts = []
    for obj in objects:
        module = inspect.getmodule(obj)
        where = f"# {module.__name__}\n" if module is not None else ""
        parts.append(where + source_text(obj))
    return Markdown("```python\n" + "\n\n".join(parts) + "\n```")
