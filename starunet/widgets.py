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

# ---------------------------------------------------------------- 05 evaluation
