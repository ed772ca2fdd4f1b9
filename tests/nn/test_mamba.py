"""Shared Mamba pieces: init helpers and MultiDirMamba against a plain re-implementation on the reference scan."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mambaseg.nn.mamba import (
    MultiDirMamba,
    a_log_init,
    dt_bias_init,
    inverse_permutation,
    resolve_dt_rank,
)
from mambaseg.ssm import selective_scan_reference


def test_a_log_init_is_s4d_real():
    a = -torch.exp(a_log_init(5, 7))
    assert a.shape == (5, 7)
    assert torch.allclose(a, -torch.arange(1, 8, dtype=torch.float32).expand(5, 7))


def test_dt_bias_init_is_inverse_softplus_of_log_uniform_dt():
    torch.manual_seed(0)
    dt = F.softplus(dt_bias_init(4000, dt_min=1e-3, dt_max=0.1))
    assert dt.min() >= 1e-3 * (1 - 1e-4) and dt.max() <= 0.1 * (1 + 1e-4)
    # log-uniform: the median of log(dt) sits halfway between log(1e-3) and log(0.1)
    assert abs(dt.log().median().item() - 0.5 * (math.log(1e-3) + math.log(0.1))) < 0.15
    with pytest.raises(ValueError, match="dt_min"):
        dt_bias_init(4, dt_min=0.2, dt_max=0.1)


def test_resolve_dt_rank():
    assert resolve_dt_rank("auto", 48) == 3 and resolve_dt_rank("auto", 50) == 4 and resolve_dt_rank(5, 48) == 5
    for bad in (0, -1, "big", 1.5):
        with pytest.raises(ValueError, match="dt_rank"):
            resolve_dt_rank(bad, 48)


def test_inverse_permutation():
    p = torch.randperm(37, generator=torch.Generator().manual_seed(1))
    x = torch.randn(3, 37)
    assert torch.equal(x[:, p][:, inverse_permutation(p)], x)
    assert torch.equal(inverse_permutation(p)[p], torch.arange(37))


def test_no_weight_decay_flags_and_param_shapes():
    m = MultiDirMamba(32, directions=3, d_state=8)
    flagged = {n for n, p in m.named_parameters() if getattr(p, "_no_weight_decay", False)}
    assert flagged == {f"dirs.{k}.{name}" for k in range(3) for name in ("A_log", "D")}
    d = m.dirs[0]
    assert m.in_proj.weight.shape == (128, 32) and m.in_proj.bias is None
    assert m.out_proj.weight.shape == (32, 64) and m.out_proj.bias is None
    assert d.x_proj.weight.shape == (2 + 16, 64) and d.dt_proj.weight.shape == (64, 2)
    assert d.conv1d.weight.shape == (64, 1, 4) and d.A_log.shape == (64, 8)


def naive_multidir(m: MultiDirMamba, x: torch.Tensor, orders: list[torch.Tensor]) -> torch.Tensor:
    """Independent re-implementation: explicit causal conv loop, scatter un-permute, reference scan."""
    b, length, _ = x.shape
    xz = x @ m.in_proj.weight.T  # (B, L, 2·d_inner)
    total = 0
    for d, order in zip(m.dirs, orders):
        seq = xz[:, order]  # (B, L, 2·d_inner) in scan order
        u, z = seq[..., : m.d_inner], seq[..., m.d_inner:]
        w = d.conv1d.weight[:, 0]  # (d_inner, K)
        k = w.shape[1]
        conv = []
        for t in range(length):  # y_t = bias + Σ_j w_j · u_{t-(K-1)+j}, zeros before the start
            acc = d.conv1d.bias.expand(b, -1)
            for j in range(k):
                s = t - (k - 1) + j
                if s >= 0:
                    acc = acc + w[:, j] * u[:, s]
            conv.append(acc)
        u = F.silu(torch.stack(conv, dim=1))  # (B, L, d_inner)
        dbl = u @ d.x_proj.weight.T
        dt, bm, cm = dbl.split([d.dt_rank, d.d_state, d.d_state], dim=-1)
        delta = dt @ d.dt_proj.weight.T  # (B, L, d_inner)
        y = selective_scan_reference(
            u.transpose(1, 2), delta.transpose(1, 2), -torch.exp(d.A_log), bm.transpose(1, 2)[:, None],
            cm.transpose(1, 2)[:, None], d.D, z.transpose(1, 2), d.dt_proj.bias, delta_softplus=True,
        ).transpose(1, 2)  # (B, L, d_inner) in scan order
        back = torch.zeros_like(y)
        back[:, order] = y  # token order[i] receives step i
        total = total + back
    return total @ m.out_proj.weight.T


@pytest.mark.parametrize("directions", [1, 2])
def test_multidir_matches_naive_reimplementation(directions):
    torch.manual_seed(0)
    m = MultiDirMamba(8, directions=directions, d_state=4).double()
    x = torch.randn(2, 23, 8, dtype=torch.float64, requires_grad=True)
    orders = [torch.randperm(23) for _ in range(directions)]
    out = m(x, orders)
    ref = naive_multidir(m, x, orders)
    assert out.shape == (2, 23, 8)
    torch.testing.assert_close(out, ref, rtol=1e-7, atol=1e-9)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, m.in_proj.weight, m.dirs[0].A_log], g)
    grads_ref = torch.autograd.grad(ref, [x, m.in_proj.weight, m.dirs[0].A_log], g)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


def test_identity_order_none_equals_arange():
    torch.manual_seed(0)
    m = MultiDirMamba(8, directions=2, d_state=4)
    x = torch.randn(1, 19, 8)
    rev = torch.arange(18, -1, -1)
    torch.testing.assert_close(m(x, [None, rev]), m(x, [torch.arange(19), rev]))


def test_forward_scan_is_causal_and_reverse_scan_anticausal():
    torch.manual_seed(0)
    m = MultiDirMamba(6, directions=1, d_state=4)
    x = torch.randn(1, 30, 6)
    x2 = x.clone()
    x2[:, 17] += 1.0
    fwd, fwd2 = m(x, [None]), m(x2, [None])
    assert torch.equal(fwd[:, :17], fwd2[:, :17]) and not torch.allclose(fwd[:, 17:], fwd2[:, 17:])
    rev = torch.arange(29, -1, -1)
    bwd, bwd2 = m(x, [rev]), m(x2, [rev])
    assert torch.equal(bwd[:, 18:], bwd2[:, 18:]) and not torch.allclose(bwd[:, :18], bwd2[:, :18])


def test_bad_arguments():
    m = MultiDirMamba(8, directions=2)
    x = torch.randn(1, 10, 8)
    with pytest.raises(ValueError, match="expected one per direction"):
        m(x, [None])
    with pytest.raises(ValueError, match=r"orders\[1\] has shape"):
        m(x, [None, torch.arange(9)])
    with pytest.raises(ValueError, match=r"\(B, L, 8\)"):
        m(torch.randn(1, 10, 7), [None, None])
    with pytest.raises(ValueError, match="directions"):
        MultiDirMamba(8, directions=0)


def test_fused_conv_path_is_used_and_matches_conv1d_path(monkeypatch):
    """On CPU fp32 the direction's conv + SiLU runs in the compiled kernel (when it builds); outputs and gradients
    equal the ``F.silu(conv1d(x)[..., :L])`` fallback."""
    import mambaseg.nn.mamba as mamba_mod
    from mambaseg.ssm import cpu_kernel

    torch.manual_seed(0)
    m = MultiDirMamba(8, directions=2, d_state=4)
    x = torch.randn(2, 37, 8, requires_grad=True)
    orders = [None, torch.arange(36, -1, -1)]
    calls = []
    real = mamba_mod.causal_conv1d_silu_cpu
    monkeypatch.setattr(mamba_mod, "causal_conv1d_silu_cpu", lambda *a: calls.append(1) or real(*a))
    fused = m(x, orders)
    g_fused = torch.autograd.grad(fused.square().sum(), [x, m.dirs[1].conv1d.weight, m.dirs[1].conv1d.bias])
    assert len(calls) == (2 if cpu_kernel.available() else 0)
    monkeypatch.setattr(mamba_mod, "_fused_conv", lambda *a: False)
    plain = m(x, orders)
    g_plain = torch.autograd.grad(plain.square().sum(), [x, m.dirs[1].conv1d.weight, m.dirs[1].conv1d.bias])
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_fused, g_plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_fused_conv_under_bf16_autocast_matches_autocast_conv1d():
    """Under torch.autocast('cpu', bfloat16) the direction's conv + SiLU still runs in the compiled kernel (fp32
    arithmetic on bf16-rounded x, weight and bias; the result rounded to bf16), and it is autocast's own unfused
    ``silu(conv1d(x))`` up to that path's extra roundings (u = 2^-8): the unfused path rounds the conv output
    (≤ u|pre|, through SiLU's slope ≤ 1.1) and the SiLU output (≤ u|y|), the fused one y once (≤ u|y|), so
    |Δy| ≤ u·(1.1|pre| + 2|y|). The input gradient: the unfused path rounds the SiLU gradient (≤ u|gp|), its
    slope sees the rounded pre (|silu''| ≤ 0.5: ≤ 0.5u|pre||g|) and both round dx once (≤ 2u|dx|), summed over the
    K taps with |w|: |Δdx| ≤ Σ_j |w_j|·u(|gp| + 0.5|pre||g|) + 2u|dx|. A factor 2 covers the fp32 sums (~2^-24)
    and second-order terms.
    """
    import mambaseg.nn.mamba as mamba_mod
    from mambaseg.ssm import cpu_kernel

    if not cpu_kernel.available():
        pytest.skip("the compiled CPU kernel is not available")
    u = 2.0**-8
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(6, 6, 4, groups=6, padding=3)
    x = torch.randn(2, 6, 41).bfloat16().float().requires_grad_(True)
    g = torch.randn(2, 6, 41).bfloat16().float()
    assert mamba_mod._fused_conv(x, conv)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = mamba_mod._conv_silu_fused(x, conv)
        plain = F.silu(conv(x)[..., :41])
    assert fused.dtype == plain.dtype == torch.bfloat16
    dx_f = torch.autograd.grad((fused.float() * g).sum(), x)[0]
    dx_p = torch.autograd.grad((plain.float() * g).sum(), x)[0]
    with torch.no_grad():  # exact (fp64) quantities on the same bf16 operands, for the bounds
        xd, wd, bd = x.double(), conv.weight.bfloat16().double(), conv.bias.bfloat16().double()
        pre = F.conv1d(xd, wd, bd, padding=3, groups=6)[..., :41]
        y = F.silu(pre)
        s = torch.sigmoid(pre)
        gp = g.double() * s * (1 + pre * (1 - s))
        slack = u * (gp.abs() + 0.5 * pre.abs() * g.double().abs())
        # Σ_j |w_j| slack_{s + K-1-j}: the adjoint of the causal conv applied to the slack with |w|
        adj = torch.nn.functional.conv1d(F.pad(slack, (0, 3)), wd.abs().flip(-1), groups=6)
    assert ((fused.double() - plain.double()).abs() <= 2 * u * (1.1 * pre.abs() + 2 * y.abs())).all()
    assert ((dx_f.double() - dx_p.double()).abs() <= 2 * (adj + 2 * u * dx_p.double().abs())).all()
    assert not torch.equal(dx_f, torch.zeros_like(dx_f))
