"""Compiled CPU kernel for AKConv's sampling and mixing (``csrc/akconv_cpu.cpp``).

:func:`akconv_sample_mix` computes ``y = col · W^T`` where ``col`` (B·h·w, N·C) holds the bilinear samples of
every channel at the N positions of every output pixel — the im2col of a deformable convolution with an irregular
kernel — produced in tiles of 1024 rows (a tile may span batch elements) that are multiplied while in cache, so the
N-fold buffer is never written out. Its backward, per tile: ``dcol = dy · W``, then one pass that computes each
point's bilinear weights once, writes the samples again (for the weight gradient), scatters ``dcol`` to the input
(col2im) and reduces it to the positions. Parallel with ``at::parallel_for`` over work units split by shape only,
no atomics, fixed-order reductions: gradients are bit-identical from run to run whatever the thread count.

Precision: fp32 and fp64 inputs are computed in their dtype. bfloat16 — a bf16 ``x``, or any ``x`` under
``torch.autocast("cpu", dtype=torch.bfloat16)`` — runs in bf16 storage with fp32 arithmetic: ``x`` and ``weight``
in bf16, each sample computed in fp32 from the bf16 corners and rounded once to bf16, the products bf16 GEMMs with
fp32 accumulation (oneDNN), the positions (offsets + base grid) and the gradients of ``x``, the offsets and the
weight accumulated in fp32 (returned in their inputs' dtypes); the output is bf16. fp16 inputs are computed in fp32.

The sampling rule is the official AKConv's (clamped corners, the edge counted twice outside ``[0, size−1)``); on a
zero-padded image (positions shifted by one) it is exactly zero-extended bilinear sampling, so one kernel serves
both of :class:`~mambaseg.nn.AKConv`'s border modes. The pure-PyTorch :meth:`AKConv.sample` stays the reference and
the export path. Prebuilt when the package is installed (``mambaseg.nn._akconv_cpu``), else built at first use
(see :mod:`mambaseg.utils.cpp_ext`); ``MAMBASEG_NO_AKCONV_KERNEL=1`` (or
``MAMBASEG_NO_CPU_KERNEL=1``) disables it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..utils.cpp_ext import disabled, load_extension

__all__ = ["ENV_DISABLE", "akconv_sample_mix", "available", "storage_dtype"]

logger = logging.getLogger(__name__)

ENV_DISABLE = "MAMBASEG_NO_AKCONV_KERNEL"
_SOURCE = Path(__file__).parent / "csrc" / "akconv_cpu.cpp"
_HEADER = _SOURCE.with_name("akconv_cpu_kernels.h")
_state: dict[str, object] = {}


def _load():
    if "module" not in _state:
        var = disabled(ENV_DISABLE)
        if var is not None:
            logger.info("AKConv: CPU kernel disabled by %s.", var)
            _state["module"] = None
        else:
            _state["module"] = load_extension("mambaseg_akconv_cpu", [_SOURCE], [_HEADER], what="AKConv CPU kernel",
                                                prebuilt=f"{__package__}._akconv_cpu")
    return _state["module"]


def available() -> bool:
    """Whether the compiled kernel can be used (builds it on the first call; the outcome is cached)."""
    return _load() is not None


class _AKConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, off, weight, pn, stride, shift):
        ctx.save_for_backward(x, off, weight, pn)
        ctx.stride, ctx.shift = stride, shift
        return _load().forward(x, off, weight, pn, stride, shift)

    @staticmethod
    def backward(ctx, dy):
        x, off, weight, pn = ctx.saved_tensors
        need = ctx.needs_input_grad
        dx, doff, dw = _load().backward(x, off, weight, pn, ctx.stride, ctx.shift, dy.to(x.dtype).contiguous(),
                                        need[0], need[1], need[2])
        dx, doff, dw = dx.to(x.dtype), doff.to(off.dtype), dw.to(weight.dtype)  # bf16: accumulated in fp32
        return (dx if need[0] else None), (doff if need[1] else None), (dw if need[2] else None), None, None, None


def storage_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the kernel samples and multiplies in for input ``x``: bf16 for a bf16 ``x`` or under a CPU
    bf16 autocast, fp64 for fp64, else fp32."""
    if x.dtype == torch.float64:
        return torch.float64
    if x.dtype == torch.bfloat16 or (torch.is_autocast_enabled("cpu")
                                      and torch.get_autocast_dtype("cpu") == torch.bfloat16):
        return torch.bfloat16
    return torch.float32


def akconv_sample_mix(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, p_n: torch.Tensor | None = None,
                      stride: int = 0, shift: float = 0.0) -> torch.Tensor:
    """Bilinear samples of ``x`` at learned positions, mixed by ``weight``, with autograd.

    The position of point n of output pixel (i, j) is ``(i·stride + p_n[n] + offset[:, n, i, j] + shift,
    j·stride + p_n[N+n] + offset[:, N+n, i, j] + shift)``; with the defaults (no ``p_n``, stride 0, shift 0)
    ``offset`` holds absolute positions.

    Args:
        x: (B, C, S1, S2) image (zero-pad it yourself for zero-extended sampling, and shift by one).
        offset: (B, 2N, h, w): rows (along S1) then columns (along S2), in pixels of ``x``.
        weight: (C_out, C·N) mixing weight, column ``c·N + n`` (the (N, 1) convolution's weight, flattened).
        p_n: (2N,) initial sampling shape (not differentiated); zeros when None.
        stride: output stride of the base grid.
        shift: added to every position.

    Returns:
        (B, C_out, h, w) in :func:`storage_dtype` (bf16 for bf16 ``x`` or under a CPU bf16 autocast, fp64 for fp64,
        else fp32), in channels-last memory format.

    Raises:
        RuntimeError: the kernel is not available (check :func:`available`).
    """
    if _load() is None:
        raise RuntimeError(f"AKConv: the compiled CPU kernel is not available (disabled by {ENV_DISABLE} or the "
                           "build failed; see the logged warning).")
    b, c = x.shape[:2]
    n = offset.shape[1] // 2
    h, w = offset.shape[-2:]
    store = storage_dtype(x)
    work = torch.float64 if store == torch.float64 else torch.float32  # positions and accumulation
    with torch.autocast(device_type="cpu", enabled=False):
        # the kernel works channels-last: x (B, S1, S2, C) (free when x already is), weight (C_out, N·C)
        xc = x.to(store).permute(0, 2, 3, 1).contiguous()
        oc = offset.to(work).permute(0, 2, 3, 1).contiguous()  # (B, h, w, 2N): free when p_conv ran channels-last
        wc = weight.to(store).view(-1, c, n).transpose(1, 2).reshape(-1, n * c)
        pn = torch.zeros(2 * n, dtype=work) if p_n is None else p_n.detach().to(work).contiguous()
        if torch.is_grad_enabled() and any(t.requires_grad for t in (x, offset, weight)):
            y = _AKConvFn.apply(xc, oc, wc, pn, int(stride), float(shift))
        else:
            y = _load().forward(xc, oc, wc, pn, int(stride), float(shift))
    return y.view(b, h, w, -1).permute(0, 3, 1, 2)
