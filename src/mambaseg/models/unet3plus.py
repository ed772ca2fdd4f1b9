"""UNet 3+: a U-Net with full-scale skip connections (Huang et al., ICASSP 2020, arXiv 2004.08790).

Encoder level i (i = 0..4, 0 = full resolution): ``E_i = DoubleConv(E_{i−1} max-pooled)``. Decoder level i (3..0)
concatenates five maps brought to level i's resolution, each by one 3×3 conv + BN + ReLU to ``cat_channels``:

* shallower encoder maps E_j, j < i: max-pool by 2^(i−j) (ceil mode) first;
* the same-level encoder map E_i: as is;
* deeper decoder maps D_j, j > i (D_4 = E_4): bilinear upsampling by 2^(j−i) first;

then fuses them with 3×3 conv + BN + ReLU (5·cat_channels → 5·cat_channels). The head is a 3×3 conv on D_0.
Deep supervision and the classification-guided module of the paper are not implemented.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from mambaseg.models.registry import register_model
from mambaseg.nn.blocks import conv_norm_act
from mambaseg.nn.padding import AnySizeMixin

__all__ = ["UNet3Plus"]




class UNet3Plus(AnySizeMixin, nn.Module):
    """UNet 3+.

    Args:
        in_channels: input channels.
        out_channels: output logit channels.
        widths: five encoder widths (paper: 64, 128, 256, 512, 1024).
        cat_channels: channels of each of the five rescaled maps (paper: 64); decoder width = 5·cat_channels.

    Any H, W is accepted (padded to a multiple of 16, logits cropped back).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        widths: Sequence[int] = (64, 128, 256, 512, 1024),
        cat_channels: int = 64,
    ):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 5 or min(widths) < 1:
            raise ValueError(f"UNet3Plus: widths must be 5 positive ints, got {widths!r}.")
        if int(in_channels) < 1 or int(out_channels) < 1 or int(cat_channels) < 1:
            raise ValueError(f"UNet3Plus: in_channels, out_channels and cat_channels must be >= 1, got "
                             f"{in_channels}, {out_channels}, {cat_channels}.")
        self.in_channels, self.out_channels, self.widths = in_channels, out_channels, widths
        self.spatial_dims, self.size_multiple = 2, 16
        up = 5 * cat_channels
        chans = (in_channels,) + widths
        self.encoder = nn.ModuleList(
            nn.Sequential(conv_norm_act(chans[i], chans[i + 1]), conv_norm_act(chans[i + 1], chans[i + 1]))
            for i in range(5))
        # lateral[i][j]: conv bringing source level j (encoder if j <= i, decoder if j > i) to decoder level i
        self.lateral = nn.ModuleList()
        for i in range(4):
            src = [widths[j] if j <= i or j == 4 else up for j in range(5)]
            self.lateral.append(nn.ModuleList(conv_norm_act(c, cat_channels) for c in src))
        self.fuse = nn.ModuleList(conv_norm_act(up, up) for _ in range(4))
        self.head = nn.Conv2d(up, out_channels, 3, padding=1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x: (B, C_in, H, W) with H, W divisible by 16.

        Returns:
            logits (B, C_out, H, W).
        """
        enc = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else F.max_pool2d(x, 2))  # (B, widths[i], H/2^i, W/2^i)
            enc.append(x)
        dec: dict[int, torch.Tensor] = {4: enc[4]}
        for i in range(3, -1, -1):
            size = enc[i].shape[-2:]
            parts = []
            for j in range(5):
                if j < i:
                    f = F.max_pool2d(enc[j], 2 ** (i - j), ceil_mode=True)
                elif j == i:
                    f = enc[j]
                else:
                    f = F.interpolate(dec[j], size=size, mode="bilinear", align_corners=False)
                parts.append(self.lateral[i][j](f))  # (B, cat_channels, H/2^i, W/2^i)
            dec[i] = self.fuse[i](torch.cat(parts, dim=1))  # (B, 5·cat_channels, H/2^i, W/2^i)
        return self.head(dec[0])


@register_model(spatial_dims=2)
def unet3plus(**kwargs) -> UNet3Plus:
    """UNet 3+ with the paper's widths (64 … 1024, cat_channels 64)."""
    return UNet3Plus(**dict(dict(widths=(64, 128, 256, 512, 1024), cat_channels=64), **kwargs))


@register_model(spatial_dims=2)
def unet3plus_cpu(**kwargs) -> UNet3Plus:
    """UNet 3+ at 1/4 width (16 … 256, cat_channels 16)."""
    return UNet3Plus(**dict(dict(widths=(16, 32, 64, 128, 256), cat_channels=16), **kwargs))


@register_model(spatial_dims=2)
def unet3plus_tiny(**kwargs) -> UNet3Plus:
    """Minimal UNet 3+ for tests."""
    return UNet3Plus(**dict(dict(widths=(4, 8, 8, 16, 16), cat_channels=4), **kwargs))
