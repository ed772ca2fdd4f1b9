"""Shared Mamba (S6) pieces: init helpers, one scan direction's parameter set, and a multi-direction mixer.

Follows ``mamba_ssm.modules.mamba_simple.Mamba`` (d_inner = expand·C, dt_rank = ceil(C/16), N = d_state) with the
SegMamba "bimamba" extension: several scan *directions* share ``in_proj``/``out_proj`` (and the gate z) but each
direction has its own causal depthwise conv, ``x_proj``, ``dt_proj``, ``A_log`` and ``D``. A direction is a
permutation of the token sequence; its output is permuted back and the directions are summed before ``out_proj``:

    y = out_proj( Σ_k unpermute_k( scan_k( permute_k(x), permute_k(z) ) ) )

Every scan goes through :func:`mambaseg.ssm.selective_scan` (fp32 inside, CUDA kernel when available).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from mambaseg.ssm import selective_scan

__all__ = [
    "resolve_dt_rank",
    "a_log_init",
    "dt_bias_init",
    "no_weight_decay_",
    "inverse_permutation",
    "MambaDirection",
    "MultiDirMamba",
]


def resolve_dt_rank(dt_rank: int | str, d_model: int) -> int:
    """``"auto"`` → ceil(d_model / 16) (mamba_ssm's choice); an int ≥ 1 is returned unchanged."""
    if dt_rank == "auto":
        return math.ceil(d_model / 16)
    if isinstance(dt_rank, bool) or not isinstance(dt_rank, int) or dt_rank < 1:
        raise ValueError(f"dt_rank must be 'auto' or an int >= 1, got {dt_rank!r}.")
    return dt_rank


def a_log_init(d_inner: int, d_state: int) -> torch.Tensor:
    """S4D-real initialisation: every row is log(1..N), so A = -exp(A_log) = -(1..N). Returns (d_inner, N)."""
    a = torch.arange(1, d_state + 1, dtype=torch.float32)
    return torch.log(a).repeat(d_inner, 1).contiguous()


def dt_bias_init(
    d_inner: int, dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4
) -> torch.Tensor:
    """Bias of ``dt_proj`` such that softplus(bias) is log-uniform in [dt_min, dt_max]. Returns (d_inner,).

    The bias is the inverse softplus of dt: ``dt + log(-expm1(-dt))``, so that the scan's ``softplus(delta + bias)``
    starts at the sampled step sizes.
    """
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"dt_min/dt_max must satisfy 0 < dt_min <= dt_max, got {dt_min}, {dt_max}.")
    dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=dt_init_floor)
    return dt + torch.log(-torch.expm1(-dt))


def no_weight_decay_(param: nn.Parameter) -> nn.Parameter:
    """Flag ``param`` with ``_no_weight_decay = True`` (honoured by the optimizer's parameter groups)."""
    param._no_weight_decay = True  # type: ignore[attr-defined]
    return param


def inverse_permutation(order: torch.Tensor) -> torch.Tensor:
    """Inverse of a permutation ``order`` (L,): ``x[order][inverse] == x``. O(L), no sort."""
    inv = torch.empty_like(order)
    inv[order] = torch.arange(order.numel(), device=order.device, dtype=order.dtype)
    return inv


class MambaDirection(nn.Module):
    """Parameters and computation of one scan direction (everything of a Mamba block except in/out projections).

    Args:
        d_inner: channels of the scanned sequence (expand · d_model).
        d_state: SSM state size N.
        d_conv: kernel of the causal depthwise Conv1d (left padding d_conv - 1).
        dt_rank: rank R of the step-size projection.
        dt_min: smallest initial step size.
        dt_max: largest initial step size.
        dt_scale: scale of dt_proj's uniform weight init (± dt_scale · R^-0.5).

    Attributes:
        scan_backend: the ``selective_scan`` backend of this module (None: the default choice, see
            :mod:`mambaseg.ssm`); set for a whole network with :func:`mambaseg.nn.backend.scan_backend`.
    """

    scan_backend: str | None = None

    def __init__(self, d_inner: int, d_state: int = 16, d_conv: int = 4, dt_rank: int = 1,
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_scale: float = 1.0) -> None:
        super().__init__()
        if d_conv < 1:
            raise ValueError(f"d_conv must be >= 1, got {d_conv}.")
        self.d_inner, self.d_state, self.dt_rank = d_inner, d_state, dt_rank
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, bias=True)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        bound = dt_rank**-0.5 * dt_scale
        with torch.no_grad():
            nn.init.uniform_(self.dt_proj.weight, -bound, bound)
            self.dt_proj.bias.copy_(dt_bias_init(d_inner, dt_min, dt_max))
        self.dt_proj.bias._no_reinit = True  # type: ignore[attr-defined]
        self.A_log = no_weight_decay_(nn.Parameter(a_log_init(d_inner, d_state)))
        self.D = no_weight_decay_(nn.Parameter(torch.ones(d_inner)))

    def forward(self, xz: torch.Tensor) -> torch.Tensor:
        """Scan one (already permuted) sequence.

        Args:
            xz: (B, 2·d_inner, L) the in_proj output in this direction's order; first half x, second half gate z.

        Returns:
            (B, d_inner, L) gated scan output ``selective_scan(...) * silu(z)``, same order as ``xz``.
        """
        length = xz.shape[-1]
        x, z = xz.chunk(2, dim=1)  # (B, d_inner, L) each
        x = F.silu(self.conv1d(x)[..., :length])  # causal: keep the first L outputs of the left-padded conv
        x_dbl = self.x_proj(rearrange(x, "b d l -> b l d"))  # (B, L, R + 2N)
        dt, b_ssm, c_ssm = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = self.dt_proj.weight @ rearrange(dt, "b l r -> b r l")  # (B, d_inner, L); bias goes in the scan
        b_ssm = rearrange(b_ssm, "b l n -> b n l").contiguous()  # (B, N, L)
        c_ssm = rearrange(c_ssm, "b l n -> b n l").contiguous()  # (B, N, L)
        a = -torch.exp(self.A_log.float())  # (d_inner, N)
        return selective_scan(x, delta, a, b_ssm, c_ssm, self.D.float(), z=z,
                              delta_bias=self.dt_proj.bias.float(), delta_softplus=True, backend=self.scan_backend)


class MultiDirMamba(nn.Module):
    """Mamba mixer with ``directions`` scan orders sharing ``in_proj``/``out_proj`` (SegMamba bimamba v2/v3).

    Args:
        d_model: token channels C.
        directions: number of scan directions K (one parameter set each).
        d_state: SSM state size N.
        d_conv: causal depthwise conv kernel.
        expand: d_inner = expand · C.
        dt_rank: ``"auto"`` (ceil(C/16)) or an int.

    Shapes: tokens (B, L, C) → (B, L, C). Parameters: in_proj Linear(C, 2·d_inner, no bias), out_proj
    Linear(d_inner, C, no bias), ``dirs[k]`` a :class:`MambaDirection`.
    """

    def __init__(self, d_model: int, directions: int = 2, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto") -> None:
        super().__init__()
        if isinstance(directions, bool) or not isinstance(directions, int) or directions < 1:
            raise ValueError(f"directions must be an int >= 1, got {directions!r}.")
        if d_model < 1 or expand < 1:
            raise ValueError(f"d_model and expand must be >= 1, got d_model={d_model}, expand={expand}.")
        self.d_model, self.directions = d_model, directions
        self.d_inner = expand * d_model
        rank = resolve_dt_rank(dt_rank, d_model)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.dirs = nn.ModuleList(MambaDirection(self.d_inner, d_state, d_conv, rank) for _ in range(directions))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, x: torch.Tensor, orders: Sequence[torch.Tensor | None],
                inverses: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        """Scan the tokens in every direction, un-permute, sum, project.

        Args:
            x: (B, L, C) tokens.
            orders: one index order per direction, each a LongTensor (L,) on x's device: the k-th scan visits token
                ``orders[k][i]`` at step i. ``None`` means the identity (natural order) and skips the gather.
            inverses: optional precomputed inverse permutations (same layout as ``orders``); computed if omitted.

        Returns:
            (B, L, C).
        """
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"MultiDirMamba: x must be (B, L, {self.d_model}), got shape {tuple(x.shape)}.")
        if len(orders) != self.directions:
            raise ValueError(f"MultiDirMamba: got {len(orders)} orders, expected one per direction "
                             f"({self.directions}).")
        length = x.shape[1]
        xz = rearrange(self.in_proj(x), "b l d -> b d l")  # (B, 2·d_inner, L)
        y = None
        for k, (direction, order) in enumerate(zip(self.dirs, orders)):
            if order is None:
                y_k = direction(xz)
            else:
                if order.shape != (length,):
                    raise ValueError(f"MultiDirMamba: orders[{k}] has shape {tuple(order.shape)}, expected "
                                     f"({length},) for L={length}.")
                inv = inverses[k] if inverses is not None and inverses[k] is not None else inverse_permutation(order)
                y_k = direction(xz.index_select(-1, order)).index_select(-1, inv)  # (B, d_inner, L)
            y = y_k if y is None else y + y_k
        return self.out_proj(rearrange(y, "b d l -> b l d"))
