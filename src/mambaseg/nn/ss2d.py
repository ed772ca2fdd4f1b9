"""SS2D: the 2D selective-scan block of VMamba / VM-UNet (spec §3.4), and the ``MambaOut`` skip wrapper.

SS2D(x), x channels-last (B, H, W, C), d = expand·C, R = dt_rank, N = d_state, L = H·W:

    xz = in_proj(x)                        (B, H, W, 2d) → x, z
    x  = SiLU(depthwise Conv2d_k(x))       (B, d, H, W)
    xs = [row-major(x), col-major(x), reversed row-major, reversed col-major]     (B, 4, d, L)
    per direction k: x_proj_weight[k] → dt (R), B (N), C (N); dt → dt_projs_weight[k] → Δ (d)
    one grouped selective_scan (G = 4): u = xs (B, 4d, L), Δ (B, 4d, L), A = −exp(A_logs) (4d, N),
        B, C (B, 4, N, L), D = Ds (4d), delta_bias = dt_projs_bias (4d), softplus
    y  = y0 + flip(y2) + colmajor→rowmajor(y1) + colmajor→rowmajor(flip(y3))       (B, H, W, d)
    out = out_proj(LayerNorm(y) · SiLU(z))                                         (B, H, W, C)

Parameter count for C = 64 (d 128, R 4, N 16): 55 808.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from mambaseg.nn.mamba import a_log_init, dt_bias_init, no_weight_decay_, resolve_dt_rank
from mambaseg.ssm import selective_scan

__all__ = ["SS2D", "MambaOut", "four_ways", "merge_four_ways"]


def _four(x: torch.Tensor) -> torch.Tensor:
    """(B, d, H, W) -> (B, 4, d, L): row-major (h·W + w), column-major (w·H + h), and both reversed."""
    b, d, h, w = x.shape
    out = x.new_empty(b, 4, d, h * w)
    out[:, 0].view(b, d, h, w).copy_(x)
    out[:, 1].view(b, d, w, h).copy_(x.transpose(2, 3))
    out[:, 2:].copy_(out[:, :2].flip(-1))
    return out


def _merge(y: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, 4, d, L) -> (B, d, H, W): the four directions back in row-major order, summed (the adjoint of _four)."""
    b, _, d, _ = y.shape
    s = y[:, :2] + y[:, 2:].flip(-1)  # (B, 2, d, L): forward order
    return torch.add(s[:, 0].view(b, d, h, w), s[:, 1].view(b, d, w, h).transpose(2, 3))


class _FourWays(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.hw = x.shape[2:]
        return _four(x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        return _merge(g, *ctx.hw)


class _MergeFourWays(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, h, w):
        return _merge(y, h, w)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        return _four(g), None, None


def _plain() -> bool:  # tracing / ONNX export: record plain out-of-place tensor ops
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _four_plain(x: torch.Tensor) -> torch.Tensor:
    x_hwwh = torch.stack([x.flatten(2), x.transpose(2, 3).flatten(2)], dim=1)  # (B, 2, d, L)
    return torch.cat([x_hwwh, x_hwwh.flip(-1)], dim=1)


def four_ways(x: torch.Tensor) -> torch.Tensor:
    """The four SS2D scan orders of x (B, d, H, W) as one contiguous (B, 4, d, H·W) tensor: row-major, column-major
    and their reverses. Written directly into one buffer (no stack/cat of flipped copies); the backward is the merge
    (:func:`merge_four_ways`), so autograd makes no zero-filled slice gradients."""
    return _four_plain(x) if _plain() else _FourWays.apply(x)


def merge_four_ways(y: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Sum of the four directions of y (B, 4, d, H·W) back in row-major order: (B, d, H, W) (adjoint of
    :func:`four_ways`)."""
    return _merge(y, h, w) if _plain() else _MergeFourWays.apply(y, h, w)


class SS2D(nn.Module):
    """Four-direction 2D selective scan (VMamba ``forward_corev0``).

    Args:
        d_model: channels C of the channels-last input.
        d_state: SSM state size N.
        d_conv: depthwise conv kernel size (odd; padding (k − 1) // 2).
        expand: d_inner = expand · C.
        dt_rank: rank R of the Δ projection; ``"auto"`` = ceil(C / 16).
        dropout: dropout on the output (0 disables).
        dt_min: smallest initial Δ.
        dt_max: largest initial Δ.
        dt_scale: scale of the uniform dt_projs weight init (± dt_scale · R^−0.5).

    Attributes:
        scan_backend: the ``selective_scan`` backend of this module (None: the default choice, see
            :mod:`mambaseg.ssm`); set for a whole network with :func:`mambaseg.nn.backend.scan_backend`.
    """

    scan_backend: str | None = None

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 3,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dropout: float = 0.0,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_scale: float = 1.0,
    ):
        super().__init__()
        if int(d_model) < 1 or int(d_state) < 1 or int(expand) < 1:
            raise ValueError(f"SS2D: d_model, d_state and expand must be >= 1, got {d_model}, {d_state}, {expand}.")
        if int(d_conv) < 1 or d_conv % 2 == 0:
            raise ValueError(f"SS2D: d_conv must be a positive odd kernel size, got {d_conv}.")
        self.d_model, self.d_state, self.expand = d_model, d_state, expand
        self.d_inner = d = expand * d_model
        self.dt_rank = r = resolve_dt_rank(dt_rank, d_model)
        k = 4

        self.in_proj = nn.Linear(d_model, 2 * d, bias=False)
        self.conv2d = nn.Conv2d(d, d, kernel_size=d_conv, padding=(d_conv - 1) // 2, groups=d, bias=True)
        # x_proj: PyTorch's default Linear init U(±1/sqrt(d)), one (R + 2N, d) matrix per direction
        bound = 1.0 / math.sqrt(d)
        self.x_proj_weight = nn.Parameter(torch.empty(k, r + 2 * d_state, d).uniform_(-bound, bound))
        # dt projections: U(±dt_scale·R^-0.5) weights, inverse-softplus biases
        std = dt_scale * r**-0.5
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d, r).uniform_(-std, std))
        self.dt_projs_bias = nn.Parameter(dt_bias_init(k * d, dt_min, dt_max).view(k, d))
        self.A_logs = no_weight_decay_(nn.Parameter(a_log_init(k * d, d_state)))  # (4d, N), S4D-real
        self.Ds = no_weight_decay_(nn.Parameter(torch.ones(k * d)))  # (4d,)
        self.out_norm = nn.LayerNorm(d)
        self.out_proj = nn.Linear(d, d_model, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # VM-UNet's model-level init of the Linear layers
        nn.init.trunc_normal_(self.in_proj.weight, std=0.02)
        nn.init.trunc_normal_(self.out_proj.weight, std=0.02)

    def forward_core(self, x: torch.Tensor) -> torch.Tensor:
        """The four scans and their merge.

        Args:
            x: (B, d, H, W) after the depthwise conv.

        Returns:
            (B, d, L) sum of the four directions, row-major order (w fastest).
        """
        b, d, h, w = x.shape
        n, r = self.d_state, self.dt_rank
        xs = four_ways(x)  # (B, 4, d, L): row-major, column-major, both reversed
        x_dbl = torch.matmul(self.x_proj_weight, xs)  # (4, R+2N, d) @ (B, 4, d, L) -> (B, 4, R+2N, L)
        dts, Bs, Cs = torch.split(x_dbl, [r, n, n], dim=2)
        dts = torch.matmul(self.dt_projs_weight, dts)  # (4, d, R) @ (B, 4, R, L) -> (B, 4, d, L)
        out = selective_scan(
            xs.view(b, 4 * d, -1),
            dts.view(b, 4 * d, -1),
            -torch.exp(self.A_logs.float()),
            Bs,  # (B, 4, N, L) views: the scan transposes them to its time-major layout in one copy
            Cs,
            self.Ds.float(),
            z=None,
            delta_bias=self.dt_projs_bias.float().view(-1),
            delta_softplus=True,
            backend=self.scan_backend,
        ).view(b, 4, d, -1)  # (B, 4, d, L)
        return merge_four_ways(out, h, w).flatten(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply SS2D.

        Args:
            x: (B, H, W, C) channels-last, C = d_model.

        Returns:
            (B, H, W, C).
        """
        if x.dim() != 4 or x.shape[-1] != self.d_model:
            raise ValueError(f"SS2D: expected channels-last input (B, H, W, {self.d_model}), got shape "
                             f"{tuple(x.shape)}.")
        b, h, w, _ = x.shape
        xi, z = self.in_proj(x).chunk(2, dim=-1)  # (B, H, W, d) each
        xi = F.silu(self.conv2d(xi.permute(0, 3, 1, 2)))  # (B, d, H, W)
        y = self.forward_core(xi)  # (B, d, L)
        y = rearrange(y, "b d (h w) -> b h w d", h=h, w=w).to(x.dtype)
        y = self.out_norm(y) * F.silu(z)
        return self.dropout(self.out_proj(y))


class MambaOut(nn.Module):
    """Akmamba-Net's "Mamba-out" skip module: SS2D on (B, C, H, W) maps (spec §2.2).

    Args:
        channels: C.
        residual: False → ``SS2D(x)`` (as the paper describes); True → ``x + SS2D(LN(x))`` (VM-UNet VSSBlock).
        **ss2d_kwargs: forwarded to :class:`SS2D` (d_state, d_conv, expand, dt_rank, dropout).
    """

    def __init__(self, channels: int, residual: bool = False, **ss2d_kwargs):
        super().__init__()
        self.residual = residual
        self.norm = nn.LayerNorm(channels) if residual else nn.Identity()
        self.ss2d = SS2D(channels, **ss2d_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x: (B, C, H, W).

        Returns:
            (B, C, H, W).
        """
        t = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        y = self.ss2d(self.norm(t))
        if self.residual:
            y = t + y
        return y.permute(0, 3, 1, 2)  # channels-last strides; the consumer (torch.cat) copies anyway
