"""Sequential reference selective scan: the readable ground truth (mamba_ssm ``selective_scan_ref`` semantics).

Autograd records every step, so it is slow for long sequences; use it for tests and small shapes only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["selective_scan_reference"]


def selective_scan_reference(
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
):
    """Selective scan as a plain loop over the sequence.

    Args:
        u: (B, Dm, L) input.
        delta: (B, Dm, L) step sizes (before ``delta_bias`` / softplus).
        A: (Dm, N) state matrix (real, usually negative).
        B: (B, G, N, L) input projection, group g serving channels g*Dm/G .. (g+1)*Dm/G-1.
        C: (B, G, N, L) output projection.
        D: (Dm,) skip weight.
        z: (B, Dm, L) gate; the output is multiplied by silu(z).
        delta_bias: (Dm,) added to delta.
        delta_softplus: apply softplus to delta (after the bias).
        return_last_state: also return the final state (B, Dm, N).

    Inputs are assumed validated (see :func:`mambaseg.ssm.selective_scan`).
    """
    dtype_in = u.dtype
    work = torch.promote_types(u.dtype, torch.float32)
    u, delta, A = u.to(work), delta.to(work), A.to(work)
    batch, dim, length = u.shape
    groups = B.shape[1]
    # (B, G, N, L) -> (B, Dm, N, L): repeat each group over its channels
    Bx = B.to(work).repeat_interleave(dim // groups, dim=1)
    Cx = C.to(work).repeat_interleave(dim // groups, dim=1)
    if delta_bias is not None:
        delta = delta + delta_bias.to(work)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    h = u.new_zeros(batch, dim, A.shape[1])  # (B, Dm, N)
    ys = []
    for t in range(length):
        dA = torch.exp(delta[:, :, t, None] * A)  # (B, Dm, N)
        dBu = (delta[:, :, t] * u[:, :, t])[:, :, None] * Bx[:, :, :, t]  # (B, Dm, N)
        h = dA * h + dBu
        ys.append((h * Cx[:, :, :, t]).sum(-1))  # (B, Dm)
    y = torch.stack(ys, dim=-1)  # (B, Dm, L)
    out = y if D is None else y + u * D.to(work)[:, None]
    if z is not None:
        out = out * F.silu(z.to(work))
    out = out.to(dtype_in)
    return (out, h) if return_last_state else out
