"""3D scan orders and the QSMamba layer (quadri-directional spatial Mamba, DM-SegNet; SegMamba's ToM with 3).

Tokens of a volume (B, C, D, H, W) are flattened raster-wise, token index ``(d·H + h)·W + w`` (w fastest).
A scan order is a permutation ``p`` (L,): step i of the scan visits token ``p[i]``.

* k0 forward raster: ``p = 0, 1, …, L-1``;
* k1 reverse raster: ``reverse(k0)``;
* k2 inter-slice: order (h, w, d) with d fastest, i.e. step ``(h·W + w)·D + d`` visits token ``(d·H + h)·W + w``
  (SegMamba's ``nslices`` chunking with nslices = D of the stage);
* k3 reverse inter-slice: ``reverse(k2)``.

``directions=4`` uses k0..k3 (QSMamba), ``3`` uses k0, k1, k2 (SegMamba ToM), ``2`` k0, k1 (bidirectional,
SegMamba bimamba v2 / the MFMamba decoder), ``1`` k0 only. Orders are derived from the actual spatial shape at run
time and cached per (shape, device).
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
from einops import rearrange
from torch.utils.checkpoint import checkpoint

from .mamba import MultiDirMamba, SeqOrder, inverse_permutation

__all__ = ["ORDER_NAMES", "scan_order", "scan_orders", "seq_orders", "QSMambaLayer"]

ORDER_NAMES = ("forward", "reverse", "inter_slice", "inter_slice_reverse")


def scan_order(kind: str, shape: tuple[int, int, int], device: torch.device | str | None = None) -> torch.Tensor:
    """One scan order for tokens of a (D, H, W) volume flattened as ``(d·H + h)·W + w``.

    Args:
        kind: one of ``ORDER_NAMES`` (k0..k3).
        shape: spatial shape (D, H, W).
        device: device of the returned index tensor.

    Returns:
        LongTensor (D·H·W,): step i of the scan visits token ``order[i]``.
    """
    if len(shape) != 3 or any(int(s) < 1 for s in shape):
        raise ValueError(f"shape must be (D, H, W) with positive sizes, got {tuple(shape)}.")
    d, h, w = (int(s) for s in shape)
    raster = torch.arange(d * h * w, device=device)
    if kind == "forward":
        return raster
    if kind == "reverse":
        return raster.flip(0)
    inter = rearrange(raster, "(d h w) -> (h w d)", d=d, h=h, w=w)  # d fastest
    if kind == "inter_slice":
        return inter
    if kind == "inter_slice_reverse":
        return inter.flip(0)
    raise ValueError(f"kind must be one of {ORDER_NAMES}, got {kind!r}.")


@functools.lru_cache(maxsize=64)
def _cached_orders(shape: tuple[int, int, int], directions: int, device: torch.device):
    orders = tuple(scan_order(kind, shape, device) for kind in ORDER_NAMES[:directions])
    return orders, tuple(inverse_permutation(o) for o in orders)


def scan_orders(shape: tuple[int, int, int], directions: int = 4,
                device: torch.device | str | None = None) -> tuple[torch.Tensor, ...]:
    """The first ``directions`` orders (k0, k1, k2, k3) for a (D, H, W) volume, cached per (shape, device).

    The returned tensors are shared by the cache: do not modify them in place.
    """
    if isinstance(directions, bool) or not isinstance(directions, int) or not 1 <= directions <= 4:
        raise ValueError(f"directions must be an int in 1..4, got {directions!r}.")
    return _cached_orders(tuple(int(s) for s in shape), directions, torch.device(device or "cpu"))[0]


def seq_orders(shape: tuple[int, int, int], directions: int = 4) -> tuple[SeqOrder | None, ...]:
    """The first ``directions`` orders as :class:`~mambaseg.nn.mamba.SeqOrder` views (k0 = None, the identity):
    the same permutations as :func:`scan_orders`, applied by flips and transposes instead of gathers."""
    d, h, w = (int(s) for s in shape)
    length = d * h * w
    views = (None, SeqOrder(1, length, reverse=True), SeqOrder(d, h * w, transpose=True),
             SeqOrder(d, h * w, transpose=True, reverse=True))
    return views[:directions]


class QSMambaLayer(nn.Module):
    """Residual Mamba layer over all voxels: ``x + reshape(MultiDirMamba(LN(flatten(x))))`` (no MLP, no drop-path).

    Args:
        channels: C.
        directions: number of scan orders (4 = QSMamba, 3 = SegMamba ToM, 2 = bidirectional).
        d_state: SSM state size.
        d_conv: causal conv kernel.
        expand: inner expansion.
        grad_checkpoint: recompute the layer in the backward pass (``torch.utils.checkpoint``) to save memory.
    """

    def __init__(self, channels: int, directions: int = 4, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 grad_checkpoint: bool = False) -> None:
        super().__init__()
        if isinstance(directions, bool) or not isinstance(directions, int) or not 1 <= directions <= 4:
            raise ValueError(f"directions must be an int in 1..4, got {directions!r}.")
        self.directions = directions
        self.grad_checkpoint = grad_checkpoint
        self.norm = nn.LayerNorm(channels)
        self.mamba = MultiDirMamba(channels, directions, d_state=d_state, d_conv=d_conv, expand=expand)

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        d, h, w = x.shape[2:]
        orders = seq_orders((d, h, w), self.directions)  # flips / transposes, no gathers
        tokens = self.norm(rearrange(x, "b c d h w -> b (d h w) c"))  # (B, L, C), w fastest
        out = self.mamba.forward_channels(tokens.transpose(1, 2), orders)  # (B, C, L) contiguous
        return out.view(x.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: (B, C, D, H, W), any D, H, W ≥ 1. Returns: (B, C, D, H, W)."""
        if x.dim() != 5:
            raise ValueError(f"QSMambaLayer expects x of shape (B, C, D, H, W), got {tuple(x.shape)}.")
        if self.grad_checkpoint and torch.is_grad_enabled():
            return x + checkpoint(self._mix, x, use_reentrant=False)
        return x + self._mix(x)
