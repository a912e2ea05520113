"""V-Net (Milletari et al. 2016), width-configurable, from MONAI's V-Net blocks.

MONAI's ``VNet`` fixes its widths at 16-256 channels (45M parameters); this
assembles the same blocks (residual 5x5x5 stages, strided-convolution down,
transposed-convolution up) with a chosen base width and depth.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.networks.nets.vnet import (
    DownTransition,
    InputTransition,
    OutputTransition,
    UpTransition,
)
from torch import nn


class VNet3D(nn.Module):
    """A volumetric V-Net mapping ``(B, in, D, H, W)`` to logits ``(B, out, D, H, W)``.

    Args:
        in_channels: input channels (1 for MRI).
        out_channels: classes, background included.
        base_channels: width of the first stage; each level doubles it. Must be
            a multiple of ``in_channels``.
        convs_per_level: residual convolutions in each down stage (its length is
            the number of down-sampling steps, so D, H, W must be multiples of
            ``2 ** len(convs_per_level)``).
        dropout: dropout of the deepest stages and of the skip connections.
        z_strides: down-sampling factor along D at each down stage (1 or 2).
            Short-axis cine is ~6 times coarser through-plane than in-plane,
            so by default D is halved only at the deepest stage, as nnU-Net
            does for anisotropic data; ``(2, 2, 2)`` is Milletari's isotropic
            V-Net. See :func:`vnet_divisors` for the input sizes it needs.
        z_kernels: through-plane size (odd) of the 5x5 in-plane kernels at each
            resolution, full resolution first (one entry per down stage, plus
            one). None keeps Milletari's 5x5x5 everywhere; ``(1, 1, 3, 3)``
            convolves only in-plane while a voxel is much finer in-plane than
            through-plane (1.6-3.1 mm against 5-10 mm), as nnU-Net's kernels
            for anisotropic data, so neighbouring slices 10 mm apart are not
            blurred into each other at full resolution.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 4,
        base_channels: int = 8,
        convs_per_level: tuple[int, ...] = (1, 2, 1),
        dropout: float = 0.0,
        z_strides: tuple[int, ...] | None = None,
        z_kernels: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        z_strides = _z_strides(convs_per_level, z_strides)
        act = ("elu", {"inplace": True})
        levels = len(convs_per_level)
        widths = [base_channels * 2**i for i in range(levels + 1)]
        drop = dropout if dropout > 0 else None
        self.input = InputTransition(3, in_channels, base_channels, act)
        self.down = nn.ModuleList(
            DownTransition(3, widths[i], n, act, dropout_prob=drop if i >= levels - 2 else None)
            for i, n in enumerate(convs_per_level)
        )
        # Up stages mirror the down stages: the first keeps the deepest width,
        # each later one halves it, and the skip connection restores it.
        up_convs = list(reversed(convs_per_level))
        ups = [UpTransition(3, widths[levels], widths[levels], up_convs[0], act,
                            dropout_prob=(drop, dropout))]
        for k, i in enumerate(range(levels - 2, -1, -1), start=1):
            ups.append(UpTransition(3, widths[i + 2], widths[i + 1], up_convs[k], act,
                                    dropout_prob=(None, dropout)))
        self.up = nn.ModuleList(ups)
        # In-plane-only stages: MONAI's blocks resample by 2 in every axis.
        for i, stride in enumerate(z_strides):
            if stride == 1:
                down, up = self.down[i], self.up[levels - 1 - i]
                down.down_conv = _resampler(nn.Conv3d, down.down_conv, bias=False)
                up.up_conv = _resampler(nn.ConvTranspose3d, up.up_conv, bias=True)
        self.output = OutputTransition(3, widths[1], out_channels, act)
        if z_kernels is not None:
            self._set_z_kernels(_z_kernels(convs_per_level, z_kernels))
        # The last 1x1x1 convolution starts small, so a fresh model predicts
        # near-uniform probabilities (cross-entropy ~ ln C, the first check of
        # the training recipe) instead of the O(1) logits of default init.
        with torch.no_grad():
            self.output.conv2.weight.mul_(0.1)
            self.output.conv2.bias.zero_()

    def _set_z_kernels(self, z_kernels: tuple[int, ...]) -> None:
        """Give the 5x5x5 convolutions at resolution level ``i`` (0 = full) the
        through-plane size ``z_kernels[i]``; up stage ``k`` works at level
        ``levels - 1 - k``, the output stage at level 0."""
        levels = len(self.down)
        at_level = [(self.input, 0), (self.output, 0)]
        at_level += [(stage, i + 1) for i, stage in enumerate(self.down)]
        at_level += [(stage, levels - 1 - k) for k, stage in enumerate(self.up)]
        for stage, level in at_level:
            for parent in list(stage.modules()):
                for name, conv in list(parent.named_children()):
                    if isinstance(conv, nn.Conv3d) and conv.kernel_size == (5, 5, 5):
                        kz = z_kernels[level]
                        setattr(parent, name, nn.Conv3d(
                            conv.in_channels, conv.out_channels, kernel_size=(kz, 5, 5),
                            padding=(kz // 2, 2, 2), bias=conv.bias is not None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.input(x)]
        for stage in self.down:
            skips.append(stage(skips[-1]))
        out = skips.pop()
        for stage in self.up:
            out = stage(out, skips.pop())
        return self.output(out)


def _z_strides(convs_per_level: tuple[int, ...], z_strides: tuple[int, ...] | None,
               ) -> tuple[int, ...]:
    levels = len(convs_per_level)
    strides = tuple(z_strides) if z_strides is not None else (1,) * (levels - 1) + (2,)
    if len(strides) != levels or set(strides) - {1, 2}:
        raise ValueError("z_strides needs one factor of 1 or 2 per down stage")
    return strides


def _z_kernels(convs_per_level: tuple[int, ...], z_kernels: tuple[int, ...],
               ) -> tuple[int, ...]:
    kernels = tuple(z_kernels)
    if len(kernels) != len(convs_per_level) + 1 or any(
            k not in (1, 3, 5) for k in kernels):
        raise ValueError("z_kernels needs one size of 1, 3 or 5 per resolution level "
                         "(down stages + 1)")
    return kernels


def vnet_divisors(convs_per_level: tuple[int, ...] = (1, 2, 1),
                  z_strides: tuple[int, ...] | None = None, **_: object) -> tuple[int, int]:
    """``(in-plane, through-plane)`` sizes that H, W and D must be multiples of."""
    strides = _z_strides(tuple(convs_per_level), z_strides)
    return 2 ** len(convs_per_level), int(np.prod(strides))


def _resampler(kind: type[nn.Module], like: nn.Module, bias: bool) -> nn.Module:
    """A (1, 2, 2) strided (transposed) convolution with the channels of ``like``."""
    return kind(like.in_channels, like.out_channels, kernel_size=(1, 2, 2),
                stride=(1, 2, 2), bias=bias)


def build_vnet(
    in_channels: int = 1,
    out_channels: int = 4,
    base_channels: int = 8,
    convs_per_level: tuple[int, ...] = (1, 2, 1),
    dropout: float = 0.0,
    z_strides: tuple[int, ...] | None = None,
    z_kernels: tuple[int, ...] | None = None,
) -> nn.Module:
    """Build a :class:`VNet3D` (see there for the arguments)."""
    return VNet3D(in_channels, out_channels, base_channels, tuple(convs_per_level), dropout,
                  z_strides, z_kernels)


def adapt_z_kernels(state: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """``state`` (a V-Net's weights) for ``net``, a V-Net of the same widths whose
    convolutions may have other through-plane sizes (``z_kernels``).

    A kernel ``(out, in, kz, 5, 5)`` is cut to ``kz'`` taps by summing the taps
    that fold onto each new one around the centre, so that the new convolution
    answers as the old one did on a stack whose slices are alike (a warm start
    for fine-tuning, exact on z-constant input); a thinner kernel grows by
    zero taps. Every other entry is kept as it is.
    """
    target = net.state_dict()
    adapted = dict(state)
    for key, weight in state.items():
        want = target.get(key)
        if (want is None or weight.ndim != 5 or want.shape == weight.shape
                or want.shape[:2] != weight.shape[:2] or want.shape[3:] != weight.shape[3:]):
            continue
        old, new = weight.shape[2], want.shape[2]
        out = weight.new_zeros(want.shape)
        for tap in range(old):  # offset from the centre, clamped to the new size
            shift = max(-(new // 2), min(new // 2, tap - old // 2))
            out[:, :, new // 2 + shift] += weight[:, :, tap]
        adapted[key] = out
    return adapted


def widen_channels(state: dict[str, torch.Tensor], net: nn.Module,
                   generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """``state`` (a V-Net's weights) for ``net``, the same V-Net with every width
    multiplied by a whole factor ``r`` (e.g. base 8 -> 16): Net2WiderNet (Chen et
    al. 2016), a warm start that answers exactly as the narrow net.

    Wide channel ``c`` copies narrow channel ``c // r``, so residual sums and the
    skip concatenations line up. Each convolution splits the weight of a narrow
    input channel over its ``r`` copies in random shares that sum to one: the
    output is unchanged, while the copies get different gradients and can learn
    different features. Entries whose channel counts match are kept.
    """
    in_dim = {}
    for name, module in net.named_modules():
        if isinstance(module, nn.ConvTranspose3d):
            in_dim[f"{name}.weight"] = 0
        elif isinstance(module, nn.Conv3d):
            in_dim[f"{name}.weight"] = 1
    target = net.state_dict()
    wide = dict(state)
    for key, weight in state.items():
        want = target.get(key)
        if want is None or weight.ndim == 0:
            continue
        out = weight
        for dim in range(min(2, weight.ndim)):
            old, new = weight.shape[dim], want.shape[dim]
            if old == new:
                continue
            if new % old:
                raise ValueError(f"{key}: {new} channels are not a multiple of {old}")
            r = new // old
            out = out.index_select(dim, torch.arange(new) // r)
            if in_dim.get(key) == dim:
                shares = torch.rand(out.shape[:2], generator=generator) + 0.5
                shares = shares.unflatten(dim, (old, r))
                shares = (shares / shares.sum(dim + 1, keepdim=True)).flatten(dim, dim + 1)
                out = out * shares.reshape(*shares.shape, *[1] * (out.ndim - 2))
        wide[key] = out
    return wide


def decoder_stages(net: VNet3D) -> list[nn.Module]:
    """The up stages below full in-plane resolution, coarsest first (their outputs
    are what deep supervision scores; the last up stage feeds the output)."""
    return list(net.up)[:-1]
