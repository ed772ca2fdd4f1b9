"""SegLoss: masked and unmasked Dice + CE agree with hand-computed values; the mask really excludes pixels."""

from __future__ import annotations

import torch

from mambaseg.losses import SegLoss


def test_binary_loss_perfect_and_wrong():
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, 2:5, 2:5] = 1
    good = (target.float() * 2 - 1).unsqueeze(1) * 20  # confident and right
    loss = SegLoss(1)
    assert loss(good, target) < 1e-3
    assert loss(-good, target) > 1.5


def test_mask_excludes_pixels():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[:, :4] = 1
    logits = (target.float() * 2 - 1).unsqueeze(1) * 20
    logits[:, :, 6:] = 20  # wrong, but outside the mask
    mask = torch.ones(1, 8, 8, dtype=torch.bool)
    mask[:, 6:] = False
    loss = SegLoss(1)
    assert loss(logits, target, mask) < 1e-3
    assert loss(logits, target) > 0.1


def test_multiclass_ce_matches_torch_when_dice_off():
    logits = torch.randn(2, 3, 5, 6)
    target = torch.randint(0, 3, (2, 5, 6))
    ce = SegLoss(3, name="ce")(logits, target)
    torch.testing.assert_close(ce, torch.nn.functional.cross_entropy(logits, target))
