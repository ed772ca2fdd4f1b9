"""MONAI-backed 2D baselines of the Akmamba-Net comparison: U-Net, Attention U-Net, UNet++ (spec §4.2).

Each wraps a MONAI network so that it accepts any H, W (padded to a multiple of 16, logits cropped back), checks its
input channels with a clear error and is configured by one ``widths`` 5-tuple (encoder level 1..4 + bottleneck), so a
baseline of *equal width* to Akmamba-Net is ``unet(widths=(64, 128, 256, 512, 1024))`` (the default).

* ``unet``: ``monai.networks.nets.BasicUNet`` (two 3×3 conv + instance norm + LeakyReLU per level, max-pool down,
  transposed-conv up), features = widths + (widths[0],).
* ``attention_unet``: ``monai.networks.nets.AttentionUnet`` (Oktay et al. 2018; strided-conv down, attention gates on
  the skips, batch norm), channels = widths, strides 2.
* ``unet_plus_plus``: ``monai.networks.nets.BasicUNetPlusPlus`` (nested dense skips) without deep supervision; the
  final 1×1 head's output is returned as a tensor. The three unused intermediate heads are removed so that every
  parameter takes part in training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.nets import AttentionUnet, BasicUNet, BasicUNetPlusPlus

from mambaseg.models.registry import register_model
from mambaseg.nn.padding import AnySizeMixin

__all__ = ["UNet2D", "AttentionUNet2D", "UNetPlusPlus2D"]

PAPER_WIDTHS = (64, 128, 256, 512, 1024)
CPU_WIDTHS = (16, 32, 64, 128, 256)
TINY_WIDTHS = (4, 8, 8, 16, 16)


def _check_widths(name: str, widths: Sequence[int]) -> tuple[int, ...]:
    widths = tuple(int(w) for w in widths)
    if len(widths) != 5 or min(widths) < 1:
        raise ValueError(f"{name}: widths must be 5 positive ints (levels 1..4 + bottleneck), got {widths!r}.")
    return widths


class _MonaiWrapper(AnySizeMixin, nn.Module):
    """Common part: channel bookkeeping and the any-size forward around ``self.net``."""

    net: nn.Module

    def __init__(self, in_channels: int, out_channels: int, widths: Sequence[int]):
        super().__init__()
        if int(in_channels) < 1 or int(out_channels) < 1:
            raise ValueError(f"{type(self).__name__}: in_channels and out_channels must be >= 1, got {in_channels}, "
                             f"{out_channels}.")
        self.widths = _check_widths(type(self).__name__, widths)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.spatial_dims, self.size_multiple = 2, 16

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x: (B, C_in, H, W), H and W divisible by 16.

        Returns:
            logits (B, C_out, H, W).
        """
        return self.net(x)


class UNet2D(_MonaiWrapper):
    """U-Net (MONAI BasicUNet) with ``widths`` per level.

    Args:
        in_channels: input channels.
        out_channels: output logit channels.
        widths: five channel widths, level 1..4 + bottleneck.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, widths: Sequence[int] = PAPER_WIDTHS):
        super().__init__(in_channels, out_channels, widths)
        self.net = BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
                             features=self.widths + (self.widths[0],))


class AttentionUNet2D(_MonaiWrapper):
    """Attention U-Net (MONAI AttentionUnet) with ``widths`` per level.

    Args:
        in_channels: input channels.
        out_channels: output logit channels.
        widths: five channel widths, level 1..4 + bottleneck.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, widths: Sequence[int] = PAPER_WIDTHS):
        super().__init__(in_channels, out_channels, widths)
        self.net = AttentionUnet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
                                 channels=self.widths, strides=(2, 2, 2, 2))


class UNetPlusPlus2D(_MonaiWrapper):
    """UNet++ (MONAI BasicUNetPlusPlus, no deep supervision) with ``widths`` per level.

    Args:
        in_channels: input channels.
        out_channels: output logit channels.
        widths: five channel widths, level 1..4 + bottleneck.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, widths: Sequence[int] = PAPER_WIDTHS):
        super().__init__(in_channels, out_channels, widths)
        self.net = BasicUNetPlusPlus(spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
                                     features=self.widths + (self.widths[0],), deep_supervision=False)
        for k in (1, 2, 3):  # heads only used for deep supervision: parameter-free stand-ins
            setattr(self.net, f"final_conv_0_{k}", nn.Identity())

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x: (B, C_in, H, W), H and W divisible by 16.

        Returns:
            logits (B, C_out, H, W) of the final (x_0_4) head.
        """
        return self.net(x)[-1]


@register_model(spatial_dims=2)
def unet(**kwargs) -> UNet2D:
    """U-Net of equal width to Akmamba-Net (64 … 1024)."""
    return UNet2D(**dict(dict(widths=PAPER_WIDTHS), **kwargs))


@register_model(spatial_dims=2)
def unet_cpu(**kwargs) -> UNet2D:
    """U-Net at 1/4 width (16 … 256)."""
    return UNet2D(**dict(dict(widths=CPU_WIDTHS), **kwargs))


@register_model(spatial_dims=2)
def unet_tiny(**kwargs) -> UNet2D:
    """Minimal U-Net for tests."""
    return UNet2D(**dict(dict(widths=TINY_WIDTHS), **kwargs))


@register_model(spatial_dims=2)
def attention_unet(**kwargs) -> AttentionUNet2D:
    """Attention U-Net, widths 64 … 1024."""
    return AttentionUNet2D(**dict(dict(widths=PAPER_WIDTHS), **kwargs))


@register_model(spatial_dims=2)
def attention_unet_cpu(**kwargs) -> AttentionUNet2D:
    """Attention U-Net at 1/4 width (16 … 256)."""
    return AttentionUNet2D(**dict(dict(widths=CPU_WIDTHS), **kwargs))


@register_model(spatial_dims=2)
def attention_unet_tiny(**kwargs) -> AttentionUNet2D:
    """Minimal Attention U-Net for tests."""
    return AttentionUNet2D(**dict(dict(widths=TINY_WIDTHS), **kwargs))


@register_model(spatial_dims=2)
def unet_plus_plus(**kwargs) -> UNetPlusPlus2D:
    """UNet++, widths 64 … 1024."""
    return UNetPlusPlus2D(**dict(dict(widths=PAPER_WIDTHS), **kwargs))


@register_model(spatial_dims=2)
def unet_plus_plus_cpu(**kwargs) -> UNetPlusPlus2D:
    """UNet++ at 1/4 width (16 … 256)."""
    return UNetPlusPlus2D(**dict(dict(widths=CPU_WIDTHS), **kwargs))


@register_model(spatial_dims=2)
def unet_plus_plus_tiny(**kwargs) -> UNetPlusPlus2D:
    """Minimal UNet++ for tests."""
    return UNetPlusPlus2D(**dict(dict(widths=TINY_WIDTHS), **kwargs))
