"""ipywidgets front-ends. A widget here only wires controls to plain functions
of the package (which the tests call directly) and shows their figures; it holds
no logic of its own. Every notebook shows a static figure with the default
settings before the widget, for readers without a live kernel.
"""
from __future__ import annotations

# ---------------------------------------------------------------- 02 theory

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
