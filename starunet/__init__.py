"""starunet -- can the element-wise product replace activation functions in a U-Net?

The helper package of the course. Notebooks do ``import starunet as su`` and call
the public names below; each lives in the module of its concept:

======================  ==========================================================
``starunet.config``     environment switches (smoke mode) and default folders
``starunet.data``       STARE download/verify/cache, FOV masks, splits, patches, tiling
``starunet.metrics``    segmentation metrics pooled inside the field of view
``starunet.theory``     the algebra of the star operation and 2-D toy experiments
``starunet.fusion``     the registry of skip-fusion ops (``FUSIONS``)
``starunet.model``      the ReLU-free U-Net
``starunet.inference``  the one full-image forward path (BatchNorm folded, fp32)
``starunet.train``      the training engine (configs, presets, resume, cache)
``starunet.evaluate``   full-image inference, the experiment grid, statistics
``starunet.plots``      the figures of the notebooks
``starunet.widgets``    ipywidgets front-ends over plain functions
``starunet.bench``      speed benchmarks
======================  ==========================================================

Names are imported lazily (PEP 562) so that ``import starunet`` stays cheap and a
notebook only pays for the modules it uses.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "smoke_mode": "config",
    "default_data_root": "config",
    "default_runs_dir": "config",
    "display_path": "config",
    "STARE_IDS": "data",
    "StareRecord": "data",
    "load_stare": "data",
    "compute_fov": "data",
    "split_ids": "data",
    "Split": "data",
    "StareDataError": "data",
    "image_to_tensor": "data",
    "PatchDataset": "data",
    "Tiler": "inference",
    "vessel_fraction": "data",
    "patch_vessel_fraction": "data",
    "METRIC_NAMES": "metrics",
    "segmentation_metrics": "metrics",
    "confusion_counts": "metrics",
    "f1_optimal_threshold": "metrics",
    "human_baseline": "metrics",
    "quadratic_features": "theory",
    "quadratic_feature_count": "theory",
    "quadratic_feature_names": "theory",
    "StarLayer": "theory",
    "star_identity_error": "theory",
    "implicit_dimension": "theory",
    "paper_implicit_dimension": "theory",
    "implicit_dimension_table": "theory",
    "format_dimension_table": "theory",
    "star_stack": "theory",
    "apply_star_stack": "theory",
    "skip_star_chain": "theory",
    "star_stack_scales": "theory",
    "affinity_gap": "theory",
    "response_along_line": "theory",
    "polynomial_degree": "theory",
    "max_pool_2x2": "theory",
    "TOY_DATASETS": "theory",
    "TOY_FUSIONS": "theory",
    "make_toy_data": "theory",
    "ToyNet": "theory",
    "make_toy_net": "theory",
    "toy_net_function": "theory",
    "collapse_to_affine": "theory",
    "run_toy_experiment": "theory",
    "run_toy_grid": "theory",
    "summarize_toy_grid": "theory",
    "format_toy_table": "theory",
    "accuracy_differences": "theory",
    "format_accuracy_differences": "theory",
    "run_depth_sweep": "theory",
    "format_depth_sweep": "theory",
    "hardware_summary": "theory",
    "FUSIONS": "fusion",
    "make_fusion": "fusion",
    "register_fusion": "fusion",
    "fusion_formula": "fusion",
    "ACTIVATIONS": "model",
    "make_activation": "model",
    "UNet": "model",
    "count_parameters": "model",
    "probabilities_from_logits": "model",
    "TrainConfig": "train",
    "PRESETS": "train",
    # not "train": importing the submodule starunet.train would replace the function
    # with the module; use `from starunet.train import train`
    "preset_config": "train",
    "run_dir_for": "train",
    "select_device": "device",
    "device_description": "device",
    "load_model": "train",
    "read_history": "train",
    "predict_probabilities": "inference",
    "predict_logits": "inference",
    "fold_batchnorm": "inference",
    "predict_images": "inference",
    "evaluate_model": "evaluate",
    "evaluate_run": "evaluate",
    "compare_inference_methods": "inference",
    "reproduce": "grid",
    "find_results": "results",
    "load_results": "results",
    "summarize_over_seeds": "stats",
    "paired_differences": "stats",
    "verdict_sentence": "stats",
    "comparison_table": "report",
    "source_format_table": "report",
    "SOURCE_RESULTS": "source",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


_SUBMODULES = frozenset({"alt_text", "bench", "cli", "config", "course", "curves", "data", "device", "evaluate", "fanout",
                         "fusion", "gpu_session", "grid", "inference", "io", "listing", "metrics", "model", "plots",
                         "preflight", "report", "results", "source", "stats", "theory", "train", "widgets"})


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
    return __all__
