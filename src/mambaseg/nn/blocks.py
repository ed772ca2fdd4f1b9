"""Shared convolution blocks and norm/activation factories, for 2D and 3D (``spatial_dims``).

Models build their plain convolution blocks from here instead of each writing its own; the module names inside a
block (``0`` conv, ``1`` norm, ``2`` activation) are what the shipped checkpoints' ``state_dict`` keys expect.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from monai.networks.blocks import UnetResBlock, UnetrUpBlock

__all__ = ["MlpChannel", "act_layer", "conv_norm_act", "conv_layer", "norm_layer", "res_block", "up_block"]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_BATCH = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_INSTANCE = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}


def _dims(spatial_dims: int) -> int:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    return spatial_dims


def conv_layer(spatial_dims: int) -> type[nn.Module]:
    """``nn.Conv2d`` or ``nn.Conv3d``."""
    return _CONV[_dims(spatial_dims)]


def norm_layer(name: str, channels: int, spatial_dims: int = 2) -> nn.Module:
    """A normalisation layer by name: ``batch``, ``instance`` (affine) or ``group`` (gcd(32, C) groups)."""
    dims = _dims(spatial_dims)
    key = name.lower()
    if key == "batch":
        return _BATCH[dims](channels)
    if key == "instance":
        return _INSTANCE[dims](channels, affine=True)
    if key == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    raise ValueError(f"unknown norm {name!r}; expected batch, instance or group.")


def act_layer(name: str) -> nn.Module:
    """An activation by name: ``relu`` (in place), ``leakyrelu`` (slope 0.01, in place) or ``gelu``."""
    key = name.lower()
    if key == "relu":
        return nn.ReLU(inplace=True)
    if key == "leakyrelu":
        return nn.LeakyReLU(0.01, inplace=True)
    if key == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {name!r}; expected relu, leakyrelu or gelu.")


def conv_norm_act(in_channels: int, out_channels: int, spatial_dims: int = 2, kernel_size: int = 3,
                  norm: str = "batch", act: str = "relu") -> nn.Sequential:
    """``kernel_size`` conv (same padding, no bias) → norm → activation, as ``nn.Sequential`` (keys 0, 1, 2)."""
    conv = conv_layer(spatial_dims)(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
    return nn.Sequential(conv, norm_layer(norm, out_channels, spatial_dims), act_layer(act))


def res_block(in_channels: int, out_channels: int, spatial_dims: int = 3) -> nn.Module:
    """MONAI ``UnetResBlock`` 3^d (instance norm, LeakyReLU 0.01), stride 1: SegMamba's skip-path / head block."""
    return UnetResBlock(_dims(spatial_dims), in_channels, out_channels, kernel_size=3, stride=1, norm_name="instance")


def up_block(in_channels: int, out_channels: int, spatial_dims: int = 3) -> nn.Module:
    """MONAI ``UnetrUpBlock``: transposed conv k2 s2 (no bias) → cat skip → ``UnetResBlock(2·out → out)``."""
    return UnetrUpBlock(_dims(spatial_dims), in_channels, out_channels, kernel_size=3, upsample_kernel_size=2,
                        norm_name="instance", res_block=True)


class MlpChannel(nn.Module):
    """Channel MLP with 1×1 convs: C → hidden (default 2C, GELU) → C. x: (B, C, *S) → same shape."""

    def __init__(self, channels: int, hidden: int | None = None, spatial_dims: int = 3) -> None:
        super().__init__()
        hidden = hidden or 2 * channels
        conv = conv_layer(spatial_dims)
        self.fc1 = conv(channels, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = conv(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
