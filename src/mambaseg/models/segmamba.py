"""SegMamba: long-range sequential modeling Mamba for 3D medical image segmentation.

Xing, Ye, Yang, Liu, Zhu, "SegMamba: Long-range Sequential Modeling Mamba For 3D Medical Image Segmentation",
MICCAI 2024, arXiv 2401.13560 (github ge-xing/SegMamba). Written from the spec (§3.2–3.3), not copied.

Layout: a Mamba encoder (stem Conv k7 s2 → 4 stages of Down → GSC → ToM Mamba layers × depth, each stage output
``MlpChannel(IN(x))``), a residual skip path of MONAI ``UnetResBlock``s (input, the 4 stage outputs, the last one
lifted to ``hidden`` channels) and a UNETR decoder (``UnetrUpBlock`` × 4, ``UnetResBlock`` + 1×1×1 conv head).
The encoder and the skip/decoder scaffold (:class:`mambaseg.nn.mamba_unetr3d.MambaUNETR3d`) are shared with
DM-SegNet (:mod:`mambaseg.models.dm_segnet`).

Fixes against the released code: the inter-slice scan uses the actual depth of every stage (not nslices hard-coded
for 128³), and any input size works (padded to a multiple of 16, cropped back).
"""

from __future__ import annotations

import torch.nn as nn

from mambaseg.nn.mamba_unetr3d import MambaUNETR3d

from .registry import register_model

__all__ = ["SegMamba"]


class SegMamba(MambaUNETR3d):
    """SegMamba: :class:`~mambaseg.nn.mamba_unetr3d.MambaUNETR3d` with its defaults (3 scan directions, ToM)."""


@register_model(spatial_dims=3)
def segmamba(**kwargs) -> nn.Module:
    """SegMamba, paper widths (48, 96, 192, 384), hidden 768 (~67.4 M parameters for 4 → 4 channels)."""
    return SegMamba(**kwargs)


@register_model(spatial_dims=3)
def segmamba_cpu(**kwargs) -> nn.Module:
    """CPU-sized SegMamba: widths (16, 32, 48, 64), hidden 128 (~2.5 M parameters)."""
    return SegMamba(**dict(dict(widths=(16, 32, 48, 64), hidden=128), **kwargs))


@register_model(spatial_dims=3)
def segmamba_tiny(**kwargs) -> nn.Module:
    """Test-sized SegMamba."""
    return SegMamba(**dict(dict(widths=(4, 8, 8, 16), depths=(1, 1, 1, 1), hidden=16), **kwargs))
