"""AKConv: initial sampling shape, parameter count, shapes, and bilinear sampling vs an independent per-pixel loop."""

from __future__ import annotations

import math

import pytest
import torch

from mambaseg.nn.akconv import AKConv, initial_sampling_shape


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
    got = m.sample(x, p)  # (B, C, N·h, w)
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
