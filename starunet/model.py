"""The ReLU-free U-Net of the source experiment, with the skip fusion and the
activation chosen by name.

    input (3, H, W)
    encoder1  3 -> 32    ──────────────────────────────── skip1 (unused by default)
      maxpool
    encoder2  32 -> 64   ────────────────────── skip2 ─┐
      maxpool                                          │
    encoder3  64 -> 128  ──────────── skip3 ─┐         │
      maxpool                                │         │
    encoder4  128 -> 256 ── skip4 ─┐         │         │
      maxpool                      │         │         │
    decoder1  256 -> 256, up ──  fuse1 ──    │         │
    decoder2  256 -> 128, up ────────────  fuse2 ──    │
    decoder3  128 -> 64,  up ──────────────────────  fuse3
    decoder4  64 -> 32,   up      (+ fuse4 with skip1 when use_shallowest_skip)
    head      1x1 conv 32 -> out_channels logits

Every block is conv3x3 -> BatchNorm -> conv3x3 -> BatchNorm, with the activation
after each BatchNorm -- none at all by default: the only non-linearities are the
max-pooling and the fusion (``star``: d ⊙ s). Channel counts above are for
``narrow=0.5, channel_multiplier=1`` (2,937,345 parameters); both scale them all.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from starunet.fusion import make_fusion

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "none": nn.Identity,  # the ReLU-free network of the study
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def make_activation(name: str | None) -> nn.Module:
    """The activation registered as ``name`` in :data:`ACTIVATIONS` (``None`` = "none")."""
    name = "none" if name is None else name
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid names: None, "
                         f"{', '.join(repr(n) for n in ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class ConvBlock(nn.Sequential):
    """conv3x3 -> BN -> act -> conv3x3 -> BN -> act (act = identity when "none").

    The convs keep their bias (as in the source) even though BatchNorm cancels it:
    that is 2 x out_channels parameters per block that the 2,937,345 count includes.
    """

    def __init__(self, in_channels: int, out_channels: int, activation: str | None):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            make_activation(activation),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            make_activation(activation),
        )
        self.in_channels = in_channels
        self.out_channels = out_channels


class UNet(nn.Module):
    """The U-Net of the study; ``forward(x)`` returns logits ``(N, out_channels, H, W)``.

    Args:
        in_channels, out_channels: image channels in, logit channels out.
        fusion: name in :data:`starunet.FUSIONS` ("star", "sum", "concat", ...).
        activation: name in :data:`ACTIVATIONS`; ``None`` = no activation anywhere.
        narrow, channel_multiplier: widths are ``round(64 * narrow * channel_multiplier)``
            times 1, 2, 4, 8 (32, 64, 128, 256 by default).
        return_feats: ``forward`` returns ``(logits, feats)``, ``feats`` the list of
            fused decoder features, deepest first (for deep supervision, plots).
        use_shallowest_skip: also fuse decoder4's output with encoder1's skip. The
            source leaves that skip unused (the faithful default); with this option
            the full-resolution features reach the head through one more fusion, at
            no parameter cost for parameter-free fusions, and ``feats`` has 4 entries.

    Inputs whose height or width is not a multiple of 16 (four 2x poolings) are
    reflect-padded at the bottom/right and the logits cropped back, so a whole
    605x700 STARE image works. Reflect, not zeros: zero padding would add a black
    edge that is not in the data, and the network would respond to it as to any
    other edge in the image.
    """

    levels = 4  # poolings; inputs are padded to a multiple of 2**levels

    def __init__(self, in_channels: int = 3, out_channels: int = 1, fusion: str = "star",
                 activation: str | None = None, narrow: float = 0.5, channel_multiplier: float = 1,
                 return_feats: bool = False, use_shallowest_skip: bool = False):
        super().__init__()
        base = round(64 * narrow * channel_multiplier)
        if base < 1:
            raise ValueError(f"narrow * channel_multiplier = {narrow * channel_multiplier} leaves "
                             "no channels; use a product of at least 1/64")
        widths = [base * 2**i for i in range(self.levels)]  # 32, 64, 128, 256
        self.fusion_name, self.activation_name = fusion, activation or "none"
        self.return_feats = return_feats

        self.encoder = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.encoder.append(ConvBlock(channels, width, activation))
            channels = width

        # The decoder mirrors the encoder; block i's upsampled output meets the
        # skip of the same resolution, deepest first. Concatenating fusions
        # double the channels that the next block receives.
        self.decoder, self.fusions = nn.ModuleList(), nn.ModuleList()
        n_fused = self.levels if use_shallowest_skip else self.levels - 1
        for i, width in enumerate(reversed(widths)):  # 256, 128, 64, 32
            self.decoder.append(ConvBlock(channels, width, activation))
            channels = width
            if i < n_fused:
                self.fusions.append(make_fusion(fusion, width))
                channels = self.fusions[-1].out_channels
        self.head = nn.Conv2d(channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor):
        self._check_input(x)
        height, width = x.shape[-2:]
        x = pad_to_multiple(x, 2**self.levels)

        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, kernel_size=2, stride=2)

        feats = []
        for i, block in enumerate(self.decoder):
            x = F.interpolate(block(x), scale_factor=2.0, mode="nearest")
            if i < len(self.fusions):
                x = self.fusions[i](x, skips[-1 - i])
                scale = 2 ** (self.levels - 1 - i)  # this level's downsampling factor
                feats.append(x[..., : -(-height // scale), : -(-width // scale)])  # ceil: drop padding

        logits = self.head(x)[..., :height, :width]
        return (logits, feats) if self.return_feats else logits

    def _check_input(self, x: torch.Tensor) -> None:
        in_channels = self.encoder[0].in_channels
        if x.ndim != 4 or x.shape[1] != in_channels:
            raise ValueError(f"UNet expects a batch (N, {in_channels}, H, W), got shape "
                             f"{tuple(x.shape)}; add a batch dimension with x[None] if needed")
        if min(x.shape[-2:]) < 2**self.levels:
            raise ValueError(f"UNet needs H and W of at least {2**self.levels} (it pools "
                             f"{self.levels} times), got {tuple(x.shape[-2:])}")


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad the bottom/right of ``x`` (N, C, H, W) up to multiples of ``multiple``."""
    pad_h, pad_w = (-x.shape[-2]) % multiple, (-x.shape[-1]) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """The number of (trainable) parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def probabilities_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Vessel probabilities: a sigmoid for one output channel, a softmax over channels
    for several. (A softmax over ONE channel is exp(z)/exp(z) = 1 everywhere -- the
    source's bug, see notebook 03.)"""
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
