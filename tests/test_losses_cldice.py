"""Soft clDice (loss.name dice_ce_cldice, #12): soft skeletons, the loss on perfect and thin-vessel-missing
predictions, masking, gradients, and its place in SegLoss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mambaseg.losses import SegLoss, soft_cldice, soft_dilate, soft_erode, soft_skeleton


def _vessels(h: int = 64, w: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(B=1, 1, H, W) float maps: a thick vessel (7 px) and a thin one (1 px); returns (all vessels, thick only)."""
    thick = torch.zeros(1, 1, h, w)
    thick[..., 20:27, 5:60] = 1.0
    thin = torch.zeros(1, 1, h, w)
    thin[..., 45, 5:60] = 1.0
    return torch.clamp(thick + thin, 0, 1), thick


def _logits(binary: torch.Tensor) -> torch.Tensor:
    return (binary * 2 - 1) * 20.0


def test_soft_skeleton_of_binary_map_is_thin_subset():
    target, thick = _vessels()
    skel = soft_skeleton(target, iters=10)
    assert skel.min() >= 0 and skel.max() <= 1 + 1e-6
    assert torch.all(skel <= target + 1e-6)  # inside the vessels
    # the thick vessel's skeleton is about one line (55 px long), far less than its 7 x 55 area
    thick_skel = soft_skeleton(thick, iters=10)
    assert 40 <= thick_skel.sum() <= 3 * 55 and thick_skel[..., 23, 10:55].mean() > 0.9
    assert torch.allclose(skel[..., 45, 5:60], torch.ones(55))  # a one-pixel vessel is its own skeleton


def test_cldice_zero_for_perfect_larger_when_thin_vessel_missed():
    target, thick = _vessels()
    perfect = soft_cldice(torch.sigmoid(_logits(target)), target)
    missed = soft_cldice(torch.sigmoid(_logits(thick)), target)
    assert perfect.item() == pytest.approx(0.0, abs=1e-4)
    assert missed.item() > 0.1
    # Dice barely notices the missing thin vessel (55 of ~440 pixels); clDice does, relative to it
    inter = (thick * target).sum()
    dice_missed = 1 - 2 * inter / (thick.sum() + target.sum())
    assert missed.item() > 1.5 * dice_missed.item()


def test_cldice_mask_ignores_outside():
    target, thick = _vessels()
    mask = torch.ones_like(target)
    mask[..., 40:50, :] = 0  # the thin vessel lies outside the field of view
    assert soft_cldice(torch.sigmoid(_logits(thick)), target, mask).item() == pytest.approx(0.0, abs=1e-4)


def test_cldice_gradient_and_3d():
    target, thick = _vessels()
    logits = _logits(thick * 0.2).clone().requires_grad_(True)
    soft_cldice(torch.sigmoid(logits / 20), target).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    vol = torch.zeros(1, 1, 8, 16, 16)
    vol[..., 3:6, 6:9, 2:14] = 1
    assert soft_cldice(vol, vol, iters=3).item() == pytest.approx(0.0, abs=1e-4)
    assert soft_cldice(vol * 0, vol, iters=3).item() > 0.5


def test_segloss_dice_ce_cldice_adds_weighted_term():
    target, thick = _vessels()
    y = target[:, 0].long()
    logits = _logits(thick) * 0.1
    mask = torch.ones_like(y, dtype=torch.bool)
    base = SegLoss(1, "dice_ce")(logits, y, mask)
    full = SegLoss(1, "dice_ce_cldice", cldice_weight=0.5, cldice_iters=10)(logits, y, mask)
    cl = soft_cldice(torch.sigmoid(logits), target, mask.unsqueeze(1).float(), 10)
    assert full.item() == pytest.approx(base.item() + 0.5 * cl.item(), rel=1e-5)
    assert SegLoss(1, "dice_ce_cldice", cldice_weight=0.0)(logits, y).item() == pytest.approx(
        SegLoss(1, "dice_ce")(logits, y).item(), rel=1e-6)
    # deep supervision lists work too
    ds = SegLoss(1, "dice_ce_cldice")([logits, logits[..., ::2, ::2]], y)
    assert torch.isfinite(ds)
    with pytest.raises(ValueError, match="binary"):
        SegLoss(3, "dice_ce_cldice")
    with pytest.raises(ValueError, match="loss.name"):
        SegLoss(1, "cldice")


def _ref_erode(x):
    """The paper's pooling formulation (cross-shaped min-pool)."""
    if x.dim() == 4:
        return torch.minimum(-F.max_pool2d(-x, (3, 1), 1, (1, 0)), -F.max_pool2d(-x, (1, 3), 1, (0, 1)))
    pools = [-F.max_pool3d(-x, k, 1, tuple(s // 2 for s in k)) for k in ((3, 1, 1), (1, 3, 1), (1, 1, 3))]
    return torch.minimum(torch.minimum(pools[0], pools[1]), pools[2])


def _ref_dilate(x):
    return F.max_pool2d(x, 3, 1, 1) if x.dim() == 4 else F.max_pool3d(x, 3, 1, 1)


def _ref_skeleton(x, iters):
    skel = F.relu(x - _ref_dilate(_ref_erode(x)))
    for _ in range(iters):
        x = _ref_erode(x)
        delta = F.relu(x - _ref_dilate(_ref_erode(x)))
        skel = skel + F.relu(delta - skel * delta)
    return skel


@pytest.mark.parametrize("shape", [(3, 1, 20, 17), (2, 1, 6, 9, 7)])
def test_fast_min_max_match_pooling_values_and_gradients(shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(soft_erode(x), _ref_erode(x)) and torch.equal(soft_dilate(x), _ref_dilate(x))
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (soft_skeleton(a, 4) ** 2).sum().backward()
    (_ref_skeleton(b, 4) ** 2).sum().backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-5)
    xd = torch.rand((1, 1, 5, 6), dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: soft_skeleton(t, 2), (xd,))
