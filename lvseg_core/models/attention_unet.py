"""Attention U-Net (Oktay et al. 2018) from MONAI's reference implementation."""

from __future__ import annotations

from monai.networks.nets import AttentionUnet
from monai.networks.nets.attentionunet import AttentionLayer
from torch import nn


def build_attention_unet(
    in_channels: int = 1,
    out_channels: int = 4,
    channels: tuple[int, ...] = (16, 32, 64, 128, 256),
    dropout: float = 0.0,
) -> nn.Module:
    """A 2D attention-gated U-Net mapping ``(B, in, H, W)`` to ``(B, out, H, W)``.

    ``channels`` sets the width of each level (one stride-2 step between
    levels), so H and W must be multiples of ``2 ** (len(channels) - 1)``.
    """
    return AttentionUnet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=(2,) * (len(channels) - 1),
        dropout=dropout,
    )


def decoder_stages(net: AttentionUnet) -> list[nn.Module]:
    """The attention-gated merges below full resolution, coarsest first (their
    outputs are what deep supervision scores). MONAI nests one level in the
    next, so the outermost merge, at full resolution, comes first in
    ``modules()``; it feeds the output convolution and is left out."""
    merges = [m for m in net.modules() if isinstance(m, AttentionLayer)]
    return merges[:0:-1]
