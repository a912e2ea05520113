"""U-Net: segmentation-models-pytorch ``Unet`` with a light ResNet encoder."""

from __future__ import annotations

import warnings

import segmentation_models_pytorch as smp
from torch import nn


def build_unet(
    in_channels: int = 1,
    out_channels: int = 4,
    encoder_name: str = "tu-resnet10t",
    encoder_depth: int = 4,
    decoder_channels: tuple[int, ...] = (128, 64, 32, 16),
) -> nn.Module:
    """A 2D U-Net mapping ``(B, in, H, W)`` to logits ``(B, out, H, W)``.

    Width is set by ``encoder_name`` (any smp/timm encoder), ``encoder_depth``
    and ``decoder_channels`` (one entry per decoder stage). Encoders start
    from random weights: nothing is downloaded. H and W must be multiples of
    ``2 ** encoder_depth``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return smp.Unet(
            encoder_name=encoder_name,
            encoder_weights=None,
            encoder_depth=encoder_depth,
            decoder_channels=tuple(decoder_channels),
            in_channels=in_channels,
            classes=out_channels,
        )


def decoder_stages(net: nn.Module) -> list[nn.Module]:
    """The decoder blocks below full resolution, coarsest first (their outputs are
    what deep supervision scores; the last block feeds the segmentation head)."""
    return list(net.decoder.blocks)[:-1]
