"""MONAI 3D baselines behind the registry: UNETR, SwinUNETR and an nnU-Net-like DynUNet.

* ``unetr*`` — ``monai.networks.nets.UNETR`` (Hatamizadeh et al., WACV 2022). Its ViT has learned position
  embeddings for a **fixed input size** ``img_size`` (default 96³; every size divisible by the patch size 16), so the
  input must have exactly that spatial shape (sliding-window inference with ``roi = img_size``); any other shape
  raises a ``ValueError`` naming the expected size.
* ``swin_unetr*`` — ``monai.networks.nets.SwinUNETR`` (Hatamizadeh et al., 2022), feature_size 48; MONAI ≥ 1.5 takes
  no ``img_size`` but needs sizes divisible by 32: any input is padded to a multiple of 32 (and W to 64 when
  all sizes would be 32, see ``AnySizeSwinUNETR``) and cropped back.
* ``unet3d*`` — ``monai.networks.nets.DynUNet`` with 5 levels, 3³ kernels, strides (1, 2, 2, 2, 2), instance norm
  and LeakyReLU (nnU-Net's 3D full-resolution layout); padded to a multiple of 16.

Each has ``_cpu`` and ``_tiny`` variants; all take ``in_channels`` and ``out_channels``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets import UNETR, DynUNet, SwinUNETR

from mambaseg.nn.padding import AnySizeMixin, check_input

from .registry import register_model

__all__ = ["FixedSizeUNETR", "AnySizeSwinUNETR", "DynUNet3d"]


class FixedSizeUNETR(nn.Module):
    """MONAI UNETR whose input size is fixed to ``img_size`` (checked with a clear error).

    Args:
        in_channels: input channels.
        out_channels: classes.
        img_size: the one accepted spatial size (D, H, W) or an int for a cube; every size divisible by 16.
        feature_size: UNETR decoder base width.
        hidden_size: ViT width.
        mlp_dim: ViT MLP width.
        num_heads: attention heads (must divide ``hidden_size``).
    """

    patch_size = 16

    def __init__(self, in_channels: int = 1, out_channels: int = 2, img_size: int | Sequence[int] = (96, 96, 96),
                 feature_size: int = 16, hidden_size: int = 768, mlp_dim: int = 3072, num_heads: int = 12) -> None:
        super().__init__()
        size = (int(img_size),) * 3 if isinstance(img_size, int) else tuple(int(s) for s in img_size)
        if len(size) != 3 or any(s < self.patch_size or s % self.patch_size for s in size):
            raise ValueError(f"img_size must be 3 positive multiples of {self.patch_size}, got {img_size!r}.")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size must be divisible by num_heads, got {hidden_size} and {num_heads}.")
        self.in_channels, self.out_channels, self.img_size = in_channels, out_channels, size
        self.net = UNETR(in_channels, out_channels, img_size=size, feature_size=feature_size,
                         hidden_size=hidden_size, mlp_dim=mlp_dim, num_heads=num_heads)
        for block in self.net.vit.blocks:  # MONAI builds a cross-attention LayerNorm it never uses: drop it
            if not getattr(block, "with_cross_attention", True) and hasattr(block, "norm_cross_attn"):
                block.norm_cross_attn = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: (B, in_channels, *img_size) exactly. Returns: logits (B, out_channels, *img_size)."""
        check_input(x, self.in_channels, 3, "unetr")
        if tuple(x.shape[2:]) != self.img_size:
            raise ValueError(f"unetr: input spatial size {tuple(x.shape[2:])} differs from the fixed img_size "
                             f"{self.img_size} the model was built with; crop/tile the input (sliding window with "
                             f"roi={self.img_size}) or build the model with img_size={tuple(x.shape[2:])}.")
        return self.net(x)


class AnySizeSwinUNETR(AnySizeMixin, nn.Module):
    """MONAI SwinUNETR for any input size (padded to a multiple of 32, logits cropped back).

    Args:
        in_channels: input channels.
        out_channels: classes.
        feature_size: embedding width (divisible by 12).
        depths: Swin blocks per stage.
        num_heads: attention heads per stage.
        use_checkpoint: gradient checkpointing inside the Swin stages.
    """

    spatial_dims = 3
    size_multiple = 32

    def __init__(self, in_channels: int = 1, out_channels: int = 2, feature_size: int = 48,
                 depths: Sequence[int] = (2, 2, 2, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
                 use_checkpoint: bool = False) -> None:
        super().__init__()
        if feature_size < 12 or feature_size % 12:
            raise ValueError(f"feature_size must be a positive multiple of 12, got {feature_size}.")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.net = SwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=feature_size,
                             depths=tuple(depths), num_heads=tuple(num_heads), use_checkpoint=use_checkpoint)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: (B, in_channels, D, H, W), sizes divisible by 32. Returns: logits (cropped by ``forward``)."""
        if all(s == self.size_multiple for s in x.shape[2:]):
            # a 32³ input leaves one bottleneck voxel, which InstanceNorm rejects in training: pad W to 64
            x = F.pad(x, (0, self.size_multiple))
        return self.net(x)


class DynUNet3d(AnySizeMixin, nn.Module):
    """nnU-Net-like 3D U-Net (MONAI DynUNet, 5 levels) for any input size (padded to a multiple of 16).

    Args:
        in_channels: input channels.
        out_channels: classes.
        filters: channels of the 5 levels (nnU-Net: 32, 64, 128, 256, 320).
        res_block: residual conv blocks instead of plain double convs.
    """

    spatial_dims = 3
    size_multiple = 16

    def __init__(self, in_channels: int = 1, out_channels: int = 2,
                 filters: Sequence[int] = (32, 64, 128, 256, 320), res_block: bool = False) -> None:
        super().__init__()
        if len(filters) != 5 or any(int(f) < 1 for f in filters):
            raise ValueError(f"filters must be 5 positive ints (one per level), got {tuple(filters)}.")
        self.in_channels, self.out_channels = in_channels, out_channels
        strides = (1, 2, 2, 2, 2)
        self.net = DynUNet(3, in_channels, out_channels, kernel_size=(3,) * 5, strides=strides,
                           upsample_kernel_size=strides[1:], filters=tuple(int(f) for f in filters),
                           res_block=res_block)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: (B, in_channels, D, H, W), sizes divisible by 16. Returns: logits."""
        return self.net(x)


@register_model(spatial_dims=3)
def unetr(**kwargs) -> nn.Module:
    """UNETR (ViT-B/16 encoder, feature_size 16), fixed input 96³ (override with ``img_size``); ~92.8 M params."""
    return FixedSizeUNETR(**kwargs)


@register_model(spatial_dims=3)
def unetr_cpu(**kwargs) -> nn.Module:
    """Small UNETR for CPU: fixed input 64³, hidden 192, 4 heads, feature_size 8 (~5.2 M params)."""
    return FixedSizeUNETR(**dict(dict(img_size=64, hidden_size=192, mlp_dim=384, num_heads=4, feature_size=8),
                                 **kwargs))


@register_model(spatial_dims=3)
def unetr_tiny(**kwargs) -> nn.Module:
    """Test-sized UNETR, fixed input 32³."""
    return FixedSizeUNETR(**dict(dict(img_size=32, hidden_size=32, mlp_dim=64, num_heads=2, feature_size=4), **kwargs))


@register_model(spatial_dims=3)
def swin_unetr(**kwargs) -> nn.Module:
    """SwinUNETR, feature_size 48 (~62.2 M params); any input size."""
    return AnySizeSwinUNETR(**kwargs)


@register_model(spatial_dims=3)
def swin_unetr_cpu(**kwargs) -> nn.Module:
    """SwinUNETR with feature_size 12 (~4.1 M params)."""
    return AnySizeSwinUNETR(**dict(dict(feature_size=12), **kwargs))


@register_model(spatial_dims=3)
def swin_unetr_tiny(**kwargs) -> nn.Module:
    """Test-sized SwinUNETR."""
    return AnySizeSwinUNETR(**dict(dict(feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1)), **kwargs))


@register_model(spatial_dims=3)
def unet3d(**kwargs) -> nn.Module:
    """nnU-Net-like 3D U-Net (DynUNet, filters 32..320; ~16.5 M params); any input size."""
    return DynUNet3d(**kwargs)


@register_model(spatial_dims=3)
def unet3d_cpu(**kwargs) -> nn.Module:
    """3D U-Net with filters (16, 32, 64, 128, 160) (~4.1 M params)."""
    return DynUNet3d(**dict(dict(filters=(16, 32, 64, 128, 160)), **kwargs))


@register_model(spatial_dims=3)
def unet3d_tiny(**kwargs) -> nn.Module:
    """Test-sized 3D U-Net."""
    return DynUNet3d(**dict(dict(filters=(4, 8, 8, 16, 16)), **kwargs))
