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

__all__ = ["SS2D", "MambaOut"]


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
        row = x.flatten(2)  # (B, d, L), index h·W + w
        col = x.transpose(2, 3).flatten(2)  # (B, d, L), index w·H + h
        x_hwwh = torch.stack([row, col], dim=1)  # (B, 2, d, L)
        xs = torch.cat([x_hwwh, x_hwwh.flip(-1)], dim=1)  # (B, 4, d, L)
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)  # (B, 4, R+2N, L)
        dts, Bs, Cs = torch.split(x_dbl, [r, n, n], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)  # (B, 4, d, L)
        out = selective_scan(
            xs.reshape(b, 4 * d, -1),
            dts.reshape(b, 4 * d, -1),
            -torch.exp(self.A_logs.float()),
            Bs.contiguous(),
            Cs.contiguous(),
            self.Ds.float(),
            z=None,
            delta_bias=self.dt_projs_bias.float().view(-1),
            delta_softplus=True,
            backend=self.scan_backend,
        ).view(b, 4, d, -1)  # (B, 4, d, L)
        inv = out[:, 2:4].flip(-1)  # (B, 2, d, L): directions 2, 3 back to forward order
        y_row = out[:, 0] + inv[:, 0]  # row-major
        y_col = out[:, 1] + inv[:, 1]  # column-major: index w·H + h
        y_col = rearrange(y_col, "b d (w h) -> b d (h w)", w=w, h=h)
        return y_row + y_col

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
