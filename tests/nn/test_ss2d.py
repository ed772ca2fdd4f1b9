"""SS2D: parameter count, init, shapes, the order in which the four directions are merged, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mambaseg.nn.ss2d import SS2D, MambaOut, four_ways, merge_four_ways
from mambaseg.ssm import selective_scan_reference


def test_param_count_c64():
    assert sum(p.numel() for p in SS2D(64).parameters()) == 55_808


def test_init():
    torch.manual_seed(0)
    m = SS2D(32, d_state=8)
    d = 64
    assert m.dt_rank == 2 and m.A_logs.shape == (4 * d, 8) and m.Ds.shape == (4 * d,)
    torch.testing.assert_close(m.A_logs[5], torch.log(torch.arange(1.0, 9.0)))
    assert torch.equal(m.Ds, torch.ones(4 * d))
    assert m.A_logs._no_weight_decay and m.Ds._no_weight_decay
    dt = F.softplus(m.dt_projs_bias)  # inverse-softplus init: softplus(bias) in [1e-3, 0.1]
    assert dt.min() >= 1e-3 - 1e-7 and dt.max() <= 0.1 + 1e-7
    assert m.dt_projs_weight.abs().max() <= 2**-0.5
    assert m.in_proj.weight.std() < 0.03 and m.in_proj.bias is None and m.out_proj.bias is None


@pytest.mark.parametrize("shape", [(2, 5, 7, 16), (1, 1, 9, 8), (1, 4, 4, 24)])
def test_shape_and_bad_input(shape):
    m = SS2D(shape[-1])
    y = m(torch.randn(*shape))
    assert y.shape == shape and torch.isfinite(y).all()
    with pytest.raises(ValueError, match="channels-last"):
        m(torch.randn(shape[0], shape[-1], shape[1], shape[2] + 1))


def _slow_ss2d(m: SS2D, x: torch.Tensor) -> torch.Tensor:
    """Straightforward SS2D: each direction scanned on its own with the sequential reference scan."""
    b, h, w, _ = x.shape
    d, n, r = m.d_inner, m.d_state, m.dt_rank
    xi, z = m.in_proj(x).chunk(2, dim=-1)
    xi = F.silu(m.conv2d(xi.permute(0, 3, 1, 2)))  # (B, d, H, W)
    y = torch.zeros(b, d, h, w, dtype=x.dtype)
    for k in range(4):
        img = xi if k in (0, 2) else xi.transpose(2, 3)  # k = 1, 3 scan the transposed image (column-major)
        seq = img.reshape(b, d, -1)
        if k >= 2:
            seq = seq.flip(-1)
        dbl = m.x_proj_weight[k] @ seq  # (B, R+2N, L)
        dt, bm, cm = dbl[:, :r], dbl[:, r:r + n], dbl[:, r + n:]
        delta = m.dt_projs_weight[k] @ dt  # (B, d, L)
        sl = slice(k * d, (k + 1) * d)
        out = selective_scan_reference(seq, delta, -torch.exp(m.A_logs[sl]), bm[:, None], cm[:, None], m.Ds[sl],
                                       None, m.dt_projs_bias[k], True)
        if k >= 2:
            out = out.flip(-1)
        out = out.reshape(b, d, *img.shape[-2:])
        y = y + (out if k in (0, 2) else out.transpose(2, 3))
    y = m.out_norm(y.permute(0, 2, 3, 1)) * F.silu(z)
    return m.out_proj(y)


def test_direction_merge_matches_slow_reimplementation():
    torch.manual_seed(0)
    m = SS2D(8, d_state=4).double()
    with torch.no_grad():  # make every direction matter: bigger projections, distinct per-direction weights
        m.in_proj.weight.normal_(0, 0.5)
        m.x_proj_weight.normal_(0, 0.5)
    x = torch.randn(2, 3, 5, 8, dtype=torch.double)  # H != W catches transposes done the wrong way round
    torch.testing.assert_close(m(x), _slow_ss2d(m, x), rtol=1e-6, atol=1e-8)


def test_directions_are_not_interchangeable():
    """The merge test is sensitive to the order: permuting the per-direction parameters changes the output."""
    torch.manual_seed(0)
    m = SS2D(8, d_state=4).double()
    x = torch.randn(1, 3, 5, 8, dtype=torch.double)
    ref = m(x)
    with torch.no_grad():
        m.x_proj_weight.copy_(m.x_proj_weight[[1, 0, 3, 2]])
    assert not torch.allclose(m(x), ref, atol=1e-6)


def test_gradients_reach_all_params():
    torch.manual_seed(0)
    m = SS2D(16)
    x = torch.randn(2, 4, 6, 16, requires_grad=True)
    m(x).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("residual", [False, True])
def test_mamba_out(residual):
    torch.manual_seed(0)
    m = MambaOut(12, residual=residual)
    x = torch.randn(2, 12, 5, 7)
    y = m(x)
    assert y.shape == x.shape
    t = x.permute(0, 2, 3, 1)
    expected = t + m.ss2d(m.norm(t)) if residual else m.ss2d(t)
    torch.testing.assert_close(y, expected.permute(0, 3, 1, 2))
    assert isinstance(m.norm, torch.nn.LayerNorm) == residual
    n_ln = 2 * 12 if residual else 0
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in SS2D(12).parameters()) + n_ln


def test_dt_rank_auto():
    assert SS2D(40).dt_rank == math.ceil(40 / 16)


def test_gradients_match_slow_reimplementation():
    """The fused direction expand/merge (custom autograd functions) give the reference gradients (H != W)."""
    torch.manual_seed(0)
    m = SS2D(8, d_state=4).double()
    with torch.no_grad():
        m.x_proj_weight.normal_(0, 0.5)
    x = torch.randn(2, 3, 5, 8, dtype=torch.double, requires_grad=True)
    g = torch.randn(2, 3, 5, 8, dtype=torch.double)
    params = [x] + list(m.parameters())
    fast = torch.autograd.grad(m(x), params, g)
    slow = torch.autograd.grad(_slow_ss2d(m, x), params, g)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("hw", [(3, 5), (4, 1), (1, 6)])
def test_four_ways_and_merge(hw):
    h, w = hw
    x = torch.randn(2, 3, h, w, dtype=torch.double, requires_grad=True)
    xs = four_ways(x)
    row, col = x.detach().flatten(2), x.detach().transpose(2, 3).flatten(2)
    expected = torch.stack([row, col, row.flip(-1), col.flip(-1)], dim=1)
    assert xs.shape == (2, 4, 3, h * w) and xs.is_contiguous() and torch.equal(xs.detach(), expected)
    y = torch.randn(2, 4, 3, h * w, dtype=torch.double)
    merged = merge_four_ways(y, h, w)
    ref = (y[:, 0] + y[:, 2].flip(-1)).view(2, 3, h, w) + (y[:, 1] + y[:, 3].flip(-1)).view(2, 3, w, h).transpose(2, 3)
    torch.testing.assert_close(merged, ref, rtol=0, atol=1e-12)
    # merge is the adjoint of the expansion: <four(x), y> == <x, merge(y)>
    torch.testing.assert_close((xs.detach() * y).sum(), (x.detach() * merged).sum())
    assert torch.autograd.gradcheck(four_ways, (x,))
    assert torch.autograd.gradcheck(lambda t: merge_four_ways(t, h, w), (y.requires_grad_(),))


def test_traced_ss2d_equals_eager():
    torch.manual_seed(0)
    m = SS2D(8, d_state=4).eval()
    x = torch.randn(1, 4, 6, 8)
    traced = torch.jit.trace(m, x, check_trace=False)  # (the trace check fails on main too: scan loop graph)
    assert "PythonOp" not in str(traced.graph)  # plain tensor ops while tracing, no autograd.Function
    torch.testing.assert_close(traced(x), m(x))
