"""Tests of starunet.theory and starunet.toys: the star-operation algebra, the (non-)linearity
probes, the toy 2-D experiments, and the 02 sections of plots and widgets."""
from __future__ import annotations

import itertools

import matplotlib
import numpy as np
import pytest
import torch

from starunet import theory as th
from starunet import toys

matplotlib.use("Agg")


# ---------------------------------------------------------------- algebra

def test_quadratic_features_are_the_distinct_products_of_x_and_one():
    x = np.array([[2.0, 3.0], [-1.0, 0.5]])
    feats = th.quadratic_features(x)
    assert th.quadratic_feature_names(2) == ["x1^2", "x1*x2", "x1", "x2^2", "x2", "1"]
    x1, x2 = x[:, 0], x[:, 1]
    np.testing.assert_array_equal(feats, np.c_[x1**2, x1 * x2, x1, x2**2, x2, np.ones(2)])
    for d in (1, 3, 10):
        assert th.quadratic_features(np.zeros((5, d))).shape == (5, th.quadratic_feature_count(d))
        assert th.quadratic_feature_count(d) == (d + 1) * (d + 2) // 2


@pytest.mark.parametrize("d", [1, 2, 3, 5, 8, 17, 32, 64])
def test_star_layer_equals_linear_model_on_quadratic_features(d):
    # The identity of "Rewrite the Stars": float64, so it holds to rounding.
    assert th.star_identity_error(d, m=4, seed=d) <= 1e-5
    assert th.star_identity_error(d, m=4, seed=d) < 1e-12


def test_quadratic_weights_of_a_hand_made_layer():
    # (x1 + 1) * (x1 - x2) = x1^2 - x1 x2 + x1 - x2
    layer = th.StarLayer(np.array([[1.0], [0.0]]), np.array([1.0]), np.array([[1.0], [-1.0]]), np.array([0.0]))
    coef = dict(zip(th.quadratic_feature_names(2), layer.quadratic_weights()[:, 0]))
    assert coef == {"x1^2": 1.0, "x1*x2": -1.0, "x1": 1.0, "x2^2": 0.0, "x2": -1.0, "1": 0.0}


def test_quadratic_features_rejects_a_single_vector_with_a_fix():
    with pytest.raises(ValueError, match=r"x\[None, :\]"):
        th.quadratic_features(np.ones(3))


def _count_monomials(d: int, degree: int) -> int:
    return sum(1 for k in range(degree + 1) for _ in itertools.combinations_with_replacement(range(d), k))


@pytest.mark.parametrize("d,depth", [(1, 1), (2, 1), (3, 2), (4, 2), (2, 3)])
def test_implicit_dimension_counts_monomials(d, depth):
    assert th.implicit_dimension(d, depth) == _count_monomials(d, 2**depth)


def test_implicit_dimension_one_layer_and_paper_estimate():
    for d in (2, 16, 128):
        assert th.implicit_dimension(d, 1) == th.quadratic_feature_count(d)
        assert th.paper_implicit_dimension(d, 1) == pytest.approx(d * d / 2)
    # both grow doubly exponentially with depth
    assert th.implicit_dimension(32, 3) > th.implicit_dimension(32, 2) ** 1.5
    rows = th.implicit_dimension_table([2, 4], [1, 2])
    assert [(r["d"], r["depth"], r["degree"]) for r in rows] == [(2, 1, 2), (4, 1, 2), (2, 2, 4), (4, 2, 4)]
    with pytest.raises(ValueError, match="depth >= 1"):
        th.implicit_dimension(3, 0)
    table = th.format_dimension_table(rows).splitlines()
    assert len(table) == 4 and table[2].startswith("| 2 | 6 / 2 | 15 / 4 |")


# ---------------------------------------------------------------- (non-)linearity probes

def _line(fn, d=4, seed=0, n=201):
    rng = np.random.default_rng(seed)
    ts = np.linspace(-1.5, 1.5, n)
    return ts, th.response_along_line(fn, rng.normal(size=d), rng.normal(size=d), ts)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_stacked_star_layers_have_degree_two_to_the_depth(depth):
    layers = th.star_stack(4, depth, seed=depth)

    def last_feature(x):
        return th.apply_star_stack(x, layers)[-1][:, 0]

    ts, values = _line(last_feature)
    assert th.polynomial_degree(ts, values) == 2**depth


@pytest.mark.parametrize("n_products", [1, 2, 3])
def test_a_skip_product_chain_gains_one_degree_per_product(n_products):
    # U-Net style: one factor from the deep path, one from the input
    layers = th.star_stack(4, n_products, seed=10 + n_products)
    ts, values = _line(lambda x: th.skip_star_chain(x, layers)[:, 0])
    assert th.polynomial_degree(ts, values) == n_products + 1


def test_toy_net_function_is_the_net_in_double_precision():
    net = toys.make_toy_net("star", "none", depth=2, width=4, seed=0)
    x = np.random.default_rng(0).normal(size=(16, 2))
    fn = toys.toy_net_function(net)
    with torch.no_grad():
        expected = net(torch.as_tensor(x, dtype=torch.float32)).numpy()
    assert fn(x).dtype == np.float64
    np.testing.assert_allclose(fn(x), expected, rtol=1e-4, atol=1e-5)
    ts, values = _line(fn, d=2)
    assert th.polynomial_degree(ts, values) == 4  # two star blocks: degree 2**2
    assert net.stem.weight.dtype == torch.float32  # the original is untouched


def test_affine_maps_are_straight_and_max_pooling_is_not_a_polynomial():
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(4, 3)), rng.normal(size=3)
    ts, values = _line(lambda x: x @ w + b)
    assert th.polynomial_degree(ts, values[:, 0]) == 1

    start, direction = rng.normal(size=(1, 2, 2)), rng.normal(size=(1, 2, 2))
    ts = np.linspace(-2, 2, 201)
    pooled = th.response_along_line(th.max_pool_2x2, start, direction, ts).reshape(-1)
    assert th.polynomial_degree(ts, pooled) is None  # a kink: no polynomial fits


def test_max_pooling_is_not_additive():
    a = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    b = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]])
    assert th.max_pool_2x2(a + b).item() == 1.0
    assert (th.max_pool_2x2(a) + th.max_pool_2x2(b)).item() == 2.0
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        th.max_pool_2x2(torch.ones(2, 2))


def test_affinity_gap_separates_affine_from_star_and_pooling():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(64, 5)), rng.normal(size=(64, 5))
    w, b = rng.normal(size=(5, 5)), rng.normal(size=5)
    assert th.affinity_gap(lambda v: v @ w + b, x, y) < 1e-14
    assert th.affinity_gap(th.StarLayer.random(5, 5, rng), x, y) > 1e-2
    xi, yi = torch.as_tensor(rng.normal(size=(8, 1, 4, 4))), torch.as_tensor(rng.normal(size=(8, 1, 4, 4)))
    assert th.affinity_gap(th.max_pool_2x2, xi, yi) > 1e-2


def test_response_along_line_checks_shapes():
    with pytest.raises(ValueError, match="same shape"):
        th.response_along_line(lambda v: v, np.zeros(3), np.zeros(2), np.linspace(0, 1, 5))


def test_polynomial_degree_needs_enough_points():
    with pytest.raises(ValueError, match="max_degree"):
        th.polynomial_degree(np.linspace(0, 1, 10), np.zeros(10), max_degree=20)


# ---------------------------------------------------------------- toy data and networks

def test_toy_data_is_balanced_standardised_and_seeded():
    for name in toys.TOY_DATASETS:
        data = toys.make_toy_data(name, n_train=200, n_test=100, seed=3)
        assert data.x_train.shape == (200, 2) and data.x_test.shape == (100, 2)
        assert data.x_train.dtype == torch.float32
        assert data.y_train.sum().item() == 100  # balanced
        np.testing.assert_allclose(data.x_train.mean(0).numpy(), 0, atol=1e-5)
        np.testing.assert_allclose(data.x_train.std(0, unbiased=False).numpy(), 1, atol=1e-5)
        again = toys.make_toy_data(name, n_train=200, n_test=100, seed=3)
        assert torch.equal(data.x_train, again.x_train) and torch.equal(data.x_test, again.x_test)
        other = toys.make_toy_data(name, n_train=200, n_test=100, seed=4)
        assert not torch.equal(data.x_train, other.x_train)
        assert not torch.equal(data.x_train[:100], data.x_test)  # train and test are separate draws


def test_unknown_names_list_the_valid_choices():
    with pytest.raises(ValueError, match="valid: moons, circles, xor, spirals"):
        toys.make_toy_data("mooons")
    with pytest.raises(ValueError, match="valid: stack, sum, star"):
        toys.ToyNet(fusion="product")
    with pytest.raises(ValueError, match="valid: none, relu, gelu"):
        toys.ToyNet(activation="tanh")
    with pytest.raises(ValueError, match="depth and width"):
        toys.ToyNet(depth=0)


@pytest.mark.parametrize("depth,width", [(1, 4), (2, 8), (3, 5)])
def test_parameter_budgets_are_matched(depth, width):
    counts = {toys.ToyNet(f, a, depth, width).n_params for f in toys.TOY_FUSIONS for a in toys.TOY_ACTIVATIONS}
    assert counts == {3 * width + depth * 2 * (width**2 + width) + width + 1}


def test_make_toy_net_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a, b = toys.make_toy_net(seed=7), toys.make_toy_net(seed=7)
    assert torch.rand(1).item() == expected.item()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = toys.make_toy_net(seed=8)
    assert not torch.equal(a.stem.weight, c.stem.weight)


@pytest.mark.parametrize("fusion", ["stack", "sum"])
def test_linear_networks_collapse_to_one_affine_map(fusion):
    net = toys.make_toy_net(fusion, "none", depth=3, width=6, seed=1)
    w, b = toys.collapse_to_affine(net)
    assert w.shape == (1, 2) and b.shape == (1,)
    x = toys.make_toy_data("moons", n_train=64, n_test=2).x_train
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), (x @ w.T + b).squeeze(1).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fusion,activation", [("star", "none"), ("stack", "relu"), ("sum", "gelu")])
def test_collapse_refuses_non_affine_networks(fusion, activation):
    with pytest.raises(ValueError, match="not affine"):
        toys.collapse_to_affine(toys.ToyNet(fusion, activation))


def test_training_is_deterministic_and_learns():
    threads = torch.get_num_threads()
    a = toys.run_toy_experiment("xor", "star", "none", depth=1, width=4, seed=5, steps=60, n_train=64, n_test=64)
    b = toys.run_toy_experiment("xor", "star", "none", depth=1, width=4, seed=5, steps=60, n_train=64, n_test=64)
    assert a.losses == b.losses and a.test_acc == b.test_acc
    assert a.losses[-1] < a.losses[0]
    assert torch.get_num_threads() == threads  # training runs single-threaded, then restores it


def test_star_network_without_activation_beats_the_linear_stack():
    """The acceptance check of notebook 02, with its default settings: on moons and
    circles, the star network without any activation classifies clearly better than
    the linear stack without activation (a straight line), averaged over 3 seeds."""
    results = toys.run_toy_grid(["moons", "circles"], ["stack", "star"], ["none"], seeds=(0, 1, 2))
    mean = {(r["dataset"], r["fusion"]): r["mean"] for r in toys.summarize_toy_grid(results)}
    # moons: a line already gets most points right, the margin is the curved ends
    assert mean["moons", "star"] - mean["moons", "stack"] >= 0.07
    assert mean["moons", "star"] >= 0.95
    # circles: no line separates a ring from its centre; a quadratic does
    assert mean["circles", "stack"] <= 0.6
    assert mean["circles", "star"] - mean["circles", "stack"] >= 0.3


def test_summary_and_table_are_computed_from_the_results():
    results = toys.run_toy_grid(["circles"], ["sum", "star"], ["none"], seeds=(0, 1), steps=5, n_test=64)
    summary = toys.summarize_toy_grid(results)
    assert [r["model"] for r in summary] == ["sum/none", "star/none"]
    star = [r.test_acc for r in results if r.fusion == "star"]
    assert summary[1]["mean"] == pytest.approx(np.mean(star))
    assert summary[1]["std"] == pytest.approx(np.std(star, ddof=1))
    table = toys.format_toy_table(summary)
    assert table.splitlines()[0] == "| model (fusion/activation) | params | circles |"
    assert f"| star/none | {results[-1].n_params} | {100 * summary[1]['mean']:.1f} ± " in table


def _run(dataset: str, model: str, seed: int, acc: float):
    fusion, activation = model.split("/")
    return toys.ToyResult(dataset, fusion, activation, 2, 8, seed, 321, acc, acc, [], None, None)


def test_paired_differences_pair_by_seed_and_give_a_t_interval_over_the_seeds():
    from scipy.stats import t as t_dist

    star, relu = [0.97, 0.98, 0.96], [0.99, 0.50, 0.97]  # seed 1: the ReLU network fails
    runs = ([_run("circles", "star/none", s, a) for s, a in enumerate(star)]
            + [_run("circles", "sum/relu", s, a) for s, a in enumerate(relu)]
            + [_run("xor", "star/none", s, 0.9 + 0.01 * s) for s in range(3)]
            + [_run("xor", "sum/relu", s, 0.8 + 0.01 * s + 0.001 * s * s) for s in range(3)])
    circles, xor = toys.paired_accuracy_differences(runs)
    diff = np.subtract(star, relu)
    half = t_dist.ppf(0.975, 2) * diff.std(ddof=1) / np.sqrt(3)
    assert circles["n_seeds"] == 3 and circles["diff"] == pytest.approx(diff.mean())
    assert (circles["low"], circles["high"]) == pytest.approx((diff.mean() - half, diff.mean() + half))
    assert circles["mean_a"] == pytest.approx(np.mean(star)) and circles["mean_b"] == pytest.approx(np.mean(relu))
    assert toys.difference_verdict(circles) == "no difference detected at 3 seeds"
    assert toys.difference_verdict(xor) == "star/none better"
    assert toys.difference_verdict(dict(xor, low=-0.2, high=-0.1)) == "sum/relu better"
    lines = toys.format_paired_differences([circles, xor]).splitlines()
    assert lines[0] == ("test accuracy, a minus b paired by seed, mean over 3 seed(s) and 95% t-interval over "
                        "the seeds, in accuracy points:")
    assert lines[1].split() == ["circles", "star/none", "97.0", "−", "sum/relu", "82.0", "=", "+15.0",
                                f"[{100 * (diff.mean() - half):+.1f},", f"{100 * (diff.mean() + half):+.1f}]",
                                "no", "difference", "detected", "at", "3", "seeds"]


def test_paired_differences_with_one_seed_are_preliminary_and_name_a_missing_model():
    runs = [_run("moons", "star/none", 0, 0.97), _run("moons", "sum/relu", 0, 0.86),
            _run("moons", "sum/relu", 1, 0.9)]
    (row,) = toys.paired_accuracy_differences(runs)
    assert row["n_seeds"] == 1 and row["diff"] == pytest.approx(0.11) and np.isnan(row["low"])
    assert toys.difference_verdict(row) == "one seed, preliminary (no interval)"
    text = toys.format_paired_differences([row])
    assert "t-interval" not in text and "one seed, preliminary" in text
    with pytest.raises(ValueError, match=r"no seed ran both 'star/none' and 'stack/relu' on 'moons'"):
        toys.paired_accuracy_differences(runs, b="stack/relu")


@pytest.mark.parametrize("fusion", toys.TOY_FUSIONS)
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_toy_net_degree_is_the_measured_degree(fusion, depth):
    net = toys.make_toy_net(fusion, "none", depth=depth, width=3, seed=depth)
    ts, values = _line(toys.toy_net_function(net), d=2)
    assert toys.toy_net_degree(fusion, "none", depth) == th.polynomial_degree(ts, values)
    assert toys.toy_net_degree(fusion, "relu", depth) is None  # piecewise: no polynomial
    with pytest.raises(ValueError, match="valid: none, relu, gelu"):
        toys.toy_net_degree(fusion, "tanh", depth)


def test_depth_sweep_summarises_each_depth_over_the_seeds():
    settings = dict(width=4, steps=3, n_train=32, n_test=32)
    rows = toys.run_depth_sweep((1, 2), "xor", "star", "none", seeds=(0, 1), **settings)
    assert [(r["depth"], r["degree"], r["width"], r["n_seeds"]) for r in rows] == [(1, 2, 4, 2), (2, 4, 4, 2)]
    accs = [toys.run_toy_experiment("xor", "star", "none", depth=2, seed=s, **settings).test_acc for s in (0, 1)]
    assert rows[1]["mean"] == pytest.approx(np.mean(accs)) and rows[1]["std"] == pytest.approx(np.std(accs, ddof=1))
    assert rows[1]["n_params"] == toys.ToyNet("star", "none", 2, 4).n_params == 97  # 3w + depth*2(w^2 + w) + w + 1
    text = toys.format_depth_sweep(rows).splitlines()
    assert text[0] == "star/none on xor, width 4, test accuracy over 2 seed(s):"
    mean, std = 100 * np.mean(accs), 100 * np.std(accs, ddof=1)
    assert text[2] == f"  depth 2 (degree  4,   97 params): {mean:5.1f} ± {std:4.1f} %"
    relu = toys.run_depth_sweep((1,), "xor", "star", "relu", seeds=(0,), **settings)
    assert toys.format_depth_sweep(relu).splitlines()[1].startswith("  depth 1 (degree  –,   57 params): ")
    with pytest.raises(ValueError, match="at least one depth"):
        toys.run_depth_sweep(())


def test_decision_surface_is_a_probability_grid():
    net = toys.make_toy_net(seed=0)
    xx, yy, prob = toys.decision_surface(net, (-1, 1, -2, 2), resolution=20)
    assert xx.shape == yy.shape == prob.shape == (20, 20)
    assert xx.min() == -1 and yy.max() == 2
    assert ((prob >= 0) & (prob <= 1)).all()


# ---------------------------------------------------------------- pitfalls

def test_star_stack_scales_explode_or_vanish_as_s_to_the_two_to_the_depth():
    scales = (0.5, 1.0, 2.0)
    raw = th.star_stack_scales(d=8, depth=3, input_scales=scales, n=64)
    assert raw.shape == (3, 4)
    for layer in range(4):  # a bias-free star layer is homogeneous of degree 2
        assert raw[2, layer] / raw[1, layer] == pytest.approx(2.0 ** (2**layer))
        assert raw[0, layer] / raw[1, layer] == pytest.approx(0.5 ** (2**layer))
    normed = th.star_stack_scales(d=8, depth=3, input_scales=scales, n=64, normalize=True)
    np.testing.assert_allclose(normed[:, 1:], 1.0, rtol=1e-9)


def test_sign_symmetry_of_the_product():
    rng = np.random.default_rng(2)
    layer = th.StarLayer.random(6, 3, rng, bias=False)
    x = rng.normal(size=(32, 6))
    np.testing.assert_array_equal(layer(-x), layer(x))  # (-a)(-b) = ab, exactly
    flipped = th.StarLayer(-layer.w1, layer.b1, -layer.w2, layer.b2)
    np.testing.assert_array_equal(flipped(x), layer(x))


# ---------------------------------------------------------------- figures and widget (02 sections)

def test_theory_figures_build():
    import matplotlib.pyplot as plt

    from starunet import plots_theory

    results = toys.run_toy_grid(["moons", "xor"], ["stack", "star"], ["none"], seeds=(0, 1), steps=3, n_test=32)
    summary = toys.summarize_toy_grid(results)
    ts = np.linspace(-1, 1, 5)
    figures = {
        "dimension": (plots_theory.plot_implicit_dimension([2, 8, 32], [1, 2]), 1),
        "lines": (plots_theory.plot_line_responses([("a", ts, ts), ("b", ts, ts**2)]), 2),
        "scales": (plots_theory.plot_star_scales((0.5, 1), np.ones((2, 3)), np.ones((2, 3))), 2),
        "boundary": (plots_theory.plot_decision_boundary(results[0], resolution=20), 1),
        "grid": (plots_theory.plot_toy_grid(results, resolution=20), 4),
        "bars": (plots_theory.plot_toy_accuracies(summary), 1),
    }
    for name, (fig, n_axes) in figures.items():
        assert len(fig.axes) == n_axes, name
        plt.close(fig)


def test_toy_playground_retrains_when_a_control_changes(monkeypatch):
    pytest.importorskip("ipywidgets")
    from starunet import widgets

    calls = []
    real = toys.run_toy_experiment

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**{**kwargs, "n_train": 32, "n_test": 32})

    monkeypatch.setattr(toys, "run_toy_experiment", spy)
    box = widgets.toy_playground(steps=2)
    dataset = box.children[0].children[0]
    dataset.value = "circles"
    assert [c["dataset"] for c in calls] == ["moons", "circles"]
    assert calls[-1] == {"steps": 2, "dataset": "circles", "fusion": "star", "activation": "none",
                         "depth": 2, "width": 8, "seed": 0}


def test_toy_accuracy_bars_use_the_course_colours():
    """A toy model is drawn as the course draws its fusion everywhere: the U-Net
    registry's colour for sum and star, grey for stack; hatched with an activation."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    from starunet import plots_theory
    from starunet.fusion import fusion_color

    summary = [{"dataset": "moons", "model": m, "mean": 0.9, "std": 0.01, "n_seeds": 2}
               for m in ("stack/none", "sum/none", "star/none", "star/relu")]
    fig = plots_theory.plot_toy_accuracies(summary)
    bars = {b.get_label(): b for b in fig.axes[0].containers}
    assert bars["sum/none"][0].get_facecolor() == to_rgba(fusion_color("sum"))
    assert bars["star/none"][0].get_facecolor() == to_rgba(fusion_color("star"))
    assert bars["star/relu"][0].get_edgecolor() == to_rgba(fusion_color("star"))
    assert bars["star/relu"][0].get_hatch() and not bars["star/none"][0].get_hatch()
    assert bars["stack/none"][0].get_facecolor() not in {to_rgba(fusion_color(f)) for f in ("sum", "star")}
    plt.close(fig)


def test_lesson_02_result_states_the_measured_degree_laws():
    from starunet import lessons

    lines = lessons.star_result()
    assert 3 <= len(lines) <= 5
    assert "measure degree 2, 4, 8, 16" in lines[1] and f"{th.implicit_dimension(32, 2):,}" in lines[1]
    assert "2, 3, 4, 5 after 1, 2, 3, 4 products" in lines[2]
