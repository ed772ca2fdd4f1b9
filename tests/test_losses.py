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


def test_deep_supervision_model_and_loss():
    from mambaseg.models import build_model

    net = build_model("dm_segnet_tiny", in_channels=1, out_channels=3, deep_supervision=True)
    x = torch.randn(1, 1, 19, 21, 17)
    outs = net(x)
    assert [tuple(o.shape[2:]) for o in outs] == [(19, 21, 17), (10, 11, 9), (5, 6, 5)]
    target = torch.randint(0, 3, (1, 19, 21, 17))
    loss = SegLoss(3)(outs, target)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in net.ds_heads.parameters())
    single = SegLoss(3)(outs[0], target)
    assert not torch.isclose(loss, single)  # the lower-resolution terms count
    net.eval()
    assert net(x).shape == (1, 3, 19, 21, 17)  # inference: full resolution only
