"""ipywidgets front-ends. A widget here only wires controls to plain functions
of the package (which the tests call directly) and shows their figures; it holds
no logic of its own. Every notebook shows a static figure with the default
settings before the widget, for readers without a live kernel.
"""
from __future__ import annotations

# ---------------------------------------------------------------- 01 data

def patch_explorer(records, n: int = 16):
    """Sample training patches with any seed/epoch/augmentation and look at them.

    On every change a :class:`starunet.data.PatchDataset` is built over ``records``
    and :func:`starunet.plots.plot_patches` shows its first ``n`` items (the same
    items a training run with those settings would see first).
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import display

    from starunet.data import PatchDataset
    from starunet.plots import plot_patches

    seed = w.BoundedIntText(value=2024, min=0, max=2**31 - 1, description="seed")
    epoch = w.IntSlider(value=0, min=0, max=20, description="epoch")
    size = w.Dropdown(options=[48, 64, 96, 128, 192], value=96, description="patch size")
    augment = w.Checkbox(value=True, description="flips/rotations")
    jitter = w.FloatSlider(value=0.0, min=0.0, max=0.5, step=0.05, description="color jitter")
    out = w.Output()

    def update(_=None):
        dataset = PatchDataset(records, patch_size=size.value, samples_per_epoch=n, augment=augment.value,
                               color_jitter=jitter.value, seed=seed.value)
        dataset.set_epoch(epoch.value)
        fig = plot_patches(dataset, n)
        with out:
            out.clear_output(wait=True)
            display(fig)
        plt.close(fig)

    for control in (seed, epoch, size, augment, jitter):
        control.observe(update, names="value")
    update()
    return w.VBox([w.HBox([seed, epoch, size]), w.HBox([augment, jitter]), out])


# ---------------------------------------------------------------- 02 theory

def toy_playground(dataset: str = "moons", fusion: str = "star", activation: str = "none",
                   depth: int = 2, width: int = 8, seed: int = 0, steps: int = 250):
    """Train a toy 2-D network with any dataset, fusion, depth, width and activation.

    On every change :func:`starunet.theory.run_toy_experiment` trains a fresh
    network (about a second on a CPU) and :func:`starunet.plots.plot_decision_boundary`
    shows its boundary and accuracies. The arguments are the initial settings;
    ``steps`` is the number of full-batch Adam steps.
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import display

    from starunet.plots import plot_decision_boundary
    from starunet.theory import TOY_ACTIVATIONS, TOY_DATASETS, TOY_FUSIONS, run_toy_experiment

    # continuous_update=False: retrain once the slider is released, not on every tick
    controls = {
        "dataset": w.Dropdown(options=TOY_DATASETS, value=dataset, description="dataset"),
        "fusion": w.Dropdown(options=TOY_FUSIONS, value=fusion, description="fusion"),
        "activation": w.Dropdown(options=list(TOY_ACTIVATIONS), value=activation, description="activation"),
        "depth": w.IntSlider(value=depth, min=1, max=4, description="depth", continuous_update=False),
        "width": w.IntSlider(value=width, min=2, max=32, description="width", continuous_update=False),
        "seed": w.IntSlider(value=seed, min=0, max=9, description="seed", continuous_update=False),
    }
    out = w.Output()

    def update(_=None):
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
    return w.HBox([w.VBox([c["dataset"], c["fusion"], c["activation"], c["depth"], c["width"], c["seed"]]), out])


# ---------------------------------------------------------------- 03 model

def model_variant_explorer(patches, labels, sample: int = 0, seed: int = 0, fusion: str = "star",
                           activation: str = "none", narrow: float = 0.5):
    """Build any (fusion, activation, width) U-Net variant and look at it.

    On every change, :func:`starunet.model.inspect_variant` builds the variant
    (weights from ``seed``) and runs it on the batch ``patches`` (N, 3, p, p) with
    batch statistics; :func:`starunet.plots.plot_variant` shows its parameter count,
    its logits on ``patches[sample]`` and its activation statistics through depth.
    ``fusion``, ``activation`` and ``narrow`` are the initial settings.
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import display

    from starunet.fusion import FUSIONS
    from starunet.model import ACTIVATIONS, inspect_variant
    from starunet.plots import plot_variant

    fusion = w.Dropdown(options=sorted(FUSIONS), value=fusion, description="fusion")
    activation = w.Dropdown(options=list(ACTIVATIONS), value=activation, description="activation")
    narrow = w.SelectionSlider(options=[0.125, 0.25, 0.5, 1.0], value=narrow, description="narrow")
    out = w.Output()

    def update(_=None):
        variant = inspect_variant(patches, fusion.value, activation.value, narrow.value, seed)
        title = (f"fusion={fusion.value}, activation={activation.value}, narrow={narrow.value}: "
                 f"{variant['params']:,} parameters")
        fig = plot_variant(patches[sample], labels[sample], variant, title=title, sample=sample)
        with out:
            out.clear_output(wait=True)
            display(fig)
        plt.close(fig)

    for control in (fusion, activation, narrow):
        control.observe(update, names="value")
    update()
    return w.VBox([w.HBox([fusion, activation, narrow]), out])


# ---------------------------------------------------------------- 04 training

def live_training_plot(label: str, out=None):
    """A :func:`starunet.train.train` callback that redraws the run's curves after
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


def training_launcher(records=None, preset: str = "quick", fusion: str = "star", activation: str = "none",
                      seed: int = 2024, device: str = "auto"):
    """Pick fusion, activation, preset and seed, and train that run with a live plot.

    The button calls :func:`starunet.train.train` with ``resume=True``: a finished
    run with the same config is reused at once, an interrupted one continues.
    ``records``: the STARE records already loaded (else they are read again).
    """
    import ipywidgets as w

    from starunet.fusion import FUSIONS
    from starunet.model import ACTIVATIONS
    from starunet.train import PRESETS, preset_config, read_history, train

    fusion = w.Dropdown(options=sorted(FUSIONS), value=fusion, description="fusion")
    activation = w.Dropdown(options=list(ACTIVATIONS), value=activation, description="activation")
    preset = w.Dropdown(options=list(PRESETS), value=preset, description="preset")
    seed = w.BoundedIntText(value=seed, min=0, max=2**31 - 1, description="seed")
    button = w.Button(description="train (or reuse)", button_style="primary")
    plot_out, text_out = w.Output(), w.Output()

    def run(_=None):
        config = preset_config(preset.value, fusion=fusion.value, activation=activation.value, seed=seed.value)
        label = f"{config.fusion}-{config.activation}-s{config.seed} ({config.preset})"
        button.disabled = True
        text_out.clear_output()
        redraw = live_training_plot(label, plot_out)
        with text_out:  # progress bars and messages appear under the button
            try:
                result = train(config, resume=True, records=records, device=device, callback=redraw,
                               progress=True)
                redraw(read_history(result.run_dir))  # also draws a reused run's curves
                print(result.summary())
            except Exception as err:  # shown to the reader instead of lost in the kernel log
                print(f"{type(err).__name__}: {err}")
            finally:
                button.disabled = False

    button.on_click(run)
    return w.VBox([w.HBox([fusion, activation]), w.HBox([preset, seed]), button, text_out, plot_out])


# ---------------------------------------------------------------- 05 evaluation

def show_run_comparison(results, key_a: str, key_b: str, record=None) -> None:
    """Display the comparison of two runs of a grid: the metric table
    (:func:`starunet.evaluate.compare_two_runs`), their ROC/PR curves and, when
    ``record`` is a test image with saved predictions of both runs, their panels.
    The notebook calls it for the static view; :func:`run_comparison` on changes."""
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display

    from starunet.evaluate import compare_two_runs
    from starunet.plots import plot_prediction_panels, plot_roc_pr

    display(Markdown(compare_two_runs(results, key_a, key_b)))
    figures = [plot_roc_pr({k: results.curves[k] for k in (key_a, key_b) if k in results.curves}, per_run=True)]
    probs = {k: results.probability_map(k, record.id) for k in (key_a, key_b)} if record is not None else {}
    if probs and all(p is not None for p in probs.values()):
        figures.append(plot_prediction_panels(record.image, record.label, record.fov, probs,
                                              title=f"test image {record.id}"))
    for fig in figures:
        display(fig)
        plt.close(fig)


def run_comparison(results, records_by_id=None, key_a: str | None = None, key_b: str | None = None):
    """Pick any two finished runs of a grid (any fusion, activation, seed) and compare them.

    ``results``: :class:`starunet.evaluate.Results`; ``records_by_id``: ``{id: StareRecord}``
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
    out = w.Output()

    def update(_=None):
        record = records_by_id[image.value] if panel_ids else None
        with out:
            out.clear_output(wait=True)
            show_run_comparison(results, first.value, second.value, record)

    for control in (first, second, image):
        control.observe(update, names="value")
    update()
    return w.VBox([w.HBox([first, second, image]), out])
