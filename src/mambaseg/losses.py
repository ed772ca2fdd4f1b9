"""Segmentation losses: (masked) cross-entropy + soft Dice, built on MONAI's ``MaskedDiceLoss``.

One output channel means binary segmentation (sigmoid + BCE); more channels mean softmax + CE over classes with the
background excluded from the Dice term. An optional mask (e.g. a fundus field of view) restricts both terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss, MaskedDiceLoss

__all__ = ["SegLoss"]


class SegLoss(torch.nn.Module):
    """``ce_weight * CE + dice_weight * Dice``.

    Args:
        out_channels: number of logit channels (1 = binary).
        name: ``dice_ce`` | ``ce`` | ``dice``.
        dice_weight: weight of the Dice term.
        ce_weight: weight of the cross-entropy term.
    """

    def __init__(self, out_channels: int, name: str = "dice_ce", dice_weight: float = 1.0, ce_weight: float = 1.0):
        super().__init__()
        if name not in ("dice_ce", "ce", "dice"):
            raise ValueError(f"loss.name must be 'dice_ce', 'ce' or 'dice', got {name!r}.")
        self.binary = out_channels == 1
        self.use_dice = name in ("dice_ce", "dice")
        self.use_ce = name in ("dice_ce", "ce")
        self.dice_weight, self.ce_weight = dice_weight, ce_weight
        opts = dict(sigmoid=True) if self.binary else dict(softmax=True, to_onehot_y=True, include_background=False)
        self.dice = DiceLoss(batch=True, smooth_nr=1e-5, smooth_dr=1e-5, **opts)
        self.masked_dice = MaskedDiceLoss(batch=True, smooth_nr=1e-5, smooth_dr=1e-5, **opts)

    def forward(self, logits, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """logits: (B, K, *S), or a deep-supervision list [full, 1/2, 1/4, ...] of such tensors; target: (B, *S) int
        labels; mask: optional (B, *S) bool. For a list, the targets are downsampled (nearest) to each output and
        the terms weighted 1, 1/2, 1/4, ... (normalised to sum 1), as in nnU-Net."""
        if isinstance(logits, (list, tuple)):
            weights = [0.5 ** i for i in range(len(logits))]
            total = 0.0
            for w, lg in zip(weights, logits):
                size = lg.shape[2:]
                t = target if tuple(target.shape[1:]) == tuple(size) else \
                    F.interpolate(target[:, None].float(), size=size, mode="nearest")[:, 0].long()
                m = mask if mask is None or tuple(mask.shape[1:]) == tuple(size) else \
                    F.interpolate(mask[:, None].float(), size=size, mode="nearest")[:, 0] > 0.5
                total = total + w * self._single(lg, t, m)
            return total / sum(weights)
        return self._single(logits, target, mask)

    def _single(self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        logits = logits.float()
        tgt = target.unsqueeze(1)
        m = None if mask is None else mask.unsqueeze(1).float()
        loss = logits.new_zeros(())
        if self.use_ce:
            if self.binary:
                ce = F.binary_cross_entropy_with_logits(logits, tgt.float(), reduction="none")
            else:
                ce = F.cross_entropy(logits, target, reduction="none").unsqueeze(1)
            ce = ce.mean() if m is None else (ce * m).sum() / m.sum().clamp_min(1.0)
            loss = loss + self.ce_weight * ce
        if self.use_dice:
            t = tgt.float() if self.binary else tgt
            dice = self.dice(logits, t) if m is None else self.masked_dice(logits, t, mask=m)
            loss = loss + self.dice_weight * dice
        return loss
