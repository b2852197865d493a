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


def test_course_progress_reports_epochs_and_slow_cells(tmp_path):
    lines: list[str] = []
    progress = course.CourseProgress(tmp_path, slow=0.0, heartbeat=0.0, write=lines.append)
    progress.cell_started(7, 23)
    progress.poll()
    assert lines == ["  cell 7/23 running (0 s) ..."]
    run = tmp_path / "quick" / "star-none-s2024-abc"
    run.mkdir(parents=True)
    (run / "config.json").write_text('{"max_epochs": 12}')
    row = "epoch,train_loss,val_pr_auc\n1,0.5,0.25\n"
    (run / "history.csv").write_text(row)
    progress.poll()
    assert lines[-1] == "    star-none-s2024-abc: epoch 1/12, train loss 0.5000, val PR-AUC 0.2500"
    progress.poll()  # nothing new: no repeated epoch line
    assert sum("epoch 1/12" in line for line in lines) == 1


def test_headless_kernel_starts_without_the_tcp_warning(tmp_path, capfd):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("1 + 1")]
    src = tmp_path / "01_demo.ipynb"
    nbformat.write(nb, src)
    seen: list[str] = []
    progress = course.CourseProgress(tmp_path, write=seen.append)
    progress.cell_started = lambda number, total: seen.append(f"{number}/{total}")
    course.execute_notebook(src, tmp_path / "out.ipynb", timeout=120, progress=progress)
    err = capfd.readouterr().err
    assert "without encryption" not in err, err
    assert seen == ["1/1"]  # the cell counter saw the one code cell
