"""Tests of the headless course runner (python -m starunet course)."""
from __future__ import annotations

import nbformat

from starunet import course


def test_executed_notebook_keeps_its_figures_under_a_headless_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")  # as in CI and ssh shells
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0]);")]
    src, dst = tmp_path / "01_demo.ipynb", tmp_path / "out" / "01_demo.ipynb"
    nbformat.write(nb, src)
    course.execute_notebook(src, dst, timeout=120)
    outputs = nbformat.read(dst, as_version=4).cells[0].outputs
    assert any("image/png" in o.get("data", {}) for o in outputs), outputs
    assert course.os.environ["MPLBACKEND"] == "Agg"  # restored for the caller


def test_notebooks_are_listed_in_reading_order():
    names = [p.name for p in course.list_notebooks()]
    assert names == sorted(names) and names[0].startswith("01_") and len(names) >= 5
