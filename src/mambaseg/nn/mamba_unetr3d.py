"""The 3D Mamba encoder and UNETR-style scaffold shared by SegMamba and DM-SegNet (:mod:`mambaseg.models.segmamba`,
:mod:`mambaseg.models.dm_segnet`).

Layout: a Mamba encoder (stem Conv k7 s2 → 4 stages of Down → GSC → Mamba layers × depth, each stage output
``MlpChannel(IN(x))``), a residual skip path of MONAI ``UnetResBlock``s (input, the 4 stage outputs, the last one
lifted to ``hidden`` channels) and a UNETR decoder (``UnetrUpBlock`` × 4 or a model's own blocks, ``UnetResBlock`` +
1×1×1 conv head).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import UnetOutBlock

from .blocks import MlpChannel, res_block, up_block
from .gsc import GSC
from .padding import AnySizeMixin
from .scan3d import QSMambaLayer

__all__ = ["DecoderBlockFactory", "MambaEncoder3d", "MambaUNETR3d", "checked_widths"]

DecoderBlockFactory = Callable[[int, int, int], nn.Module]


def checked_widths(widths: Sequence[int], depths: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    widths, depths = tuple(int(w) for w in widths), tuple(int(d) for d in depths)
    if len(widths) != 4 or any(w < 1 for w in widths):
        raise ValueError(f"widths must be 4 positive ints (one per encoder stage), got {widths}.")
    if len(depths) != 4 or any(d < 0 for d in depths):
        raise ValueError(f"depths must be 4 ints >= 0 (Mamba layers per stage), got {depths}.")
    return widths, depths


class MambaEncoder3d(nn.Module):
    """Four-stage Mamba encoder (SegMamba's MambaEncoder with a configurable number of scan directions).

    Stage i: ``x = Down_i(x)`` (i=0: Conv3d k7 s2 p3; i>0: IN → Conv3d k2 s2) → ``GSC`` → ``QSMambaLayer`` × depth_i;
    the stage output is ``MlpChannel(IN(x))`` while the un-normalised x continues.

    Args:
        in_channels: input channels.
        widths: channels of the four stages.
        depths: Mamba layers per stage.
        directions: scan directions of every Mamba layer (3 = SegMamba ToM, 4 = QSMamba).
        gsc_mode: ``"add"`` or ``"mul"`` (see :class:`mambaseg.nn.gsc.GSC`).
        grad_checkpoint: recompute the Mamba layers in the backward pass.
        mamba: False replaces every Mamba layer by a residual 3×3×3 convolution block (``UnetResBlock``): the
            "GSC + convolution" ablation.
        gsc: False removes the GSC blocks (identity): the "without GSC" ablation.

    Attributes:
        feature_info: ``[dict(num_chs, reduction)]`` of the four outputs (reductions 2, 4, 8, 16).
    """

    def __init__(self, in_channels: int, widths: Sequence[int] = (48, 96, 192, 384),
                 depths: Sequence[int] = (2, 2, 2, 2), directions: int = 3, gsc_mode: str = "add",
                 grad_checkpoint: bool = False, mamba: bool = True, gsc: bool = True) -> None:
        super().__init__()
        widths, depths = checked_widths(widths, depths)

        def layer(w: int) -> nn.Module:
            return QSMambaLayer(w, directions, grad_checkpoint=grad_checkpoint) if mamba else res_block(w, w)

        downs = [nn.Conv3d(in_channels, widths[0], kernel_size=7, stride=2, padding=3)]
        downs += [nn.Sequential(nn.InstanceNorm3d(widths[i - 1]), nn.Conv3d(widths[i - 1], widths[i], 2, stride=2))
                  for i in range(1, 4)]
        self.downs = nn.ModuleList(downs)
        self.gscs = nn.ModuleList(GSC(w, gsc_mode) if gsc else nn.Identity() for w in widths)
        self.stages = nn.ModuleList(nn.Sequential(*(layer(w) for _ in range(d))) for w, d in zip(widths, depths))
        self.norms = nn.ModuleList(nn.InstanceNorm3d(w) for w in widths)
        self.mlps = nn.ModuleList(MlpChannel(w) for w in widths)
        self.feature_info = [dict(num_chs=w, reduction=2 ** (i + 1)) for i, w in enumerate(widths)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Args: x: (B, C_in, D, H, W), each size divisible by 16.

        Returns:
            four maps (B, widths[i], S / 2^(i+1)).
        """
        outs = []
        for down, gsc, stage, norm, mlp in zip(self.downs, self.gscs, self.stages, self.norms, self.mlps):
            x = stage(gsc(down(x)))
            outs.append(mlp(norm(x)))
        return outs


class MambaUNETR3d(AnySizeMixin, nn.Module):
    """SegMamba's network and, through ``decoder_block``, the scaffold of DM-SegNet: a Mamba encoder, a residual
    skip path and a UNETR decoder.

    Args:
        in_channels: input channels (modalities).
        out_channels: classes (logits).
        widths: encoder stage channels.
        depths: Mamba layers per encoder stage.
        hidden: channels of the deepest skip (``UnetResBlock(widths[3] → hidden)``).
        directions: scan directions of the encoder Mamba layers (3 = ToM).
        gsc_mode: ``"add"`` (released code) or ``"mul"``.
        grad_checkpoint: recompute the Mamba layers in the backward pass (less memory, more time).
        decoder_block: optional factory ``(level, c_in, c_out) -> module`` for decoder level 0 (deepest, 1/8
            resolution) … 3 (full resolution); the module is called as ``block(x, skip)``. Default: UnetrUpBlock.
        deep_supervision: in training mode also return logits at 1/2 and 1/4 resolution (1×1×1 heads on the
            decoder outputs), as a list ``[full, 1/2, 1/4]``; in eval mode only the full-resolution logits.
        enc_mamba: False → the encoder's Mamba layers become residual conv blocks (ablation switch).
        enc_gsc: False → the encoder has no GSC blocks (ablation switch).

    Input (B, in_channels, D, H, W) of any size: padded to a multiple of 16 and the logits cropped back.
    """

    spatial_dims = 3
    size_multiple = 16

    def __init__(self, in_channels: int = 1, out_channels: int = 2, widths: Sequence[int] = (48, 96, 192, 384),
                 depths: Sequence[int] = (2, 2, 2, 2), hidden: int = 768, directions: int = 3,
                 gsc_mode: str = "add", grad_checkpoint: bool = False,
                 decoder_block: DecoderBlockFactory | None = None, deep_supervision: bool = False,
                 enc_mamba: bool = True, enc_gsc: bool = True) -> None:
        super().__init__()
        widths, depths = checked_widths(widths, depths)
        self.in_channels, self.out_channels = in_channels, out_channels
        if in_channels < 1 or out_channels < 1 or hidden < 1:
            raise ValueError(f"in_channels, out_channels and hidden must be >= 1, got {in_channels}, "
                             f"{out_channels}, {hidden}.")
        self.encoder = MambaEncoder3d(in_channels, widths, depths, directions, gsc_mode, grad_checkpoint,
                                      mamba=enc_mamba, gsc=enc_gsc)
        skip_in, skip_out = (in_channels, *widths), (*widths, hidden)  # skip path e1..e5 from input, o0..o3
        self.skips = nn.ModuleList(res_block(i, o) for i, o in zip(skip_in, skip_out))
        make = decoder_block or (lambda level, c_in, c_out: up_block(c_in, c_out))
        dec = (hidden, *widths[::-1])  # 768 → 384 → 192 → 96 → 48
        self.decoders = nn.ModuleList(make(level, dec[level], dec[level + 1]) for level in range(4))
        self.head = nn.Sequential(res_block(widths[0], widths[0]), UnetOutBlock(3, widths[0], out_channels))
        self.deep_supervision = bool(deep_supervision)
        # heads on the outputs of decoder levels 2 (1/2 resolution) and 1 (1/4 resolution)
        self.ds_heads = nn.ModuleList(UnetOutBlock(3, dec[level + 1], out_channels) for level in (2, 1)) \
            if self.deep_supervision else None

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: (B, in_channels, D, H, W), sizes divisible by 16 (``forward`` pads any size). Returns: logits."""
        feats = [x, *self.encoder(x)]  # full, 1/2, 1/4, 1/8, 1/16 resolution
        skips = [skip(f) for skip, f in zip(self.skips, feats)]  # e1..e5
        y = skips[4]
        outs = {}
        for level, block in enumerate(self.decoders):  # level 0 = deepest
            y = block(y, skips[3 - level])
            outs[level] = y
        logits = self.head(y)
        if self.deep_supervision and self.training:
            return [logits] + [head(outs[level]) for head, level in zip(self.ds_heads, (2, 1))]
        return logits
