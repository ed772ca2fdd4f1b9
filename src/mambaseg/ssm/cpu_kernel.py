"""Optional compiled CPU kernel for the selective scan (the ``cpu`` backend).

A small C++ extension (``csrc/selective_scan_cpu.cpp``), prebuilt when the package is installed
(``mambaseg.ssm._selective_scan_cpu``) or else compiled at first use by
:func:`mambaseg.utils.cpp_ext.load_extension` (``-O3 -fopenmp``, no ``-march=native`` and no ``-ffast-math``, so the
build can be reused on another x86-64 CPU and the arithmetic stays IEEE; the cached build's name carries a hash of
the sources and the torch version). The forward loops over the sequence per row (batch·channel) with the state
in registers, parallel over rows with ``at::parallel_for``. The backward is a custom :class:`torch.autograd.Function`
that recomputes the states chunk by chunk from the chunk-start states saved by the forward (``B·D·⌈L/chunk⌉·N``
values) and runs the adjoint recurrence ``g_l = dL/dh_l + a_{l+1} g_{l+1}`` backwards. Gradients are deterministic
(bit-identical from run to run, whatever the number of threads).

The same extension holds :func:`causal_conv1d_silu_cpu`, Mamba's causal depthwise conv1d + SiLU in one pass (used by
:class:`mambaseg.nn.mamba.MambaDirection` on CPU).

A build at first use needs a C++ compiler and ``ninja``; :func:`available` reports whether the kernel can be used (and
logs why not). Setting ``MAMBASEG_NO_CPU_KERNEL=1`` disables the kernel.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..utils.cpp_ext import ENV_DISABLE_ALL, disabled, load_extension

__all__ = ["DEFAULT_CHUNK", "ENV_DISABLE", "available", "causal_conv1d_silu_cpu", "selective_scan_cpu"]

logger = logging.getLogger(__name__)

DEFAULT_CHUNK = 128  # positions between saved states: saved memory B·D·L/128·N, recompute buffers ~chunk·N per row
ENV_DISABLE = ENV_DISABLE_ALL
MAX_STATE = 256  # kMaxState in the C++ source
_SOURCE = Path(__file__).parent / "csrc" / "selective_scan_cpu.cpp"
_HEADER = _SOURCE.with_name("selective_scan_cpu_kernels.h")
_EXT_NAME = "mambaseg_selective_scan_cpu"
_state: dict[str, object] = {}


def _load():
    """Build (or load the cached build of) the extension; returns the module or None, caching the outcome."""
    if "module" not in _state:
        var = disabled()
        if var is not None:
            logger.info("selective_scan: CPU kernel disabled by %s=%s.", var, os.environ[var])
            _state["module"] = None
        else:
            _state["module"] = load_extension(_EXT_NAME, [_SOURCE], [_HEADER], what="selective_scan CPU kernel",
                                                prebuilt=f"{__package__}._selective_scan_cpu")
    return _state["module"]


def available() -> bool:
    """Whether the compiled CPU kernel can be used (builds it on the first call; the result is cached)."""
    return _load() is not None


def _prepare(u, delta, A, B, C, D, z, delta_bias, work):
    """Cast to the working dtype, make contiguous; B, C (b, G, N, L) -> time-major (b, G, L, N)."""
    def cv(t):
        return None if t is None else t.to(work).contiguous()

    Bt = B.to(work).transpose(-1, -2).contiguous()
    Ct = C.to(work).transpose(-1, -2).contiguous()
    return cv(u), cv(delta), cv(A), Bt, Ct, cv(D), cv(z), cv(delta_bias)


class _SelectiveScanCpuFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk):
        ext = _load()
        work = torch.promote_types(u.dtype, torch.float32)
        args = _prepare(u, delta, A, B, C, D, z, delta_bias, work)
        out, last, states = ext.forward(*args, delta_softplus, chunk, True)
        ctx.save_for_backward(*args, states)
        ctx.has = tuple(t is not None for t in (D, z, delta_bias))
        ctx.dtypes = tuple(None if t is None else t.dtype for t in (u, delta, A, B, C, D, z, delta_bias))
        ctx.delta_softplus, ctx.chunk = delta_softplus, chunk
        ctx.set_materialize_grads(False)
        return out.to(u.dtype), last

    @staticmethod
    def backward(ctx, dout, dlast):
        ext = _load()
        u, delta, A, Bt, Ct, D, z, delta_bias, states = ctx.saved_tensors
        if dout is None:
            dout = torch.zeros_like(u)
        dout = dout.to(u.dtype).contiguous()
        dlast = None if dlast is None else dlast.to(u.dtype).contiguous()
        du, ddelta, dA, dBt, dCt, dD, dz, dbias = ext.backward(u, delta, A, Bt, Ct, D, z, delta_bias,
                                                               ctx.delta_softplus, ctx.chunk, states, dout, dlast)
        grads = [du, ddelta, dA, dBt.transpose(-1, -2), dCt.transpose(-1, -2),
                 dD if ctx.has[0] else None, dz if ctx.has[1] else None, dbias if ctx.has[2] else None]
        grads = [None if (g is None or dt is None) else g.to(dt) for g, dt in zip(grads, ctx.dtypes)]
        return (*grads, None, None)


def selective_scan_cpu(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    chunk_size: int | None = None,
):
    """Selective scan with the compiled CPU kernel; same results as :func:`~mambaseg.ssm.selective_scan_reference`.

    Args:
        u: (B, Dm, L) input.
        delta: (B, Dm, L) step sizes (before ``delta_bias`` / softplus).
        A: (Dm, N) state matrix, N <= 256.
        B: (B, G, N, L) input projection, already grouped (Dm % G == 0).
        C: (B, G, N, L) output projection.
        D: optional (Dm,) skip weight.
        z: optional (B, Dm, L) gate (the output is multiplied by silu(z)).
        delta_bias: optional (Dm,) added to delta.
        delta_softplus: apply softplus to delta (after the bias).
        return_last_state: also return the final state (B, Dm, N).
        chunk_size: positions between the states saved for the backward (default 128).

    Returns:
        ``out`` (B, Dm, L) in u's dtype, or ``(out, last_state)`` with last_state (B, Dm, N) in the working dtype
        (fp32, or fp64 for fp64 inputs; half-precision inputs are computed in fp32).

    Raises:
        RuntimeError: the kernel is not available (check :func:`available` first).
        ValueError: a tensor is not on the CPU, N exceeds 256 or ``chunk_size`` < 1.

    Inputs are otherwise assumed validated (see :func:`mambaseg.ssm.selective_scan`). Without autograd nothing is
    saved for the backward.
    """
    ext = _load()
    if ext is None:
        raise RuntimeError(f"selective_scan_cpu: the compiled CPU kernel is not available (disabled by "
                           f"{ENV_DISABLE} or the build failed; see the logged warning). Use backend 'chunked'.")
    tensors = (u, delta, A, B, C, D, z, delta_bias)
    for name, t in zip(("u", "delta", "A", "B", "C", "D", "z", "delta_bias"), tensors):
        if t is not None and t.device.type != "cpu":
            raise ValueError(f"selective_scan_cpu: argument '{name}' is on device {t.device}, expected cpu.")
    if A.shape[1] > MAX_STATE:
        raise ValueError(f"selective_scan_cpu: argument 'A' has N={A.shape[1]} states, expected N <= {MAX_STATE}.")
    chunk = DEFAULT_CHUNK if chunk_size is None else int(chunk_size)
    if chunk < 1:
        raise ValueError(f"selective_scan_cpu: argument 'chunk_size' is {chunk_size}, expected an integer >= 1.")
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    with torch.autocast(device_type="cpu", enabled=False):
        if needs_grad:
            out, last = _SelectiveScanCpuFn.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk)
        else:
            work = torch.promote_types(u.dtype, torch.float32)
            out, last, _ = ext.forward(*_prepare(u, delta, A, B, C, D, z, delta_bias, work), delta_softplus, chunk,
                                       False)
            out = out.to(u.dtype)
    return (out, last) if return_last_state else out


class _CausalConvSiluFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ext = _load()
        w2 = weight.reshape(weight.shape[0], -1).contiguous()
        x, bias = x.contiguous(), bias.contiguous()
        ctx.save_for_backward(x, w2, bias)
        ctx.wshape = weight.shape
        return ext.conv_forward(x, w2, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, w2, bias = ctx.saved_tensors
        dx, dw, db = _load().conv_backward(x, w2, bias, grad.contiguous())
        return dx, dw.view(ctx.wshape), db


def causal_conv1d_silu_cpu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``silu(conv1d(x, weight, bias, padding=K-1, groups=D)[..., :L])`` (Mamba's causal depthwise conv + SiLU) in
    one compiled pass, with a compiled backward that recomputes the conv instead of saving it.

    Args:
        x: (B, D, L) float32/float64 CPU tensor.
        weight: (D, 1, K) depthwise kernel (``nn.Conv1d(D, D, K, groups=D).weight``), x's dtype.
        bias: (D,) bias, x's dtype.

    Returns:
        (B, D, L). Gradients for x, weight and bias; deterministic (the batch sums run in a fixed order).

    Raises:
        RuntimeError: the kernel is not available (check :func:`available` first).
    """
    if _load() is None:
        raise RuntimeError(f"causal_conv1d_silu_cpu: the compiled CPU kernel is not available (disabled by "
                           f"{ENV_DISABLE} or the build failed).")
    return _CausalConvSiluFn.apply(x, weight, bias)
