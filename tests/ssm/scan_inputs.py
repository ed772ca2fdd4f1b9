"""Shared random inputs for the scan tests (mamba_ssm's test recipe: A = -0.5·rand, delta and bias 0.5·rand)."""

from __future__ import annotations

import torch

ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(batch=2, dim=4, nstate=8, length=40, groups=1, dtype=torch.float32, has_z=True, has_D=True,
                has_bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0, uniform=False):
        t = torch.rand(*shape, generator=g, dtype=dtype) if uniform else torch.randn(*shape, generator=g, dtype=dtype)
        return (scale * t).requires_grad_()

    return dict(
        u=rnd(batch, dim, length),
        delta=rnd(batch, dim, length, scale=0.5, uniform=True),
        A=(-0.5 * torch.rand(dim, nstate, generator=g, dtype=dtype)).requires_grad_(),
        B=rnd(batch, groups, nstate, length),
        C=rnd(batch, groups, nstate, length),
        D=rnd(dim) if has_D else None,
        z=rnd(batch, dim, length) if has_z else None,
        delta_bias=rnd(dim, scale=0.5, uniform=True) if has_bias else None,
    )
