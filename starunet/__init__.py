"""starunet -- can the element-wise product replace activation functions in a U-Net?

The helper package of the course. Notebooks do ``import starunet as su``; the
about thirty names of ``su.__all__`` are the public API (``su.load_stare``,
``su.UNet``, ``su.train``, ``su.reproduce``, ...), and every module is one attribute
away (``su.plots``, ``su.theory``, ``su.report``, ...). The modules, in the order of
the data path (each imports only modules above it; docs/ARCHITECTURE.md is the map):

=======================  =========================================================
``starunet.config``      environment switches (smoke mode), folders, git commit
``starunet.io``          atomic writes, CSV
``starunet.device``      device choice and description, memory layout, autocast
``starunet.stare``       STARE download/verify/cache, decoding, FOV masks
``starunet.data``        splits, image tensors, training patches
``starunet.metrics``     segmentation metrics inside the FOV, ROC/PR curve points
``starunet.theory``      the algebra of the star operation, probes of (non-)linearity
``starunet.toys``        the 2-D toy playground of notebook 02
``starunet.fusion``      the registry of skip-fusion ops (``FUSIONS``)
``starunet.model``       the ReLU-free U-Net
``starunet.probe``       looking inside the U-Net (notebook 03)
``starunet.inference``   the one full-image forward path (pad or tiles, BN folded)
``starunet.presets``     ``TrainConfig`` and the training budgets
``starunet.runs``        run folders: files, checkpoints, resume, ``load_model``
``starunet.training``    the training loop (``train``)
``starunet.reproducibility``  kill-and-resume check of bit-identical resume
``starunet.evaluate``    scoring one run on whole test images
``starunet.stats``       summaries over seeds, paired differences, margins, verdicts
``starunet.results``     grid folders read back (``GridResults``)
``starunet.verdicts``    ``verdicts.csv`` of every results folder, and its sentences
``starunet.report``      every Markdown table and generated README
``starunet.runners``     how the grid's runs get trained (one after another, here)
``starunet.grid``        the experiment grid (``reproduce``) and its CLI
``starunet.plots``       figure styles; training and result figures (04-06)
``starunet.plots_*``     the figures of the data, the theory, the model (01-03)
``starunet.widgets``     ipywidgets front-ends over plain functions
=======================  =========================================================

The tools of whoever runs the experiments (benchmarks, parallel and SLURM runs, the
GPU session) live beside the course in ``starunet.lab``, which no module above imports.

Names are imported lazily (PEP 562) so that ``import starunet`` stays cheap and a
notebook only pays for the modules it uses.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# The public API: the names the notebooks use most, each from the module of its
# concept (public name -> module). Everything else is one attribute away:
# ``su.plots.plot_roc_pr``, ``su.theory.StarLayer``, ``su.report.summary_table``.
_EXPORTS = {
    "smoke_mode": "config",
    "display_path": "config",
    "load_stare": "stare",
    "StareRecord": "stare",
    "split_ids": "data",
    "image_to_tensor": "data",
    "PatchDataset": "data",
    "METRIC_NAMES": "metrics",
    "segmentation_metrics": "metrics",
    "human_baseline": "metrics",
    "FUSIONS": "fusion",
    "Fusion": "fusion",
    "register_fusion": "fusion",
    "ACTIVATIONS": "model",
    "UNet": "model",
    "count_parameters": "model",
    "select_device": "device",
    "TrainConfig": "presets",
    "PRESETS": "presets",
    "preset_config": "presets",
    "train": "training",  # the function; the module is starunet.training
    "run_dir_for": "runs",
    "load_model": "runs",
    "read_history": "runs",
    "predict_images": "inference",
    "evaluate_run": "evaluate",
    "reproduce": "grid",
    "load_results": "results",
    "find_results": "results",
    "SOURCE_RESULTS": "source",
    "lesson_header": "lessons",
}

# every module of the course, reachable as su.<module> without an import of its own
_SUBMODULES = frozenset({"alt_text", "cli", "config", "course", "curves", "data", "device", "evaluate",
                         "fusion", "grid", "inference", "io", "lessons", "listing", "metrics", "model",
                         "plots", "plots_data", "plots_model", "plots_theory", "preflight", "presets", "probe", "provenance", "recipes",
                         "report", "reproducibility", "results", "runners", "runs", "source", "stare", "stats",
                         "theory", "toys", "training", "verdicts", "widgets"})

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _SUBMODULES:  # su.plots, su.report, ...: the rest of the package, one import away
        return importlib.import_module(f"starunet.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'starunet' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"starunet.{module}"), name)
    globals()[name] = value  # cache: the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return __all__ + sorted(_SUBMODULES)
