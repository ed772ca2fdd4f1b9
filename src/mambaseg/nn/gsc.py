"""Gated spatial convolution (GSC, SegMamba), applied before the Mamba layers of an encoder stage.

    b1  = ReLU(IN(Conv3(ReLU(IN(Conv3(x))))))
    b2  = ReLU(IN(Conv1(x)))
    out = ReLU(IN(Conv1(b1 ∘ b2))) + x          ∘ = "+" (released code, default) or "*" (the paper's gate)

All convolutions are C → C with bias and "same" padding; IN = InstanceNorm (affine=False). Parameters: 56C² + 4C
in 3D (20C² + 4C in 2D).
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["GSC", "GSC_MODES"]

GSC_MODES = ("add", "mul")


def _conv_in_relu(channels: int, kernel: int, spatial_dims: int) -> nn.Sequential:
    conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
    norm = nn.InstanceNorm3d if spatial_dims == 3 else nn.InstanceNorm2d
    return nn.Sequential(conv(channels, channels, kernel, padding=kernel // 2, bias=True), norm(channels),
                         nn.ReLU(inplace=True))


class GSC(nn.Module):
    """Gated spatial convolution block (residual).

    Args:
        channels: C (input = output channels).
        mode: ``"add"`` (b1 + b2, SegMamba's code) or ``"mul"`` (b1 · b2, a true gate).
        spatial_dims: 3 (Conv3d) or 2 (Conv2d).
    """

    def __init__(self, channels: int, mode: str = "add", spatial_dims: int = 3) -> None:
        super().__init__()
        if mode not in GSC_MODES:
            raise ValueError(f"GSC mode must be one of {GSC_MODES}, got {mode!r}.")
        if spatial_dims not in (2, 3):
            raise ValueError(f"GSC spatial_dims must be 2 or 3, got {spatial_dims!r}.")
        self.mode = mode
        self.branch3 = nn.Sequential(_conv_in_relu(channels, 3, spatial_dims), _conv_in_relu(channels, 3, spatial_dims))
        self.branch1 = _conv_in_relu(channels, 1, spatial_dims)
        self.fuse = _conv_in_relu(channels, 1, spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: (B, C, *S) with S = (D, H, W) or (H, W). Returns: (B, C, *S)."""
        b1, b2 = self.branch3(x), self.branch1(x)
        return self.fuse(b1 + b2 if self.mode == "add" else b1 * b2) + x
