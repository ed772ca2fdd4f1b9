"""CUDA parity checks (issue 10 item 5), marked ``gpu``: skipped without CUDA and deselected by ``make test``.

Run them on a machine with a GPU: ``pytest -m gpu tests/gpu`` (or ``bash benchmarks/gpu_check.sh``, which also times
one training step of each Mamba network against its baseline). The chunked scan on CUDA is compared with the
sequential reference on the CPU in float64; AKConv's PyTorch path on CUDA (the compiled kernel is CPU-only) with the
CPU path (the compiled kernel where it is built) in float64: outputs and every gradient.
"""

from __future__ import annotations

import pytest
import torch

from mambaseg.models import build_model
from mambaseg.nn.akconv import AKConv
from mambaseg.ssm import selective_scan_chunked, selective_scan_reference

from ..ssm.scan_inputs import ARGS, make_inputs

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _grads(out, tensors, weight):
    return torch.autograd.grad((out * weight).sum(), tensors)


@pytest.mark.parametrize("length,groups", [(7, 1), (53, 2), (300, 4)])
def test_chunked_scan_on_cuda_matches_cpu_reference(length, groups):
    cpu = make_inputs(length=length, groups=groups, dtype=torch.float64, has_z=True, has_D=True, has_bias=True)
    names = [n for n in ARGS if cpu[n] is not None]
    gpu = {n: (cpu[n].detach().cuda().requires_grad_(True) if cpu[n] is not None else None) for n in ARGS}
    out_r = selective_scan_reference(**cpu, delta_softplus=True)
    out_c = selective_scan_chunked(**gpu, delta_softplus=True, chunk_size=16)
    assert out_c.is_cuda
    torch.testing.assert_close(out_c.cpu(), out_r, rtol=1e-9, atol=1e-10)
    w = torch.randn_like(out_r)
    gr = _grads(out_r, [cpu[n] for n in names], w)
    gc = _grads(out_c, [gpu[n] for n in names], w.cuda())
    for n, a, b in zip(names, gc, gr):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-8, atol=1e-9, msg=lambda m, n=n: f"grad {n}: {m}")


@pytest.mark.parametrize("num_param,stride,zero_pad", [(1, 1, False), (5, 2, True), (9, 1, True), (11, 2, False)])
def test_akconv_on_cuda_matches_cpu(num_param, stride, zero_pad):
    torch.manual_seed(0)
    m = AKConv(4, 6, num_param=num_param, stride=stride, zero_pad=zero_pad).double()
    with torch.no_grad():  # offsets that reach outside the image
        m.p_conv.weight.normal_(0, 0.5)
        m.p_conv.bias.normal_(0, 2.0)
    g = AKConv(4, 6, num_param=num_param, stride=stride, zero_pad=zero_pad).double().cuda()
    g.load_state_dict(m.state_dict())
    x = torch.randn(2, 4, 13, 10, dtype=torch.float64, requires_grad=True)
    xg = x.detach().cuda().requires_grad_(True)
    y, yg = m(x), g(xg)
    torch.testing.assert_close(yg.cpu(), y, rtol=1e-9, atol=1e-9)
    w = torch.randn_like(y)
    params = [p for _, p in m.named_parameters()]
    params_g = [p for _, p in g.named_parameters()]
    gr = _grads(y, [x, *params], w)
    gc = _grads(yg, [xg, *params_g], w.cuda())
    names = ["input"] + [n for n, _ in m.named_parameters()]
    for n, a, b in zip(names, gc, gr):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-7, atol=1e-8, msg=lambda msg, n=n: f"grad {n}: {msg}")


@pytest.mark.parametrize("name,shape", [("akmamba_net_tiny", (2, 3, 64, 64)), ("dm_segnet_tiny", (1, 1, 32, 32, 32))])
def test_tiny_mamba_networks_train_on_cuda(name, shape):
    torch.manual_seed(0)
    net = build_model(name, in_channels=shape[1], out_channels=2).cuda()
    opt = torch.optim.SGD(net.parameters(), lr=1e-2)
    x = torch.randn(shape, device="cuda")
    y = torch.randint(0, 2, (shape[0], *shape[2:]), device="cuda")
    losses = []
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


@pytest.mark.parametrize("dtype,unit", [(torch.float16, 2.0**-11), (torch.bfloat16, 2.0**-8)])
@pytest.mark.parametrize("backend", ["chunked", "cuda"])
def test_half_precision_scan_on_cuda(dtype, unit, backend):
    """Issue 23: mamba_ssm's convention on CUDA — u, delta, B, C, z in fp16/bf16, A, D, delta_bias fp32, output and
    the half inputs' gradients in the half dtype. Against the fp64 reference on the same (representable) values and
    the same upstream gradient only the final roundings remain: |Δ| <= u·|value| (u = 2^-11 fp16, 2^-8 bf16), plus
    1e-3 × the largest magnitude for the fp32 arithmetic inside (mamba_ssm's kernel sums in fp32 in another order)."""
    from mambaseg.ssm import resolve_backend, selective_scan

    if resolve_backend(backend, torch.device("cuda")) != backend:
        pytest.skip(f"backend {backend} not available on CUDA")
    base = make_inputs(length=64, groups=1, nstate=8, dtype=torch.float64, seed=5)
    low = ("u", "delta", "B", "C", "z")
    half = {k: (v.detach().to(dtype) if k in low else v.detach().float()).cuda().requires_grad_() for k, v in
            base.items()}
    exact = {k: v.detach().double().cpu().requires_grad_() for k, v in half.items()}
    g = torch.randn(2, 4, 64, dtype=torch.float64).to(dtype)
    out = selective_scan(**half, delta_softplus=True, backend=backend)  # B, C grouped (B, 1, N, L)
    assert out.dtype == dtype
    grads = torch.autograd.grad((out * g.cuda()).sum(), [half[k] for k in ARGS])
    ref = selective_scan_reference(**exact, delta_softplus=True)
    ref_grads = torch.autograd.grad((ref * g.double()).sum(), [exact[k] for k in ARGS])
    for name, got, want in zip(("out",) + ARGS, (out.detach(), *grads), (ref.detach(), *ref_grads)):
        low_out = name in low + ("out",)
        assert got.dtype == (dtype if low_out else torch.float32), name
        bound = 1e-3 * float(want.abs().max()) + (unit * want.abs() if low_out else 0)
        assert ((got.double().cpu() - want).abs() <= bound).all(), name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name,shape", [("akmamba_net_tiny", (2, 3, 64, 64)), ("dm_segnet_tiny", (1, 1, 32, 32, 32))])
def test_tiny_mamba_networks_train_under_cuda_autocast(name, shape, dtype):
    """A few steps under torch.autocast('cuda', fp16 with a GradScaler / bf16): finite, decreasing loss."""
    torch.manual_seed(0)
    net = build_model(name, in_channels=shape[1], out_channels=2).cuda()
    opt = torch.optim.SGD(net.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    x = torch.randn(shape, device="cuda")
    y = torch.randint(0, 2, (shape[0], *shape[2:]), device="cuda")
    losses = []
    for _ in range(4):
        with torch.autocast("cuda", dtype=dtype):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
