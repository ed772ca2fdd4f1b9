"""AKConv: initial sampling shape, parameter count, shapes, and bilinear sampling vs an independent per-pixel loop."""

from __future__ import annotations

import math

import pytest
import torch

from mambaseg.nn import akconv_kernel
from mambaseg.nn.akconv import AKConv, initial_sampling_shape, set_kernel_enabled


def _points(pn: torch.Tensor) -> list[tuple[int, int]]:
    n = pn.numel() // 2
    return [(int(pn[i]), int(pn[n + i])) for i in range(n)]


@pytest.mark.parametrize(
    "n, centred, expected",
    [
        (9, False, [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]),
        (5, False, [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]),
        (9, True, [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0), (0, 1), (1, -1), (1, 0), (1, 1)]),
        (5, True, [(-1, 0), (-1, 1), (0, 0), (0, 1), (1, 0)]),
        (3, False, [(0, 0), (0, 1), (1, 0)]),  # base 2, one row of 2, remainder 1
    ],
)
def test_initial_sampling_shape(n, centred, expected):
    pn = initial_sampling_shape(n, centred)
    assert pn.shape == (2 * n,)
    assert _points(pn) == expected
    # the module stores exactly this shape
    assert torch.equal(AKConv(2, 3, n, centred=centred).p_n, pn)


@pytest.mark.parametrize("inc, outc, n", [(3, 8, 9), (16, 4, 5), (1, 1, 1)])
def test_parameter_count_and_init(inc, outc, n):
    m = AKConv(inc, outc, n)
    expected = outc * inc * n + 2 * outc + inc * 2 * n * 9 + 2 * n
    assert sum(p.numel() for p in m.parameters()) == expected
    assert torch.count_nonzero(m.p_conv.weight) == 0  # zero-initialised offset conv
    assert m.conv[0].bias is None and m.conv[0].kernel_size == (n, 1)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("centred, zero_pad", [(False, False), (True, True), (False, True)])
@pytest.mark.parametrize("hw", [(9, 11), (8, 8), (1, 5)])
def test_output_shape(stride, centred, zero_pad, hw):
    m = AKConv(3, 5, 5, stride=stride, centred=centred, zero_pad=zero_pad)
    y = m(torch.randn(2, 3, *hw))
    assert y.shape == (2, 5, math.ceil(hw[0] / stride), math.ceil(hw[1] / stride))
    assert torch.isfinite(y).all()


def test_bad_input_channels():
    with pytest.raises(ValueError, match="3"):
        AKConv(3, 4)(torch.randn(1, 2, 5, 5))


def _loop_sample(x: torch.Tensor, p: torch.Tensor, zero_pad: bool) -> torch.Tensor:
    """Per-pixel bilinear sampling written from the spec (official clamping rules or zero extension).

    Returns (B, C, h, w, N).
    """
    b, c, hh, ww = x.shape
    n = p.shape[1] // 2
    _, _, h, w = p.shape
    out = torch.zeros(b, c, h, w, n, dtype=x.dtype)

    def val(bi, r, s):
        if 0 <= r < hh and 0 <= s < ww:
            return x[bi, :, r, s]
        return torch.zeros(c, dtype=x.dtype)

    for bi in range(b):
        for i in range(h):
            for j in range(w):
                for k in range(n):
                    pr, pc = float(p[bi, k, i, j]), float(p[bi, n + k, i, j])
                    if zero_pad:  # textbook bilinear interpolation of the zero-extended image
                        r0, c0 = math.floor(pr), math.floor(pc)
                        fr, fc = pr - r0, pc - c0
                        out[bi, :, i, j, k] = ((1 - fr) * (1 - fc) * val(bi, r0, c0)
                                               + (1 - fr) * fc * val(bi, r0, c0 + 1)
                                               + fr * (1 - fc) * val(bi, r0 + 1, c0)
                                               + fr * fc * val(bi, r0 + 1, c0 + 1))
                        continue
                    # official: corners floor/floor+1 clamped, p clamped, weights 1 ± (q − p) per axis
                    lo_r, lo_c = math.floor(pr), math.floor(pc)
                    qr = (min(max(lo_r, 0), hh - 1), min(max(lo_r + 1, 0), hh - 1))
                    qc = (min(max(lo_c, 0), ww - 1), min(max(lo_c + 1, 0), ww - 1))
                    cr, cc = min(max(pr, 0.0), hh - 1.0), min(max(pc, 0.0), ww - 1.0)
                    wr = (1 + (qr[0] - cr), 1 - (qr[1] - cr))
                    wc = (1 + (qc[0] - cc), 1 - (qc[1] - cc))
                    acc = torch.zeros(c, dtype=x.dtype)
                    for a in range(2):
                        for e in range(2):
                            acc = acc + wr[a] * wc[e] * x[bi, :, qr[a], qc[e]]
                    out[bi, :, i, j, k] = acc
    return out


@pytest.mark.parametrize("n, stride, centred, zero_pad", [(9, 1, False, False), (5, 2, False, False),
                                                          (9, 1, True, True), (5, 1, False, True)])
def test_sampling_matches_loop(n, stride, centred, zero_pad):
    torch.manual_seed(0)
    m = AKConv(2, 3, n, stride=stride, centred=centred, zero_pad=zero_pad).double().eval()
    # spatially varying offsets that push some points far outside the map (exercises clamping / zero extension)
    torch.nn.init.normal_(m.p_conv.weight, std=0.8)
    x = torch.randn(2, 2, 6, 7, dtype=torch.double)
    p = m.sampling_positions(x).detach()
    assert ((p[:, :n] < 0) | (p[:, :n] > 5)).any() and ((p[:, n:] < 0) | (p[:, n:] > 6)).any()
    ref = _loop_sample(x, p, zero_pad)  # (B, C, h, w, N)
    for exact in (False, True):  # grid_sample (eager) and the kernel-rule gather (tracing / ONNX export)
        got = m.sample(x, p, exact=exact)  # (B, C, N·h, w)
        got = got.view(2, 2, n, *p.shape[-2:]).permute(0, 1, 3, 4, 2)
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)
    # the forward = official (B, C, h·N, w) arrangement → Conv2d((N,1), stride (N,1)) → BN → SiLU
    arranged = ref.permute(0, 1, 2, 4, 3).reshape(2, 2, p.shape[2] * n, p.shape[3])
    torch.testing.assert_close(m(x), m.conv(arranged), rtol=1e-9, atol=1e-9)


def test_border_quirk_counts_edge_twice():
    """With the anchored shape, a constant image gives 2x / 4x the value in the last rows / columns."""
    m = AKConv(1, 1, 9).double()
    with torch.no_grad():
        m.p_conv.bias.zero_()  # integer sampling positions p_0 + p_n
    x = torch.ones(1, 1, 5, 6, dtype=torch.double)
    s = m.sample(x, m.sampling_positions(x)).view(9, 5, 6)  # (N, h, w)
    # point (2, 2) of output pixel (i, j) samples row i+2, col j+2: >= H-1 from i = 2, >= W-1 from j = 3
    k = 8
    expected = torch.ones(5, 6, dtype=torch.double)
    expected[2:, :] *= 2
    expected[:, 3:] *= 2
    torch.testing.assert_close(s[k], expected)
    # zero_pad mode on the same positions: inside → 1, outside → 0, never doubled
    mz = AKConv(1, 1, 9, zero_pad=True).double()
    with torch.no_grad():
        mz.p_conv.bias.zero_()
    sz = mz.sample(x, mz.sampling_positions(x)).view(9, 5, 6)
    expected_z = torch.zeros(5, 6, dtype=torch.double)
    expected_z[:3, :4] = 1
    torch.testing.assert_close(sz[k], expected_z)


def test_gradients_reach_offsets_and_input():
    torch.manual_seed(1)
    m = AKConv(3, 4, 5)
    x = torch.randn(2, 3, 8, 9, requires_grad=True)
    m(x).square().sum().backward()
    for name, prm in m.named_parameters():
        assert prm.grad is not None and torch.isfinite(prm.grad).all(), name
    assert m.p_conv.weight.grad.abs().sum() > 0 and x.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------------------
# compiled CPU kernel (mambaseg.nn.akconv_kernel) vs the pure-PyTorch reference and the per-pixel loop
# ---------------------------------------------------------------------------------------------------------------
needs_kernel = pytest.mark.skipif(not akconv_kernel.available(), reason="AKConv CPU kernel could not be built")


def _both_paths(m: AKConv, x: torch.Tensor):
    """Output and gradients (input, p_conv weight/bias, mixing weight) with the kernel off, then on."""
    results = []
    for enabled in (False, True):
        previous = set_kernel_enabled(enabled)
        try:
            xx = x.detach().clone().requires_grad_(True)
            y = m(xx)
            g = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(3))
            grads = torch.autograd.grad((y * g).sum(), [xx, m.p_conv.weight, m.p_conv.bias, m.conv[0].weight])
            results.append((y.detach(), grads))
        finally:
            set_kernel_enabled(previous)
    return results


@needs_kernel
@pytest.mark.parametrize("zero_pad", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("n", [1, 3, 5, 9, 11])
def test_kernel_matches_reference_fp64(n, stride, zero_pad):
    """Same arithmetic up to summation order: fp64 results agree to ~1e-13; 1e-9 leaves a wide margin."""
    torch.manual_seed(n * 10 + stride)
    m = AKConv(3, 4, n, stride=stride, centred=zero_pad, zero_pad=zero_pad).double().train()
    torch.nn.init.normal_(m.p_conv.weight, std=0.8)  # varied offsets, many points outside the 7x9 map
    x = torch.randn(2, 3, 7, 9, dtype=torch.double)
    with torch.no_grad():
        p = m.sampling_positions(x)
    assert (p < 0).any() and (p[:, :n] > 6).any() and (p[:, n:] > 8).any(), "positions outside the map"
    (y0, g0), (y1, g1) = _both_paths(m, x)
    torch.testing.assert_close(y1, y0, rtol=1e-9, atol=1e-9)
    for name, a, b in zip(("input", "p_conv.weight", "p_conv.bias", "weight"), g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=lambda s, name=name: f"{name}: {s}")


@needs_kernel
@pytest.mark.parametrize("n, zero_pad", [(5, False), (9, True)])
def test_kernel_matches_per_pixel_loop(n, zero_pad):
    """The kernel's sampling (weight = identity selector) equals the independent loop from the spec."""
    torch.manual_seed(7)
    b, c, hh, ww = 2, 2, 6, 7
    x = torch.randn(b, c, hh, ww, dtype=torch.double)
    p = torch.randn(b, 2 * n, 5, 4, dtype=torch.double) * 3 + 2.5  # many outside [0, 5] / [0, 6]
    ref = _loop_sample(x, p, zero_pad)  # (B, C, h, w, N)
    xs, ps = (torch.nn.functional.pad(x, (1, 1, 1, 1)), p + 1) if zero_pad else (x, p)
    for ci in range(c):
        for k in range(n):
            sel = torch.zeros(1, c * n, dtype=torch.double)
            sel[0, ci * n + k] = 1.0  # picks channel ci, point k
            got = akconv_kernel.akconv_sample_mix(xs, ps, sel)[:, 0]
            torch.testing.assert_close(got, ref[:, ci, :, :, k], rtol=1e-12, atol=1e-12)


@needs_kernel
@pytest.mark.parametrize("zero_pad", [False, True])
def test_kernel_float32_close_to_reference(zero_pad):
    """fp32: relative error ~1e-6 per sum of C·N products; 1e-4 is a safe bound for these magnitudes."""
    torch.manual_seed(5)
    m = AKConv(8, 6, 9, stride=1, centred=zero_pad, zero_pad=zero_pad).train()
    torch.nn.init.normal_(m.p_conv.weight, std=0.3)
    x = torch.randn(2, 8, 17, 15)
    (y0, g0), (y1, g1) = _both_paths(m, x)
    torch.testing.assert_close(y1, y0, rtol=1e-4, atol=1e-4)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


@needs_kernel
def test_kernel_gradcheck():
    """Analytic gradients of the kernel (x, positions, weight) against finite differences in fp64. Positions keep
    their fractional parts in [0.2, 0.8] so that no finite-difference step crosses a bilinear kink."""
    g = torch.Generator().manual_seed(0)
    n, c, co = 3, 2, 3
    x = torch.randn(1, c, 5, 6, dtype=torch.double, generator=g, requires_grad=True)
    whole = torch.randint(-2, 8, (1, 2 * n, 3, 4), generator=g).double()
    p = (whole + 0.2 + 0.6 * torch.rand(1, 2 * n, 3, 4, dtype=torch.double, generator=g)).requires_grad_(True)
    w = torch.randn(co, c * n, dtype=torch.double, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(akconv_kernel.akconv_sample_mix, (x, p, w), eps=1e-6, atol=1e-6)


@needs_kernel
def test_kernel_deterministic_across_runs_and_threads():
    """Run to run: bit-identical. Across thread counts: the sampling, scatter and position reductions are split by
    shape only; checked with an identity mixing weight, for which the BLAS product is exact in any order."""
    torch.manual_seed(2)
    m = AKConv(20, 8, 5, zero_pad=True, centred=True).train()  # 20 channels: two col2im channel blocks
    torch.nn.init.normal_(m.p_conv.weight, std=0.5)
    x = torch.randn(3, 20, 23, 19)
    (_, _), first = _both_paths(m, x)
    (_, _), second = _both_paths(m, x)
    assert torch.equal(first[0], second[0]) and all(torch.equal(a, b) for a, b in zip(first[1], second[1]))

    c, n = 20, 5
    xs = torch.randn(2, c, 23, 19, requires_grad=True)
    ps = (torch.rand(2, 2 * n, 41, 37) * 30 - 4).requires_grad_(True)  # 1517 pixels: two forward tiles per image
    eye = torch.eye(c * n)
    dy = torch.randn(2, c * n, 41, 37)
    threads = torch.get_num_threads()
    outs = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            y = akconv_kernel.akconv_sample_mix(xs, ps, eye)
            outs.append((y.detach(), *torch.autograd.grad((y * dy).sum(), [xs, ps])))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


@needs_kernel
@pytest.mark.parametrize("b, c, hw, n", [(3, 4, (30, 25), 5), (2, 64, (24, 24), 9)])
def test_kernel_matches_reference_multi_tile(b, c, hw, n):
    """Several 1024-row tiles over the batch (tiles spanning two elements, work units starting inside an element,
    whose scatter goes through its own buffer). 4 channels: the fused pass that also writes the samples;
    64 channels x 9 points in fp64: tiles too wide for it, the separate samples pass."""
    torch.manual_seed(b * 100 + c)
    m = AKConv(c, 3, n).double().train()
    torch.nn.init.normal_(m.p_conv.weight, std=0.5 / c**0.5)
    x = torch.randn(b, c, *hw, dtype=torch.double)
    assert b * hw[0] * hw[1] > 1024 and 1024 % (hw[0] * hw[1]) != 0, "a tile boundary inside an element"
    (y0, g0), (y1, g1) = _both_paths(m, x)
    torch.testing.assert_close(y1, y0, rtol=1e-9, atol=1e-9)
    for name, a, r in zip(("input", "p_conv.weight", "p_conv.bias", "weight"), g1, g0):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-9, msg=lambda s, name=name: f"{name}: {s}")


@needs_kernel
def test_kernel_gradients_independent_of_threads():
    """A random mixing weight: input, offset and weight gradients at 1, 2 and 3 threads agree (the work split and
    the reduction orders depend on the shape only; the BLAS products are single-threaded within the split)."""
    g = torch.Generator().manual_seed(4)
    c, n, co = 12, 9, 7
    x = torch.randn(3, c, 26, 31, generator=g, requires_grad=True)
    p = (torch.rand(3, 2 * n, 26, 31, generator=g) * 34 - 3).requires_grad_(True)
    w = torch.randn(co, c * n, generator=g, requires_grad=True)
    dy = torch.randn(3, co, 26, 31, generator=g)
    threads = torch.get_num_threads()
    outs = []
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            y = akconv_kernel.akconv_sample_mix(x, p, w)
            outs.append(torch.autograd.grad((y * dy).sum(), [x, p, w]))
    finally:
        torch.set_num_threads(threads)
    for other in outs[1:]:
        for a, r in zip(other, outs[0]):
            torch.testing.assert_close(a, r, rtol=1e-6, atol=1e-6 * float(r.abs().max()))


def test_kernel_can_be_disabled(monkeypatch):
    saved = dict(akconv_kernel._state)
    try:
        akconv_kernel._state.clear()
        monkeypatch.setenv(akconv_kernel.ENV_DISABLE, "1")
        assert not akconv_kernel.available()
        m = AKConv(2, 3, 5)
        assert m(torch.randn(1, 2, 6, 6)).shape == (1, 3, 6, 6)  # reference path
        with pytest.raises(RuntimeError, match="not available"):
            akconv_kernel.akconv_sample_mix(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 1, 1), torch.zeros(1, 1))
    finally:
        akconv_kernel._state.clear()
        akconv_kernel._state.update(saved)


@pytest.mark.parametrize("zero_pad", [False, True])
def test_reference_sampling_exact_on_a_large_map(zero_pad):
    """The exact (traced / ONNX) sampling path in float32 on a 1024² map matches the per-pixel rule (computed in
    float64 from the same float32 positions) to float32 rounding of the weights. grid_sample, which the export once
    traced, rescales positions to [-1, 1] and back (a round trip of ~S·eps pixels); through the shipped DRIVE model
    this made the ONNX export disagree with the compiled kernel by 0.08 at 256²."""
    torch.manual_seed(0)
    n, size = 9, 1024
    m = AKConv(1, 1, n, centred=zero_pad, zero_pad=zero_pad)
    x = torch.randn(1, 1, size, size)
    p = torch.rand(1, 2 * n, 4, 4) * (size + 3) - 2.0  # anywhere in the map and a little outside it
    # points a few ulps below and above the last row/column (the border-quirk threshold) and at the map's far end
    p[0, 0, 0, :4] = torch.tensor([size - 1.0, size - 1.0, size - 2.0, size - 3.0]) - torch.tensor([3e-5, 0, 6e-5, 0.5])
    p[0, n, 0, :4] = torch.tensor([size - 1.0 - 6e-5, size - 1.5, 0.25, size - 1.0])
    ref = _loop_sample(x.double(), p.double(), zero_pad)
    got = m.sample(x, p, exact=True).view(1, 1, n, 4, 4).permute(0, 1, 3, 4, 2).double()
    torch.testing.assert_close(got, ref, rtol=0, atol=2e-6)


# ---------------------------------------------------------------------------------------------------------------
# bfloat16 (issue 23): bf16 samples and products, fp32 positions, accumulation and gradients
# ---------------------------------------------------------------------------------------------------------------
U_BF16 = 2.0**-8  # unit roundoff of bfloat16 (8 significant bits): one rounding changes a value by <= u·|value|


def _bf16_case(zero_pad: bool, hw=(19, 23)):
    """Image, positions (fp32-representable, so both runs sample at the same points), weight, upstream gradient."""
    g = torch.Generator().manual_seed(11)
    c, n, co = 12, 9, 7  # K = N·C = 108 products per output
    x = torch.randn(2, c, *hw, generator=g, dtype=torch.float64)
    p = (torch.rand(2, 2 * n, *hw, generator=g, dtype=torch.float64) * 26 - 3).float().double()  # many clamped
    if zero_pad:
        x, p = torch.nn.functional.pad(x, (1, 1, 1, 1)), p + 1
    w = torch.randn(co, c * n, generator=g, dtype=torch.float64) / (c * n) ** 0.5
    dy = torch.randn(2, co, *hw, generator=g, dtype=torch.float64)
    return x, p, w, dy


def _kernel_grads(x, p, w, dy):
    x, p, w = (t.detach().clone().requires_grad_(True) for t in (x, p, w))
    y = akconv_kernel.akconv_sample_mix(x, p, w)
    return (y.detach(), *torch.autograd.grad((y.to(dy.dtype) * dy).sum(), [x, p, w]))


@needs_kernel
@pytest.mark.parametrize("zero_pad", [False, True])
def test_kernel_bf16_within_rounding_bounds(zero_pad):
    """bf16 storage vs the exact (fp64) kernel, element-wise, against first-order rounding bounds (u = 2^-8).

    Forward y = Σ_k W_k s_k (K = N·C): x and W are rounded to bf16 (u each), each sample is a non-negative
    bilinear combination of rounded corners computed in fp32 and rounded once (u), the sum runs in fp32 (≈ 2^-24,
    negligible) and y is rounded once (u·|y|): |Δy| <= 3u·(|W| @ s(|x|)) + u|y|, where s(|x|) are the samples of
    |x| (the kernel itself on |x|, |W| in fp64 gives that sum). dx is the scatter of dcol = dy W (dy, W and dcol
    each rounded once: 3u·|dy||W|, scattered with non-negative weights) and is rounded to bf16 on return (u): bound
    4u × the fp64 kernel's dx for (|dy|, |W|). dW = Σ dy ⊗ col per 1024-row tile (dy: u, samples: 2u, each tile's
    bf16 product: u, the final bf16 dW: u): bound 5u × the fp64 dW for (|x|, |dy|). The positions' gradient
    sums dcol_c times corner differences: |Δdp| <= 4u · Σ_c G_c · 2 max|x| with G = |dy| @ |W| (a loose bound, but
    an error in the kernel is O(1) of dp). Each bound gets a factor 1.5 for second-order terms.
    """
    x, p, w, dy = _bf16_case(zero_pad)
    y0, dx0, dp0, dw0 = _kernel_grads(x, p, w, dy)  # exact reference (fp64)
    y1, dx1, dp1, dw1 = _kernel_grads(x.bfloat16(), p.float(), w.bfloat16(), dy.bfloat16().double())
    assert y1.dtype == torch.bfloat16 and dx1.dtype == torch.bfloat16 and dw1.dtype == torch.bfloat16
    assert dp1.dtype == torch.float32
    ya, dxa, _, dwa = _kernel_grads(x.abs(), p, w.abs(), dy.abs())
    u = U_BF16
    assert ((y1.double() - y0).abs() <= 1.5 * (3 * u * ya + u * y0.abs())).all()
    assert ((dx1.double() - dx0).abs() <= 1.5 * 4 * u * dxa).all()
    assert ((dw1.double() - dw0).abs() <= 1.5 * 5 * u * dwa).all()
    c, n = x.shape[1], p.shape[1] // 2
    g_abs = torch.einsum("bohw,ok->bkhw", dy.abs(), w.abs()).view(2, n, c, *dy.shape[2:]).sum(2)  # Σ_c G, (B,N,h,w)
    bound_p = 1.5 * 4 * u * 2 * float(x.abs().max()) * torch.cat([g_abs, g_abs], dim=1)
    assert ((dp1.double() - dp0).abs() <= bound_p).all()
    # and the errors are of bf16's size, not zero (the bf16 path really ran)
    assert 0 < float((y1.double() - y0).abs().max()) < 0.1 * float(y0.abs().max())


@needs_kernel
def test_kernel_bf16_deterministic_across_threads():
    """The fp32 accumulations keep the shape-only split: bf16 results are bit-identical at 1 and 2 threads (two
    1024-row tiles, so every GEMM runs single-threaded inside the split at either thread count)."""
    x, p, w, dy = _bf16_case(False, hw=(26, 31))
    threads = torch.get_num_threads()
    outs = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            outs.append(_kernel_grads(x.bfloat16(), p.float(), w.bfloat16(), dy.float()))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


@needs_kernel
def test_autocast_runs_the_kernel_in_bf16(monkeypatch):
    """Under torch.autocast('cpu', bfloat16) AKConv's kernel receives bf16 image and weight and fp32 offsets, and
    the module's output (after BN + SiLU) is bf16; its gradients reach every parameter in fp32 (master weights)."""
    seen = []
    ext = akconv_kernel._load()
    real = ext.forward

    def forward(x, off, w, pn, stride, shift):
        seen.append((x.dtype, off.dtype, w.dtype))
        return real(x, off, w, pn, stride, shift)

    monkeypatch.setattr(akconv_kernel, "_load", lambda: type("E", (), {"forward": staticmethod(forward),
                                                                         "backward": ext.backward})())
    torch.manual_seed(0)
    m = AKConv(4, 6, 5).train()
    x = torch.randn(2, 4, 9, 11)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    assert seen == [(torch.bfloat16, torch.float32, torch.bfloat16)]
    assert y.dtype == torch.bfloat16
    y.float().square().sum().backward()
    for name, prm in m.named_parameters():
        assert prm.grad is not None and prm.grad.dtype == torch.float32 and torch.isfinite(prm.grad).all(), name
