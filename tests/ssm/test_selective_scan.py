"""`chunked` against the sequential `reference`: outputs, last state and every gradient, plus argument checks."""

from __future__ import annotations

import pytest
import torch

from mambaseg.ssm import selective_scan, selective_scan_chunked, selective_scan_reference

from .scan_inputs import ARGS, make_inputs

CHUNK = 16


def run_both(inputs, softplus, **chunk_kw):
    out_r, last_r = selective_scan_reference(**inputs, delta_softplus=softplus, return_last_state=True)
    out_c, last_c = selective_scan_chunked(**inputs, delta_softplus=softplus, return_last_state=True,
                                           chunk_size=CHUNK, **chunk_kw)
    return out_r, last_r, out_c, last_c


def grads(out, inputs, weight):
    names = [n for n in ARGS if inputs[n] is not None]
    return dict(zip(names, torch.autograd.grad((out * weight).sum(), [inputs[n] for n in names])))


@pytest.mark.parametrize("length", [1, 7, CHUNK, 3 * CHUNK + 5])  # L=1, < chunk, == chunk, not a multiple
@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunked_matches_reference_lengths_groups(length, groups, dtype):
    inputs = make_inputs(length=length, groups=groups, dtype=dtype)
    out_r, last_r, out_c, last_c = run_both(inputs, softplus=True)
    tol = dict(rtol=6e-4, atol=2e-3) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out_c, out_r, **tol)
    torch.testing.assert_close(last_c, last_r, **tol)
    assert out_c.dtype == dtype
    w = torch.randn_like(out_r)
    gr, gc = grads(out_r, inputs, w), grads(out_c, inputs, w)
    gtol = dict(rtol=1e-3, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-8, atol=1e-9)
    for name in gr:
        torch.testing.assert_close(gc[name], gr[name], **gtol, msg=lambda m, n=name: f"grad {n}: {m}")


@pytest.mark.parametrize("has_z,has_D,has_bias,softplus", [
    (False, False, False, False), (True, False, False, False), (False, True, False, True),
    (False, False, True, True), (True, True, True, False), (True, True, True, True)])
def test_chunked_matches_reference_optional_args(has_z, has_D, has_bias, softplus):
    inputs = make_inputs(length=2 * CHUNK + 3, groups=2, dtype=torch.float64, has_z=has_z, has_D=has_D,
                         has_bias=has_bias)
    out_r, last_r, out_c, last_c = run_both(inputs, softplus)
    torch.testing.assert_close(out_c, out_r, rtol=1e-9, atol=1e-10)
    w = torch.randn_like(out_r)
    gr, gc = grads(out_r, inputs, w), grads(out_c, inputs, w)
    assert set(gr) == set(gc)
    for name in gr:
        torch.testing.assert_close(gc[name], gr[name], rtol=1e-8, atol=1e-9)


def test_multiple_blocks_match_reference():
    """A tiny block budget forces many blocks, so the carry between blocks (forward and backward) is exercised."""
    inputs = make_inputs(length=5 * CHUNK + 3, groups=2, dtype=torch.float64)
    out_r, last_r, out_c, last_c = run_both(inputs, True, block_elements=2 * 4 * 8 * CHUNK)
    torch.testing.assert_close(out_c, out_r, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(last_c, last_r, rtol=1e-9, atol=1e-10)
    w, wl = torch.randn_like(out_r), torch.randn_like(last_r)
    names = [n for n in ARGS if inputs[n] is not None]
    gr = torch.autograd.grad((out_r * w).sum() + (last_r * wl).sum(), [inputs[n] for n in names])
    gc = torch.autograd.grad((out_c * w).sum() + (last_c * wl).sum(), [inputs[n] for n in names])
    for name, a, b in zip(names, gc, gr):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9, msg=lambda m, n=name: f"grad {n}: {m}")


def test_gradcheck_float64():
    inputs = make_inputs(batch=1, dim=2, nstate=3, length=11, groups=2, dtype=torch.float64)
    names = [n for n in ARGS if inputs[n] is not None]

    def fn(*tensors):
        kw = dict(zip(names, tensors))
        out, last = selective_scan_chunked(**kw, delta_softplus=True, return_last_state=True, chunk_size=4,
                                           block_elements=2 * 3 * 8)
        return out, last

    assert torch.autograd.gradcheck(fn, tuple(inputs[n] for n in names), eps=1e-6, atol=1e-5)


def test_ungrouped_bc_and_dispatch():
    inputs = make_inputs(length=21, groups=1)
    flat = dict(inputs, B=inputs["B"][:, 0], C=inputs["C"][:, 0])  # (B, N, L)
    out_ref = selective_scan(**flat, backend="reference", delta_softplus=True)
    out_ch = selective_scan(**flat, backend="chunked", delta_softplus=True)
    torch.testing.assert_close(out_ch, out_ref, rtol=6e-4, atol=2e-3)


def test_env_backend_and_fallback(monkeypatch, caplog):
    inputs = make_inputs(length=9)
    monkeypatch.setenv("MAMBASEG_SCAN_BACKEND", "reference")
    a = selective_scan(**inputs)
    monkeypatch.setenv("MAMBASEG_SCAN_BACKEND", "cuda")  # no CUDA tensors here -> logged fallback to chunked
    with caplog.at_level("WARNING", logger="mambaseg.ssm"):
        b = selective_scan(**inputs)
    torch.testing.assert_close(a, b, rtol=6e-4, atol=2e-3)
    monkeypatch.setenv("MAMBASEG_SCAN_BACKEND", "bogus")
    with pytest.raises(ValueError, match="bogus"):
        selective_scan(**inputs)


def test_fp32_inside_under_low_precision_and_autocast():
    inputs = {k: (v.detach() if v is not None else None) for k, v in make_inputs(length=33).items()}
    ref = selective_scan_chunked(**inputs, delta_softplus=True)
    half = {k: (v.to(torch.bfloat16) if k in ("u", "delta", "z") else v) for k, v in inputs.items()}
    out = selective_scan_chunked(**half, delta_softplus=True)
    assert out.dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_ac = selective_scan_chunked(**inputs, delta_softplus=True)
    assert out_ac.dtype == torch.float32
    torch.testing.assert_close(out_ac, ref)  # autocast must not lower the scan's precision


def test_deterministic():
    inputs = make_inputs(length=50, groups=2)
    o1 = selective_scan_chunked(**inputs, delta_softplus=True)
    g1 = torch.autograd.grad(o1.sum(), inputs["u"])[0]
    o2 = selective_scan_chunked(**inputs, delta_softplus=True)
    g2 = torch.autograd.grad(o2.sum(), inputs["u"])[0]
    assert torch.equal(o1, o2) and torch.equal(g1, g2)


def test_memory_is_bounded_by_blocks():
    """No (B, D, L, N) tensor over the whole sequence: the peak of saved tensors stays O(B·D·L)."""
    inputs = make_inputs(batch=1, dim=8, nstate=16, length=4096)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = selective_scan_chunked(**inputs, delta_softplus=True)
    full = 8 * 4096 * 16
    assert max(saved) < full / 4, f"a saved tensor has {max(saved)} elements; a full (B,D,L,N) has {full}"
    out.sum().backward()


BAD = [
    ("u", torch.zeros(2, 4), "u"),
    ("delta", torch.zeros(2, 4, 5), "delta"),
    ("A", torch.zeros(3, 8), "A"),
    ("B", torch.zeros(2, 3, 8, 40), "B"),  # 4 channels not divisible by 3 groups
    ("C", torch.zeros(2, 8, 39), "C"),
    ("D", torch.zeros(5), "D"),
    ("z", torch.zeros(2, 4, 41), "z"),
    ("delta_bias", torch.zeros(4, 1), "delta_bias"),
    ("u", torch.zeros(2, 4, 40, dtype=torch.int64), "u"),
]


@pytest.mark.parametrize("name,value,needle", BAD)
def test_bad_arguments_raise_value_error(name, value, needle):
    inputs = {k: (v.detach() if v is not None else None) for k, v in make_inputs().items()}
    inputs[name] = value
    with pytest.raises(ValueError, match=f"'{needle}'") as err:
        selective_scan(**inputs)
    assert "expected" in str(err.value) or "dtype" in str(err.value)
