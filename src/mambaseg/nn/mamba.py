"""Shared Mamba (S6) pieces: init helpers, one scan direction's parameter set, and a multi-direction mixer.

Follows ``mamba_ssm.modules.mamba_simple.Mamba`` (d_inner = expand·C, dt_rank = ceil(C/16), N = d_state) with the
SegMamba "bimamba" extension: several scan *directions* share ``in_proj``/``out_proj`` (and the gate z) but each
direction has its own causal depthwise conv, ``x_proj``, ``dt_proj``, ``A_log`` and ``D``. A direction is a
permutation of the token sequence; its output is permuted back and the directions are summed before ``out_proj``:

    y = out_proj( Σ_k unpermute_k( scan_k( permute_k(x), permute_k(z) ) ) )

Every scan goes through :func:`mambaseg.ssm.selective_scan` (fp32 inside, CUDA kernel when available). Under a CPU
bf16 autocast (``train.amp``) the projections run in bf16, the causal conv + SiLU in the compiled kernel with fp32
arithmetic on bf16 operands, and the scan takes and returns bf16 with its state and sums in fp32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mambaseg.ssm import cpu_kernel, selective_scan
from mambaseg.ssm.cpu_kernel import causal_conv1d_silu_cpu

__all__ = [
    "resolve_dt_rank",
    "a_log_init",
    "dt_bias_init",
    "no_weight_decay_",
    "inverse_permutation",
    "SeqOrder",
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


@dataclass(frozen=True)
class SeqOrder:
    """A scan order made of views: the L = rows·cols tokens seen as a (rows, cols) grid, read column by column
    (``transpose``) or row by row, then optionally ``reverse``-d. Moving a (…, L) tensor into or out of such an
    order is a flip and/or a 2D transpose copy (memory-bound, autograd's backward is the same kind of copy) instead
    of an element-wise ``index_select`` gather and a scatter-add backward.

    Examples: reverse raster ``SeqOrder(1, L, reverse=True)``; a volume's inter-slice order (d fastest) for tokens
    ``(d·H + h)·W + w`` is ``SeqOrder(D, H·W, transpose=True)``.
    """

    rows: int
    cols: int
    transpose: bool = False
    reverse: bool = False

    @property
    def length(self) -> int:
        return self.rows * self.cols

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """x (…, L) in token order → (…, L) in scan order (``x.index_select(-1, self.index())``)."""
        if self.transpose:  # sizes from x.shape (not unflatten/flatten) keep the batch axis dynamic when traced
            x = x.reshape(x.shape[:-1] + (self.rows, self.cols)).transpose(-1, -2).reshape(x.shape)
        return x.flip(-1) if self.reverse else x.contiguous()

    def invert(self, y: torch.Tensor) -> torch.Tensor:
        """y (…, L) in scan order → token order (the inverse of :meth:`apply`)."""
        if self.reverse:
            y = y.flip(-1)
        if self.transpose:
            y = y.reshape(y.shape[:-1] + (self.cols, self.rows)).transpose(-1, -2).reshape(y.shape)
        return y.contiguous()

    def index(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The order as a LongTensor (L,): step i visits token ``index[i]``."""
        return self.apply(torch.arange(self.length, device=device))


def _wmm(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``weight @ x`` for weight (O, I) and x (B, I, L) of any strides → (B, O, L) contiguous. One bmm on the
    expanded weight: ``torch.matmul`` would copy a transposed x to fold the batch (≈5x slower with its backward)."""
    if torch.jit.is_tracing():  # ONNX export: a broadcasting MatMul keeps the batch axis dynamic
        return torch.matmul(weight, x)
    return torch.bmm(weight.expand(x.shape[0], -1, -1), x)


def _fused_conv(x: torch.Tensor, conv: nn.Conv1d) -> bool:
    """Whether the compiled causal conv + SiLU applies: CPU fp32/fp64/bf16 tensors (also under autocast), not while
    tracing, and the kernel builds (``MAMBASEG_NO_CPU_KERNEL=1`` turns it off with the scan kernel)."""
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64, torch.bfloat16)
            and conv.bias is not None and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export()
            and cpu_kernel.available())


def _bf16_mode(x: torch.Tensor) -> bool:
    """bf16 input, or a CPU autocast to bf16: the half-precision convention applies."""
    return x.dtype == torch.bfloat16 or (torch.is_autocast_enabled("cpu")
                                         and torch.get_autocast_dtype("cpu") == torch.bfloat16)


def _conv_silu_fused(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """The compiled causal conv + SiLU in x's dtype (fp32/fp64), or, for bf16 (a bf16 x or a CPU bf16 autocast),
    autocast's convention for a convolution: x and the weights rounded to bf16, the arithmetic in fp32, the result
    rounded to bf16."""
    if not _bf16_mode(x):
        return causal_conv1d_silu_cpu(x, conv.weight.to(x.dtype), conv.bias.to(x.dtype))
    with torch.autocast(device_type="cpu", enabled=False):
        def r(t):
            return t.to(torch.bfloat16).float()

        return causal_conv1d_silu_cpu(r(x), r(conv.weight), r(conv.bias)).to(torch.bfloat16)


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

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Scan one (already permuted) sequence.

        Args:
            x: (B, d_inner, L) the x half of the in_proj output in this direction's order.
            z: (B, d_inner, L) the gate half, same order.

        Returns:
            (B, d_inner, L) gated scan output ``selective_scan(...) * silu(z)``, same order as ``x``.

        Everything stays channel-major (B, ·, L): the projections are ``weight @ x`` matmuls, so no transposed copy
        of x is made; only B and C are transposed to the scan kernel's time-major layout (N·L values each).
        """
        length = x.shape[-1]
        if _fused_conv(x, self.conv1d):
            x = _conv_silu_fused(x, self.conv1d)  # same as below, one compiled pass (fp32 arithmetic for bf16)
        else:
            x = F.silu(self.conv1d(x)[..., :length])  # causal: keep the first L outputs of the left-padded conv
        x_dbl = _wmm(self.x_proj.weight, x)  # (B, R + 2N, L)
        dt, b_ssm, c_ssm = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=1)
        delta = _wmm(self.dt_proj.weight, dt)  # (B, d_inner, L); the bias goes in the scan
        a = -torch.exp(self.A_log.float())  # (d_inner, N)
        return selective_scan(x, delta, a, b_ssm, c_ssm, self.D.float(), z=z,
                              delta_bias=self.dt_proj.bias.float(), delta_softplus=True, backend=self.scan_backend)


class _GatherSeq(torch.autograd.Function):
    """``x.index_select(-1, order)`` for a permutation ``order`` whose backward is the gather by the inverse
    permutation (instead of autograd's scatter-add into zeros): one pass, deterministic."""

    @staticmethod
    def forward(ctx, x, order, inverse):
        ctx.save_for_backward(inverse)
        return x.index_select(-1, order)

    @staticmethod
    def backward(ctx, grad):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(-1, inverse), None, None


def _gather_seq(x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    if x.requires_grad and torch.is_grad_enabled() and not torch.jit.is_tracing():
        return _GatherSeq.apply(x, order, inverse)
    return x.index_select(-1, order)


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

    def forward(self, x: torch.Tensor, orders: Sequence[torch.Tensor | SeqOrder | None],
                inverses: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        """Scan the tokens in every direction, un-permute, sum, project.

        Args:
            x: (B, L, C) tokens.
            orders: one index order per direction, each a LongTensor (L,) on x's device: the k-th scan visits token
                ``orders[k][i]`` at step i. ``None`` means the identity (natural order) and skips the gather; a
                :class:`SeqOrder` is moved by flips/transposes instead of a gather (same result).
            inverses: optional precomputed inverse permutations (same layout as ``orders``); computed if omitted.

        Returns:
            (B, L, C).
        """
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"MultiDirMamba: x must be (B, L, {self.d_model}), got shape {tuple(x.shape)}.")
        return self.forward_channels(x.transpose(1, 2), orders, inverses).transpose(1, 2)

    def forward_channels(self, x: torch.Tensor, orders: Sequence[torch.Tensor | SeqOrder | None],
                         inverses: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        """:meth:`forward` on channel-major tokens: x (B, C, L) (any strides) → (B, C, L) contiguous.

        Arguments as in :meth:`forward`, with x channel-major. The x and z halves of ``in_proj`` are computed as two
        contiguous (B, d_inner, L) tensors, each permuted direction gathers whole channel rows, and the output
        projection writes channel-major, so no (B, L, ·) ↔ (B, ·, L) copies are made.
        """
        if x.dim() != 3 or x.shape[1] != self.d_model:
            raise ValueError(f"MultiDirMamba: x must be (B, {self.d_model}, L), got shape {tuple(x.shape)}.")
        if len(orders) != self.directions:
            raise ValueError(f"MultiDirMamba: got {len(orders)} orders, expected one per direction "
                             f"({self.directions}).")
        length = x.shape[-1]
        w = self.in_proj.weight
        x_in = _wmm(w[: self.d_inner], x)  # (B, d_inner, L)
        z_in = _wmm(w[self.d_inner:], x)
        y = None
        for k, (direction, order) in enumerate(zip(self.dirs, orders)):
            if order is None:
                y_k = direction(x_in, z_in)
            elif isinstance(order, SeqOrder):
                if order.length != length:
                    raise ValueError(f"MultiDirMamba: orders[{k}] has length {order.length}, expected {length}.")
                y_k = order.invert(direction(order.apply(x_in), order.apply(z_in)))
            else:
                if order.shape != (length,):
                    raise ValueError(f"MultiDirMamba: orders[{k}] has shape {tuple(order.shape)}, expected "
                                     f"({length},) for L={length}.")
                inv = inverses[k] if inverses is not None and inverses[k] is not None else inverse_permutation(order)
                y_k = _gather_seq(direction(_gather_seq(x_in, order, inv), _gather_seq(z_in, order, inv)), inv,
                                  order)  # (B, d_inner, L) back in token order
            y = y_k if y is None else y + y_k
        return _wmm(self.out_proj.weight, y)  # (B, C, L)
