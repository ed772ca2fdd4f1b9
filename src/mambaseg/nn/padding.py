"""N-D pad/crop helpers so that every network accepts any spatial size.

Encoder–decoder networks need spatial sizes divisible by ``2**(levels-1)``. Instead of asking the caller for that,
a model pads its input at the *end* of every spatial axis up to the next multiple, runs, and crops its logits back:

    >>> xp, shape = pad_to_multiple(x, 16)        # x: (B, C, 37, 45) -> xp: (B, C, 48, 48), shape == (37, 45)
    >>> logits = crop_to(net(xp), shape)          # (B, K, 37, 45)

:class:`AnySizeMixin` packages this (plus an input check with a clear error) for ``nn.Module`` subclasses that
implement ``forward_padded``. Works for 2D (B, C, H, W) and 3D (B, C, D, H, W) tensors alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["pad_to_multiple", "crop_to", "check_input", "AnySizeMixin", "PAD_MODES"]

PAD_MODES = ("constant", "replicate")


def pad_to_multiple(
    x: torch.Tensor, multiple: int | Sequence[int], mode: str = "constant", value: float = 0.0
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Pad the trailing spatial axes of ``x`` at their end up to a multiple of ``multiple``.

    Args:
        x: (B, C, *S) tensor; S = (H, W) or (D, H, W).
        multiple: one int for all spatial axes, or one per axis.
        mode: ``"constant"`` (fill with ``value``) or ``"replicate"`` (repeat the last row/column/slice).
        value: fill value for ``mode="constant"``.

    Returns:
        ``(x_padded, S)``: x_padded is (B, C, *S') with every S'_i the smallest multiple >= S_i; S is the original
        spatial shape for :func:`crop_to`. ``x`` itself is returned when no padding is needed.

    Raises:
        ValueError: ``x`` has fewer than 3 dims, ``multiple`` is not positive / has the wrong length, or ``mode``
            is unknown.
    """
    if x.dim() < 3:
        raise ValueError(f"pad_to_multiple: x must be (B, C, *S) with at least one spatial axis, got shape "
                         f"{tuple(x.shape)}.")
    nsp = x.dim() - 2
    mults = (multiple,) * nsp if isinstance(multiple, int) else tuple(multiple)
    if len(mults) != nsp or any(int(m) < 1 for m in mults):
        raise ValueError(f"pad_to_multiple: multiple must be a positive int or {nsp} positive ints, got {multiple!r}.")
    if mode not in PAD_MODES:
        raise ValueError(f"pad_to_multiple: mode must be one of {PAD_MODES}, got {mode!r}.")
    shape = tuple(int(s) for s in x.shape[2:])
    extra = [(-s) % m for s, m in zip(shape, mults)]
    if not any(extra):
        return x, shape
    # F.pad takes (last_lo, last_hi, second_last_lo, second_last_hi, ...)
    pads: list[int] = []
    for e in reversed(extra):
        pads += [0, e]
    if mode == "constant":
        return F.pad(x, pads, mode="constant", value=value), shape
    return F.pad(x, pads, mode="replicate"), shape


def crop_to(x: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """Crop the trailing spatial axes of ``x`` to ``spatial_shape`` (keeping the start of every axis).

    Args:
        x: (B, C, *S') tensor.
        spatial_shape: target S with S_i <= S'_i and ``len(S) == len(S')``.

    Returns:
        (B, C, *S) view of ``x``.

    Raises:
        ValueError: the number of axes differs or a target size exceeds the tensor's size.
    """
    spatial_shape = tuple(int(s) for s in spatial_shape)
    have = tuple(x.shape[2:])
    if len(spatial_shape) != len(have) or any(s > h or s < 1 for s, h in zip(spatial_shape, have)):
        raise ValueError(f"crop_to: cannot crop spatial shape {have} to {spatial_shape}; expected the same number of "
                         f"axes and 1 <= target <= size.")
    if spatial_shape == have:
        return x
    return x[(slice(None), slice(None)) + tuple(slice(0, s) for s in spatial_shape)]


def check_input(x: torch.Tensor, in_channels: int, spatial_dims: int, name: str = "model") -> None:
    """Raise a ValueError unless ``x`` is (B, in_channels, *S) with ``len(S) == spatial_dims``.

    Args:
        x: input tensor.
        in_channels: expected channel count C_in.
        spatial_dims: expected number of spatial axes (2 or 3).
        name: model name used in the message.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: input must be a torch.Tensor, got {type(x).__name__}.")
    axes = "(B, C, H, W)" if spatial_dims == 2 else "(B, C, D, H, W)"
    if x.dim() != spatial_dims + 2:
        raise ValueError(f"{name}: input must be {axes} ({spatial_dims + 2} dims), got shape {tuple(x.shape)}.")
    if x.shape[1] != in_channels:
        raise ValueError(f"{name}: input has {x.shape[1]} channels (shape {tuple(x.shape)}), but the model was built "
                         f"with in_channels={in_channels}.")


class AnySizeMixin:
    """Give an ``nn.Module`` a ``forward`` that checks, pads to ``size_multiple`` and crops the output back.

    The subclass sets ``in_channels``, ``spatial_dims``, ``size_multiple`` (and optionally ``pad_mode``) in its
    ``__init__`` and implements ``forward_padded(x)`` for inputs whose spatial sizes are multiples of
    ``size_multiple``. Put the mixin first in the bases: ``class Net(AnySizeMixin, nn.Module)``.
    """

    in_channels: int
    spatial_dims: int = 2
    size_multiple: int = 16
    pad_mode: str = "constant"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the network on any spatial size.

        Args:
            x: (B, in_channels, *S), S = (H, W) or (D, H, W); any sizes (padded internally at the end of every axis
                to a multiple of ``size_multiple``).

        Returns:
            logits (B, out_channels, *S).
        """
        check_input(x, self.in_channels, self.spatial_dims, type(self).__name__)
        xp, shape = pad_to_multiple(x, self.size_multiple, mode=self.pad_mode)
        if all(s == self.size_multiple for s in xp.shape[2:]):
            # the deepest feature map would be a single voxel, which instance/batch norms reject in training:
            # pad the last axis by one more multiple
            xp = torch.nn.functional.pad(xp, (0, self.size_multiple))
        out = self.forward_padded(xp)
        if isinstance(out, (list, tuple)):  # deep supervision: lower-resolution logits cropped in proportion
            return [crop_to(o, [-(-s * o.shape[2 + i] // xp.shape[2 + i]) for i, s in enumerate(shape)]) for o in out]
        return crop_to(out, shape)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
