"""Compiled ``cpu`` scan kernel against the sequential ``reference``: outputs, last state, all eight gradients,
gradcheck, determinism, precision handling and the disable switch. Skipped when the kernel cannot be built."""

from __future__ import annotations

import pytest
import torch

from mambaseg.ssm import cpu_kernel, selective_scan_reference
from mambaseg.ssm.cpu_kernel import available, selective_scan_cpu

from .scan_inputs import ARGS
from .scan_inputs import make_inputs as _make_inputs

pytestmark = pytest.mark.skipif(not available(), reason="the compiled CPU scan kernel is not available "
                                "(no compiler / ninja, or MAMBASEG_NO_CPU_KERNEL set)")

CHUNK = 16  # small chunk so short sequences cover L < chunk, L == chunk, partial and several chunks


def make_inputs(dim=8, nstate=4, **kw):
    return _make_inputs(dim=dim, nstate=nstate, **kw)


def forward_backward(fn, inputs, softplus, w, wl, use=("out", "last"), **kw):
    """Outputs and the gradients of sum(out*w) + sum(last*wl) (restricted to ``use``) for every given input."""
    out, last = fn(**inputs, delta_softplus=softplus, return_last_state=True, **kw)
    loss = 0
    if "out" in use:
        loss = loss + (out * w).sum()
    if "last" in use:
        loss = loss + (last * wl).sum()
    names = [n for n in ARGS if inputs[n] is not None]
    grads = torch.autograd.grad(loss, [inputs[n] for n in names], allow_unused=True)
    return out, last, dict(zip(names, grads))


def assert_matches_reference(inputs, softplus, use=("out", "last"), tol=None, gtol=None):
    dtype = inputs["u"].dtype
    if tol is None:
        tol = dict(rtol=2e-4, atol=2e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-11)
    if gtol is None:
        gtol = dict(rtol=1e-3, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-10)
    g = torch.Generator().manual_seed(1)
    b, d, _ = inputs["u"].shape
    w = torch.randn(inputs["u"].shape, generator=g, dtype=dtype)
    wl = torch.randn(b, d, inputs["A"].shape[1], generator=g, dtype=dtype)
    out_r, last_r, gr = forward_backward(selective_scan_reference, inputs, softplus, w, wl, use)
    out_k, last_k, gk = forward_backward(selective_scan_cpu, inputs, softplus, w, wl, use, chunk_size=CHUNK)
    assert out_k.dtype == dtype and last_k.dtype == dtype
    torch.testing.assert_close(out_k, out_r, **tol)
    torch.testing.assert_close(last_k, last_r, **tol)
    assert set(gk) == set(gr)
    for name in gr:
        assert gk[name] is not None, f"no gradient for {name}"
        assert gk[name].shape == inputs[name].shape
        expected = torch.zeros_like(inputs[name]) if gr[name] is None else gr[name]  # unused by the loss
        torch.testing.assert_close(gk[name], expected, **gtol, msg=lambda m, n=name: f"grad {n}: {m}")


@pytest.mark.parametrize("length", [1, 7, CHUNK, 3 * CHUNK + 5, 5 * CHUNK])  # L=1, <, ==, partial, several
@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference_lengths_groups(length, groups, dtype):
    # N cycles through the specialised state sizes (4, 8, 16) and the generic path (5)
    nstate = (4, 8, 16, 5)[(length + groups) % 4]
    inputs = make_inputs(length=length, groups=groups, nstate=nstate, dtype=dtype)
    assert_matches_reference(inputs, softplus=True)


@pytest.mark.parametrize("dim, groups", [(8, 2), (6, 2), (10, 1)])  # channel pairs, odd channels per group
@pytest.mark.parametrize("has_z, has_D, softplus", [(True, True, True), (False, False, False), (False, True, True)])
def test_state_size_4_channel_pairs_match_reference(dim, groups, has_z, has_D, softplus):
    """N = 4 runs two channels of a group in 8 lanes (forward when the group's channel count is even, backward
    for every pair inside a work unit, a lone channel otherwise): all paths against the reference in fp64."""
    inputs = make_inputs(dim=dim, length=2 * CHUNK + 9, groups=groups, nstate=4, dtype=torch.float64, has_z=has_z,
                         has_D=has_D)
    assert_matches_reference(inputs, softplus)


@pytest.mark.parametrize("has_z", [False, True])
@pytest.mark.parametrize("has_D", [False, True])
@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("softplus", [False, True])
def test_matches_reference_optional_args(has_z, has_D, has_bias, softplus):
    inputs = make_inputs(length=2 * CHUNK + 3, groups=2, nstate=8, dtype=torch.float64, has_z=has_z, has_D=has_D,
                         has_bias=has_bias)
    assert_matches_reference(inputs, softplus)


@pytest.mark.parametrize("use", [("out",), ("last",)])
def test_gradient_through_one_output_only(use):
    """Only out (no gradient for the last state) or only the last state (it seeds the adjoint alone)."""
    inputs = make_inputs(length=3 * CHUNK + 2, groups=2, nstate=4, dtype=torch.float64)
    assert_matches_reference(inputs, softplus=True, use=use)


def test_float32_gradients_match_reference_at_a_wide_shape():
    """More channels per group than backward work units (slices of several channels) and N=16."""
    inputs = make_inputs(batch=1, dim=32, nstate=16, length=2 * CHUNK + 1, groups=1)
    assert_matches_reference(inputs, softplus=True)


@pytest.mark.parametrize("nstate", [8, 16])
@pytest.mark.parametrize("batch, dim, groups, length", [(2, 12, 1, 3 * CHUNK + 5), (1, 16, 2, CHUNK - 3)])
def test_float32_vector_paths_match_reference(nstate, batch, dim, groups, length):
    """N = 8, 16 in float32 (the vectorised dot products), the backward's dB/dC slices zeroed chunk by chunk and
    reduced in one pass (several slices per group, batch > 1), odd lengths."""
    inputs = make_inputs(batch=batch, dim=dim, nstate=nstate, length=length, groups=groups)
    assert_matches_reference(inputs, softplus=True)


@pytest.mark.parametrize("nstate", [4, 16])
def test_float32_bit_identical_with_1_and_2_threads(nstate):
    inputs = make_inputs(batch=2, dim=16, nstate=nstate, length=5 * CHUNK + 3, groups=2)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _run(inputs)
        torch.set_num_threads(2)
        two = _run(inputs)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


def test_extreme_values_match_reference():
    """exp(Δ·A) from underflow (Δ·A ~ -240) to huge (~ +75), softplus on both sides of its threshold (20).

    Two steps, so each exp(Δ·A) multiplies the first state once and nothing overflows in the reference.
    """
    inputs = make_inputs(batch=1, dim=16, nstate=8, length=2, dtype=torch.float32, has_z=False)
    with torch.no_grad():
        inputs["delta"].copy_(torch.linspace(-30, 30, inputs["delta"].numel()).view_as(inputs["delta"]))
        inputs["A"].copy_(torch.linspace(-8, 2.5, inputs["A"].numel()).view_as(inputs["A"]))
        inputs["delta_bias"].zero_()
    out_r, last_r = selective_scan_reference(**inputs, delta_softplus=True, return_last_state=True)
    out_k, last_k = selective_scan_cpu(**inputs, delta_softplus=True, return_last_state=True, chunk_size=CHUNK)
    assert torch.isfinite(out_r).all() and out_r.abs().max() > 1e25
    torch.testing.assert_close(out_k, out_r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last_k, last_r, rtol=1e-5, atol=1e-5)


def test_gradcheck_float64():
    inputs = make_inputs(batch=1, dim=4, nstate=3, length=11, groups=2, dtype=torch.float64)
    names = [n for n in ARGS if inputs[n] is not None]

    def fn(*tensors):
        return selective_scan_cpu(**dict(zip(names, tensors)), delta_softplus=True, return_last_state=True,
                                  chunk_size=4)

    assert torch.autograd.gradcheck(fn, tuple(inputs[n] for n in names), eps=1e-6, atol=1e-5)


def _run(inputs):
    out, last = selective_scan_cpu(**inputs, delta_softplus=True, return_last_state=True, chunk_size=CHUNK)
    names = [n for n in ARGS if inputs[n] is not None]
    return [out, last, *torch.autograd.grad(out.square().sum() + last.sum(), [inputs[n] for n in names])]


def test_deterministic_across_runs_and_threads():
    inputs = make_inputs(batch=1, dim=16, nstate=8, length=3 * CHUNK + 7, groups=2)
    threads = torch.get_num_threads()
    try:
        first = _run(inputs)
        again = _run(inputs)
        torch.set_num_threads(1 if threads > 1 else 2)
        other = _run(inputs)
    finally:
        torch.set_num_threads(threads)
    for a, b, c in zip(first, again, other):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_no_grad_path_matches_and_saves_nothing():
    inputs = make_inputs(length=2 * CHUNK + 5, groups=2)
    out_g = selective_scan_cpu(**inputs, delta_softplus=True, chunk_size=CHUNK)
    assert out_g.grad_fn is not None
    with torch.no_grad():
        out_n = selective_scan_cpu(**inputs, delta_softplus=True, chunk_size=CHUNK)
    assert out_n.grad_fn is None
    torch.testing.assert_close(out_n, out_g, rtol=0, atol=0)
    detached = {k: (v.detach() if v is not None else None) for k, v in inputs.items()}
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        selective_scan_cpu(**detached, delta_softplus=True)
    assert not saved


def test_low_precision_inputs_computed_in_fp32_and_noncontiguous():
    base = {k: (v.detach() if v is not None else None) for k, v in make_inputs(length=33, groups=2).items()}
    half = {k: (v.to(torch.bfloat16) if k in ("u", "delta", "z") else v) for k, v in base.items()}
    ref = selective_scan_reference(**half, delta_softplus=True)
    out = selective_scan_cpu(**half, delta_softplus=True)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref)
    # non-contiguous B (a transposed view) and u (a strided slice) give the same result as contiguous copies
    Bt = base["B"].transpose(-1, -2).contiguous().transpose(-1, -2)
    u_wide = torch.cat([base["u"], base["u"]], dim=-1)[..., ::2]
    nc = dict(base, B=Bt, u=u_wide)
    assert not Bt.is_contiguous() and not u_wide.is_contiguous()
    contig = dict(base, u=u_wide.contiguous())
    torch.testing.assert_close(selective_scan_cpu(**nc), selective_scan_cpu(**contig), rtol=0, atol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_ac = selective_scan_cpu(**base, delta_softplus=True)
    assert out_ac.dtype == torch.float32


def test_bad_arguments():
    inputs = {k: (v.detach() if v is not None else None) for k, v in make_inputs(nstate=4).items()}
    with pytest.raises(ValueError, match="chunk_size"):
        selective_scan_cpu(**inputs, chunk_size=0)
    big = dict(inputs, A=torch.zeros(8, 300), B=torch.zeros(2, 1, 300, 40), C=torch.zeros(2, 1, 300, 40))
    with pytest.raises(ValueError, match="'A'"):
        selective_scan_cpu(**big)


def test_env_var_disables(monkeypatch):
    saved = dict(cpu_kernel._state)
    try:
        cpu_kernel._state.clear()
        monkeypatch.setenv(cpu_kernel.ENV_DISABLE, "1")
        assert not cpu_kernel.available()
        with pytest.raises(RuntimeError, match="not available"):
            selective_scan_cpu(**make_inputs(length=5))
    finally:
        cpu_kernel._state.clear()
        cpu_kernel._state.update(saved)
    assert cpu_kernel.available()


def _conv_silu_reference(x, weight, bias):
    k = weight.shape[-1]
    return torch.nn.functional.silu(torch.nn.functional.conv1d(x, weight, bias, padding=k - 1,
                                                               groups=x.shape[1])[..., : x.shape[-1]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch, dim, length, k", [(2, 5, 300, 4), (1, 3, 2, 4), (2, 4, 9, 1), (1, 2, 517, 3)])
def test_causal_conv1d_silu_matches_conv1d(dtype, batch, dim, length, k):
    """The fused causal depthwise conv + SiLU against F.conv1d: outputs and the gradients of x, weight and bias,
    over block boundaries (length > 256), lengths shorter than the kernel and odd sizes."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(batch, dim, length, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(dim, 1, k, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(dim, generator=g, dtype=dtype, requires_grad=True)
    gy = torch.randn(batch, dim, length, generator=g, dtype=dtype)
    out = cpu_kernel.causal_conv1d_silu_cpu(x, w, b)
    ref = _conv_silu_reference(x, w, b)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, ref, **tol)
    for a, r in zip(torch.autograd.grad(out, (x, w, b), gy), torch.autograd.grad(ref, (x, w, b), gy)):
        torch.testing.assert_close(a, r, **tol)


def test_causal_conv1d_silu_bit_identical_with_1_and_2_threads():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 6, 700, generator=g, requires_grad=True)
    w = torch.randn(6, 1, 4, generator=g, requires_grad=True)
    b = torch.randn(6, generator=g, requires_grad=True)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            out = cpu_kernel.causal_conv1d_silu_cpu(x, w, b)
            results.append([out, *torch.autograd.grad(out.square().sum(), (x, w, b))])
    finally:
        torch.set_num_threads(threads)
    for a, c in zip(*results):
        assert torch.equal(a, c)


@pytest.mark.parametrize("nstate, groups", [(4, 2), (16, 1)])
def test_bf16_inputs_fp32_state_outputs_and_gradients(nstate, groups):
    """mamba_ssm's convention: u, delta, B, C, z in bf16, A, D, delta_bias in fp32; the state and every sum in fp32,
    the output and the gradients of the bf16 inputs in bf16, those of the fp32 inputs in fp32.

    Compared with the fp64 reference run on the same (bf16-representable) values and the same bf16 upstream
    gradient, the only bf16 roundings left are the final ones: |Δ| <= u·|value| (u = 2^-8) for the bf16 results;
    the fp32 arithmetic adds ~2^-24 per operation over sums of at most L·N terms, covered by an absolute term
    1e-4 × the largest magnitude (the fp32 results get that term alone).
    """
    u_bf16 = 2.0**-8
    base = make_inputs(length=45, nstate=nstate, groups=groups, dtype=torch.float64, seed=3)
    low = ("u", "delta", "B", "C", "z")
    half = {k: (v.detach().to(torch.bfloat16) if k in low else v.detach().float()).requires_grad_()
            for k, v in base.items()}
    exact = {k: v.detach().double().requires_grad_() for k, v in half.items()}
    g = torch.randn(2, 8, 45, generator=torch.Generator().manual_seed(1)).bfloat16()
    out = selective_scan_cpu(**half, delta_softplus=True, chunk_size=CHUNK)
    assert out.dtype == torch.bfloat16
    grads = torch.autograd.grad((out * g).sum(), [half[k] for k in ARGS])
    ref = selective_scan_reference(**exact, delta_softplus=True)
    ref_grads = torch.autograd.grad((ref * g.double()).sum(), [exact[k] for k in ARGS])
    for name, got, want in zip(("out",) + ARGS, (out.detach(), *grads), (ref.detach(), *ref_grads)):
        expected_dtype = torch.bfloat16 if name in low + ("out",) else torch.float32
        assert got.dtype == expected_dtype, name
        bound = 1e-4 * float(want.abs().max()) + (u_bf16 * want.abs() if expected_dtype == torch.bfloat16 else 0)
        assert ((got.double() - want).abs() <= bound).all(), name
