"""Registry smoke tests over every 2D ``*_tiny`` model, plus per-family structure checks."""

from __future__ import annotations

import pytest
import torch

from mambaseg.models import build_model, list_models

TINY_2D = [n for n in list_models(spatial_dims=2) if n.endswith("_tiny")]
FAMILIES = ("akmamba_net", "unet", "attention_unet", "unet_plus_plus", "unet3plus", "transunet")


def test_every_family_is_registered():
    names = set(list_models(spatial_dims=2))
    for fam in FAMILIES:
        assert {fam, f"{fam}_cpu", f"{fam}_tiny"} <= names, fam


@pytest.mark.parametrize("name", TINY_2D)
def test_forward_backward_odd_size(name):
    torch.manual_seed(0)
    model = build_model(name, in_channels=3, out_channels=2).train()
    x = torch.randn(2, 3, 37, 45)
    y = model(x)
    assert y.shape == (2, 2, 37, 45)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} received no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"


@pytest.mark.parametrize("name", TINY_2D)
def test_bad_in_channels(name):
    model = build_model(name, in_channels=3, out_channels=1).eval()
    with pytest.raises(ValueError, match=r"2 channels.*in_channels=3"):
        model(torch.randn(1, 2, 16, 16))
    with pytest.raises(ValueError, match="dims"):
        model(torch.randn(3, 16, 16))


@pytest.mark.parametrize("name", TINY_2D)
def test_padding_does_not_leak_into_output(name):
    """Zero padding at the end + crop of the start: a 30x29 run equals the 32x32 run with a zeroed tail, cropped."""
    torch.manual_seed(0)
    model = build_model(name, in_channels=1, out_channels=1).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        full = model(x)
        # a 30x29 input is padded back to 32x32 with zeros at the end: same as the full input with zeroed tail
        xz = x.clone()
        xz[..., 30:, :] = 0
        xz[..., :, 29:] = 0
        part = model(x[..., :30, :29])
        ref = model(xz)[..., :30, :29]
    assert full.shape == (1, 1, 32, 32) and part.shape == (1, 1, 30, 29)
    torch.testing.assert_close(part, ref, rtol=1e-4, atol=1e-5)


def test_akmamba_structure_and_param_count():
    net = build_model("akmamba_net")
    assert sum(p.numel() for p in net.parameters()) == 34_826_091  # spec §2.2: 34.83 M with N = 9
    assert sum(p.numel() for p in net.skips.parameters()) == pytest.approx(2.84e6, rel=0.01)
    assert sum(p.numel() for p in build_model("akmamba_net", num_param=5).parameters()) == pytest.approx(21.86e6,
                                                                                                      rel=1e-3)
    cpu = build_model("akmamba_net_cpu")
    assert sum(p.numel() for p in cpu.parameters()) * 4 < 12e6  # fp32 checkpoint well under 20 MB


def test_akmamba_options():
    net = build_model("akmamba_net_tiny", mamba_residual=True, centred=True, num_param=5)
    assert net.skips[0].residual and net.encoder[0][0].centred and net.encoder[0][0].zero_pad
    assert net.encoder[0][0].num_param == 5
    y = net(torch.randn(1, 3, 20, 18))
    assert y.shape == (1, 1, 20, 18)


def test_equal_width_baselines():
    """``widths`` controls every baseline, so a U-Net of Akmamba-Net's width can be built."""
    unet = build_model("unet_tiny", widths=(8, 8, 16, 16, 32))
    assert unet.net.conv_0.conv_0.conv.out_channels == 8 and unet.net.down_4.convs.conv_0.conv.out_channels == 32
    with pytest.raises(ValueError, match="widths"):
        build_model("unet_tiny", widths=(8, 16))
    # UNet 3+: each decoder stage fuses 5 maps of cat_channels
    u3 = build_model("unet3plus_tiny", cat_channels=6)
    assert u3.fuse[0][0].in_channels == 30 and len(u3.lateral[2]) == 5


def test_transunet_any_grid():
    net = build_model("transunet_tiny").eval()
    with torch.no_grad():
        for hw in ((64, 64), (48, 80), (17, 33)):  # token grids 4x4 (= pos_grid), 3x5, 2x3
            assert net(torch.randn(1, 3, *hw)).shape == (1, 1, *hw)
    big = build_model("transunet")
    n = sum(p.numel() for p in big.parameters())
    assert 90e6 < n < 110e6  # R50-ViT-B/16 TransUNet is ~105 M parameters


def test_akmamba_ablation_switches():
    """The paper's Table 3 arms are switches of one class: each removes exactly its component, and the weights of
    the parts they share have the same shapes (so parameter differences are the component's own)."""
    from mambaseg.models.akmamba_net import ConvBNSiLU
    from mambaseg.nn.akconv import AKConv
    from mambaseg.nn.ss2d import MambaOut

    def kinds(net):
        return {type(m) for m in net.modules()}

    full, base = build_model("akmamba_net_cpu"), build_model("akmamba_net_cpu_base")
    akc, mout = build_model("akmamba_net_cpu_akconv"), build_model("akmamba_net_cpu_mambaout")
    assert {AKConv, MambaOut} <= kinds(full) and ConvBNSiLU not in kinds(full)
    assert AKConv not in kinds(base) and MambaOut not in kinds(base) and ConvBNSiLU in kinds(base)
    assert AKConv in kinds(akc) and MambaOut not in kinds(akc)
    assert AKConv not in kinds(mout) and MambaOut in kinds(mout)
    n = {k: sum(p.numel() for p in v.parameters()) for k, v in
         dict(full=full, base=base, akc=akc, mout=mout).items()}
    # the two components' parameters add up: full - base = (akc - base) + (mout - base)
    assert n["full"] - n["base"] == (n["akc"] - n["base"]) + (n["mout"] - n["base"])
    assert n["mout"] - n["base"] == sum(p.numel() for p in full.skips.parameters())
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    for net in (base, akc, mout):
        assert net.eval()(x).shape == (1, 1, 32, 32)
    # identity skips: the base network's skip is the encoder map itself
    assert all(isinstance(s, torch.nn.Identity) for s in base.skips)
    cen = build_model("akmamba_net_cpu_centred")
    assert cen.encoder[0][0].centred and cen.encoder[0][0].zero_pad and not full.encoder[0][0].centred
    fixed = build_model("akmamba_net_cpu_fixed")
    assert fixed.encoder[0][0].centred and all(s.residual for s in fixed.skips) and not any(s.residual for s in
                                                                                            full.skips)
