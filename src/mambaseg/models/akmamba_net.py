"""Akmamba-Net: a 2D U-Net with AKConv convolutions and SS2D ("Mamba-out") skip connections (spec §2.2).

"Medical image segmentation model based on improved Mamba" (2025). No code was released; this follows our
reconstruction: every 3×3 conv of a classic U-Net becomes an AKConv (DoubleConv = AKConv → AKConv, each ending in
BN + SiLU), skip k carries ``MambaOut(e_k)`` (SS2D on the encoder map), the decoder uses ConvTranspose2d(k2, s2),
concatenation and a DoubleConv, and a 1×1 conv gives the logits.

Shapes for 1×3×512² (paper widths): e1 64×512², e2 128×256², e3 256×128², e4 512×64², bottleneck 1024×32²;
decoder 512×64² → 256×128² → 128×256² → 64×512² → logits. Parameters 34.83 M with N = 9.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from mambaseg.models.registry import register_model
from mambaseg.nn.akconv import AKConv
from mambaseg.nn.padding import AnySizeMixin
from mambaseg.nn.ss2d import MambaOut

__all__ = ["AkmambaNet", "AKDoubleConv", "ConvBNSiLU"]


class ConvBNSiLU(nn.Sequential):
    """Plain 3×3 convolution (zero padding, no bias) → BN → SiLU: AKConv's place-holder in the ablations that switch
    AKConv off, ending in the same BN + SiLU so that only the sampling differs."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
                         nn.SiLU())


class AKDoubleConv(nn.Sequential):
    """AKConv(C_in → C_out) → AKConv(C_out → C_out); each AKConv ends in BN + SiLU.

    Args:
        in_channels: C_in.
        out_channels: C_out.
        num_param: AKConv sampling points N.
        centred: centred sampling shape + zero padding (see :class:`AKConv`).
        akconv: False replaces both AKConvs by :class:`ConvBNSiLU` (the ablations' base U-Net convolution).
    """

    def __init__(self, in_channels: int, out_channels: int, num_param: int = 9, centred: bool = False,
                 akconv: bool = True):
        if akconv:
            convs = (AKConv(in_channels, out_channels, num_param, centred=centred, zero_pad=centred),
                     AKConv(out_channels, out_channels, num_param, centred=centred, zero_pad=centred))
        else:
            convs = (ConvBNSiLU(in_channels, out_channels), ConvBNSiLU(out_channels, out_channels))
        super().__init__(*convs)


class AkmambaNet(AnySizeMixin, nn.Module):
    """Akmamba-Net.

    Args:
        in_channels: input channels (3 for RGB fundus images).
        out_channels: output logit channels (1 for binary segmentation with a sigmoid).
        widths: five channel widths, encoder level 1..4 and bottleneck.
        num_param: AKConv sampling points N (9 default; 5 is the AKConv paper's choice).
        mamba_residual: skip = ``x + SS2D(LN(x))`` instead of ``SS2D(x)``.
        centred: AKConvs use the centred sampling shape and zero padding instead of the official anchored shape.
        d_state: SS2D state size N.
        ss2d_expand: SS2D inner width = ``ss2d_expand`` x channels (2 in SS2D/VM-UNet).
        akconv: False → every AKConv becomes a plain 3×3 conv + BN + SiLU (ablation switch).
        mamba_skip: False → the skips carry the encoder map itself instead of ``MambaOut`` (ablation switch).

    ``akconv=False, mamba_skip=False`` is the paper's base U-Net at the same widths; the Akmamba-Net paper's Table 3
    ablates exactly these two switches (U-Net, +AKConv, +Mamba-out, both).

    Any H, W is accepted (padded internally to a multiple of 16, logits cropped back).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        widths: Sequence[int] = (64, 128, 256, 512, 1024),
        num_param: int = 9,
        mamba_residual: bool = False,
        centred: bool = False,
        d_state: int = 16,
        ss2d_expand: int = 2,
        akconv: bool = True,
        mamba_skip: bool = True,
    ):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 5 or min(widths) < 1:
            raise ValueError(f"AkmambaNet: widths must be 5 positive ints, got {widths!r}.")
        if int(in_channels) < 1 or int(out_channels) < 1:
            raise ValueError(f"AkmambaNet: in_channels and out_channels must be >= 1, got {in_channels}, "
                             f"{out_channels}.")
        self.in_channels, self.out_channels, self.widths = in_channels, out_channels, widths
        self.spatial_dims, self.size_multiple = 2, 16
        chans = (in_channels,) + widths
        self.akconv, self.mamba_skip = bool(akconv), bool(mamba_skip)
        self.encoder = nn.ModuleList(AKDoubleConv(chans[i], chans[i + 1], num_param, centred, self.akconv)
                                     for i in range(5))
        self.pool = nn.MaxPool2d(2)
        self.skips = nn.ModuleList(
            MambaOut(w, residual=mamba_residual, d_state=d_state, expand=ss2d_expand) if self.mamba_skip
            else nn.Identity() for w in widths[:4])
        # decoder level k (deep → shallow): up widths[k+1] → widths[k], cat skip, DoubleConv(2·widths[k] → widths[k])
        self.ups = nn.ModuleList(nn.ConvTranspose2d(widths[k + 1], widths[k], 2, stride=2) for k in range(4))
        self.decoder = nn.ModuleList(AKDoubleConv(2 * widths[k], widths[k], num_param, centred, self.akconv)
                                     for k in range(4))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x: (B, C_in, H, W) with H, W divisible by 16.

        Returns:
            logits (B, C_out, H, W).
        """
        feats = []
        for k, block in enumerate(self.encoder):
            x = block(x if k == 0 else self.pool(x))  # level k: (B, widths[k], H/2^k, W/2^k)
            feats.append(x)
        y = feats[4]
        for k in range(3, -1, -1):
            y = self.ups[k](y)  # (B, widths[k], H/2^k, W/2^k)
            y = self.decoder[k](torch.cat([y, self.skips[k](feats[k])], dim=1))
        return self.head(y)


@register_model(spatial_dims=2)
def akmamba_net(**kwargs) -> AkmambaNet:
    """Akmamba-Net with the classic U-Net widths (64 … 1024), 34.8 M parameters."""
    return AkmambaNet(**dict(dict(widths=(64, 128, 256, 512, 1024)), **kwargs))


@register_model(spatial_dims=2)
def akmamba_net_cpu(**kwargs) -> AkmambaNet:
    """Akmamba-Net at 1/4 width (16 … 256) with a lighter SS2D (state size 4, inner width 1x): the full-resolution
    skip scans H·W tokens, whose cost grows with batch·4·d_inner·H·W·N, so this is what trains on a CPU."""
    return AkmambaNet(**dict(dict(widths=(16, 32, 64, 128, 256), d_state=4, ss2d_expand=1), **kwargs))


@register_model(spatial_dims=2)
def akmamba_net_cpu_base(**kwargs) -> AkmambaNet:
    """Ablation (paper Table 3, row 1): ``akmamba_net_cpu`` with plain 3×3 convs and identity skips — the base U-Net
    at the same widths."""
    return akmamba_net_cpu(**dict(dict(akconv=False, mamba_skip=False), **kwargs))


@register_model(spatial_dims=2)
def akmamba_net_cpu_akconv(**kwargs) -> AkmambaNet:
    """Ablation: the base U-Net + AKConv (``akmamba_net_cpu`` without the Mamba-out skips)."""
    return akmamba_net_cpu(**dict(dict(mamba_skip=False), **kwargs))


@register_model(spatial_dims=2)
def akmamba_net_cpu_mambaout(**kwargs) -> AkmambaNet:
    """Ablation: the base U-Net + Mamba-out skips (``akmamba_net_cpu`` with plain 3×3 convs)."""
    return akmamba_net_cpu(**dict(dict(akconv=False), **kwargs))


@register_model(spatial_dims=2)
def akmamba_net_cpu_centred(**kwargs) -> AkmambaNet:
    """``akmamba_net_cpu`` with AKConv's centred sampling shape and zero padding: the official anchored shape samples
    (i..i+2, j..j+2) for output pixel (i, j), so each AKConv shifts its map by one pixel of its level and the
    encoder and decoder maps joined at a skip are misaligned unless the offsets learn to undo it."""
    return akmamba_net_cpu(**dict(dict(centred=True), **kwargs))


@register_model(spatial_dims=2)
def akmamba_net_cpu_fixed(**kwargs) -> AkmambaNet:
    """``akmamba_net_cpu`` with the two changes the diagnosis points to (issue 21): AKConv's centred sampling shape
    (no one-pixel shift per convolution) and residual Mamba-out skips ``x + SS2D(LN(x))``, which keep the encoder's
    fine detail on the skip — the plain ``SS2D(x)`` skip starts at 0.3 % of its input's norm at full resolution."""
    return akmamba_net_cpu(**dict(dict(centred=True, mamba_residual=True), **kwargs))


@register_model(spatial_dims=2)
def akmamba_net_tiny(**kwargs) -> AkmambaNet:
    """Minimal Akmamba-Net for tests."""
    return AkmambaNet(**dict(dict(widths=(4, 8, 8, 16, 16), d_state=4), **kwargs))
