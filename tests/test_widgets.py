"""The widgets' own behaviour, without a browser (tests/browser/ has the browser
test): the notebook-04 launcher's stop button and interrupt, busy states, the
text a saved notebook shows instead of a widget, notebook 05's missing panels."""
from __future__ import annotations

import os
import signal
import threading

import matplotlib
import torch

matplotlib.use("Agg")

import nbformat  # noqa: E402

import starunet.training as tr  # noqa: E402
from starunet import presets, runs  # noqa: E402
from starunet import widgets  # noqa: E402
from starunet.presets import TrainConfig  # noqa: E402
from starunet.training import TrainingStopped  # noqa: E402

TINY = TrainConfig(patch_size=32, samples_per_epoch=4, batch_size=2, max_epochs=3, patience=5,
                   narrow=0.125, val_images=1, val_crop=96, preset="tiny")


def _parts(launcher):
    """The launcher's controls: settings, train button, stop button, progress, status."""
    (fusion, activation), (preset, seed) = launcher.children[0].children, launcher.children[1].children
    stop, progress = launcher.children[3].children
    return [fusion, activation, preset, seed], launcher.children[2], stop, progress, launcher.children[4]


def test_stop_button_ends_a_background_training_with_one_line_and_resets_the_buttons(monkeypatch):
    started = threading.Event()

    def fake_train(config, *, stop, callback, **kwargs):  # trains "epoch 1", then waits for the stop flag
        callback([{"epoch": 1, "train_loss": 0.5, "val_loss": 0.4, "val_pr_auc": 0.3, "val_roc_auc": 0.7,
                   "is_best": 1}])
        started.set()
        assert stop.wait(30)
        raise TrainingStopped(runs.run_dir_for(config), 1, config.max_epochs)

    monkeypatch.setattr(tr, "train", fake_train)
    launcher = widgets.training_launcher(preset="smoke", background=True)
    settings, launch, stop, progress, status = _parts(launcher)
    launcher.children[5].outputs = ({"output_type": "stream", "name": "stdout", "text": "old curves"},)
    launch.click()
    assert started.wait(30)
    assert launch.disabled and not stop.disabled and all(c.disabled for c in settings)
    assert progress.value == 1 and "epoch 2 of 2" in status.value
    assert "old curves" not in str(launcher.children[5].outputs)  # the new run's curve replaced it
    stop.click()
    launcher.worker.join(30)
    assert not launcher.worker.is_alive()
    assert status.value.startswith("stopped after epoch 1 of 2 in ") and status.value.endswith("to resume")
    assert "<br>" not in status.value and "Traceback" not in status.value  # one line
    assert not launch.disabled and stop.disabled and not any(c.disabled for c in settings)


def test_keyboard_interrupt_during_training_gives_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("STARUNET_RUNS", str(tmp_path))

    def interrupted(config, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tr, "train", interrupted)
    launcher = widgets.training_launcher(preset="smoke", background=False)
    settings, launch, stop, _, status = _parts(launcher)
    launch.click()
    assert status.value.startswith("interrupted after epoch 0 of 2 in ") and "<br>" not in status.value
    assert not launch.disabled and stop.disabled


def test_launcher_really_stops_and_resumes_bit_identically(stare_records, monkeypatch, tmp_path):
    """A real (tiny) training in the launcher's thread, stopped by the button after
    epoch 1, then continued by the train button: it ends where a straight run ends."""
    monkeypatch.setenv("STARUNET_RUNS", str(tmp_path / "runs"))
    monkeypatch.setitem(presets.PRESETS, "tiny", TINY)
    torch.set_num_threads(1)
    straight = tr.train(TINY, tmp_path / "straight", records=stare_records)
    real_train = tr.train
    launcher = widgets.training_launcher(stare_records, preset="tiny", device="cpu", background=True)
    _, launch, stop, _, status = _parts(launcher)

    def click_stop_after_epoch_1(config, *, callback, **kwargs):
        def after_epoch(history):
            callback(history)
            if len(history) == 1 and not stop.disabled:
                stop.click()  # as the reader would, while epoch 2 is about to start
        return real_train(config, callback=after_epoch, **kwargs)

    monkeypatch.setattr(tr, "train", click_stop_after_epoch_1)
    launch.click()
    launcher.worker.join(120)
    assert status.value.startswith("stopped after epoch 1 of 3")
    launch.click()  # resume
    launcher.worker.join(120)
    assert "trained 3 epochs" in status.value
    run_dir = runs.run_dir_for(TINY)
    for name in (runs.LAST_CHECKPOINT, runs.BEST_CHECKPOINT):
        a, b = (torch.load(d / name, weights_only=True)["model"] for d in (straight.run_dir, run_dir))
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert (straight.run_dir / runs.HISTORY_FILE).read_bytes() == (run_dir / runs.HISTORY_FILE).read_bytes()


def test_kernel_interrupt_while_idle_sets_the_running_trainings_stop_flags(monkeypatch):
    class Kernel:
        saved_sigint_handler = signal.SIG_IGN

    class Shell:
        kernel = Kernel()

    monkeypatch.setattr("IPython.get_ipython", lambda: Shell())
    assert widgets._route_kernel_interrupts()
    handler = Shell.kernel.saved_sigint_handler
    assert widgets._route_kernel_interrupts() and Shell.kernel.saved_sigint_handler is handler  # wrapped once
    flag = threading.Event()
    monkeypatch.setattr(widgets, "_RUNNING", {flag})
    before = signal.signal(signal.SIGINT, handler)  # what ipykernel restores when a cell ends
    try:
        os.kill(os.getpid(), signal.SIGINT)  # Kernel > Interrupt
        assert flag.wait(5)
        monkeypatch.setattr(widgets, "_RUNNING", set())
        os.kill(os.getpid(), signal.SIGINT)  # none running: ignored, as SIG_IGN would
    finally:
        signal.signal(signal.SIGINT, before)


def test_interrupt_with_nothing_running_calls_the_previous_handler():
    calls = []
    widgets._idle_interrupt_handler(lambda signum, frame: calls.append(signum))(signal.SIGINT, None)
    assert calls == [signal.SIGINT]


def test_playground_shows_that_it_is_training_and_locks_its_controls(monkeypatch):
    import starunet.toys as toys

    seen, real, box = [], toys.run_toy_experiment, None

    def spy(**kwargs):
        if box is not None:  # the first call builds the initial figure, before the box exists
            *controls, status = box.children[0].children
            seen.append(([c.disabled for c in controls], status.value))
        return real(**{**kwargs, "n_train": 32, "n_test": 32})

    monkeypatch.setattr(toys, "run_toy_experiment", spy)
    box = widgets.toy_playground(steps=2)
    *controls, status = box.children[0].children
    controls[1].value = "sum"  # the fusion op
    assert seen[-1] == ([True] * 6, "<i>training…</i>")
    assert not any(c.disabled for c in controls) and status.value == ""


def test_widgets_fall_back_to_a_line_of_text_in_a_saved_notebook():
    box = widgets.toy_playground(steps=2)
    bundle = box._repr_mimebundle_()
    assert bundle["text/plain"] == widgets.STATIC_TEXT and widgets.WIDGET_VIEW in bundle
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("widget", outputs=[nbformat.v4.new_output("execute_result", bundle)]),
        nbformat.v4.new_code_cell("figure", outputs=[nbformat.v4.new_output("display_data", {"text/plain": "x"})]),
        nbformat.v4.new_markdown_cell("text")])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    from starunet.course import clean_notebook  # what `course` saves

    assert clean_notebook(nb) == 1
    assert nb.cells[0].outputs[0].data == {"text/plain": widgets.STATIC_TEXT}
    assert nb.cells[1].outputs[0].data == {"text/plain": "x"}
    assert "widgets" not in nb.metadata
    nbformat.validate(nb)


def test_one_epoch_curves_have_an_integer_epoch_tick():
    from starunet.plots import plot_training_curves

    row = {"epoch": 1, "train_loss": 0.5, "val_loss": 0.4, "val_pr_auc": 0.3, "val_roc_auc": 0.7, "is_best": 1}
    fig = plot_training_curves({"star-none": [row]})
    assert [list(ax.get_xticks()) for ax in fig.axes] == [[1]] * 4
    fig = plot_training_curves({"star-none": [{**row, "epoch": e} for e in range(1, 8)]})
    assert all(float(t).is_integer() for t in fig.axes[0].get_xticks())


class _Results:
    """What show_run_comparison reads of :class:`starunet.results.GridResults`."""
    curves = {}

    def saved_predictions(self):
        return [("sum-none-seed1", "im0001"), ("star-none-seed1", "im0001")]

    def probability_map(self, key, image_id):
        return 0.5 if (key, image_id) in self.saved_predictions() else None


def test_comparison_says_why_panels_are_missing(monkeypatch):
    import matplotlib.pyplot as plt

    import starunet.plots as P
    import starunet.report as R

    shown = []
    monkeypatch.setattr("IPython.display.display", shown.append)
    monkeypatch.setattr(R, "compare_two_runs", lambda results, a, b: f"table {a} {b}")
    monkeypatch.setattr(P, "plot_roc_pr", lambda curves, per_run: plt.figure())
    monkeypatch.setattr(P, "plot_prediction_panels", lambda *args, **kwargs: plt.figure(num="panels"))
    record = type("Record", (), {"id": "im0001", "image": None, "label": None, "fov": None})()
    widgets.show_run_comparison(_Results(), "sum-none-seed1", "star-none-seed2", record)
    message = shown[-1].data
    assert message.startswith("*No probability or error maps for test image im0001: `star-none-seed2` has none")
    assert "pick two of those" in message and "`sum-none-seed1`, `star-none-seed1`" not in message
    assert "`star-none-seed1`, `sum-none-seed1`" in message
    shown.clear()
    widgets.show_run_comparison(_Results(), "sum-none-seed1", "star-none-seed1", record)
    assert [getattr(f, "get_label", lambda: "")() for f in shown[1:]] == ["", "panels"]  # no message then


def test_busy_state_only_after_a_readers_change():
    import ipywidgets as w

    from starunet.widgets import _busy, _status_line

    control, status = w.Dropdown(options=["a", "b"]), _status_line()
    with _busy([control], status, "working…"):  # the first drawing, while the widget is built
        assert not control.disabled and status.value == ""
    with _busy([control], status, "working…", change={"new": "b"}):
        assert control.disabled and "working…" in status.value
    assert not control.disabled and status.value == ""


def test_launcher_shows_how_a_run_ended_before_it_enables_train_again():
    """Widget updates reach the page in order: the final status must be there when the
    train button is enabled again (the browser test read "stopping…" otherwise)."""
    import types

    log: list[tuple[str, str]] = []

    class Recorded:
        def __init__(self, name: str):
            object.__setattr__(self, "name", name)
            object.__setattr__(self, "layout", types.SimpleNamespace())

        def __setattr__(self, key, value):
            log.append((self.name, key))
            object.__setattr__(self, key, value)

    view = widgets._LauncherView([Recorded("fusion")], Recorded("launch"), Recorded("stop"), Recorded("progress"),
                                 Recorded("status"), Recorded("plots"))
    view.finished("stopped after epoch 1 of 2 in runs/x; click “train (or reuse)” to resume")
    assert log.index(("status", "value")) < log.index(("stop", "disabled")) < log.index(("launch", "disabled"))
    assert log[-1] == ("launch", "disabled")
