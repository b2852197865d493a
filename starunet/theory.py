"""The star operation: its algebra, numerical checks, and a 2-D playground.

The *star operation* is the element-wise product of two linear maps of the same
input, ``(x @ W1 + b1) * (x @ W2 + b2)``. Ma et al., "Rewrite the Stars"
(CVPR 2024, arXiv:2403.19967) show that it is a linear model on all pairwise
products of the coordinates of ``[x, 1]`` -- a quadratic kernel whose features
are never built -- and that ``l`` stacked star layers reach polynomial degree
``2**l``. This module makes each claim checkable:

* algebra (numpy, float64): :func:`quadratic_features`, :class:`StarLayer`,
  :func:`star_identity_error`, :func:`implicit_dimension`;
* probes of (non-)linearity: :func:`affinity_gap`, :func:`response_along_line`,
  :func:`polynomial_degree`, :func:`max_pool_2x2`;
* toy 2-D classification (torch): in :mod:`starunet.toys`;
* the bridge to the U-Net: :func:`skip_star_chain` (a decoder that multiplies by
  encoder skips gains one degree per fusion, not double), :func:`star_stack_scales`
  (products grow or vanish with depth) and the sign symmetry ``(-a) * (-b) == a * b``.

It does not import the U-Net code: this module stands on its own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# ================================================================ algebra


def _as_2d(x: np.ndarray, name: str = "x") -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_samples, d), got shape {x.shape}; "
                         f"reshape a single sample with {name}[None, :]")
    return x


def quadratic_feature_count(d: int) -> int:
    """Number of distinct pairwise products of ``[x, 1]`` for ``x`` in R^d: (d+1)(d+2)/2."""
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}")
    return (d + 1) * (d + 2) // 2


def quadratic_features(x: np.ndarray) -> np.ndarray:
    """The explicit quadratic feature map: every product ``x~_i * x~_j`` (i <= j)
    of ``x~ = [x, 1]``.

    ``x`` (n, d) -> (n, (d+1)(d+2)/2): the squares, the cross terms, the
    coordinates themselves (``x_i * 1``) and the constant ``1 * 1``, in the
    order of :func:`quadratic_feature_names`.
    """
    x = _as_2d(x)
    x_one = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    i, j = np.triu_indices(x_one.shape[1])
    return x_one[:, i] * x_one[:, j]


def quadratic_feature_names(d: int) -> list[str]:
    """Readable names of the columns of :func:`quadratic_features`, e.g. ``x1*x2``."""
    names = [f"x{k + 1}" for k in range(d)] + ["1"]
    i, j = np.triu_indices(d + 1)
    out = []
    for a, b in zip(i, j):
        if names[b] == "1":
            out.append(names[a])  # x_k * 1 = x_k, and 1 * 1 = 1
        elif a == b:
            out.append(f"{names[a]}^2")
        else:
            out.append(f"{names[a]}*{names[b]}")
    return out


@dataclass(frozen=True)
class StarLayer:
    """One star layer ``(x @ w1 + b1) * (x @ w2 + b2)``: x (n, d) -> (n, m).

    ``w1, w2``: (d, m) weights of the two branches; ``b1, b2``: (m,) biases.
    """

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    @classmethod
    def random(cls, d: int, m: int, rng: np.random.Generator, bias: bool = True) -> "StarLayer":
        """Gaussian weights with variance 1/d, so each branch keeps the input's
        scale (the product alone then changes it -- see :func:`star_stack_scales`)."""
        std = 1.0 / math.sqrt(d)
        w1, w2 = rng.normal(0, std, (d, m)), rng.normal(0, std, (d, m))
        b1, b2 = (rng.normal(0, std, m), rng.normal(0, std, m)) if bias else (np.zeros(m), np.zeros(m))
        return cls(w1, b1, w2, b2)

    def branches(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The two linear branches ``(x @ w1 + b1, x @ w2 + b2)``."""
        x = _as_2d(x)
        return x @ self.w1 + self.b1, x @ self.w2 + self.b2

    def __call__(self, x: np.ndarray) -> np.ndarray:
        a, b = self.branches(x)
        return a * b

    def quadratic_weights(self) -> np.ndarray:
        """Weights ``C`` ((d+1)(d+2)/2, m) with ``self(x) == quadratic_features(x) @ C``.

        With ``a = [w1; b1]`` and ``c = [w2; b2]`` (bias folded in as the weight
        of the constant 1), ``(a.x~) (c.x~) = sum_ij a_i c_j x~_i x~_j``; the
        products ``x~_i x~_j`` and ``x~_j x~_i`` are one feature, so its weight
        is ``a_i c_j + a_j c_i`` off the diagonal and ``a_i c_i`` on it.
        """
        a = np.vstack([self.w1, self.b1[None]])  # (d+1, m)
        c = np.vstack([self.w2, self.b2[None]])
        outer = a[:, None, :] * c[None, :, :]  # (d+1, d+1, m): weight of x~_i x~_j
        i, j = np.triu_indices(a.shape[0])
        return np.where((i == j)[:, None], outer[i, j], outer[i, j] + outer[j, i])


def star_identity_error(d: int, m: int = 4, n: int = 256, seed: int = 0) -> float:
    """Relative error ``||star(x) - phi(x) @ C|| / ||star(x)||`` for a random star
    layer R^d -> R^m, where ``phi`` is :func:`quadratic_features` and ``C`` its
    :meth:`StarLayer.quadratic_weights`. Float64, so the identity holds to rounding."""
    rng = np.random.default_rng(seed)
    layer = StarLayer.random(d, m, rng)
    x = rng.normal(size=(n, d))
    star = layer(x)
    linear = quadratic_features(x) @ layer.quadratic_weights()
    return float(np.linalg.norm(star - linear) / np.linalg.norm(star))


def implicit_dimension(d: int, depth: int = 1) -> int:
    """Exact dimension of the feature space of ``depth`` stacked star layers on R^d:
    the number of distinct monomials of degree <= 2**depth in d variables,
    ``C(d + 2**depth, 2**depth)``. For depth 1 this is (d+1)(d+2)/2."""
    if d < 1 or depth < 1:
        raise ValueError(f"need d >= 1 and depth >= 1, got d={d}, depth={depth}")
    return math.comb(d + 2**depth, 2**depth)


def paper_implicit_dimension(d: int, depth: int = 1) -> float:
    """The estimate of "Rewrite the Stars" (Ma et al., CVPR 2024): (d / sqrt 2) ** (2**depth)."""
    if d < 1 or depth < 1:
        raise ValueError(f"need d >= 1 and depth >= 1, got d={d}, depth={depth}")
    return (d / math.sqrt(2)) ** (2**depth)


def implicit_dimension_table(ds: Sequence[int], depths: Sequence[int]) -> list[dict]:
    """Rows ``{"d", "depth", "degree", "exact", "paper"}`` for every (d, depth)."""
    return [{"d": d, "depth": depth, "degree": 2**depth,
             "exact": implicit_dimension(d, depth), "paper": paper_implicit_dimension(d, depth)}
            for depth in depths for d in ds]


def star_stack(d: int, depth: int, seed: int = 0, bias: bool = True) -> list[StarLayer]:
    """``depth`` random star layers of width ``d`` (R^d -> R^d each)."""
    rng = np.random.default_rng(seed)
    return [StarLayer.random(d, d, rng, bias=bias) for _ in range(depth)]


def apply_star_stack(x: np.ndarray, layers: Sequence[StarLayer], normalize: bool = False) -> list[np.ndarray]:
    """Features after each layer (the input first). ``normalize`` standardises each
    feature over the batch after every layer, as BatchNorm does in training."""
    feats = [_as_2d(x)]
    for layer in layers:
        h = layer(feats[-1])
        if normalize:
            h = (h - h.mean(0)) / (h.std(0) + 1e-12)
        feats.append(h)
    return feats


def skip_star_chain(x: np.ndarray, layers: Sequence[StarLayer]) -> np.ndarray:
    """A U-Net-style chain of products: ``h <- (h @ w1 + b1) * (x @ w2 + b2)`` per layer,
    starting from ``h = x``. One factor comes from the deep path, the other straight
    from the input (a "skip"), so each product raises the polynomial degree by one
    -- not doubling it as in :func:`apply_star_stack`. Layers must be d -> d."""
    x = _as_2d(x)
    h = x
    for layer in layers:
        h = (h @ layer.w1 + layer.b1) * (x @ layer.w2 + layer.b2)
    return h


def format_dimension_table(rows: Sequence[dict]) -> str:
    """A markdown table of :func:`implicit_dimension_table` rows: one row per d,
    for each depth the exact dimension and the estimate of Ma et al."""
    ds = list(dict.fromkeys(r["d"] for r in rows))
    depths = list(dict.fromkeys(r["depth"] for r in rows))
    cell = {(r["d"], r["depth"]): r for r in rows}
    head = " | ".join(f"{l} layer{'s' if l > 1 else ''} (degree {2**l}): exact / Ma et al." for l in depths)
    lines = [f"| d | {head} |", "| ---: | " + " | ".join("---:" for _ in depths) + " |"]
    for d in ds:
        cells = [f"{float(cell[d, l]['exact']):.3g} / {cell[d, l]['paper']:.3g}" for l in depths]
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ================================================================ (non-)linearity probes


def affinity_gap(fn: Callable, x, y, t: float = 0.3) -> float:
    """How far ``fn`` is from affine: ``max|fn(t x + (1-t) y) - (t fn(x) + (1-t) fn(y))|``
    relative to ``max|fn(x)| + max|fn(y)|``. Zero (to rounding) exactly for affine maps
    -- linear layers, their stacks and sums -- and clearly positive otherwise.
    Works on numpy arrays and torch tensors alike."""
    mixed = fn(t * x + (1 - t) * y)
    expected = t * fn(x) + (1 - t) * fn(y)
    scale = float(abs(fn(x)).max() + abs(fn(y)).max())
    return float(abs(mixed - expected).max()) / max(scale, 1e-300)


def response_along_line(fn: Callable, start, direction, ts: np.ndarray) -> np.ndarray:
    """``fn(start + t * direction)`` for every ``t`` in ``ts``, batched in one call.

    ``start`` and ``direction`` have the shape of one input sample (any shape);
    ``fn`` maps a batch (len(ts), *shape) to outputs; returns them as numpy."""
    start, direction = np.asarray(start, np.float64), np.asarray(direction, np.float64)
    if start.shape != direction.shape:
        raise ValueError(f"start {start.shape} and direction {direction.shape} must have the same shape")
    ts = np.asarray(ts, np.float64).reshape((-1,) + (1,) * start.ndim)
    out = fn(start[None] + ts * direction[None])
    return out.detach().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)


def polynomial_degree(ts: np.ndarray, values: np.ndarray, max_degree: int = 40, tol: float = 1e-9) -> int | None:
    """The smallest degree k such that a polynomial of degree k fits ``values(ts)``
    to relative RMS error ``tol`` (Chebyshev least squares, well conditioned on
    any interval); None if none up to ``max_degree`` does (e.g. a kink)."""
    ts, values = np.asarray(ts, np.float64), np.asarray(values, np.float64).reshape(-1)
    if len(ts) != len(values) or len(ts) <= max_degree + 1:
        raise ValueError(f"need one value per t and more than max_degree+1={max_degree + 1} points, "
                         f"got {len(ts)} ts and {len(values)} values")
    u = 2 * (ts - ts.min()) / (ts.max() - ts.min()) - 1  # map onto [-1, 1]
    scale = np.sqrt(np.mean(values**2)) or 1.0
    for k in range(max_degree + 1):
        coef = np.polynomial.chebyshev.chebfit(u, values, k)
        residual = np.sqrt(np.mean((np.polynomial.chebyshev.chebval(u, coef) - values) ** 2))
        if residual <= tol * scale:
            return k
    return None


def max_pool_2x2(x) -> torch.Tensor:
    """2x2 max pooling with stride 2 -- the U-Net's downsampling -- on (N, C, H, W)
    (numpy or torch; float64 kept)."""
    x = torch.as_tensor(x)
    if x.ndim != 4:
        raise ValueError(f"max_pool_2x2 expects (N, C, H, W), got shape {tuple(x.shape)}")
    return F.max_pool2d(x, kernel_size=2, stride=2)


# ================================================================ toy 2-D data


# ================================================================ toy networks


# ================================================================ pitfalls for the U-Net


def star_stack_scales(d: int = 16, depth: int = 5, input_scales: Sequence[float] = (0.5, 1.0, 2.0),
                      n: int = 512, seed: int = 0, normalize: bool = False) -> np.ndarray:
    """RMS of the features after each of ``depth`` random bias-free star layers
    (index 0: the input), for standard-normal inputs scaled by each of
    ``input_scales``: array (len(input_scales), depth + 1).

    A bias-free star layer is homogeneous of degree 2 -- scaling its input by s
    scales its output by s**2 -- so after l layers the scale is s**(2**l): it
    explodes for s > 1 and vanishes for s < 1. ``normalize=True`` standardises
    after every layer (what BatchNorm does) and removes the drift.
    """
    layers = star_stack(d, depth, seed, bias=False)
    x = np.random.default_rng([seed, 1]).normal(size=(n, d))
    rms = [[np.sqrt(np.mean(h**2)) for h in apply_star_stack(s * x, layers, normalize)]
           for s in input_scales]
    return np.array(rms)
