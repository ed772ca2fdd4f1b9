"""3D scan orders (k0..k3) and the QSMamba layer."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from mambaseg.nn.mamba import inverse_permutation
from mambaseg.nn.scan3d import ORDER_NAMES, QSMambaLayer, scan_order, scan_orders, seq_orders

SHAPES = [(2, 3, 4), (5, 1, 3), (1, 1, 1), (3, 4, 2)]


def encoded_volume(d: int, h: int, w: int) -> torch.Tensor:
    """Flattened volume whose value at (d, h, w) is 10000·d + 100·h + w."""
    dd, hh, ww = torch.meshgrid(torch.arange(d), torch.arange(h), torch.arange(w), indexing="ij")
    return (10000 * dd + 100 * hh + ww).flatten()


@pytest.mark.parametrize("shape", SHAPES)
def test_orders_are_permutations_and_invertible(shape):
    n = shape[0] * shape[1] * shape[2]
    flat = torch.randn(n)
    for kind in ORDER_NAMES:
        order = scan_order(kind, shape)
        assert order.dtype == torch.int64 and torch.equal(order.sort().values, torch.arange(n))
        assert torch.equal(flat[order][inverse_permutation(order)], flat)


@pytest.mark.parametrize("shape", SHAPES)
def test_order_semantics(shape):
    d, h, w = shape
    vol = encoded_volume(d, h, w)
    k0, k1, k2, k3 = (scan_order(kind, shape) for kind in ORDER_NAMES)
    raster = [10000 * i + 100 * j + k for i in range(d) for j in range(h) for k in range(w)]  # w fastest
    inter = [10000 * i + 100 * j + k for j in range(h) for k in range(w) for i in range(d)]  # d fastest
    assert vol[k0].tolist() == raster
    assert torch.equal(k1, k0.flip(0))
    assert vol[k2].tolist() == inter
    assert torch.equal(k3, k2.flip(0))


def test_scan_orders_selects_and_caches():
    orders = scan_orders((3, 4, 5), directions=3)
    assert len(orders) == 3 and torch.equal(orders[2], scan_order("inter_slice", (3, 4, 5)))
    assert scan_orders((3, 4, 5), directions=3)[0] is orders[0]  # cached per shape
    assert len(scan_orders((3, 4, 5), directions=2)) == 2
    with pytest.raises(ValueError, match="directions"):
        scan_orders((3, 4, 5), directions=5)
    with pytest.raises(ValueError, match="kind"):
        scan_order("diagonal", (3, 4, 5))
    with pytest.raises(ValueError, match="shape"):
        scan_order("forward", (3, 4))


@pytest.mark.parametrize("directions", [2, 3, 4])
def test_layer_equals_residual_multidir_with_volume_orders(directions):
    torch.manual_seed(0)
    layer = QSMambaLayer(6, directions=directions, d_state=4)
    x = torch.randn(2, 6, 3, 5, 4)  # D != H != W
    tokens = layer.norm(rearrange(x, "b c d h w -> b (d h w) c"))
    mixed = layer.mamba(tokens, list(scan_orders((3, 5, 4), directions)))
    expected = x + rearrange(mixed, "b (d h w) c -> b c d h w", d=3, h=5, w=4)
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("shape", [(3, 5, 4), (1, 7, 2), (4, 1, 1)])
def test_seq_orders_are_the_scan_orders(shape):
    """The view-based orders the layer uses are the same permutations as the index orders, both ways."""
    views = seq_orders(shape, 4)
    assert views[0] is None
    x = torch.randn(2, 3, shape[0] * shape[1] * shape[2])
    for kind, view in zip(ORDER_NAMES[1:], views[1:]):
        order = scan_order(kind, shape)
        assert torch.equal(view.index(), order)
        moved = view.apply(x)
        assert moved.is_contiguous() and torch.equal(moved, x.index_select(-1, order))
        assert torch.equal(view.invert(moved), x)


@pytest.mark.parametrize("directions", [2, 4])
def test_layer_grads_equal_index_order_path(directions):
    torch.manual_seed(0)
    layer = QSMambaLayer(6, directions=directions, d_state=4).double()
    x = torch.randn(2, 6, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    tokens = layer.norm(rearrange(x, "b c d h w -> b (d h w) c"))
    mixed = layer.mamba(tokens, list(scan_orders((3, 5, 4), directions)))
    ref = x + rearrange(mixed, "b (d h w) c -> b c d h w", d=3, h=5, w=4)
    g = torch.randn_like(out)
    params = [x, layer.mamba.in_proj.weight, layer.mamba.out_proj.weight] + list(layer.mamba.dirs[-1].parameters())
    for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_inter_slice_direction_depends_on_depth_layout():
    """The k2 scan must follow d fastest: feeding a D/W-transposed volume changes the result unless handled."""
    torch.manual_seed(0)
    layer = QSMambaLayer(4, directions=3, d_state=4)
    x = torch.randn(1, 4, 3, 2, 5)
    tokens = layer.norm(rearrange(x, "b c d h w -> b (d h w) c"))
    wrong = list(scan_orders((3, 2, 5), 2)) + [scan_order("inter_slice", (5, 2, 3))]  # k2 of the wrong shape
    out_wrong = x + rearrange(layer.mamba(tokens, wrong), "b (d h w) c -> b c d h w", d=3, h=2, w=5)
    assert not torch.allclose(layer(x), out_wrong)


def test_layer_backward_and_any_shape():
    torch.manual_seed(0)
    layer = QSMambaLayer(8, directions=4, d_state=4)
    for shape in [(1, 8, 2, 7, 3), (2, 8, 5, 1, 4)]:
        layer.zero_grad()
        x = torch.randn(*shape, requires_grad=True)
        y = layer(x)
        assert y.shape == x.shape and torch.isfinite(y).all()
        y.square().mean().backward()
        assert torch.isfinite(x.grad).all()
        for name, p in layer.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_grad_checkpoint_same_values_and_grads():
    torch.manual_seed(0)
    plain = QSMambaLayer(6, directions=4, d_state=4)
    ckpt = QSMambaLayer(6, directions=4, d_state=4, grad_checkpoint=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 6, 3, 4, 2)
    outs, grads = [], []
    for layer in (plain, ckpt):
        out = layer(x)
        out.sum().backward()
        outs.append(out.detach())
        grads.append([p.grad.clone() for p in layer.parameters()])
    torch.testing.assert_close(outs[0], outs[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_layer_rejects_non_volume():
    with pytest.raises(ValueError, match=r"\(B, C, D, H, W\)"):
        QSMambaLayer(4)(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match="directions"):
        QSMambaLayer(4, directions=0)
