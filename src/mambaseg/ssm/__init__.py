"""Selective scan (Mamba S6) with mamba_ssm's semantics and three backends.

* ``reference`` — a sequential loop, the readable ground truth (:mod:`mambaseg.ssm.reference`);
* ``chunked`` — pure PyTorch, fast on CPU, O(B·D·L) memory, custom backward (:mod:`mambaseg.ssm.chunked`);
* ``cpu`` — an optional compiled C++ loop kernel (:mod:`mambaseg.ssm.cpu_kernel`, built on first use with the
  machine's C++ compiler and ninja; ~5-9x faster than ``chunked``); ``MAMBASEG_NO_CPU_KERNEL=1`` disables it;
* ``cuda`` — mamba_ssm's ``selective_scan_fn`` when it imports and the tensors are on CUDA.

The backend is chosen by the ``backend`` argument, else the ``MAMBASEG_SCAN_BACKEND`` environment variable, else
``auto`` (``cuda`` for CUDA tensors when mamba_ssm is installed, ``cpu`` for CPU tensors when the kernel builds,
otherwise ``chunked``; always ``chunked`` while tracing or exporting to ONNX). An unavailable backend falls back to
``chunked`` with a logged warning; the backend in use is logged once per process. Computation is fp32 (fp64 for fp64
inputs), also under autocast; the output has u's dtype. This is mamba_ssm's half-precision convention: u, delta, B, C
and z may be bf16 (or fp16), A, D and delta_bias fp32; the state and every sum stay fp32, the output and the gradients
of the half-precision inputs come back in their dtype (the ``cpu`` and ``chunked`` backends widen the inputs to fp32
on entry).
"""

from __future__ import annotations

import logging
import os

import torch

from . import cpu_kernel
from .chunked import selective_scan_chunked
from .reference import selective_scan_reference

try:  # optional CUDA kernel
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _cuda_scan
except Exception:  # noqa: BLE001 - any import failure (missing package, ABI mismatch) means "not available"
    _cuda_scan = None

__all__ = ["selective_scan", "selective_scan_reference", "selective_scan_chunked", "BACKENDS", "resolve_backend"]

logger = logging.getLogger(__name__)
BACKENDS = ("auto", "chunked", "reference", "cuda", "cpu")
ENV_VAR = "MAMBASEG_SCAN_BACKEND"
_logged: set[str] = set()


def _log_once(key: str, level: int, msg: str) -> None:
    if key not in _logged:
        _logged.add(key)
        logger.log(level, msg)


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """Return the backend that will run for tensors on ``device`` (falls back to ``chunked`` with a warning)."""
    name = (backend or os.environ.get(ENV_VAR) or "auto").lower()
    if name not in BACKENDS:
        raise ValueError(f"selective_scan backend must be one of {BACKENDS}, got {name!r} "
                         f"(from {'argument' if backend else ENV_VAR}).")
    tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
    if name == "auto":
        if _cuda_scan is not None and device.type == "cuda":
            name = "cuda"
        elif device.type == "cpu" and not tracing and cpu_kernel.available():
            name = "cpu"
        else:
            name = "chunked"
    if name == "cpu" and (device.type != "cpu" or tracing or not cpu_kernel.available()):
        why = ("tensors are on " + device.type) if device.type != "cpu" else (
            "tracing/exporting" if tracing else "the C++ kernel could not be built")
        _log_once("fallback-cpu-" + why, logging.WARNING,
                  f"selective_scan: backend 'cpu' unavailable ({why}); falling back to 'chunked'.")
        name = "chunked"
    if name == "cuda" and (_cuda_scan is None or device.type != "cuda"):
        why = ("mamba_ssm is not installed: pip install 'mambaseg[cuda]'" if _cuda_scan is None
               else f"tensors are on {device.type}")
        _log_once("fallback-" + why, logging.WARNING,
                  f"selective_scan: backend 'cuda' unavailable ({why}); falling back to 'chunked'.")
        name = "chunked"
    _log_once("backend-" + name, logging.INFO, f"selective_scan backend: {name}")
    return name


def _check(name: str, t: torch.Tensor | None, shape: tuple, expected: str) -> None:
    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"selective_scan: argument '{name}' must be a torch.Tensor, got {type(t).__name__}.")
    if not t.is_floating_point():
        raise ValueError(f"selective_scan: argument '{name}' must be a real floating tensor, got dtype {t.dtype}.")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"selective_scan: argument '{name}' has shape {tuple(t.shape)}, expected {expected} "
                         f"= {tuple(shape)}.")


def _grouped(name: str, t: torch.Tensor, batch: int, dim: int, nstate: int, length: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"selective_scan: argument '{name}' must be a torch.Tensor, got {type(t).__name__}.")
    if t.dim() == 3:
        _check(name, t, (batch, nstate, length), "(B, N, L)")
        return t.unsqueeze(1)
    if t.dim() == 4:
        groups = t.shape[1]
        if groups < 1 or dim % groups:
            raise ValueError(f"selective_scan: argument '{name}' has {groups} groups (shape {tuple(t.shape)}); "
                             f"expected (B, G, N, L) with D={dim} divisible by G.")
        _check(name, t, (batch, groups, nstate, length), "(B, G, N, L)")
        return t
    raise ValueError(f"selective_scan: argument '{name}' has shape {tuple(t.shape)}, expected (B, N, L) = "
                     f"{(batch, nstate, length)} or (B, G, N, L).")


def selective_scan(
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
    backend: str | None = None,
):
    """Selective scan ``h_l = exp(Δ_l A) h_{l-1} + Δ_l B_l u_l``, ``y_l = C_l·h_l + D u_l``, gated by silu(z).

    Args:
        u: (B, D, L) input.
        delta: (B, D, L) step sizes; ``Δ = delta + delta_bias`` then softplus if ``delta_softplus``.
        A: (D, N) real state matrix.
        B: (B, N, L) or grouped (B, G, N, L) with D % G == 0 (group g serves channels g·D/G .. (g+1)·D/G − 1).
        C: same layout as B.
        D: optional (D,) skip weight.
        z: optional (B, D, L) gate.
        delta_bias: optional (D,).
        delta_softplus: apply softplus to Δ.
        return_last_state: also return the last state (B, D, N).
        backend: ``auto`` | ``chunked`` | ``reference`` | ``cuda`` (default: env ``MAMBASEG_SCAN_BACKEND`` or auto).

    Returns:
        ``out`` (B, D, L) in u's dtype, or ``(out, last_state)``.

    Raises:
        ValueError: a shape or dtype does not match; the message names the argument, the shape received and the
            shape expected.
    """
    if not isinstance(u, torch.Tensor) or u.dim() != 3:
        got = tuple(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__
        raise ValueError(f"selective_scan: argument 'u' has shape {got}, expected (B, D, L).")
    batch, dim, length = u.shape
    _check("u", u, (batch, dim, length), "(B, D, L)")
    if not isinstance(A, torch.Tensor) or A.dim() != 2 or A.shape[0] != dim:
        got = tuple(A.shape) if isinstance(A, torch.Tensor) else type(A).__name__
        raise ValueError(f"selective_scan: argument 'A' has shape {got}, expected (D, N) with D={dim}.")
    nstate = A.shape[1]
    _check("A", A, (dim, nstate), "(D, N)")
    _check("delta", delta, (batch, dim, length), "(B, D, L)")
    Bg = _grouped("B", B, batch, dim, nstate, length)
    Cg = _grouped("C", C, batch, dim, nstate, length)
    _check("D", D, (dim,), "(D,)")
    _check("z", z, (batch, dim, length), "(B, D, L)")
    _check("delta_bias", delta_bias, (dim,), "(D,)")
    if length == 0:
        raise ValueError("selective_scan: argument 'u' has sequence length L=0, expected L >= 1.")

    name = resolve_backend(backend, u.device)
    if name == "reference":
        return selective_scan_reference(u, delta, A, Bg, Cg, D, z, delta_bias, delta_softplus, return_last_state)
    if name == "cpu":
        return cpu_kernel.selective_scan_cpu(u, delta, A, Bg, Cg, D, z, delta_bias, delta_softplus, return_last_state)
    if name == "cuda":
        return _cuda_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    return selective_scan_chunked(u, delta, A, Bg, Cg, D, z, delta_bias, delta_softplus, return_last_state)
