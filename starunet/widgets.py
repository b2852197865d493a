"""ipywidgets front-ends. A widget here only wires controls to plain functions
of the package (which the tests call directly) and shows their figures; it holds
no logic of its own beyond the controls' states (busy, training, stopped) and the
training launcher's thread. Every notebook shows a static figure with the default
settings before the widget, for readers without a live kernel.
"""
from __future__ import annotations

import contextlib
import functools
import html
import threading
from typing import Any, Iterator

# What a saved notebook shows where a live widget was. The widget-view output of a
# saved notebook points at a model that exists only in the kernel that made it:
# JupyterLab prints "Error displaying widget: model not found" for it and GitHub
# shows the text/plain next to it. Saving the widget state instead would double the
# notebooks (every Output widget keeps its figures) and show controls that do
# nothing; every widget here follows a static figure, so a line of text is enough.
# :func:`starunet.course.clean_notebook` keeps only this text in every notebook the
# course runner writes.
STATIC_TEXT = "(interactive widget: run the notebook to use it)"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@functools.cache
def _box_class(kind: str) -> type:
    """``ipywidgets.VBox``/``HBox`` whose text/plain fallback is :data:`STATIC_TEXT`
    (instead of a truncated ``VBox(children=(...`` repr)."""
    import ipywidgets as w

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        return {**super(box, self)._repr_mimebundle_(**kwargs), "text/plain": STATIC_TEXT}

    box = type(f"Interactive{kind}", (getattr(w, kind),), {"_repr_mimebundle_": _repr_mimebundle_})
    return box


def _interactive(kind: str, children: list) -> Any:
    """The widget a function here returns: a box with :data:`STATIC_TEXT` as fallback."""
    return _box_class(kind)(children)


def _status_line():
    """One line of text under a widget's controls: what it is doing, or how it ended."""
    import ipywidgets as w

    return w.HTML(value="", layout=w.Layout(min_height="1.6em"))


@contextlib.contextmanager
def _busy(controls: list, status, text: str, change: Any = None) -> Iterator[None]:
    """Show ``text`` and disable ``controls`` while the block recomputes (seconds, on
    a CPU) after the reader's ``change``: the reader sees that a change was taken and
    cannot queue more meanwhile. The first drawing, while the widget is being built
    (``change`` None), shows nothing: no one sees the controls yet, and toggling them
    from the executing cell hung headless runs (nbclient, normal mode, notebook 03)."""
    if change is None:
        yield
        return
    before = [c.disabled for c in controls]
    for control in controls:
        control.disabled = True
    status.value = f"<i>{html.escape(text)}</i>"
    try:
        yield
    finally:
        for control, disabled in zip(controls, before):
            control.disabled = disabled
        status.value = ""


def _show_figure(out, fig) -> None:
    """Replace what ``out`` (an ``ipywidgets.Output``) shows by ``fig``, by setting its
    outputs: unlike ``with out:``, this reaches the front end from any thread."""
    import base64

    import matplotlib.pyplot as plt
    from IPython import get_ipython
    from IPython.core.pylabtools import print_figure

    shell = get_ipython()
    if shell is not None:  # the notebook's own figure format (e.g. JPEG)
        data, metadata = shell.display_formatter.format(fig)
    else:
        data, metadata = {"image/png": base64.b64encode(print_figure(fig, "png")).decode(), "text/plain": repr(fig)}, {}
    out.outputs = ({"output_type": "display_data", "data": data, "metadata": metadata},)
    plt.close(fig)


# ---------------------------------------------------------------- 01 data

def patch_explorer(records, n: int = 16):
    """Sample training patches with any seed/epoch/augmentation and look at them.

    On every change a :class:`starunet.data.PatchDataset` is built over ``records``
    and :func:`starunet.plots_data.plot_patches` shows its first ``n`` items (the same
    items a training run with those settings would see first).
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import display

    from starunet.data import PatchDataset
    from starunet.plots_data import plot_patches

    seed = w.BoundedIntText(value=2024, min=0, max=2**31 - 1, description="seed")
    epoch = w.IntSlider(value=0, min=0, max=20, description="epoch")
    size = w.Dropdown(options=[48, 64, 96, 128, 192], value=96, description="patch size")
    augment = w.Checkbox(value=True, description="flips/rotations")
    jitter = w.FloatSlider(value=0.0, min=0.0, max=0.5, step=0.05, description="color jitter")
    controls = [seed, epoch, size, augment, jitter]
    status, out = _status_line(), w.Output()

    def update(change=None):
        with _busy(controls, status, "sampling patches…", change):
            dataset = PatchDataset(records, patch_size=size.value, samples_per_epoch=n, augment=augment.value,
                                   color_jitter=jitter.value, seed=seed.value)
            dataset.set_epoch(epoch.value)
            fig = plot_patches(dataset, n)
        with out:
            out.clear_output(wait=True)
            display(fig)
        plt.close(fig)

    for control in controls:
        control.observe(update, names="value")
    update()
    return _interactive("VBox", [w.HBox([seed, epoch, size]), w.HBox([augment, jitter]), status, out])


# ---------------------------------------------------------------- 02 theory

def toy_playground(dataset: str = "moons", fusion: str = "star", activation: str = "none",
                   depth: int = 2, width: int = 8, seed: int = 0, steps: int = 250):
    """Train a toy 2-D network with any dataset, fusion, depth, width and activation.

    On every change :func:`starunet.toys.run_toy_experiment` trains a fresh
    network (about a second on a CPU) and :func:`starunet.plots_theory.plot_decision_boundary`
    shows its boundary and accuracies. The arguments are the initial settings;
    ``steps`` is the number of full-batch Adam steps.
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import display

    from starunet.plots_theory import plot_decision_boundary
    from starunet.toys import TOY_ACTIVATIONS, TOY_DATASETS, TOY_FUSIONS, run_toy_experiment

    # continuous_update=False: retrain once the slider is released, not on every tick
    controls = {
        "dataset": w.Dropdown(options=TOY_DATASETS, value=dataset, description="dataset"),
        "fusion": w.Dropdown(options=TOY_FUSIONS, value=fusion, description="fusion"),
        "activation": w.Dropdown(options=list(TOY_ACTIVATIONS), value=activation, description="activation"),
        "depth": w.IntSlider(value=depth, min=1, max=4, description="depth", continuous_update=False),
        "width": w.IntSlider(value=width, min=2, max=32, description="width", continuous_update=False),
        "seed": w.IntSlider(value=seed, min=0, max=9, description="seed", continuous_update=False),
    }
    status, out = _status_line(), w.Output()

    def update(change=None):
        with _busy(list(controls.values()), status, "training…", change):
            result = run_toy_experiment(steps=steps, **{name: c.value for name, c in controls.items()})
            fig = plot_decision_boundary(result)
        with out:
            out.clear_output(wait=True)
            display(fig)
        plt.close(fig)

    for control in controls.values():
        control.observe(update, names="value")
    update()
    c = controls
    return _interactive("HBox", [w.VBox([c["dataset"], c["fusion"], c["activation"], c["depth"], c["width"],
                                         c["seed"], status]), out])


# ---------------------------------------------------------------- 03 model

def model_variant_explorer(patches, labels, sample: int = 0, seed: int = 0, fusion: str = "star",
                           activation: str = "none", narrow: float = 0.5):
    """Build any (fusion, activation, width) U-Net variant and look at it.

    On every change, :func:`starunet.probe.inspect_variant` builds the variant
    (weights from ``seed``) and runs it on the batch ``patches`` (N, 3, p, p) with
    batch statistics; :func:`starunet.plots_model.plot_variant` shows its parameter count,
    its logits on ``patches[sample]`` and its activation statistics through depth.
    ``fusion``, ``activation`` and ``narrow`` are the initial settings.
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import display

    from starunet.fusion import FUSIONS
    from starunet.model import ACTIVATIONS
    from starunet.probe import inspect_variant
    from starunet.plots_model import plot_variant

    fusion = w.Dropdown(options=sorted(FUSIONS), value=fusion, description="fusion")
    activation = w.Dropdown(options=list(ACTIVATIONS), value=activation, description="activation")
    narrow = w.SelectionSlider(options=[0.125, 0.25, 0.5, 1.0], value=narrow, description="narrow")
    controls = [fusion, activation, narrow]
    status, out = _status_line(), w.Output()

    def update(change=None):
        with _busy(controls, status, "building and running the variant…", change):
            variant = inspect_variant(patches, fusion.value, activation.value, narrow.value, seed)
            title = (f"fusion={fusion.value}, activation={activation.value}, narrow={narrow.value}: "
                     f"{variant['params']:,} parameters")
            fig = plot_variant(patches[sample], labels[sample], variant, title=title, sample=sample)
        with out:
            out.clear_output(wait=True)
            display(fig)
        plt.close(fig)

    for control in controls:
        control.observe(update, names="value")
    update()
    return _interactive("VBox", [w.HBox(controls), status, out])


# ---------------------------------------------------------------- 04 training

def live_training_plot(label: str, out=None):
    """A :func:`starunet.training.train` callback that redraws the run's curves after
    every epoch, in place: in ``out`` (an ``ipywidgets.Output``) if given, else in
    the cell's output. After the run, the last drawing stays as a static figure."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    from starunet.plots import plot_training_curves

    handle = None

    def redraw(history):
        nonlocal handle
        fig = plot_training_curves({label: history}, title=f"{label}: epoch {len(history)}")
        if out is not None:
            with out:
                out.clear_output(wait=True)
                display(fig)
        elif handle is None:
            handle = display(fig, display_id=True)
        else:
            handle.update(fig)
        plt.close(fig)

    return redraw


def _in_kernel() -> bool:
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None) is not None


# The stop flags of the launchers' trainings that are running now.
_RUNNING: set[threading.Event] = set()


def _idle_interrupt_handler(previous: Any):
    """A SIGINT handler for the kernel's idle time: Kernel > Interrupt stops the
    launchers' trainings; with none running it does what ``previous`` did."""
    def handler(signum: int, frame: Any) -> None:
        if _RUNNING:
            for flag in list(_RUNNING):
                flag.set()
        elif callable(previous):
            previous(signum, frame)

    handler.starunet = True  # type: ignore[attr-defined]
    return handler


def _route_kernel_interrupts() -> bool:
    """Make Kernel > Interrupt stop a training started by a launcher; returns whether it could.

    The training runs in a thread (see :func:`training_launcher`), and SIGINT only
    ever reaches the main thread, where ipykernel installs Python's default handler
    while a cell runs and restores ``kernel.saved_sigint_handler`` (``SIG_IGN``) when
    idle -- the state the kernel is in while a launcher trains. Wrapping that saved
    handler is the one place an interrupt can be caught then. Needs the main thread
    (a cell, not a widget callback)."""
    from IPython import get_ipython

    kernel = getattr(get_ipython(), "kernel", None)
    if (kernel is None or threading.current_thread() is not threading.main_thread()
            or not hasattr(kernel, "saved_sigint_handler")):
        return False
    if not getattr(kernel.saved_sigint_handler, "starunet", False):
        kernel.saved_sigint_handler = _idle_interrupt_handler(kernel.saved_sigint_handler)
    return True


class _LauncherView:
    """The launcher's widgets and their states while idle, training and after a run."""

    def __init__(self, settings: list, launch, stop, progress, status, plots):
        self.settings, self.launch, self.stop = settings, launch, stop
        self.progress, self.status, self.plots = progress, status, plots

    def say(self, text: str) -> None:
        self.status.value = "<br>".join(html.escape(line) for line in text.splitlines())

    def started(self, label: str, max_epochs: int) -> None:
        for control in [*self.settings, self.launch]:
            control.disabled = True
        self.stop.disabled = False
        self.plots.outputs = ()  # the previous run's curves do not belong under this run
        self.progress.max, self.progress.value = max_epochs, 0
        self.progress.layout.visibility = "visible"
        self.say(f"training {label}: epoch 1 of {max_epochs}…")

    def epoch_done(self, label: str, history: list[dict]) -> None:
        from starunet.plots import plot_training_curves

        done = len(history)
        self.progress.value = done
        _show_figure(self.plots, plot_training_curves({label: history}, title=f"{label}: epoch {done}"))
        if done < self.progress.max and not self.stop.disabled:
            self.say(f"training {label}: epoch {done + 1} of {self.progress.max}…")

    def stopping(self) -> None:
        self.stop.disabled = True
        self.say("stopping at the next training step…")

    def finished(self, message: str) -> None:
        # the final status first, the buttons last: widget updates reach the page in this
        # order, and a reader (or the browser test) who sees "train" enabled again must
        # already read how the run ended, not "stopping…"
        self.say(message)
        self.progress.layout.visibility = "hidden"
        self.stop.disabled = True
        for control in [*self.settings, self.launch]:
            control.disabled = False


def _launcher_run(config, label: str, flag: threading.Event, view: _LauncherView, records, device: str,
                  progress: bool) -> None:
    """Train ``config`` for the launcher and end with one line in its status, whatever
    happens: a summary, where a stopped run stands, or the error."""
    from starunet import runs
    from starunet import training as tr

    message = "ended unexpectedly"
    again = "click “train (or reuse)” to resume"
    try:
        result = tr.train(config, resume=True, records=records, device=device, progress=progress, stop=flag,
                          callback=lambda history: view.epoch_done(label, history))
        view.epoch_done(label, runs.read_history(result.run_dir))  # also draws a reused run's curves
        message = result.summary()
    except tr.TrainingStopped as err:
        message = f"{err}; " + (again if err.epoch else "click “train (or reuse)” to start it again")
    except KeyboardInterrupt:  # Ctrl-C where the training runs in the main thread (no kernel)
        run_dir = runs.run_dir_for(config)
        done = len(runs.read_history(run_dir)) if (run_dir / runs.HISTORY_FILE).is_file() else 0
        message = f"interrupted after epoch {done} of {config.max_epochs} in {run_dir}; {again}"
    except Exception as err:  # shown to the reader instead of lost in the kernel log
        message = f"{type(err).__name__}: {err}"
    finally:
        _RUNNING.discard(flag)
        view.finished(message)


def training_launcher(records=None, preset: str = "fast", fusion: str = "star", activation: str = "none",
                      seed: int = 2024, device: str = "auto", background: bool | None = None):
    """Pick fusion, activation, preset and seed, and train that run with a live plot.

    The train button calls :func:`starunet.training.train` with ``resume=True``: a
    finished run with the same config is reused at once, an interrupted one
    continues. The stop button (or Kernel > Interrupt) stops it between two steps,
    keeping the last finished epoch. ``records``: the STARE records already loaded
    (else they are read again).

    ``background``: train in a thread (default: inside a kernel). A click handler
    that trained itself would block the thread that has to receive the stop click
    (JupyterLab 4.6 sends every widget message to one kernel subshell thread), and
    Kernel > Interrupt would not reach it there either. The returned box's
    ``worker`` attribute is that thread.
    """
    import ipywidgets as w

    from starunet.fusion import FUSIONS
    from starunet.model import ACTIVATIONS
    from starunet.presets import PRESETS, preset_config
    from starunet.stats import run_key

    fusion = w.Dropdown(options=sorted(FUSIONS), value=fusion, description="fusion")
    activation = w.Dropdown(options=list(ACTIVATIONS), value=activation, description="activation")
    preset = w.Dropdown(options=list(PRESETS), value=preset, description="preset")
    seed = w.BoundedIntText(value=seed, min=0, max=2**31 - 1, description="seed")
    launch = w.Button(description="train (or reuse)", button_style="primary")
    stop = w.Button(description="stop", button_style="warning", disabled=True,
                    tooltip="stop at the next step; the last finished epoch stays saved")
    progress = w.IntProgress(min=0, max=1, description="epochs", layout=w.Layout(visibility="hidden"))
    status, plots = _status_line(), w.Output()
    view = _LauncherView([fusion, activation, preset, seed], launch, stop, progress, status, plots)
    background = _in_kernel() if background is None else background
    _route_kernel_interrupts()
    box = _interactive("VBox", [w.HBox([fusion, activation]), w.HBox([preset, seed]), launch,
                                w.HBox([stop, progress]), status, plots])
    box.worker, flag = None, threading.Event()

    def run(_=None) -> None:
        nonlocal flag
        config = preset_config(preset.value, fusion=fusion.value, activation=activation.value, seed=seed.value)
        label = f"{run_key(config.fusion, config.activation, config.seed)} ({config.preset})"
        flag = threading.Event()
        _RUNNING.add(flag)
        view.started(label, config.max_epochs)
        args = (config, label, flag, view, records, device, not background)  # tqdm bars only without a kernel
        if background:
            box.worker = threading.Thread(target=_launcher_run, args=args, name="starunet-training", daemon=True)
            box.worker.start()
        else:
            _launcher_run(*args)

    def request_stop(_=None) -> None:
        flag.set()
        view.stopping()

    launch.on_click(run)
    stop.on_click(request_stop)
    return box


# ---------------------------------------------------------------- 05 evaluation

def show_run_comparison(results, key_a: str, key_b: str, record=None) -> None:
    """Display the comparison of two runs of a grid: the metric table
    (:func:`starunet.report.compare_two_runs`), their ROC/PR curves and, when
    ``record`` is a test image with saved predictions of both runs, their panels.
    The notebook calls it for the static view; :func:`run_comparison` on changes."""
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display

    from starunet.report import compare_two_runs
    from starunet.plots import plot_prediction_panels, plot_roc_pr

    display(Markdown(compare_two_runs(results, key_a, key_b)))
    figures = [plot_roc_pr({k: results.curves[k] for k in (key_a, key_b) if k in results.curves}, per_run=True)]
    probs = {k: results.probability_map(k, record.id) for k in (key_a, key_b)} if record is not None else {}
    missing = [k for k, p in probs.items() if p is None]
    if probs and not missing:
        figures.append(plot_prediction_panels(record.image, record.label, record.fov, probs,
                                              title=f"test image {record.id}"))
    for fig in figures:
        display(fig)
        plt.close(fig)
    if missing:
        display(Markdown(missing_panels_message(results, missing, record.id)))


def missing_panels_message(results, missing: list[str], image_id: str) -> str:
    """Why the probability and error maps of a comparison are not shown: which runs
    have no saved map of the image, and which runs have one."""
    have = sorted({key for key, i in results.saved_predictions() if i == image_id})
    runs = ", ".join(f"`{k}`" for k in missing)
    hint = (f" Maps were saved for {', '.join(f'`{k}`' for k in have)}: pick two of those to see them."
            if have else "")
    return (f"*No probability or error maps for test image {image_id}: {runs} "
            f"{'has' if len(missing) == 1 else 'have'} none saved (a grid saves them for its first "
            f"seed's runs only).{hint}*")


def run_comparison(results, records_by_id=None, key_a: str | None = None, key_b: str | None = None):
    """Pick any two finished runs of a grid (any fusion, activation, seed) and compare them.

    ``results``: :class:`starunet.results.GridResults`; ``records_by_id``: ``{id: StareRecord}``
    of the test images, for the prediction panels (runs whose PNGs were saved:
    the first seed's). Defaults: the first two runs.
    """
    import ipywidgets as w

    keys = results.keys
    if len(keys) < 2:
        raise ValueError(f"need at least two runs to compare, these results have {keys}")
    first = w.Dropdown(options=keys, value=key_a or keys[0], description="run A")
    second = w.Dropdown(options=keys, value=key_b or keys[1], description="run B")
    panel_ids = [i for i in results.provenance.get("panel_ids", []) if records_by_id and i in records_by_id]
    image = w.Dropdown(options=panel_ids or ["-"], description="test image", disabled=not panel_ids)
    controls = [first, second, image]
    status, out = _status_line(), w.Output()

    def update(change=None):
        record = records_by_id[image.value] if panel_ids else None
        with _busy(controls, status, "comparing…", change), out:
            out.clear_output(wait=True)
            show_run_comparison(results, first.value, second.value, record)

    for control in controls:
        control.observe(update, names="value")
    update()
    return _interactive("VBox", [w.HBox(controls), status, out])
