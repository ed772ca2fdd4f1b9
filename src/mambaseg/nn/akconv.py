"""AKConv: alterable-kernel convolution with an arbitrary number of learned sampling points (arXiv 2311.11587).

Behaviour follows the official ``CV-ZhangXin/AKConv`` ``model.py`` (spec §3.5):

* ``p_conv`` = Conv2d(C_in, 2N, 3, pad 1, stride) with **zero weight** and PyTorch's default (uniform) bias, so the
  initial offsets are small per-channel constants. The official code registers a backward hook meant to scale the
  p_conv gradients by 0.1; the hook returns nothing and therefore has no effect, so no hook is registered here.
* Initial sampling shape ``p_n`` anchored at 0 (not centred): ``base = round(sqrt(N))``, ``rows = N // base``,
  points (i, j), i < rows, j < base (j fastest), then (rows, j) for j < N % base.
* Sampling position of output pixel (i, j), point n: ``p = (i·stride, j·stride) + p_n + offset`` — no padding.
* Bilinear sampling with both corners and p clamped to the image. Where p is outside [0, H−1) along an axis, the
  two clamped corners coincide and both get weight 1, so the edge value counts **twice** along that axis (the
  "border quirk"; with anchored p_n it hits the last two rows/columns of every map).
* The N samples of an output row are stacked as N consecutive rows, (B, C, h·N, w), and a Conv2d with kernel and
  stride (N, 1), no bias, mixes them; then BatchNorm2d and SiLU. (Computed here as the equivalent matrix product on
  a (B, C·N, h·w) view with the same (C_out, C_in, N, 1) weight, which is much faster on CPU.)

Option (``centred=True, zero_pad=True``): the sampling shape is centred on the output pixel and the map is
zero-extended (true bilinear interpolation of a zero-padded image, no double counting).

Implementation: the bilinear gather is one ``F.grid_sample`` call (``align_corners=True``, ``padding_mode="border"``)
on a grid laid out directly as (B, h·N, w); the border quirk is a factor 2 per clamped axis. While tracing or
exporting to ONNX it is instead four ``torch.gather`` calls with the corners and weights computed exactly as the
compiled kernel does (:func:`_axis`): grid_sample's rescaling of positions to [-1, 1] and back moves them by ~S·eps
pixels, which the network amplified (border-quirk jumps) until the ONNX export of the shipped DRIVE model differed
from the kernel by 0.08 at 256²; with the exact gather it agrees to 1e-4. Both are numerically the official
four-corner gather (tested against an independent per-pixel loop). On the CPU, outside tracing and
export, the sampling and the (N, 1) mixing run instead as one compiled kernel (:mod:`mambaseg.nn.akconv_kernel`:
im2col straight into the GEMM's layout tile by tile, fused col2im backward, no N-fold buffer), same results to
float tolerance; the code here stays the readable reference and the ONNX export path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import akconv_kernel

__all__ = ["AKConv", "initial_sampling_shape", "set_kernel_enabled"]

_KERNEL = {"enabled": True}


def set_kernel_enabled(enabled: bool) -> bool:
    """Switch the compiled CPU kernel on or off for every AKConv (returns the previous setting)."""
    previous = _KERNEL["enabled"]
    _KERNEL["enabled"] = bool(enabled)
    return previous


def _use_kernel(x: torch.Tensor) -> bool:
    """The compiled kernel runs on CPU tensors outside tracing/export, when enabled and built."""
    if not _KERNEL["enabled"] or x.device.type != "cpu":
        return False
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export():
        return False
    return akconv_kernel.available()


def _axis(q: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear corners and weights along one axis, the compiled kernel's rule: for ``0 <= q < size - 1`` the corners
    ``floor(q)``, ``floor(q) + 1`` with weights ``1 - f``, ``f``; otherwise (or NaN) ``q`` clamped to ``0`` or
    ``size - 1``, both corners there, weights 2 and 0 (the border quirk: the edge value counts twice; no gradient to
    ``q``). Positions are used as given (no rescaling to grid_sample's [-1, 1], whose round trip moves them by a few
    ulps and flips points at the border threshold on large maps)."""
    inside = (q >= 0) & (q < size - 1)
    lo = torch.where(inside, torch.floor(q), torch.where(q >= size - 1, q.new_tensor(size - 1.0), q.new_zeros(())))
    frac = torch.where(inside, q - lo, q.new_zeros(()))
    i0 = lo.long()
    i1 = torch.where(inside, i0 + 1, i0)
    w0 = torch.where(inside, 1.0 - frac, q.new_full((), 2.0))
    return i0, i1, w0, frac


def _gather_bilinear(x: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Samples (B, C, M...) of x (B, C, H, W) at positions px (along H), py (along W) of shape (B, M...): four
    ``torch.gather`` calls on the flattened map, corners and weights by :func:`_axis` (the kernel's rule)."""
    height, width = x.shape[-2:]
    r0, r1, wr0, wr1 = _axis(px, height)
    c0, c1, wc0, wc1 = _axis(py, width)
    b, c = x.shape[:2]
    flat = x.reshape(b, c, height * width)

    def corner(r: torch.Tensor, col: torch.Tensor) -> torch.Tensor:  # (B, C, M) samples of one corner
        return torch.gather(flat, 2, (r * width + col).flatten(1).unsqueeze(1).expand(b, c, -1))

    out = sum((wa * wb).flatten(1).unsqueeze(1).to(x.dtype) * corner(ra, cb)
              for ra, wa in ((r0, wr0), (r1, wr1)) for cb, wb in ((c0, wc0), (c1, wc1)))
    return out.view(b, c, *px.shape[1:])


def initial_sampling_shape(num_param: int, centred: bool = False) -> torch.Tensor:
    """Initial sampling offsets p_n of AKConv.

    Args:
        num_param: number of sampling points N >= 1.
        centred: subtract (max_row // 2, max_col // 2) so the shape sits around the output pixel
            (N=9 → {−1, 0, 1}²); the official code uses the anchored shape (``centred=False``).

    Returns:
        (2N,) float tensor: the N row offsets (along H) followed by the N column offsets (along W).
    """
    if int(num_param) < 1:
        raise ValueError(f"AKConv: num_param must be >= 1, got {num_param}.")
    base = round(math.sqrt(num_param))
    rows, rem = num_param // base, num_param % base
    px = [i for i in range(rows) for _ in range(base)] + [rows] * rem
    py = [j for _ in range(rows) for j in range(base)] + list(range(rem))
    pn = torch.tensor(px + py, dtype=torch.float32)
    if centred:
        pn[:num_param] -= max(px) // 2
        pn[num_param:] -= max(py) // 2
    return pn


class AKConv(nn.Module):
    """Alterable-kernel convolution.

    Args:
        in_channels: C_in.
        out_channels: C_out.
        num_param: number of sampling points N (9 ≈ 3×3 budget; 5 is the AKConv paper's favourite).
        stride: output stride (applies to the offset conv and to the base grid).
        centred: centre the initial sampling shape on the output pixel instead of anchoring it at 0.
        zero_pad: sample from the zero-extended map (no border double counting) instead of the clamped one.

    Output size is ceil(H/stride) × ceil(W/stride) in every mode. Parameters:
    ``C_out·C_in·N + 2·C_out (BN) + C_in·2N·9 + 2N (p_conv)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_param: int = 9,
        stride: int = 1,
        centred: bool = False,
        zero_pad: bool = False,
    ):
        super().__init__()
        for name, val in (("in_channels", in_channels), ("out_channels", out_channels), ("stride", stride)):
            if int(val) < 1:
                raise ValueError(f"AKConv: {name} must be >= 1, got {val}.")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_param, self.stride = num_param, stride
        self.centred, self.zero_pad = centred, zero_pad
        self.register_buffer("p_n", initial_sampling_shape(num_param, centred), persistent=False)
        self.p_conv = nn.Conv2d(in_channels, 2 * num_param, kernel_size=3, padding=1, stride=stride)
        nn.init.constant_(self.p_conv.weight, 0.0)  # offsets start as per-channel constants (the bias)
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=(num_param, 1), stride=(num_param, 1), bias=False),
            nn.BatchNorm2d(out_channels),
            nn.SiLU(),
        )

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, num_param={self.num_param}, stride={self.stride}, "
                f"centred={self.centred}, zero_pad={self.zero_pad}")

    def sampling_positions(self, x: torch.Tensor) -> torch.Tensor:
        """Absolute sampling positions ``p = p_0 + p_n + offset``.

        Args:
            x: (B, C_in, H, W).

        Returns:
            (B, 2N, h, w), h = ceil(H/stride), w = ceil(W/stride); channels 0..N−1 are rows (along H),
            N..2N−1 columns (along W), in pixel units of ``x`` (not clamped).
        """
        offset = self.p_conv(x)  # (B, 2N, h, w)
        n = self.num_param
        h, w = offset.shape[-2:]
        rows = torch.arange(h, device=x.device, dtype=offset.dtype) * self.stride
        cols = torch.arange(w, device=x.device, dtype=offset.dtype) * self.stride
        p0 = torch.cat([rows.view(1, 1, h, 1).expand(1, n, h, w), cols.view(1, 1, 1, w).expand(1, n, h, w)], dim=1)
        return p0 + self.p_n.to(offset.dtype).view(1, 2 * n, 1, 1) + offset

    def sample(self, x: torch.Tensor, p: torch.Tensor, exact: bool | None = None) -> torch.Tensor:
        """Bilinear samples of ``x`` at ``p``.

        Args:
            x: (B, C, H, W).
            p: (B, 2N, h, w) positions from :meth:`sampling_positions`.
            exact: gather the four corners with the compiled kernel's arithmetic (:func:`_axis`) instead of one
                ``F.grid_sample`` call. None (default): exact while tracing or exporting to ONNX, so that an export
                gives the CPU kernel's results; ``grid_sample`` otherwise (GPU, CPU without the kernel), which is
                lighter in training (it saves no per-corner samples for the backward) but rescales positions to
                [-1, 1] and back, a round trip of ~S·eps pixels.

        Returns:
            (B, C, N·h, w): rows n·h .. n·h + h − 1 hold sample n of every output pixel (a free view of
            (B, C·N, h, w), which :meth:`forward` multiplies with the (N, 1) weights as one matrix product).
        """
        n = self.num_param
        px = p[:, :n].flatten(1, 2)  # (B, N·h, w), along H
        py = p[:, n:].flatten(1, 2)  # (B, N·h, w), along W
        if self.zero_pad:
            # one zero row/column on every side + clamping == bilinear interpolation of the zero-extended map
            x = F.pad(x, (1, 1, 1, 1))
            px, py = px + 1, py + 1
        if exact is None:
            exact = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        if exact:
            return _gather_bilinear(x, px, py)
        height, width = x.shape[-2:]
        gx = py * (2.0 / max(width - 1, 1)) - 1.0  # grid_sample: [..., 0] indexes W, [..., 1] indexes H
        gy = px * (2.0 / max(height - 1, 1)) - 1.0
        grid = torch.stack([gx, gy], dim=-1).to(x.dtype)  # (B, h·N, w, 2)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
        if self.zero_pad:
            return out
        # official quirk: outside [0, size−1) both clamped corners get weight 1 → edge value counted twice
        with torch.no_grad():
            fx = 1.0 + ((px < 0) | (px >= height - 1)).to(out.dtype)
            fy = 1.0 + ((py < 0) | (py >= width - 1)).to(out.dtype)
        return out * (fx * fy).unsqueeze(1)

    def _forward_kernel(self, x: torch.Tensor) -> torch.Tensor:
        """Offsets, sampling and (N, 1) mixing with the compiled CPU kernel: same result as the reference path.
        The base grid and p_n are added inside the kernel, so no (B, 2N, h, w) position tensor is built."""
        offset = self.p_conv(x)
        shift = 0.0
        if self.zero_pad:
            x, shift = F.pad(x, (1, 1, 1, 1)), 1.0
        weight = self.conv[0].weight.reshape(self.out_channels, self.in_channels * self.num_param)
        y = akconv_kernel.akconv_sample_mix(x, offset, weight, self.p_n, self.stride, shift)
        # under autocast the result stays bf16 (as a convolution's would); otherwise x's dtype
        return y if torch.is_autocast_enabled("cpu") else y.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the alterable-kernel convolution.

        Args:
            x: (B, C_in, H, W), any H, W >= 1.

        Returns:
            (B, C_out, ceil(H/stride), ceil(W/stride)).
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"AKConv: expected input (B, {self.in_channels}, H, W), got shape {tuple(x.shape)}.")
        if _use_kernel(x):
            return self.conv[2](self.conv[1](self._forward_kernel(x)))
        samples = self.sample(x, self.sampling_positions(x))  # (B, C, N·h, w)
        b, c, nh, w = samples.shape
        h = nh // self.num_param
        samples = samples.view(b, c * self.num_param, h * w)  # channel index c·N + n
        # Conv2d(kernel (N, 1), stride (N, 1)) on the official (B, C, h·N, w) layout == this matmul (BLAS on CPU)
        weight = self.conv[0].weight.reshape(self.out_channels, c * self.num_param)
        y = torch.matmul(weight, samples).view(b, self.out_channels, h, w)
        return self.conv[2](self.conv[1](y))
