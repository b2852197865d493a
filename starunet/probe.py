"""Looking inside the U-Net (notebook 03): parameter tables, the feature maps of every
block, their statistics, and variants side by side. The model itself is
:mod:`starunet.model`; nothing here trains.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from starunet.fusion import FUSIONS, Fusion, fusion_formula
from starunet.model import UNet, count_parameters, probabilities_from_logits


def parameter_table(model: UNet) -> list[dict]:
    """One row per block, in forward order: ``block``, ``in_channels``,
    ``out_channels``, ``params``. The rows sum to :func:`count_parameters`."""
    rows = [dict(block=f"encoder{i + 1}", in_channels=b.in_channels, out_channels=b.out_channels,
                 params=count_parameters(b)) for i, b in enumerate(model.encoder)]
    for i, block in enumerate(model.decoder):
        rows.append(dict(block=f"decoder{i + 1}", in_channels=block.in_channels,
                         out_channels=block.out_channels, params=count_parameters(block)))
        if i < len(model.fusions):
            fusion = model.fusions[i]
            rows.append(dict(block=f"fusion{i + 1} ({fusion.name})", in_channels=fusion.channels,
                             out_channels=fusion.out_channels, params=count_parameters(fusion)))
    rows.append(dict(block="head (1x1 conv)", in_channels=model.head.in_channels,
                     out_channels=model.head.out_channels, params=count_parameters(model.head)))
    return rows


def format_parameter_table(rows: list[dict]) -> str:
    """:func:`parameter_table` rows as an aligned text table with a total line."""
    lines = [f"{'block':<22}{'channels':>14}{'parameters':>14}"]
    for r in rows:
        lines.append(f"{r['block']:<22}{r['in_channels']:>7} -> {r['out_channels']:<4}{r['params']:>14,}")
    lines.append(f"{'total':<22}{'':>14}{sum(r['params'] for r in rows):>14,}")
    return "\n".join(lines)


def variant_parameter_counts() -> list[dict]:
    """One row per registered fusion (sorted by name): ``fusion``, its ``formula``,
    ``params`` of the default network and ``params_shallowest`` with the shallowest
    skip also fused. Counted by building each network, so a newly registered fusion
    with weights of its own shows its true cost."""
    return [dict(fusion=name, formula=fusion_formula(name),
                 params=count_parameters(UNet(fusion=name)),
                 params_shallowest=count_parameters(UNet(fusion=name, use_shallowest_skip=True)))
            for name in sorted(FUSIONS)]


def format_variant_parameter_counts(rows: list[dict]) -> str:
    """:func:`variant_parameter_counts` rows as an aligned text table."""
    width = max([len("formula"), *(len(r["formula"]) for r in rows)]) + 2
    lines = [f"{'fusion':<15}{'formula':<{width}}{'parameters':>12}{'with shallowest skip':>24}"]
    lines += [f"{r['fusion']:<15}{r['formula']:<{width}}{r['params']:>12,}{r['params_shallowest']:>24,}"
              for r in rows]
    return "\n".join(lines)


@torch.no_grad()
def capture_features(model: UNet, x: torch.Tensor, batch_statistics: bool = True) -> dict[str, torch.Tensor]:
    """Run ``model`` on ``x`` and return the intermediate tensors by name, in forward order:
    ``encoder1..4`` (the skips), ``decoder1..4`` (block outputs, before upsampling),
    ``fusion1..`` (fused outputs, each after its inputs ``fusionK.decoder`` and
    ``fusionK.skip``) and ``logits`` (the model's output).

    ``batch_statistics=True`` normalises with the batch's own BatchNorm statistics, as
    in training; the model is copied first, so its running statistics stay untouched.
    ``False`` uses the running statistics (eval mode); in a freshly initialised model
    those are mean 0 and variance 1, so every BatchNorm is the identity: the network as
    if it had no normalisation.
    """
    model = copy.deepcopy(model).train(batch_statistics)
    captured: dict[str, torch.Tensor] = {}  # hooks fire in forward order

    def keep(name: str):
        def hook(module, inputs, output):
            if isinstance(module, Fusion):
                captured[f"{name}.decoder"], captured[f"{name}.skip"] = inputs
            captured[name] = output
        return hook

    for prefix, blocks in [("encoder", model.encoder), ("decoder", model.decoder), ("fusion", model.fusions)]:
        for i, block in enumerate(blocks):
            block.register_forward_hook(keep(f"{prefix}{i + 1}"))
    output = model(x)
    captured["logits"] = output[0] if isinstance(output, tuple) else output
    return captured


def tensor_statistics(t: torch.Tensor) -> dict[str, float]:
    """Summary of an activation tensor: ``mean``, ``std``, ``max_abs``, ``kurtosis``
    (E[(x-μ)^4]/σ^4: 3 for a Gaussian, 9 for a product of two independent ones) and
    ``zero_fraction`` (exact zeros, e.g. after a ReLU)."""
    t = t.detach().double().flatten()
    mean, std = t.mean(), t.std(unbiased=False)
    kurtosis = ((t - mean) ** 4).mean() / std**4 if std > 0 else torch.tensor(float("nan"))
    return dict(mean=mean.item(), std=std.item(), max_abs=t.abs().max().item(),
                kurtosis=kurtosis.item(), zero_fraction=(t == 0).double().mean().item())


def feature_statistics(model: UNet, x: torch.Tensor, batch_statistics: bool = True) -> list[dict]:
    """:func:`tensor_statistics` of every block output, fused output and the logits,
    in forward order (the fusion inputs are left out; they are the rows before).
    Each row also has ``layer`` (its name) and ``depth`` (0, 1, 2, ...)."""
    return _statistics_rows(capture_features(model, x, batch_statistics))


def _statistics_rows(features: dict[str, torch.Tensor]) -> list[dict]:
    names = [n for n in features if "." not in n]  # skip the fusion inputs
    return [dict(layer=n, depth=i, **tensor_statistics(features[n])) for i, n in enumerate(names)]


def format_statistics_comparison(statistics: dict[str, list[dict]],
                                 keys: tuple[str, ...] = ("std", "kurtosis", "zero_fraction"),
                                 layers: tuple[str, ...] = ("fusion1", "fusion2", "fusion3")) -> str:
    """Compare networks at their fused layers: ``statistics`` maps a network's name to
    its :func:`feature_statistics` rows; one line per (statistic, layer), one column per
    network. A layer a network lacks is an error naming the layers it has."""
    def value(rows: list[dict], layer: str, key: str) -> float:
        for r in rows:
            if r["layer"] == layer:
                return r[key]
        raise KeyError(f"no layer {layer!r} in these statistics; they have "
                       f"{', '.join(repr(r['layer']) for r in rows)}")

    lines = [f"{'fused layer':<22}" + "".join(f"{name:>16}" for name in statistics)]
    for key in keys:
        for layer in layers:
            lines.append(f"{layer + ' ' + key:<22}"
                         + "".join(f"{value(rows, layer, key):>16.3g}" for rows in statistics.values()))
    return "\n".join(lines)


def inspect_variant(x: torch.Tensor, fusion: str = "star", activation: str | None = None,
                    narrow: float = 0.5, seed: int = 0) -> dict:
    """Build a freshly initialised ``UNet(fusion, activation, narrow)`` (weights from
    ``seed``, without touching the global RNG) and run it on the batch ``x`` with batch
    statistics. Returns ``model``, ``params``, ``logits`` and ``probabilities``
    (N, 1, H, W) and the ``statistics`` rows of :func:`feature_statistics`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = UNet(fusion=fusion, activation=activation, narrow=narrow)
    features = capture_features(model, x)
    return dict(model=model, params=count_parameters(model), logits=features["logits"],
                probabilities=probabilities_from_logits(features["logits"]),
                statistics=_statistics_rows(features))


def most_label_correlated_channel(feature: torch.Tensor, label: torch.Tensor) -> int:
    """The channel of ``feature`` (C, h, w) whose map has the largest |Pearson r| with
    ``label`` (1, H, W) average-pooled to h x w: the channel that "sees" the vessels
    most, a fair one to look at in an untrained network."""
    target = F.adaptive_avg_pool2d(label.reshape(1, 1, *label.shape[-2:]).float(), feature.shape[-2:])
    f = feature.flatten(1) - feature.flatten(1).mean(dim=1, keepdim=True)
    t = target.flatten() - target.mean()
    r = (f @ t) / (f.norm(dim=1) * t.norm() + 1e-12)
    return int(r.abs().argmax())
