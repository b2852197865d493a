"""A 2-D playground for the star operation (notebook 02): toy datasets, small
networks that fuse by stacking, summing or multiplying, their training, accuracy
grids over seeds and a depth sweep of their polynomial degree.

The toy networks reuse the fusion names of the U-Net registry where they mean the
same thing (``"sum"``, ``"star"``) but do not import ``starunet.fusion``: with
:mod:`starunet.theory` this part of the course stands on its own.
"""
from __future__ import annotations

import contextlib
import copy
import os
import platform
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from starunet.config import cpu_model


TOY_DATASETS = ("moons", "circles", "xor", "spirals")


# noise (std of the Gaussian jitter) per dataset: enough overlap that accuracy
# is not trivially 100 %, little enough that the shape stays visible.
DEFAULT_NOISE = {"moons": 0.15, "circles": 0.1, "xor": 0.35, "spirals": 0.08}


@dataclass(frozen=True)
class ToyData:
    """A 2-D binary task: train and test sets drawn independently from the same
    distribution, both standardised with the *training* mean and std."""

    name: str
    x_train: torch.Tensor  # (n_train, 2) float32
    y_train: torch.Tensor  # (n_train,) float32 in {0, 1}
    x_test: torch.Tensor
    y_test: torch.Tensor


def _check_name(kind: str, name: str, valid: Sequence[str]) -> None:
    if name not in valid:
        raise ValueError(f"unknown {kind} {name!r}; valid: {', '.join(valid)}")


def _sample_toy(name: str, n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = rng.permutation(np.arange(n) % 2)  # balanced classes
    if name == "moons":  # two interleaved half circles
        t = rng.uniform(0, np.pi, n)
        x = np.where(y[:, None] == 0, np.c_[np.cos(t), np.sin(t)], np.c_[1 - np.cos(t), 0.5 - np.sin(t)])
    elif name == "circles":  # a ring (class 0) around a smaller ring (class 1)
        t = rng.uniform(0, 2 * np.pi, n)
        x = np.where(y[:, None] == 0, 1.0, 0.5) * np.c_[np.cos(t), np.sin(t)]
    elif name == "xor":  # four blobs; the class is the sign of x1 * x2
        signs = rng.choice([-1.0, 1.0], n)
        x = np.c_[signs, np.where(y == 1, signs, -signs)]
    else:  # spirals: two arms, 1.5 turns each, the second rotated by pi
        r = rng.uniform(0.15, 1.0, n)
        angle = 3 * np.pi * r + np.pi * y
        x = r[:, None] * np.c_[np.cos(angle), np.sin(angle)]
    return x + rng.normal(0, noise, x.shape), y


def make_toy_data(name: str, n_train: int = 256, n_test: int = 1024, noise: float | None = None,
                  seed: int = 0) -> ToyData:
    """Sample a 2-D dataset from :data:`TOY_DATASETS` (``noise=None``: :data:`DEFAULT_NOISE`)."""
    _check_name("dataset", name, TOY_DATASETS)
    if n_train < 2 or n_test < 2:
        raise ValueError(f"n_train and n_test must be >= 2, got {n_train}, {n_test}")
    noise = DEFAULT_NOISE[name] if noise is None else noise
    x_tr, y_tr = _sample_toy(name, n_train, noise, np.random.default_rng([seed, 0]))
    x_te, y_te = _sample_toy(name, n_test, noise, np.random.default_rng([seed, 1]))
    mean, std = x_tr.mean(0), x_tr.std(0)

    def f32(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.float32)

    return ToyData(name, f32((x_tr - mean) / std), f32(y_tr), f32((x_te - mean) / std), f32(y_te))


# "stack": the two linear maps of a block are chained, b(a(h)) -- with no
#          activation the whole network is one affine map;
# "sum":   they run in parallel and are added, a(h) + b(h) -- still affine;
# "star":  they run in parallel and are multiplied, a(h) * b(h).
TOY_FUSIONS = ("stack", "sum", "star")


TOY_ACTIVATIONS: dict[str, type[nn.Module]] = {"none": nn.Identity, "relu": nn.ReLU, "gelu": nn.GELU}


class ToyBlock(nn.Module):
    """Two linear maps ``linear_a``, ``linear_b`` (width -> width) combined by ``fusion``,
    then the activation. Same parameters for every fusion: only the wiring differs."""

    def __init__(self, width: int, fusion: str, activation: str):
        super().__init__()
        self.fusion = fusion
        self.linear_a = nn.Linear(width, width)
        self.linear_b = nn.Linear(width, width)
        self.act = TOY_ACTIVATIONS[activation]()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.fusion == "stack":  # a plain MLP: activation after each linear layer
            out = self.linear_b(self.act(self.linear_a(h)))
        elif self.fusion == "sum":
            out = self.linear_a(h) + self.linear_b(h)
        else:  # star
            out = self.linear_a(h) * self.linear_b(h)
        return self.act(out)


class ToyNet(nn.Module):
    """``stem`` Linear(2, width) -> ``depth`` x :class:`ToyBlock` -> ``head`` Linear(width, 1).

    Returns one logit per point. The parameter count, ``3w + depth*2(w^2 + w) + w + 1``
    for width w, is the same for every fusion and activation: budgets are matched.
    """

    def __init__(self, fusion: str = "star", activation: str = "none", depth: int = 2, width: int = 8):
        super().__init__()
        _check_name("fusion", fusion, TOY_FUSIONS)
        _check_name("activation", activation, tuple(TOY_ACTIVATIONS))
        if depth < 1 or width < 1:
            raise ValueError(f"depth and width must be >= 1, got depth={depth}, width={width}")
        self.fusion, self.activation, self.depth, self.width = fusion, activation, depth, width
        self.stem = nn.Linear(2, width)
        self.blocks = nn.ModuleList(ToyBlock(width, fusion, activation) for _ in range(depth))
        self.head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h).squeeze(-1)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def make_toy_net(fusion: str = "star", activation: str = "none", depth: int = 2, width: int = 8,
                 seed: int = 0) -> ToyNet:
    """A :class:`ToyNet` initialised from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ToyNet(fusion, activation, depth, width)


def toy_net_function(net: ToyNet) -> Callable[[np.ndarray], np.ndarray]:
    """``net`` as a plain float64 numpy function (n, 2) -> (n,) -- a copy in double
    precision, so probes such as :func:`polynomial_degree` see exact polynomials."""
    net64 = copy.deepcopy(net).double()

    @torch.no_grad()
    def fn(x: np.ndarray) -> np.ndarray:
        return net64(torch.as_tensor(np.asarray(x, np.float64))).numpy()

    return fn


def _compose(outer_w, outer_b, inner_w, inner_b):
    """Affine maps compose into one: W_o (W_i x + b_i) + b_o = (W_o W_i) x + (W_o b_i + b_o)."""
    return outer_w @ inner_w, outer_w @ inner_b + outer_b


@torch.no_grad()
def collapse_to_affine(net: ToyNet) -> tuple[torch.Tensor, torch.Tensor]:
    """The single affine map ``x @ W.T + b`` that equals a ToyNet without activation
    and with fusion "stack" or "sum", computed by composing its weights: W (1, 2), b (1,)."""
    if net.activation != "none" or net.fusion == "star":
        raise ValueError(f"a network with fusion={net.fusion!r}, activation={net.activation!r} is not "
                         "affine; collapse only applies to fusion 'stack' or 'sum' with activation 'none'")
    w, b = net.stem.weight, net.stem.bias
    for block in net.blocks:
        a, c = block.linear_a, block.linear_b
        if net.fusion == "stack":
            w, b = _compose(c.weight, c.bias, *_compose(a.weight, a.bias, w, b))
        else:  # a(h) + c(h) = (W_a + W_c) h + (b_a + b_c): a sum of linear maps is linear
            w, b = _compose(a.weight + c.weight, a.bias + c.bias, w, b)
    return _compose(net.head.weight, net.head.bias, w, b)


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Run torch on one thread, then restore the setting. Tensors of a few hundred
    numbers gain nothing from intra-op threads, and on a busy machine handing them
    between threads made training over 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_toy(net: ToyNet, data: ToyData, steps: int = 250, lr: float = 0.02) -> list[float]:
    """Full-batch Adam on the binary cross-entropy; returns the loss per step.
    Deterministic on CPU: no sampling, so the same net and data give the same losses."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    opt = torch.optim.Adam(net.parameters(), lr=lr, foreach=True)  # one kernel per step, not per tensor
    losses = []
    with _single_thread():
        for _ in range(steps):
            loss = F.binary_cross_entropy_with_logits(net(data.x_train), data.y_train)
            opt.zero_grad()
            loss.backward()
            # Products of many factors can give huge gradients early on; clipping keeps
            # full-batch Adam stable for every fusion alike.
            nn.utils.clip_grad_norm_(net.parameters(), 1.0, foreach=True)
            opt.step()
            losses.append(loss.item())
    return losses


@torch.no_grad()
def toy_accuracy(net: ToyNet, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of points whose logit has the sign of their label."""
    return float(((net(x) > 0).float() == y).float().mean())


@dataclass
class ToyResult:
    """One trained toy network and how well it did."""

    dataset: str
    fusion: str
    activation: str
    depth: int
    width: int
    seed: int
    n_params: int
    train_acc: float
    test_acc: float
    losses: list[float]
    net: ToyNet
    data: ToyData

    @property
    def model_name(self) -> str:
        return f"{self.fusion}/{self.activation}"


def run_toy_experiment(dataset: str = "moons", fusion: str = "star", activation: str = "none",
                       depth: int = 2, width: int = 8, seed: int = 0, steps: int = 250, lr: float = 0.02,
                       n_train: int = 256, n_test: int = 1024, noise: float | None = None) -> ToyResult:
    """Sample ``dataset`` and initialise the net from ``seed``, train, measure accuracy."""
    data = make_toy_data(dataset, n_train, n_test, noise, seed)
    net = make_toy_net(fusion, activation, depth, width, seed)
    losses = train_toy(net, data, steps, lr)
    return ToyResult(dataset, fusion, activation, depth, width, seed, net.n_params,
                     toy_accuracy(net, data.x_train, data.y_train),
                     toy_accuracy(net, data.x_test, data.y_test), losses, net, data)


def run_toy_grid(datasets: Sequence[str] = TOY_DATASETS, fusions: Sequence[str] = TOY_FUSIONS,
                 activations: Sequence[str] = ("none", "relu"), seeds: Sequence[int] = (0, 1, 2),
                 **kwargs) -> list[ToyResult]:
    """:func:`run_toy_experiment` for every dataset x fusion x activation x seed
    (``kwargs`` go to it: depth, width, steps, ...)."""
    return [run_toy_experiment(ds, fu, act, seed=s, **kwargs)
            for ds in datasets for fu in fusions for act in activations for s in seeds]


def summarize_toy_grid(results: Sequence[ToyResult]) -> list[dict]:
    """Mean and std (over seeds, ddof=1) of the test accuracy per dataset and model,
    in the order the grid ran."""
    groups: dict[tuple, list[ToyResult]] = {}
    for r in results:
        groups.setdefault((r.dataset, r.fusion, r.activation), []).append(r)
    rows = []
    for (dataset, fusion, activation), rs in groups.items():
        acc = np.array([r.test_acc for r in rs])
        rows.append({"dataset": dataset, "fusion": fusion, "activation": activation,
                     "model": f"{fusion}/{activation}", "n_params": rs[0].n_params,
                     "n_seeds": len(rs), "mean": float(acc.mean()),
                     "std": float(acc.std(ddof=1)) if len(rs) > 1 else 0.0})
    return rows


def format_toy_table(summary: Sequence[dict]) -> str:
    """A markdown table: one row per model, one column per dataset, cells
    "mean ± std" test accuracy in %."""
    datasets = list(dict.fromkeys(r["dataset"] for r in summary))
    models = list(dict.fromkeys(r["model"] for r in summary))
    cell = {(r["model"], r["dataset"]): r for r in summary}
    params = {r["model"]: r["n_params"] for r in summary}
    lines = ["| model (fusion/activation) | params | " + " | ".join(datasets) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in datasets) + " |"]
    for m in models:
        cells = [f"{100 * cell[m, d]['mean']:.1f} ± {100 * cell[m, d]['std']:.1f}" if (m, d) in cell else "–"
                 for d in datasets]
        lines.append(f"| {m} | {params[m]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _seed_count(rows: Sequence[dict]) -> str:
    """How many seeds :func:`summarize_toy_grid` rows average over, for a header:
    "3", or "2-3" if the rows differ (a grid with a run missing)."""
    counts = sorted({r["n_seeds"] for r in rows})
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def paired_accuracy_differences(results: Sequence[ToyResult], a: str = "star/none", b: str = "sum/relu",
                                datasets: Sequence[str] | None = None, level: float = 0.95) -> list[dict]:
    """Test accuracy of model ``a`` minus model ``b`` (names ``"fusion/activation"``)
    per dataset, paired by seed (a seed draws the same data for both models): the mean
    over the seeds both ran, its t-interval over those seeds at ``level``
    (:func:`starunet.stats.seed_interval`; NaN bounds with one seed), the number of
    seeds and each model's mean accuracy. Fractions: 0.108 is 10.8 accuracy points."""
    from starunet.stats import seed_interval  # here: the playground itself needs no statistics

    acc = {(r.dataset, r.model_name, r.seed): r.test_acc for r in results}
    datasets = list(datasets) if datasets is not None else list(dict.fromkeys(r.dataset for r in results))
    rows = []
    for dataset in datasets:
        seeds = sorted(s for (d, m, s) in acc if d == dataset and m == a and (dataset, b, s) in acc)
        if not seeds:
            models = ", ".join(dict.fromkeys(r.model_name for r in results if r.dataset == dataset)) or "none"
            raise ValueError(f"no seed ran both {a!r} and {b!r} on {dataset!r} (models there: {models}); "
                             "run the grid with both fusions and activations")
        diff = np.array([acc[dataset, a, s] - acc[dataset, b, s] for s in seeds])
        mean, low, high = seed_interval(diff, level)
        rows.append({"dataset": dataset, "a": a, "b": b, "n_seeds": len(seeds), "level": level,
                     "mean_a": float(np.mean([acc[dataset, a, s] for s in seeds])),
                     "mean_b": float(np.mean([acc[dataset, b, s] for s in seeds])),
                     "diff": float(mean), "low": float(low), "high": float(high)})
    return rows


def difference_verdict(row: dict) -> str:
    """What one :func:`paired_accuracy_differences` row supports: "one seed,
    preliminary" without an interval, "<a> better" or "<b> better" when the interval
    excludes 0, otherwise "no difference detected at N seeds" (which is not "equal")."""
    if row["n_seeds"] < 2:
        return "one seed, preliminary (no interval)"
    if row["low"] > 0:
        return f"{row['a']} better"
    if row["high"] < 0:
        return f"{row['b']} better"
    return f"no difference detected at {row['n_seeds']} seeds"


def format_paired_differences(rows: Sequence[dict]) -> str:
    """:func:`paired_accuracy_differences` rows as text: a header, then per row the
    dataset, both means, the difference and its interval in accuracy points, and
    :func:`difference_verdict`."""
    if not rows:
        raise ValueError("format_paired_differences got no rows; pass what paired_accuracy_differences returns")
    interval = (f" and {rows[0]['level']:.0%} t-interval over the seeds" if any(r["n_seeds"] > 1 for r in rows)
                else "")
    lines = [f"test accuracy, a minus b paired by seed, mean over {_seed_count(rows)} seed(s){interval}, "
             "in accuracy points:"]
    for r in rows:
        interval = f"[{100 * r['low']:+.1f}, {100 * r['high']:+.1f}]" if r["n_seeds"] > 1 else ""
        lines.append(f"  {r['dataset']:8s} {r['a']} {100 * r['mean_a']:5.1f} − {r['b']} {100 * r['mean_b']:5.1f} "
                     f"= {100 * r['diff']:+6.1f} {interval:>16}  {difference_verdict(r)}")
    return "\n".join(lines)


def toy_net_degree(fusion: str, activation: str, depth: int) -> int | None:
    """The degree of a :class:`ToyNet` as a polynomial in its input: ``2**depth``
    for "star" (each block multiplies two affine maps of its input, doubling the
    degree), 1 for "stack" and "sum" (the net is affine), None with an activation
    (then it is no polynomial). What the net *can* express grows with this degree."""
    _check_name("fusion", fusion, TOY_FUSIONS)
    _check_name("activation", activation, tuple(TOY_ACTIVATIONS))
    if activation != "none":
        return None
    return 2**depth if fusion == "star" else 1


def run_depth_sweep(depths: Sequence[int], dataset: str = "spirals", fusion: str = "star",
                    activation: str = "none", seeds: Sequence[int] = (0, 1, 2), **kwargs) -> list[dict]:
    """Does a higher degree buy accuracy? Train ``fusion/activation`` on ``dataset``
    at each of ``depths``: one :func:`summarize_toy_grid` row per depth (mean and
    std over ``seeds`` of the test accuracy, ``n_params``) plus ``depth``, ``width``
    and ``degree`` (:func:`toy_net_degree`). ``kwargs`` go to
    :func:`run_toy_experiment` (width, steps, n_train, ...)."""
    if not depths:
        raise ValueError("run_depth_sweep needs at least one depth, e.g. depths=(1, 2, 3)")
    rows = []
    for depth in depths:
        results = run_toy_grid([dataset], [fusion], [activation], seeds, depth=depth, **kwargs)
        rows.append({**summarize_toy_grid(results)[0], "depth": depth, "width": results[0].width,
                     "degree": toy_net_degree(fusion, activation, depth)})
    return rows


def format_depth_sweep(rows: Sequence[dict]) -> str:
    """:func:`run_depth_sweep` rows as text: a header naming the model, dataset,
    width and seeds, then per depth its degree ("–": no polynomial), parameters and
    the test accuracy "mean ± std" in %."""
    if not rows:
        raise ValueError("format_depth_sweep got no rows; pass the list run_depth_sweep returns")
    first = rows[0]
    lines = [f"{first['model']} on {first['dataset']}, width {first['width']}, "
             f"test accuracy over {_seed_count(rows)} seed(s):"]
    for r in rows:
        degree = f"{r['degree']:2d}" if r["degree"] is not None else " –"
        lines.append(f"  depth {r['depth']} (degree {degree}, {r['n_params']:4d} params): "
                     f"{100 * r['mean']:5.1f} ± {100 * r['std']:4.1f} %")
    return "\n".join(lines)


@torch.no_grad()
def decision_surface(net: ToyNet, limits: tuple[float, float, float, float] = (-2.5, 2.5, -2.5, 2.5),
                     resolution: int = 150) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The net's probability of class 1 on a ``resolution`` x ``resolution`` grid
    over ``limits = (xmin, xmax, ymin, ymax)``: returns ``(xx, yy, prob)``."""
    xs = np.linspace(limits[0], limits[1], resolution)
    ys = np.linspace(limits[2], limits[3], resolution)
    xx, yy = np.meshgrid(xs, ys)
    grid = torch.as_tensor(np.c_[xx.ravel(), yy.ravel()], dtype=torch.float32)
    prob = torch.sigmoid(net(grid)).numpy().reshape(xx.shape)
    return xx, yy, prob


def hardware_summary() -> str:
    """Where the toy numbers were computed: CPU model, cores, torch and Python versions."""
    return (f"{cpu_model()} ({os.cpu_count()} cores visible; toy training on 1 thread), "
            f"torch {torch.__version__}, Python {platform.python_version()}")
