"""Segmentation losses: (masked) cross-entropy + soft Dice, built on MONAI's ``MaskedDiceLoss``.

One output channel means binary segmentation (sigmoid + BCE); more channels mean softmax + CE over classes with the
background excluded from the Dice term. An optional mask (e.g. a fundus field of view) restricts both terms.

``dice_ce_cldice`` (binary only) adds ``cldice_weight`` times the soft clDice loss of Shit et al., "clDice - a novel
topology-preserving loss function for tubular structure segmentation", CVPR 2021: soft skeletons by iterated min/max
pooling (:func:`soft_skeleton`), topology precision = fraction of the predicted skeleton inside the reference,
topology sensitivity = fraction of the reference skeleton inside the prediction, loss = 1 - their harmonic mean. It
rewards thin vessels the Dice term barely notices (a missing one-pixel vessel costs little area but a lot of
skeleton).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss, MaskedDiceLoss

__all__ = ["SegLoss", "soft_cldice", "soft_skeleton"]

LOSS_NAMES = ("dice_ce", "ce", "dice", "dice_ce_cldice")


class _Extreme3(torch.autograd.Function):
    """Max (or min) over the 3-neighbourhood along one axis, outside the array ignored. Same values as
    ``max_pool`` with kernel 3 / stride 1 / padding 1 along that axis, but several times faster on CPU, forward and
    backward (the gradient goes to the chosen neighbour; on ties the centre, then the lower index)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int, is_max: bool) -> torch.Tensor:
        n = x.shape[dim]
        p = F.pad(x, [0, 0] * (x.dim() - 1 - dim) + [1, 1], value=float("-inf") if is_max else float("inf"))
        lo, hi = p.narrow(dim, 0, n), p.narrow(dim, 2, n)
        op, better = (torch.maximum, torch.gt) if is_max else (torch.minimum, torch.lt)
        lo_mid = op(lo, x)
        out = op(lo_mid, hi)
        from_hi = better(hi, lo_mid)
        from_lo = better(lo, x) & ~from_hi
        ctx.save_for_backward(from_lo, from_hi)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        from_lo, from_hi = ctx.saved_tensors
        dim, n = ctx.dim, grad.shape[ctx.dim]
        g_lo, g_hi = grad * from_lo, grad * from_hi
        shape = list(grad.shape)
        shape[dim] = n + 2
        out = grad.new_zeros(shape)
        out.narrow(dim, 0, n).add_(g_lo)
        out.narrow(dim, 1, n).add_(grad - g_lo - g_hi)
        out.narrow(dim, 2, n).add_(g_hi)
        return out.narrow(dim, 1, n), None, None


def soft_erode(x: torch.Tensor) -> torch.Tensor:
    """Soft (min-pool) erosion of ``(B, C, *S)`` maps in [0, 1] with a cross-shaped 3-neighbourhood (the minimum
    of the 3-minima along each spatial axis; as ``-max_pool(-x)`` with kernels (3, 1) and (1, 3) in 2D)."""
    out = None
    for d in range(2, x.dim()):
        e = _Extreme3.apply(x, d, False)
        out = e if out is None else torch.minimum(out, e)
    return out


def soft_dilate(x: torch.Tensor) -> torch.Tensor:
    """Soft (max-pool, 3 per axis, i.e. a 3x3(x3) square) dilation."""
    for d in range(2, x.dim()):
        x = _Extreme3.apply(x, d, True)
    return x


def soft_skeleton(x: torch.Tensor, iters: int = 10) -> torch.Tensor:
    """Soft skeleton of probability maps ``(B, C, *S)`` (Shit et al. 2021, Algorithm 1): the parts each of ``iters``
    successive erosions removes that an opening would not restore. On binary maps it is a subset of the map."""
    skel = F.relu(x - soft_dilate(soft_erode(x)))
    for _ in range(iters):
        x = soft_erode(x)
        delta = F.relu(x - soft_dilate(soft_erode(x)))
        skel = skel + F.relu(delta - skel * delta)
    return skel


def soft_cldice(prob: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, iters: int = 10,
                smooth: float = 1.0) -> torch.Tensor:
    """Soft clDice loss of foreground probabilities ``prob`` and a binary ``target`` (both ``(B, 1, *S)`` float),
    inside an optional ``mask`` of the same shape; pooled over the batch. 0 for a perfect binary prediction."""
    if mask is not None:
        prob, target = prob * mask, target * mask
    skel_p = soft_skeleton(prob, iters)
    with torch.no_grad():
        skel_t = soft_skeleton(target, iters)
    tprec = ((skel_p * target).sum() + smooth) / (skel_p.sum() + smooth)
    tsens = ((skel_t * prob).sum() + smooth) / (skel_t.sum() + smooth)
    return 1.0 - 2.0 * tprec * tsens / (tprec + tsens)


class SegLoss(torch.nn.Module):
    """``ce_weight * CE + dice_weight * Dice`` (+ ``cldice_weight * clDice`` for ``dice_ce_cldice``).

    Args:
        out_channels: number of logit channels (1 = binary).
        name: ``dice_ce`` | ``ce`` | ``dice`` | ``dice_ce_cldice`` (binary only).
        dice_weight: weight of the Dice term.
        ce_weight: weight of the cross-entropy term.
        cldice_weight: weight of the soft clDice term (``dice_ce_cldice`` only).
        cldice_iters: soft-skeleton iterations (about the largest vessel radius in pixels).
    """

    def __init__(self, out_channels: int, name: str = "dice_ce", dice_weight: float = 1.0, ce_weight: float = 1.0,
                 cldice_weight: float = 0.5, cldice_iters: int = 10):
        super().__init__()
        if name not in LOSS_NAMES:
            raise ValueError(f"loss.name must be one of {', '.join(LOSS_NAMES)}, got {name!r}.")
        self.binary = out_channels == 1
        if name == "dice_ce_cldice" and not self.binary:
            raise ValueError(f"loss.name dice_ce_cldice needs a binary model (1 output channel), got {out_channels}.")
        self.use_dice = name in ("dice_ce", "dice", "dice_ce_cldice")
        self.use_ce = name in ("dice_ce", "ce", "dice_ce_cldice")
        self.use_cldice = name == "dice_ce_cldice"
        self.dice_weight, self.ce_weight = dice_weight, ce_weight
        self.cldice_weight, self.cldice_iters = cldice_weight, int(cldice_iters)
        opts = {"sigmoid": True} if self.binary else {"softmax": True, "to_onehot_y": True,
                                                      "include_background": False}
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
        if self.use_cldice:
            loss = loss + self.cldice_weight * soft_cldice(torch.sigmoid(logits), tgt.float(), m, self.cldice_iters)
        return loss
