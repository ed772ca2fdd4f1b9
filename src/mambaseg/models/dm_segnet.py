"""DM-SegNet: dual Mamba architecture for 3D medical image segmentation with global context modeling.

Zhu, Ji, Liu, Tang, Kang, Xiao, Computers & Graphics 132 (2025) 104334; arXiv 2506.05297. Only the abstract is
available, so this is the reconstruction of spec §1.2 (see ``docs/spec.md``; every choice beyond the abstract is an
assumption):

* encoder = SegMamba's (stem, 4 stages of Down → GSC → Mamba × depth, ``MlpChannel(IN(x))`` outputs) with
  **QSMamba** layers: 4 scan directions (raster, reverse raster, inter-slice with d fastest, its reverse);
* residual skip path of MONAI ``UnetResBlock``s (as SegMamba);
* **MFMamba** decoder: at the ``dec_mamba_stages`` lowest-resolution scales, ``UnetrUpBlock`` (up, cat skip,
  ResBlock) → [GSC] → a residual ``dec_dirs``-direction Mamba layer, so the fused skip + upsampled sequence is scanned
  both ways ("bidirectional state synchronisation across scales"); plain ``UnetrUpBlock`` elsewhere; ResBlock +
  1×1×1 conv head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from mambaseg.nn.blocks import up_block
from mambaseg.nn.gsc import GSC
from mambaseg.nn.mamba_unetr3d import MambaUNETR3d
from mambaseg.nn.scan3d import QSMambaLayer

from .registry import register_model

__all__ = ["MFMambaUpBlock", "DMSegNet"]


class MFMambaUpBlock(nn.Module):
    """Decoder stage: ``UnetrUpBlock(c_in → c_out)`` (up ×2, cat skip, ResBlock) → [GSC] → residual Mamba layer.

    Args:
        in_channels: channels of the deeper decoder map.
        out_channels: channels of the skip and of the output.
        directions: scan directions of the Mamba layer (2 = forward + reverse raster; 4 = QSMamba).
        gsc: insert a GSC block before the Mamba layer.
        gsc_mode: ``"add"`` or ``"mul"``.
        grad_checkpoint: recompute the Mamba layer in the backward pass.
    """

    def __init__(self, in_channels: int, out_channels: int, directions: int = 2, gsc: bool = False,
                 gsc_mode: str = "add", grad_checkpoint: bool = False) -> None:
        super().__init__()
        self.up = up_block(in_channels, out_channels)
        self.gsc = GSC(out_channels, gsc_mode) if gsc else nn.Identity()
        self.mamba = QSMambaLayer(out_channels, directions, grad_checkpoint=grad_checkpoint)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Args: x: (B, C_in, D, H, W); skip: (B, C_out, 2D, 2H, 2W). Returns: (B, C_out, 2D, 2H, 2W)."""
        return self.mamba(self.gsc(self.up(x, skip)))


class DMSegNet(MambaUNETR3d):
    """DM-SegNet (spec §1.2 reconstruction).

    Args:
        in_channels: input channels (modalities).
        out_channels: classes (logits).
        widths: encoder stage channels.
        depths: QSMamba layers per encoder stage.
        hidden: channels of the deepest skip.
        enc_dirs: scan directions of the encoder Mamba layers (4 = QSMamba; 3 = SegMamba's ToM).
        dec_dirs: scan directions of the decoder Mamba layers (2 or 4).
        dec_mamba_stages: how many decoder scales, counted from the deepest, get a Mamba layer (0..4; 0 gives
            SegMamba's plain UNETR decoder).
        dec_gsc: GSC before every decoder Mamba layer.
        gsc_mode: ``"add"`` or ``"mul"`` for all GSC blocks.
        grad_checkpoint: recompute every encoder/decoder Mamba layer in the backward pass (memory for 96³/128³).
        enc_mamba: False → no QSMamba in the encoder (GSC + residual convolution blocks): ablation switch.
        enc_gsc: False → no GSC in the encoder: ablation switch.

    The paper credits QSMamba, GSC and the Mamba-driven decoder; the ablations switch each off in turn
    (``dm_segnet_cpu_no_qsmamba``, ``dm_segnet_cpu_no_gsc``, ``dm_segnet_cpu_conv_decoder`` = ``dec_mamba_stages=0``).

    Input (B, in_channels, D, H, W) of any size: padded to a multiple of 16 internally, logits cropped back.

    Examples::

        >>> net = DMSegNet(in_channels=4, out_channels=4, widths=(8, 16, 16, 32), hidden=32)
        >>> net(torch.randn(1, 4, 20, 24, 16)).shape
        torch.Size([1, 4, 20, 24, 16])
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 2, widths: Sequence[int] = (48, 96, 192, 384),
                 depths: Sequence[int] = (2, 2, 2, 2), hidden: int = 768, enc_dirs: int = 4, dec_dirs: int = 2,
                 dec_mamba_stages: int = 3, dec_gsc: bool = False, gsc_mode: str = "add",
                 grad_checkpoint: bool = False, deep_supervision: bool = False, enc_mamba: bool = True,
                 enc_gsc: bool = True) -> None:
        stages = dec_mamba_stages
        if isinstance(stages, bool) or not isinstance(stages, int) or not 0 <= stages <= 4:
            raise ValueError(f"dec_mamba_stages must be an int in 0..4, got {dec_mamba_stages!r}.")

        def block(level: int, c_in: int, c_out: int) -> nn.Module:
            if level < dec_mamba_stages:  # level 0 is the deepest decoder scale
                return MFMambaUpBlock(c_in, c_out, dec_dirs, dec_gsc, gsc_mode, grad_checkpoint)
            return up_block(c_in, c_out)

        super().__init__(in_channels, out_channels, widths, depths, hidden, enc_dirs, gsc_mode, grad_checkpoint,
                         decoder_block=block, deep_supervision=deep_supervision, enc_mamba=enc_mamba,
                         enc_gsc=enc_gsc)


@register_model(spatial_dims=3)
def dm_segnet(**kwargs) -> nn.Module:
    """DM-SegNet with the paper-scale widths (48, 96, 192, 384), hidden 768 (~69.1 M parameters for 4 → 4)."""
    return DMSegNet(**kwargs)


@register_model(spatial_dims=3)
def dm_segnet_cpu(**kwargs) -> nn.Module:
    """CPU-sized DM-SegNet: widths (16, 32, 48, 64), hidden 128 (~2.6 M parameters, ~10.5 MB fp32)."""
    return DMSegNet(**dict(dict(widths=(16, 32, 48, 64), hidden=128), **kwargs))


@register_model(spatial_dims=3)
def dm_segnet_cpu_no_qsmamba(**kwargs) -> nn.Module:
    """Ablation: ``dm_segnet_cpu`` whose encoder has GSC + residual 3×3×3 convolutions instead of QSMamba layers."""
    return dm_segnet_cpu(**dict(dict(enc_mamba=False), **kwargs))


@register_model(spatial_dims=3)
def dm_segnet_cpu_no_gsc(**kwargs) -> nn.Module:
    """Ablation: ``dm_segnet_cpu`` without the encoder's GSC blocks."""
    return dm_segnet_cpu(**dict(dict(enc_gsc=False), **kwargs))


@register_model(spatial_dims=3)
def dm_segnet_cpu_conv_decoder(**kwargs) -> nn.Module:
    """Ablation: ``dm_segnet_cpu`` with a plain convolutional (UNETR) decoder instead of MFMamba."""
    return dm_segnet_cpu(**dict(dict(dec_mamba_stages=0), **kwargs))


@register_model(spatial_dims=3)
def dm_segnet_tiny(**kwargs) -> nn.Module:
    """Test-sized DM-SegNet."""
    return DMSegNet(**dict(dict(widths=(4, 8, 8, 16), depths=(1, 1, 1, 1), hidden=16), **kwargs))
