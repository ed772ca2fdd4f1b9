"""3D networks: registry smoke over every ``*_tiny`` model, DM-SegNet / SegMamba structure, GSC, bad arguments."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mambaseg.models import build_model, list_models
from mambaseg.models.dm_segnet import DMSegNet, MFMambaUpBlock
from mambaseg.models.segmamba import SegMamba
from mambaseg.nn.gsc import GSC

TINY_3D = [n for n in list_models(3) if n.endswith("_tiny")]


def test_every_family_has_a_tiny_variant():
    assert {"dm_segnet_tiny", "segmamba_tiny", "unetr_tiny", "swin_unetr_tiny", "unet3d_tiny"} <= set(TINY_3D)


@pytest.mark.parametrize("name", TINY_3D)
def test_tiny_forward_backward(name):
    torch.manual_seed(0)
    model = build_model(name, in_channels=2, out_channels=3)
    spatial = getattr(model, "img_size", None) or (19, 21, 17)  # UNETR only accepts its fixed size
    x = torch.randn(1, 2, *spatial)
    y = model(x)
    assert y.shape == (1, 3, *spatial)
    assert torch.isfinite(y).all()
    F.cross_entropy(y, torch.randint(0, 3, (1, *spatial))).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"


def test_unetr_rejects_other_sizes_naming_the_expected_one():
    model = build_model("unetr_tiny")
    with pytest.raises(ValueError, match=r"\(32, 32, 32\)"):
        model(torch.randn(1, 1, 32, 32, 48))
    with pytest.raises(ValueError, match="img_size"):
        build_model("unetr_tiny", img_size=20)


def test_input_channel_mismatch_raises():
    for name in ("dm_segnet_tiny", "unet3d_tiny"):
        with pytest.raises(ValueError, match="in_channels=2"):
            build_model(name, in_channels=2)(torch.randn(1, 1, 16, 16, 16))


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_paper_scale_parameter_counts():
    """Spec §1.3: SegMamba 4→4 = 67.42 M, 1→9 = 67.36 M; DM-SegNet 4→4 ≈ 69.08 M (built on the meta device)."""
    with torch.device("meta"):
        assert round(count(build_model("segmamba", in_channels=4, out_channels=4)) / 1e6, 2) == 67.42
        assert round(count(build_model("segmamba", in_channels=1, out_channels=9)) / 1e6, 2) == 67.36
        assert round(count(build_model("dm_segnet", in_channels=4, out_channels=4)) / 1e6, 2) == 69.08
        # DM-SegNet with SegMamba's encoder directions and a plain decoder *is* SegMamba
        plain = build_model("dm_segnet", in_channels=4, out_channels=4, enc_dirs=3, dec_mamba_stages=0)
        assert count(plain) == count(build_model("segmamba", in_channels=4, out_channels=4))


def test_cpu_variants_are_small():
    with torch.device("meta"):
        for name in ("dm_segnet_cpu", "segmamba_cpu"):
            assert count(build_model(name, in_channels=4, out_channels=4)) * 4 < 12e6  # fp32 weights < 12 MB


def test_dm_segnet_structure():
    net = DMSegNet(widths=(4, 8, 8, 16), depths=(1, 2, 1, 1), hidden=16, dec_mamba_stages=2, dec_dirs=4,
                   dec_gsc=True)
    assert [isinstance(b, MFMambaUpBlock) for b in net.decoders] == [True, True, False, False]
    assert all(b.mamba.directions == 4 and isinstance(b.gsc, GSC) for b in net.decoders[:2])
    assert [len(s) for s in net.encoder.stages] == [1, 2, 1, 1]
    assert all(layer.directions == 4 for s in net.encoder.stages for layer in s)
    seg = SegMamba(widths=(4, 8, 8, 16), depths=(1, 1, 1, 1), hidden=16)
    assert all(layer.directions == 3 for s in seg.encoder.stages for layer in s)
    assert [f["reduction"] for f in seg.encoder.feature_info] == [2, 4, 8, 16]


def test_dm_segnet_encoder_shapes():
    net = DMSegNet(in_channels=2, widths=(4, 8, 8, 16), depths=(1, 1, 1, 1), hidden=16)
    outs = net.encoder(torch.randn(1, 2, 32, 48, 16))
    assert [tuple(o.shape) for o in outs] == [(1, 4, 16, 24, 8), (1, 8, 8, 12, 4), (1, 8, 4, 6, 2), (1, 16, 2, 3, 1)]


def test_grad_checkpoint_is_numerically_transparent():
    torch.manual_seed(0)
    plain = build_model("dm_segnet_tiny")
    ckpt = build_model("dm_segnet_tiny", grad_checkpoint=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 1, 16, 16, 32)
    results = []
    for model in (plain, ckpt):
        y = model(x)
        y.square().mean().backward()
        results.append((y.detach(), [p.grad for p in model.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(dec_mamba_stages=5), "dec_mamba_stages"),
    (dict(widths=(4, 8, 16)), "widths"),
    (dict(depths=(1, 1, 1)), "depths"),
    (dict(gsc_mode="max"), "GSC mode"),
    (dict(enc_dirs=5), "directions"),
])
def test_dm_segnet_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model("dm_segnet_tiny", **kwargs)


def _conv_in_relu(x, conv):
    return F.relu(F.instance_norm(F.conv3d(x, conv.weight, conv.bias, padding=conv.padding)))


@pytest.mark.parametrize("mode", ["add", "mul"])
def test_gsc_matches_formula(mode):
    torch.manual_seed(0)
    gsc = GSC(5, mode=mode)
    x = torch.randn(2, 5, 4, 6, 3)
    b1 = _conv_in_relu(_conv_in_relu(x, gsc.branch3[0][0]), gsc.branch3[1][0])
    b2 = _conv_in_relu(x, gsc.branch1[0])
    expected = _conv_in_relu(b1 + b2 if mode == "add" else b1 * b2, gsc.fuse[0]) + x
    torch.testing.assert_close(gsc(x), expected)
    assert count(gsc) == 56 * 25 + 4 * 5  # 56C² + 4C
    with pytest.raises(ValueError, match="mode"):
        GSC(5, mode="gate")


def test_dm_segnet_ablation_switches():
    """Each ablation removes exactly its component from the same class; the other parts keep their shapes."""
    from mambaseg.nn.gsc import GSC
    from mambaseg.nn.scan3d import QSMambaLayer

    def count(net, kind, part):
        return sum(isinstance(m, kind) for m in getattr(net, part).modules())

    full = build_model("dm_segnet_cpu")
    noq, nog = build_model("dm_segnet_cpu_no_qsmamba"), build_model("dm_segnet_cpu_no_gsc")
    conv_dec = build_model("dm_segnet_cpu_conv_decoder")
    assert count(full, QSMambaLayer, "encoder") == 8 and count(full, GSC, "encoder") == 4
    assert count(full, MFMambaUpBlock, "decoders") == 3
    assert count(noq, QSMambaLayer, "encoder") == 0 and count(noq, GSC, "encoder") == 4
    assert count(noq, MFMambaUpBlock, "decoders") == 3  # the decoder keeps its Mamba layers
    assert count(nog, GSC, "encoder") == 0 and count(nog, QSMambaLayer, "encoder") == 8
    assert count(conv_dec, MFMambaUpBlock, "decoders") == 0 and count(conv_dec, QSMambaLayer, "encoder") == 8
    n = {k: sum(p.numel() for p in v.parameters()) for k, v in dict(full=full, nog=nog).items()}
    assert n["full"] - n["nog"] == sum(p.numel() for p in full.encoder.gscs.parameters())
    tiny = build_model("dm_segnet_tiny", enc_mamba=False, enc_gsc=False, dec_mamba_stages=0)
    assert tiny(torch.randn(1, 1, 16, 16, 16)).shape == (1, 2, 16, 16, 16)
