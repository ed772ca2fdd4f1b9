"""Chunked pure-PyTorch selective scan with a recomputing custom backward.

The recurrence ``h_l = a_l * h_{l-1} + b_l`` (a = exp(Δ·A), b = Δ·u·B, per channel and state) is solved in
*blocks* of the sequence, the state carried from block to block. Inside a block of ``K`` chunks of ``T`` steps
the tensors are laid out time-major ``(T, K, R, N)`` (R = batch·channels), and the scan has three passes:

1. a loop over the ``T`` steps advances all ``K`` chunks at once, each starting from zero (in place);
2. a loop over the ``K`` chunks carries the true state from chunk to chunk, using the within-chunk cumulative
   product of ``a``;
3. a fix-up adds ``cumprod(a) * carried_state`` to every step.

Only block-sized ``(T, K, R, N)`` tensors ever exist, so extra memory is O(B·D·L + B·D·block·N), never
O(B·D·L·N). The backward recomputes each block's states from the saved block-start states (going from the last
block to the first) and runs the same three passes in reverse for the adjoint ``g_l = dL/dh_l + a_{l+1}·g_{l+1}``;
the gradients of a and b follow from g and the shifted states.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["selective_scan_chunked", "DEFAULT_CHUNK", "DEFAULT_BLOCK_ELEMENTS"]

DEFAULT_CHUNK = 64
# elements of one (T, K, R, N) block tensor; about eight of them are alive in the backward
DEFAULT_BLOCK_ELEMENTS = 1 << 21


def _scan_forward_(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, prod: torch.Tensor) -> torch.Tensor:
    """In place: ``b`` (T, K, R, N) becomes the states of ``h_l = a_l h_{l-1} + b_l`` starting at ``h0`` (R, N).

    ``prod[t]`` (T, K, R, N) is the product of ``a`` within the chunk up to step t. Returns the last state (R, N).
    """
    steps, chunks = a.shape[0], a.shape[1]
    for t in range(1, steps):  # pass 1: all chunks at once, each from zero
        b[t].addcmul_(a[t], b[t - 1])
    carry_in = torch.empty_like(b[0])  # (K, R, N): true state entering each chunk
    state = h0
    for k in range(chunks):  # pass 2: carry from chunk to chunk
        carry_in[k] = state
        state = torch.addcmul(b[steps - 1, k], prod[steps - 1, k], state)
    b.addcmul_(prod, carry_in.unsqueeze(0))  # pass 3: fix-up
    return state


def _scan_forward_traced(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor,
                         prod: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Out-of-place twin of :func:`_scan_forward_` used while tracing (ONNX export): the exporter mistranslates the
    chained in-place updates of slices. Returns ``(states (T, K, R, N), last state (R, N))``."""
    steps, chunks = a.shape[0], a.shape[1]
    rows = [b[0]]
    for t in range(1, steps):  # pass 1
        rows.append(torch.addcmul(b[t], a[t], rows[-1]))
    h = torch.stack(rows)
    carry_in, state = [], h0
    for k in range(chunks):  # pass 2
        carry_in.append(state)
        state = torch.addcmul(h[steps - 1, k], prod[steps - 1, k], state)
    return torch.addcmul(h, prod, torch.stack(carry_in).unsqueeze(0)), state  # pass 3


def _scan_reverse_(a: torch.Tensor, g: torch.Tensor, carry: torch.Tensor, prod: torch.Tensor) -> torch.Tensor:
    """In place: ``g`` (T, K, R, N) becomes the adjoint of ``g_l = g_l + a_{l+1} g_{l+1}``, run from the end.

    ``prod[t]`` is ``a[t+1]···a[T-1]`` within the chunk. ``carry`` (R, N) is added at the last step of the block
    with coefficient 1 (it is ``a·g`` of the step after the block, or the gradient of the final state). Returns
    ``a_first · g_first`` to carry into the block before.
    """
    steps, chunks = a.shape[0], a.shape[1]
    for t in range(steps - 2, -1, -1):
        g[t].addcmul_(a[t + 1], g[t + 1])
    carry_in = torch.empty_like(g[0])
    for k in range(chunks - 1, -1, -1):
        carry_in[k] = carry
        carry = a[0, k] * torch.addcmul(g[0, k], prod[0, k], carry)
    g.addcmul_(prod, carry_in.unsqueeze(0))
    return carry


class _Plan:
    """Block boundaries and chunking of a sequence of length L for R rows of N states."""

    def __init__(self, length: int, rows: int, nstate: int, chunk: int | None, block_elements: int | None):
        # plain ints: while tracing (ONNX export) tensor sizes are traced values, and a block end computed from
        # ``rows`` (batch x channels) would be recorded as a function of the batch size, so that another batch
        # than the example's slices blocks of another length than the unrolled loops expect (a Reshape error at
        # export-check time). The plan only bounds memory: one plan for every batch size is correct.
        length, rows, nstate = int(length), int(rows), int(nstate)
        chunk = chunk or DEFAULT_CHUNK
        block_elements = block_elements or DEFAULT_BLOCK_ELEMENTS
        block = max(chunk, (block_elements // max(rows * nstate, 1)) // chunk * chunk)
        self.chunk = chunk
        self.bounds = [(l0, min(length, l0 + block)) for l0 in range(0, length, block)]

    def shape(self, l0: int, l1: int) -> tuple[int, int]:
        n = l1 - l0
        steps = min(self.chunk, n)
        return steps, math.ceil(n / steps)


def _to_tm(x: torch.Tensor, l0: int, l1: int, steps: int, chunks: int) -> torch.Tensor:
    """(R, L) slice [l0, l1) -> time-major (T, K, R), zero-padded to K*T."""
    xb = x[:, l0:l1]
    pad = steps * chunks - (l1 - l0)
    if pad:
        xb = F.pad(xb, (0, pad))
    return xb.reshape(xb.shape[0], chunks, steps).permute(2, 1, 0).contiguous()


def _from_tm(x: torch.Tensor, n: int) -> torch.Tensor:
    """Time-major (T, K, R) -> (R, n)."""
    steps, chunks, rows = x.shape
    return x.permute(2, 1, 0).reshape(rows, chunks * steps)[:, :n]


def _bc_to_tm(x: torch.Tensor, l0: int, l1: int, steps: int, chunks: int) -> torch.Tensor:
    """(batch, G, N, L) slice -> time-major grouped (T, K, batch, G, N); never repeated over channels."""
    batch, groups, nstate, _ = x.shape
    xb = x[..., l0:l1]
    pad = steps * chunks - (l1 - l0)
    if pad:
        xb = F.pad(xb, (0, pad))
    return xb.reshape(batch, groups, nstate, chunks, steps).permute(4, 3, 0, 1, 2).contiguous()


def _bc_from_tm(x: torch.Tensor, n: int) -> torch.Tensor:
    """Grouped time-major (T, K, batch, G, N) -> (batch, G, N, n)."""
    steps, chunks, batch, groups, nstate = x.shape
    return x.permute(2, 3, 4, 1, 0).reshape(batch, groups, nstate, chunks * steps)[..., :n]


def _grouped(x: torch.Tensor, batch: int, groups: int) -> torch.Tensor:
    """View (T, K, R[, N]) as (T, K, batch, G, D/G[, N])."""
    return x.view(x.shape[0], x.shape[1], batch, groups, -1, *x.shape[3:])


def _prepare(u, delta, A, delta_bias, delta_softplus, work):
    batch, dim, length = u.shape
    rows = batch * dim
    u2 = u.reshape(rows, length).to(work)
    dt_raw = delta.reshape(rows, length).to(work)
    if delta_bias is not None:
        dt_raw = dt_raw + delta_bias.to(work).repeat(batch)[:, None]
    dt = F.softplus(dt_raw) if delta_softplus else dt_raw
    A_r = A.to(work).repeat(batch, 1)  # (R, N)
    return u2, dt_raw, dt, A_r


def _block_tensors(u2, dt, A_r, Bv, l0, l1, steps, chunks, batch):
    """Time-major block tensors: dt, u (T, K, R); a = exp(Δ·A), b = Δ·u·B (T, K, R, N); B grouped
    (T, K, batch, G, N); cs = cumsum of Δ within each chunk (T, K, R)."""
    dt_tm = _to_tm(dt, l0, l1, steps, chunks)  # (T, K, R)
    u_tm = _to_tm(u2, l0, l1, steps, chunks)
    a = torch.exp(dt_tm.unsqueeze(-1) * A_r)  # (T, K, R, N)
    Bg = _bc_to_tm(Bv, l0, l1, steps, chunks)  # (T, K, batch, G, N)
    groups = Bg.shape[3]
    b = _grouped(dt_tm * u_tm, batch, groups).unsqueeze(-1) * Bg.unsqueeze(4)  # (T, K, batch, G, D/G, N)
    return dt_tm, u_tm, a, Bg, b.view(a.shape), torch.cumsum(dt_tm, 0)


def _scan_y(u, delta, A, Bv, Cv, delta_bias, delta_softplus, chunk, block_elements, work):
    """Forward of the scan part: y (R, L) without D and gate, the block-start states and the last state."""
    batch, dim, length = u.shape
    groups = Bv.shape[1]
    u2, _, dt, A_r = _prepare(u, delta, A, delta_bias, delta_softplus, work)
    Bv, Cv = Bv.to(work), Cv.to(work)
    plan = _Plan(length, batch * dim, A.shape[1], chunk, block_elements)
    tracing = torch.jit.is_tracing()
    y = u2.new_empty(u2.shape)
    y_blocks = []  # used instead of y while tracing
    state = u2.new_zeros(batch * dim, A.shape[1])
    starts = []
    for l0, l1 in plan.bounds:
        starts.append(state)
        steps, chunks = plan.shape(l0, l1)
        _, _, a, _, b, cs = _block_tensors(u2, dt, A_r, Bv, l0, l1, steps, chunks, batch)
        if tracing:
            b, state = _scan_forward_traced(a, b, state, torch.exp(cs.unsqueeze(-1) * A_r))
        else:
            state = _scan_forward_(a, b, state, torch.exp(cs.unsqueeze(-1) * A_r))
        Cg = _bc_to_tm(Cv, l0, l1, steps, chunks)  # (T, K, batch, G, N)
        yb = torch.einsum("tkbgdn,tkbgn->tkbgd", _grouped(b, batch, groups), Cg)
        if tracing:
            y_blocks.append(_from_tm(yb.reshape(steps, chunks, -1), l1 - l0))
        else:
            y[:, l0:l1] = _from_tm(yb.reshape(steps, chunks, -1), l1 - l0)
    if tracing:
        y = torch.cat(y_blocks, dim=1)
    return y, starts, state, plan


def _finish(y, u, D, z, work):
    """out = (y + u·D) · silu(z), all (B, Dm, L)."""
    out = y.view(u.shape)
    if D is not None:
        out = out + u.to(work) * D.to(work)[:, None]
    if z is not None:
        out = out * F.silu(z.to(work))
    return out


class _SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, Bv, Cv, D, z, delta_bias, delta_softplus, chunk, block_elements):
        work = torch.promote_types(u.dtype, torch.float32)
        with torch.autocast(device_type=u.device.type, enabled=False):
            y, starts, last, plan = _scan_y(u, delta, A, Bv, Cv, delta_bias, delta_softplus, chunk,
                                            block_elements, work)
            out = _finish(y, u, D, z, work)
        ctx.save_for_backward(u, delta, A, Bv, Cv, D, z, delta_bias, y, torch.stack(starts))
        ctx.delta_softplus = delta_softplus
        ctx.plan = plan
        ctx.work = work
        return out.to(u.dtype), last.view(u.shape[0], u.shape[1], -1)

    @staticmethod
    def backward(ctx, dout, dlast):
        u, delta, A, Bv, Cv, D, z, delta_bias, y, starts = ctx.saved_tensors
        work, plan = ctx.work, ctx.plan
        batch, dim, length = u.shape
        groups, nstate = Bv.shape[1], A.shape[1]
        rows = batch * dim
        with torch.autocast(device_type=u.device.type, enabled=False):
            dout = dout.to(work)
            uw = u.to(work)
            grads_z = None
            if z is not None:
                zw = z.to(work)
                pre = y.view(u.shape) if D is None else y.view(u.shape) + uw * D.to(work)[:, None]
                sig = torch.sigmoid(zw)
                grads_z = dout * pre * sig * (1 + zw * (1 - sig))  # d silu(z)/dz
                dout = dout * zw * sig
            grad_D = None if D is None else (dout * uw).sum((0, 2))
            du = torch.zeros(rows, length, dtype=work, device=u.device)
            if D is not None:
                du += (dout * D.to(work)[:, None]).reshape(rows, length)
            dy = dout.reshape(rows, length)

            u2, dt_raw, dt, A_r = _prepare(u, delta, A, delta_bias, delta_softplus=ctx.delta_softplus, work=work)
            Bw, Cw = Bv.to(work), Cv.to(work)
            ddt = torch.empty(rows, length, dtype=work, device=u.device)
            dA = torch.zeros(rows, nstate, dtype=work, device=u.device)
            dB = torch.empty(batch, groups, nstate, length, dtype=work, device=u.device)
            dC = torch.empty_like(dB)
            carry = torch.zeros(rows, nstate, dtype=work, device=u.device)
            if dlast is not None:
                carry = carry + dlast.reshape(rows, nstate).to(work)
            for i in range(len(plan.bounds) - 1, -1, -1):
                l0, l1 = plan.bounds[i]
                n = l1 - l0
                steps, chunks = plan.shape(l0, l1)
                h0 = starts[i]
                dt_tm, u_tm, a, Bg, h, cs = _block_tensors(u2, dt, A_r, Bw, l0, l1, steps, chunks, batch)
                _scan_forward_(a, h, h0, torch.exp(cs.unsqueeze(-1) * A_r))  # recompute the states
                dy_tm = _to_tm(dy, l0, l1, steps, chunks)  # (T, K, R)
                dy_g = _grouped(dy_tm, batch, groups)  # (T, K, batch, G, D/G)
                dC[..., l0:l1] = _bc_from_tm(torch.einsum("tkbgd,tkbgdn->tkbgn", dy_g, _grouped(h, batch, groups)), n)
                Cg = _bc_to_tm(Cw, l0, l1, steps, chunks)
                g = (dy_g.unsqueeze(-1) * Cg.unsqueeze(4)).view(a.shape)  # dL/dh, direct part
                prod_rev = torch.exp((cs[-1:] - cs).unsqueeze(-1) * A_r)  # a[t+1]...a[T-1]
                carry = _scan_reverse_(a, g, carry, prod_rev)  # full adjoint
                del prod_rev
                # g * h_{l-1}: shift the states by one step in sequence order
                gh = torch.empty_like(g)
                torch.mul(g[1:], h[:-1], out=gh[1:])
                torch.mul(g[0, 1:], h[steps - 1, :-1], out=gh[0, 1:])
                torch.mul(g[0, 0], h0, out=gh[0, 0])
                del h
                gh.mul_(a)  # dL/d(Δ·A) per element
                del a
                ddt_tm = torch.einsum("tkrn,rn->tkr", gh, A_r)
                dA += torch.einsum("tkrn,tkr->rn", gh, dt_tm)
                del gh
                g_g = _grouped(g, batch, groups)
                gB = torch.einsum("tkbgdn,tkbgn->tkbgd", g_g, Bg).reshape(dt_tm.shape)
                ddt_tm += gB * u_tm
                ddt[:, l0:l1] = _from_tm(ddt_tm, n)
                du[:, l0:l1] += _from_tm(gB * dt_tm, n)
                dtu_g = _grouped(dt_tm * u_tm, batch, groups)
                dB[..., l0:l1] = _bc_from_tm(torch.einsum("tkbgdn,tkbgd->tkbgn", g_g, dtu_g), n)
            if ctx.delta_softplus:
                ddt = ddt * torch.sigmoid(dt_raw)
            grad_bias = None if delta_bias is None else ddt.view(batch, dim, length).sum((0, 2))
            grad_A = dA.view(batch, dim, nstate).sum(0)

        def cast(g_, ref):
            return None if (g_ is None or ref is None) else g_.to(ref.dtype).view(ref.shape)

        return (
            cast(du, u), cast(ddt, delta), cast(grad_A, A), cast(dB, Bv), cast(dC, Cv), cast(grad_D, D),
            cast(grads_z, z), cast(grad_bias, delta_bias), None, None, None,
        )


def selective_scan_chunked(
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
    block_elements: int | None = None,
):
    """Chunked selective scan; same arguments and results as :func:`~mambaseg.ssm.reference.selective_scan_reference`.

    B and C must already be grouped (B, G, N, L). ``chunk_size`` is the chunk length T (default 64) and
    ``block_elements`` the size of one block tensor (default 2**21 elements), which bounds the extra memory.
    Without autograd (inference, export) the forward runs directly, without saving anything.
    """
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z, delta_bias)
    )
    if needs_grad:
        out, last = _SelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size,
                                           block_elements)
    else:
        work = torch.promote_types(u.dtype, torch.float32)
        with torch.autocast(device_type=u.device.type, enabled=False):
            y, _, last, _ = _scan_y(u, delta, A, B, C, delta_bias, delta_softplus, chunk_size, block_elements, work)
            out = _finish(y, u, D, z, work).to(u.dtype)
        last = last.view(u.shape[0], u.shape[1], -1)
    return (out, last) if return_last_state else out
