"""ipywidgets front-ends. A widget here only wires controls to plain functions
of the package (which the tests call directly) and shows their figures; it holds
no logic of its own. Every notebook shows a static figure with the default
settings before the widget, for readers without a live kernel.
"""
from __future__ import annotations

# ---------------------------------------------------------------- 02 theory

# ---------------------------------------------------------------- 03 model

# ---------------------------------------------------------------- 04 training

# ---------------------------------------------------------------- 05 evaluation
