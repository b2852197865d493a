"""Figures of the course. Each function takes plain data (arrays, records,
histories) and returns a matplotlib ``Figure``; notebooks only call them.

The file is organised in sections, one per notebook, so that figures live
beside the others of their topic.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

# ---------------------------------------------------------------- 01 data

# ---------------------------------------------------------------- 02 theory

# ---------------------------------------------------------------- 03 model

# ---------------------------------------------------------------- 04 training

# ---------------------------------------------------------------- 05 evaluation
