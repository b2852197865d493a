"""Tests of the headless course runner (python -m starunet course)."""
from __future__ import annotations

import nbformat
import pytest

import starunet.results as RS
from fakes import synthetic_grid
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
    assert [int(name[:2]) for name in names] == list(range(1, len(names) + 1)) and len(names) >= 6


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


def test_every_figure_gets_alt_text_in_the_notebook_and_its_html(tmp_path):
    from starunet.alt_text import export_html

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots()\nfig.suptitle('Vessel fraction')\nax.set_title('per image')\n"
        "ax.set_xlabel('image'); ax.set_ylabel('fraction')\nax.plot([0, 1], [1, 0]);"),
        nbformat.v4.new_code_cell("'_alt' in globals()")]
    src, dst = tmp_path / "01_demo.ipynb", tmp_path / "out" / "01_demo.ipynb"
    nbformat.write(nb, src)
    course.execute_notebook(src, dst, timeout=120)
    (output,) = [o for o in nbformat.read(dst, as_version=4).cells[0].outputs if "image/png" in o.get("data", {})]
    alt = "Figure: Vessel fraction. 1 panel: per image (x: image, y: fraction)."
    assert output.metadata["image/png"]["alt"] == alt
    html = export_html(dst, tmp_path / "out" / "01_demo.html").read_text()
    assert html.count("<img") == 1 and f'<img alt="{alt}"' in html
    # the kernel setup leaves no name behind in the reader's namespace
    assert nbformat.read(dst, as_version=4).cells[1].outputs[0].data["text/plain"] == "False"


def test_figure_alt_text_names_titles_and_labels_and_is_bounded():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from starunet.alt_text import figure_alt_text

    fig, axes = plt.subplots(1, 2)
    axes[0].set_title("ROC")
    axes[0].set_xlabel("FPR")
    fig.colorbar(axes[1].imshow([[0, 1]]))  # a colour bar is not a panel
    assert figure_alt_text(fig) == "Figure. 2 panels: ROC (x: FPR); untitled panel."
    assert len(figure_alt_text(fig, limit=12)) == 12
    plt.close(fig)


def test_a_hung_cell_is_stopped_and_named(tmp_path):
    """The course has a per-cell limit (a hang would otherwise never end); the error
    names the notebook, the cell and how to give it more time."""
    import pytest

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("1 + 1"), nbformat.v4.new_code_cell("import time\ntime.sleep(60)")]
    src = tmp_path / "01_demo.ipynb"
    nbformat.write(nb, src)
    with pytest.raises(course.CellTimeout, match=r"01_demo.ipynb: code cell 2/2 \(`import time`\) ran longer "
                                                 r"than 3 s.*--timeout SECONDS \(0: no limit\)"):
        course.execute_notebook(src, tmp_path / "out.ipynb", timeout=3)
    assert course.DEFAULT_CELL_TIMEOUT >= 600


def test_a_kernel_message_wait_looks_again_every_slice(monkeypatch):
    """A wait that missed ZMQ's edge-triggered wake-up recovers at the next slice; a wait
    with a timeout still ends with queue.Empty once the timeout has passed."""
    import asyncio
    from queue import Empty

    monkeypatch.setattr(course, "POLL_SLICE_SECONDS", 0.01)
    asked = []

    async def missed_twice(timeout=None):
        asked.append(timeout)
        if len(asked) < 3:
            await asyncio.sleep(timeout)
            raise Empty
        return {"msg_type": "execute_reply"}

    assert asyncio.run(course._polled_in_slices(missed_twice)())["msg_type"] == "execute_reply"
    assert len(asked) == 3 and all(t == 0.01 for t in asked)  # no timeout: waits for ever, one slice at a time

    asked.clear()

    def never(timeout=None):  # a blocking channel's get_msg works too
        asked.append(timeout)
        raise Empty
    with pytest.raises(Empty):
        asyncio.run(course._polled_in_slices(never)(timeout=0.005))
    assert asked and all(t <= 0.005 for t in asked)  # a slice never outlasts the caller's timeout


def test_the_course_client_polls_both_channels_in_slices(monkeypatch):
    import asyncio
    from types import SimpleNamespace

    from nbclient import NotebookClient

    def get_msg(timeout=None):
        return {"msg_type": "status"}
    kc = SimpleNamespace(shell_channel=SimpleNamespace(get_msg=get_msg), iopub_channel=SimpleNamespace(get_msg=get_msg))

    async def started(self):
        return kc
    monkeypatch.setattr(NotebookClient, "async_start_new_kernel_client", started)
    client = course._CourseClient(nbformat.v4.new_notebook())
    assert asyncio.run(client.async_start_new_kernel_client()) is kc
    for channel in (kc.shell_channel, kc.iopub_channel):
        assert channel.get_msg is not get_msg and asyncio.run(channel.get_msg())["msg_type"] == "status"


def test_course_summary_without_any_results(monkeypatch, tmp_path):
    monkeypatch.setattr(RS, "REFERENCE_DIR", tmp_path / "reference")
    monkeypatch.setattr(RS, "FULL_REFERENCE_DIR", tmp_path / "full")
    monkeypatch.setattr(RS, "FAST_DIR", tmp_path / "fast")  # the study's grid, shown first at 5 seeds
    monkeypatch.setattr(RS, "own_results_dir", lambda: tmp_path / "own")
    text = course.course_summary_markdown()
    assert "No grid results found" in text and "python -m starunet reproduce" in text


def test_course_summary_adds_the_budget_verdicts_when_a_longer_grid_exists(monkeypatch, tmp_path):
    quick, long = synthetic_grid(tmp_path, "quick", -0.05, 12), synthetic_grid(tmp_path, "long", 0.0, 40)
    monkeypatch.setattr(course, "own_results_dir", lambda: tmp_path / "no-own-grid")
    monkeypatch.setattr(course, "course_check_dir", lambda: tmp_path / "no-course-check")
    monkeypatch.setattr(course, "find_results", lambda: quick)
    monkeypatch.setattr(course, "budget_grids", lambda results: {"quick": results, "long": long})
    monkeypatch.setattr(course, "own_training_markdown", lambda: "")
    text = course.course_summary_markdown()
    assert text.startswith("## Results: sum vs star skip fusion")
    budget = text.split("## Across training budgets (notebook 05, section 9)")[1]
    assert "- Preset `quick` (family of 3): **star − sum, without ReLU**" in budget
    assert "- Preset `long` (family of 3): **star − sum, without ReLU**" in budget
    monkeypatch.setattr(course, "budget_grids", lambda results: {"quick": results})
    assert "Across training budgets" not in course.course_summary_markdown()


def test_course_summary_opens_with_the_readers_own_runs(monkeypatch, tmp_path, stare_records):
    from starunet import runs
    from starunet.presets import preset_config
    from starunet.training import train

    monkeypatch.setenv("STARUNET_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(course, "find_results", lambda: (_ for _ in ()).throw(FileNotFoundError("none here")))
    assert "No finished `smoke` run of seed 2024" in course.course_summary_markdown()
    config = preset_config("smoke", fusion="sum", activation="none", seed=course.COURSE_SEED)
    train(config, runs.run_dir_for(config), records=stare_records, device="cpu", progress=False)
    text = course.course_summary_markdown()
    assert text.startswith("## Your training runs (notebook 04)") and "| sum-none |" in text
    assert text.index("## Your training runs") < text.index("No grid results found")


def test_saved_listings_show_the_code_as_it_is_now():
    """A cell that shows a function's source (``su.listing.show_source(...)``) keeps, in
    the committed notebook, exactly what it prints today: the course teaches the code
    it runs, so a change to a listed function means re-running that notebook."""
    import json

    import starunet as su

    checked = []
    for path in course.list_notebooks():
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            call = "".join(cell["source"]).split("  #")[0].strip()
            if cell["cell_type"] != "code" or not call.startswith("su.listing.show_source("):
                continue
            saved = ["".join(o["data"]["text/markdown"]) for o in cell["outputs"]
                     if "text/markdown" in o.get("data", {})]
            assert saved == [eval(call, {"su": su}).data], (
                f"{path.name}: the saved output of `{call}` is not today's code; refresh it with "
                f"`python -m starunet course --only {path.name[:2]} --inplace`")
            checked.append(call)
    assert len(checked) >= 6  # UNet.forward, sum/star, train_one_epoch, validate, star_bn/sum_star_bn, save_checkpoints


def test_the_course_reference_is_the_fast_grid_when_there_is_one(monkeypatch, tmp_path):
    from starunet import grid

    monkeypatch.setattr(RS, "FAST_DIR", tmp_path / "no-fast-grid")
    assert RS.course_reference().directory == RS.REFERENCE_DIR
    wide = RS.load_results(RS.REFERENCE_DIR, kind="reference")
    wide.provenance = {**wide.provenance, "fusions": ["sum", "star", "star_bn"], "activations": ["none", "relu"]}
    assert grid.own_grid(wide) == (["sum", "star"], ["none", "relu"])  # what notebook 04 trains
