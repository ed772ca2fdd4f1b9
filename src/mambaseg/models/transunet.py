"""TransUNet (R50-ViT hybrid; Chen et al. 2021, arXiv 2102.04306), randomly initialised.

* CNN encoder (ResNet-50 style): root 7×7/2 conv + GN + ReLU (1/2, ``width``) → 3×3/2 max-pool → bottleneck stages of
  ``resnet_layers`` = (3, 4, 9) units with outputs 4·width (1/4), 8·width (1/8), 16·width (1/16).
* ViT on the 1/16 map: 1×1 patch embedding to ``hidden_size``, learned position embedding for a ``pos_grid`` token
  grid (bilinearly interpolated to the actual grid, so any input size works), ``num_layers`` pre-norm Transformer
  blocks (``num_heads``, ``mlp_dim``), final LayerNorm. Tokens are (B, L, hidden), L = h·w row-major.
* Cascaded upsampler: tokens → (B, hidden, H/16, W/16) → 3×3 conv to ``head_channels`` → four blocks of
  (×2 bilinear upsampling, concat CNN skip at 1/8, 1/4, 1/2 / none at 1/1, two 3×3 conv + BN + ReLU) with
  ``decoder_channels`` → 3×3 conv head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from mambaseg.models.registry import register_model
from mambaseg.nn.blocks import conv_norm_act, norm_layer
from mambaseg.nn.padding import AnySizeMixin

__all__ = ["TransUNet"]




def group_norm(channels: int) -> nn.Module:
    return norm_layer("group", channels)


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1×1 (C_out/4) → 3×3/stride → 1×1 (C_out), GroupNorm, projection shortcut when needed."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        mid = out_channels // 4
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, mid, 1, bias=False), group_norm(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False), group_norm(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 1, bias=False), group_norm(out_channels),
        )
        self.shortcut = (nn.Identity() if stride == 1 and in_channels == out_channels else
                         nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                       group_norm(out_channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class TransformerBlock(nn.Module):
    """Pre-norm ViT block: x + MHSA(LN(x)); x + MLP(LN(x)). Tokens (B, L, hidden)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, hidden_size), nn.Dropout(dropout))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(self.norm1(x)), "b l (three h e) -> three b h l e", three=3, h=self.num_heads)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, heads, L, head_dim)
        x = x + self.drop(self.proj(rearrange(a, "b h l e -> b l (h e)")))
        return x + self.mlp(self.norm2(x))


class TransUNet(AnySizeMixin, nn.Module):
    """TransUNet (R50-ViT-B/16 hybrid with cascaded upsampler).

    Args:
        in_channels: input channels.
        out_channels: output logit channels.
        width: ResNet root width (64 for ResNet-50); stage outputs are 4, 8, 16 × width.
        resnet_layers: bottleneck units per stage (ResNet-50: 3, 4, 9 in TransUNet's truncated R50).
        hidden_size: ViT token width.
        num_layers: Transformer depth.
        num_heads: attention heads (must divide hidden_size).
        mlp_dim: Transformer MLP width.
        dropout: dropout in the embeddings and MLPs (0.1 in the paper).
        head_channels: width of the conv after the token reshape (512 in the paper).
        decoder_channels: four decoder widths (256, 128, 64, 16 in the paper).
        pos_grid: token grid of the learned position embedding (14 = 224 / 16 in the paper).

    Any H, W is accepted (padded to a multiple of 16, logits cropped back).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        width: int = 64,
        resnet_layers: Sequence[int] = (3, 4, 9),
        hidden_size: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        mlp_dim: int = 3072,
        dropout: float = 0.1,
        head_channels: int = 512,
        decoder_channels: Sequence[int] = (256, 128, 64, 16),
        pos_grid: int = 14,
    ):
        super().__init__()
        if int(in_channels) < 1 or int(out_channels) < 1:
            raise ValueError(f"TransUNet: in_channels and out_channels must be >= 1, got {in_channels}, "
                             f"{out_channels}.")
        if len(resnet_layers) != 3 or min(resnet_layers) < 1:
            raise ValueError(f"TransUNet: resnet_layers must be 3 positive ints, got {resnet_layers!r}.")
        if width < 4 or width % 4:
            raise ValueError(f"TransUNet: width must be a positive multiple of 4, got {width}.")
        if hidden_size % num_heads:
            raise ValueError(f"TransUNet: hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads}).")
        if len(decoder_channels) != 4:
            raise ValueError(f"TransUNet: decoder_channels must be 4 ints, got {decoder_channels!r}.")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.spatial_dims, self.size_multiple = 2, 16

        self.root = nn.Sequential(nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False), group_norm(width),
                                  nn.ReLU(inplace=True))
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        stages, c_in = [], width
        for s, (units, c_out) in enumerate(zip(resnet_layers, (4 * width, 8 * width, 16 * width))):
            blocks = [Bottleneck(c_in, c_out, stride=1 if s == 0 else 2)]
            blocks += [Bottleneck(c_out, c_out) for _ in range(units - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.ModuleList(stages)

        self.patch_embed = nn.Conv2d(16 * width, hidden_size, 1)
        self.pos_embed = nn.Parameter(torch.zeros(1, hidden_size, pos_grid, pos_grid))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.embed_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(hidden_size, num_heads, mlp_dim, dropout)
                                    for _ in range(num_layers))
        self.encoder_norm = nn.LayerNorm(hidden_size, eps=1e-6)

        self.conv_more = conv_norm_act(hidden_size, head_channels)
        skips = (8 * width, 4 * width, width, 0)  # 1/8, 1/4, 1/2, none at full resolution
        dec_in = (head_channels,) + tuple(decoder_channels[:-1])
        self.decoder = nn.ModuleList(
            nn.Sequential(conv_norm_act(i + s, o), conv_norm_act(o, o))
            for i, s, o in zip(dec_in, skips, decoder_channels))
        self.head = nn.Conv2d(decoder_channels[-1], out_channels, 3, padding=1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x: (B, C_in, H, W) with H, W divisible by 16.

        Returns:
            logits (B, C_out, H, W).
        """
        x = self.root(x)  # (B, width, H/2, W/2)
        skips = [x]
        x = self.pool(x)  # (B, width, H/4, W/4)
        for k, stage in enumerate(self.stages):
            x = stage(x)  # 4w @ 1/4, 8w @ 1/8, 16w @ 1/16
            if k < 2:
                skips.append(x)
        x = self.patch_embed(x)  # (B, hidden, h, w), h = H/16
        h, w = x.shape[-2:]
        pos = self.pos_embed
        if pos.shape[-2:] != (h, w):
            pos = F.interpolate(pos, size=(h, w), mode="bilinear", align_corners=False)
        t = self.embed_drop(rearrange(x + pos, "b c h w -> b (h w) c"))  # (B, L, hidden)
        for block in self.blocks:
            t = block(t)
        x = self.conv_more(rearrange(self.encoder_norm(t), "b (h w) c -> b c h w", h=h, w=w))
        for k, block in enumerate(self.decoder):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
            if k < 3:
                x = torch.cat([x, skips[2 - k]], dim=1)  # skips: [1/2, 1/4, 1/8]
            x = block(x)
        return self.head(x)


@register_model(spatial_dims=2)
def transunet(**kwargs) -> TransUNet:
    """TransUNet R50-ViT-B/16 size (hidden 768, 12 layers, 12 heads, MLP 3072)."""
    return TransUNet(**dict(dict(width=64, hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072), **kwargs))


@register_model(spatial_dims=2)
def transunet_cpu(**kwargs) -> TransUNet:
    """Small TransUNet for CPU (width 16, hidden 192, 4 layers)."""
    return TransUNet(**dict(dict(width=16, hidden_size=192, num_layers=4, num_heads=3, mlp_dim=768, head_channels=128,
                                 decoder_channels=(64, 32, 16, 16)), **kwargs))


@register_model(spatial_dims=2)
def transunet_tiny(**kwargs) -> TransUNet:
    """Minimal TransUNet for tests."""
    return TransUNet(**dict(dict(width=4, resnet_layers=(1, 1, 1), hidden_size=16, num_layers=1, num_heads=2,
                                 mlp_dim=32, head_channels=16, decoder_channels=(8, 8, 4, 4), pos_grid=4), **kwargs))
