"""Skip-fusion ops: how a U-Net decoder combines its upsampled features with the
matching encoder skip. The whole study is the difference between two of them,
``sum`` (d + s) and ``star`` (d ⊙ s, the element-wise product).

Every op is a small ``nn.Module`` registered by name in :data:`FUSIONS`. Its
formula (how each "output" cell below starts) is the class attribute ``formula``,
where figures and notebook 03 read it (:func:`fusion_formula`):

==================  ============================  ===============  =====================
name                output                        out_channels     parameters
==================  ============================  ===============  =====================
``sum``             d + s                         C                0
``star``            d ⊙ s                         C                0
``concat``          [d, s] (channel concat)       2C               0 (next conv +9·C·C')
``residual_star``   d + d ⊙ s = d ⊙ (1 + s)       C                0
``gated``           d ⊙ σ(s)                      C                0
``max``             max(d, s)                     C                0
``attention``       [d, α ⊙ s], α = attention     2C               2·C·F + 2·F + 1
                    gate of Oktay et al. (2018)                    (F = max(1, C // 2))
``star_bn``         BN(d ⊙ s)                     C                2C (+ 2C running stats)
``sum_star_bn``     d + s + BN(d ⊙ s)             C                2C (+ 2C running stats)
==================  ============================  ===============  =====================

``d`` is the upsampled decoder tensor, ``s`` the encoder skip, both ``(N, C, H, W)``.
``concat`` and ``attention`` double the channels, so the next decoder block's first
conv gets ``2C`` input channels (:class:`starunet.UNet` reads ``out_channels``).

Adding an op is one class (its formula and ``combine``) and one decorator; it then
appears in every figure and table (its ``color`` and diagram ``symbol`` are optional
class attributes, with a fixed fallback derived from the name)::

    @register_fusion("mean")
    class MeanFusion(Fusion):
        formula = "(d + s) / 2"

        def combine(self, decoder, skip):
            return 0.5 * (decoder + skip)
"""
from __future__ import annotations

import hashlib
from typing import Callable, TypeVar

import torch
from torch import nn


class Fusion(nn.Module):
    """Base class: fuse ``decoder`` and ``skip`` of shape ``(N, channels, H, W)``.

    Subclasses implement :meth:`combine` and set ``formula``, the op in terms of
    ``d`` (decoder) and ``s`` (skip), e.g. ``"d ⊙ s"``: figure titles and tables
    read it from here, so it is written once. ``forward`` checks the shapes first
    so a mismatch names both tensors instead of failing deep inside an op.
    Class attribute ``channel_factor`` says how many channels come out per input
    channel (2 for concatenations).
    """

    name: str = "?"
    formula: str = ""
    channel_factor: int = 1
    symbol: str = ""   # its mark in the U-Net diagram (default: the name)
    color: str = ""    # its colour in every figure (default: one of FALLBACK_COLORS, by name)

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.out_channels = channels * self.channel_factor

    def forward(self, decoder: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if decoder.shape != skip.shape:
            raise ValueError(
                f"{self.name} fusion needs decoder and skip of the same shape, got "
                f"decoder {tuple(decoder.shape)} and skip {tuple(skip.shape)}")
        if decoder.shape[1] != self.channels:
            raise ValueError(f"{self.name} fusion was built for {self.channels} channels, "
                             f"got {decoder.shape[1]}")
        return self.combine(decoder, skip)

    def combine(self, decoder: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"channels={self.channels}, out_channels={self.out_channels}"


FUSIONS: dict[str, type[Fusion]] = {}

FusionClass = TypeVar("FusionClass", bound=type[Fusion])


def register_fusion(name: str) -> Callable[[FusionClass], FusionClass]:
    """Class decorator: register a :class:`Fusion` subclass under ``name``."""

    def decorator(cls: FusionClass) -> FusionClass:
        if name in FUSIONS:
            raise ValueError(f"fusion {name!r} is already registered (by {FUSIONS[name].__name__})")
        if not (isinstance(cls, type) and issubclass(cls, Fusion)):
            raise TypeError(f"register_fusion({name!r}) decorates Fusion subclasses, got {cls!r}")
        if not cls.formula:
            raise TypeError(f"fusion {name!r} ({cls.__name__}) has no formula; set the class "
                            f"attribute, e.g. formula = \"d ⊙ s\"")
        cls.name = name
        FUSIONS[name] = cls
        return cls

    return decorator


def _registered(name: str) -> type[Fusion]:
    """The class registered as ``name``; a typo gets the list of valid names."""
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; valid names: {', '.join(sorted(FUSIONS))}")
    return FUSIONS[name]


def make_fusion(name: str, channels: int) -> Fusion:
    """Build the fusion op registered as ``name`` for ``channels``-channel inputs."""
    cls = _registered(name)
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive int, got {channels!r}")
    return cls(channels)


# Colours for ops that set none: Paul Tol's muted palette minus the ones the built-in ops
# use; chosen by a hash of the name, so an op keeps its colour across runs and processes.
FALLBACK_COLORS = ("#332288", "#117733", "#44AA99", "#88CCEE", "#DDCC77", "#CC6677", "#AA4499")


def fusion_color(name: str) -> str:
    """The colour of the op registered as ``name`` in every figure (its class's
    ``color``, else a fixed fallback derived from the name)."""
    cls = _registered(name)
    if cls.color:
        return cls.color
    digest = int(hashlib.sha256(name.encode()).hexdigest(), 16)
    return FALLBACK_COLORS[digest % len(FALLBACK_COLORS)]


def fusion_symbol(name: str) -> str:
    """The op's short mark in the U-Net diagram (its class's ``symbol``, else its name)."""
    return _registered(name).symbol or name


def fusion_formula(name: str) -> str:
    """The formula of the op registered as ``name`` (``"star"`` -> ``"d ⊙ s"``),
    for figure titles and tables, without building the op."""
    return _registered(name).formula


# ---------------------------------------------------------------- parameter-free ops

@register_fusion("sum")
class SumFusion(Fusion):
    """``d + s``: the additive skip (FPN/LinkNet style). Linear, 0 parameters."""

    formula = "d + s"
    symbol, color = "+", "#0072B2"

    def combine(self, decoder, skip):
        return decoder + skip


@register_fusion("star")
class StarFusion(Fusion):
    """``d ⊙ s``: the star operation. 0 parameters, but degree 2 in its inputs, which
    is where an activation-free network's non-linearity comes from. In the U-Net
    one factor is always a skip (linear in the image up to max-pooling), so each
    fusion raises the polynomial degree by one rather than doubling it
    (notebook 02, section 6)."""

    formula = "d ⊙ s"
    symbol, color = "⊙", "#D55E00"

    def combine(self, decoder, skip):
        return decoder * skip


@register_fusion("concat")
class ConcatFusion(Fusion):
    """``[d, s]`` along channels: the classic U-Net (Ronneberger et al. 2015).
    0 parameters here; the next conv pays for them (its input doubles to 2C)."""

    formula = "[d, s]"
    symbol, color = "‖", "#009E73"
    channel_factor = 2

    def combine(self, decoder, skip):
        return torch.cat([decoder, skip], dim=1)


@register_fusion("residual_star")
class ResidualStarFusion(Fusion):
    """``d + d ⊙ s = d ⊙ (1 + s)``: the product as a correction to an identity
    path, so a skip near zero leaves ``d`` through instead of erasing it. 0 parameters."""

    formula = "d + d ⊙ s"
    symbol, color = "+⊙", "#CC79A7"

    def combine(self, decoder, skip):
        return decoder + decoder * skip


@register_fusion("gated")
class GatedFusion(Fusion):
    """``d ⊙ σ(s)``: the skip gates the decoder through a sigmoid (as in GLU /
    gated convolutions), so the product is bounded by ``|d|``. 0 parameters."""

    formula = "d ⊙ σ(s)"
    symbol, color = "⊙σ", "#E69F00"

    def combine(self, decoder, skip):
        return decoder * torch.sigmoid(skip)


@register_fusion("max")
class MaxFusion(Fusion):
    """``max(d, s)`` element-wise (maxout over the two inputs). Piecewise linear,
    0 parameters."""

    formula = "max(d, s)"
    symbol, color = "max", "#56B4E9"

    def combine(self, decoder, skip):
        return torch.maximum(decoder, skip)


# ---------------------------------------------------------------- learned ops

@register_fusion("attention")
class AttentionGateFusion(Fusion):
    """The additive attention gate of Attention U-Net (Oktay et al. 2018):

        α = σ(ψ(ReLU(W_s s + W_d d + b))),   output = [d, α ⊙ s]

    ``W_s``, ``W_d``: 1×1 convs C → F (F = max(1, C // 2); only ``W_d`` has a bias),
    ``ψ``: 1×1 conv F → 1 with bias, so ``2·C·F + 2·F + 1`` parameters. α is one
    coefficient per pixel, computed from both inputs, that scales the skip before
    the classic concatenation (so ``out_channels`` is 2C). Note the ReLU inside the
    gate: with this op the network is not activation-free any more.
    """

    formula = "[d, α ⊙ s]"
    symbol, color = "α‖", "#000000"
    channel_factor = 2

    def __init__(self, channels: int):
        super().__init__(channels)
        inter = max(1, channels // 2)
        self.skip_proj = nn.Conv2d(channels, inter, kernel_size=1, bias=False)
        self.decoder_proj = nn.Conv2d(channels, inter, kernel_size=1, bias=True)
        self.psi = nn.Conv2d(inter, 1, kernel_size=1, bias=True)

    def attention(self, decoder: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """The gate α, shape ``(N, 1, H, W)``, values in (0, 1)."""
        return torch.sigmoid(self.psi(torch.relu(self.skip_proj(skip) + self.decoder_proj(decoder))))

    def combine(self, decoder, skip):
        return torch.cat([decoder, self.attention(decoder, skip) * skip], dim=1)


# ---------------------------------------------------------------- normalised products
#
# Why normalise *after* the product: d and s each leave a BatchNorm with about unit
# scale, but their product does not -- its scale is the product of the two scales and
# its distribution is heavy-tailed (a product of two Gaussians has kurtosis 9), and
# each fusion of the U-Net multiplies again. Π-nets (Chrysos et al., CVPR 2020) make
# activation-free products train by normalising the product and keeping an additive
# path, ``out + identity + BN(out * identity)``; NAFNet's gate likewise normalises
# before its product. ``star_bn`` tests the normalisation alone, ``sum_star_bn`` the
# Π-net block. The BatchNorm is a plain ``nn.BatchNorm2d`` with its usual init
# (weight 1, bias 0): at initialisation the product term is standardised, not muted.


@register_fusion("star_bn")
class NormalizedStarFusion(Fusion):
    """``BN(d ⊙ s)``: the star operation, re-standardised per channel by a BatchNorm
    (2C parameters), so the product's scale does not compound through the decoder."""

    formula = "BN(d ⊙ s)"
    symbol, color = "N⊙", "#999933"

    def __init__(self, channels: int):
        super().__init__(channels)
        self.norm = nn.BatchNorm2d(channels)

    def combine(self, decoder, skip):
        return self.norm(decoder * skip)


@register_fusion("sum_star_bn")
class PolynomialFusion(Fusion):
    """``d + s + BN(d ⊙ s)``: the Π-net block (Chrysos et al. 2020) as a skip fusion --
    the sum's additive path plus a normalised second-order term (2C parameters)."""

    formula = "d + s + BN(d ⊙ s)"
    symbol, color = "+N⊙", "#882255"

    def __init__(self, channels: int):
        super().__init__(channels)
        self.norm = nn.BatchNorm2d(channels)

    def combine(self, decoder, skip):
        return decoder + skip + self.norm(decoder * skip)
