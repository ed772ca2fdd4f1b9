"""ONNX export: onnxruntime vs PyTorch parity for tiny models, predict through the .onnx file gives the same label
maps as through the checkpoint (2D and 3D), metadata round trip, no silent overwrite, fixed-size contract."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from mambaseg.apps.export import export_onnx, onnx_predictor, read_onnx_metadata
from mambaseg.cli import main
from mambaseg.data.synthetic import write_phantom_msd, write_synthetic_drive
from mambaseg.engine.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from mambaseg.models import build_model
from tests.conftest import tiny_3d_yaml

CFG_2D = """
seed: 0
model: {name: unet_tiny}
data: {layout: drive, root: "%s", val_fraction: 0.25, patch_size: [48, 48], fov: true, augment: none}
train: {epochs: 1, iters_per_epoch: 2, batch_size: 2, val_every: 1}
infer: {patch_size: [48, 48], overlap: 0.25}
"""
CFG_3D = tiny_3d_yaml("%s")


def _train(root: Path, cfg_text: str, data: Path) -> Path:
    cfg = root / "cfg.yaml"
    cfg.write_text(cfg_text % data)
    run = root / "run"
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0
    return run


@pytest.fixture(scope="module")
def run2d(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp2d")
    data = write_synthetic_drive(root / "data", n_train=3, n_test=2, size=(60, 70), seed=4)
    run = _train(root, CFG_2D, data)
    onnx_path = root / "unet.onnx"
    meta = export_onnx(run, onnx_path)
    return root, data, run, onnx_path, meta


@pytest.fixture(scope="module")
def run3d(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp3d")
    data = write_phantom_msd(root / "task", n_cases=3, shape=(18, 20, 17))
    test = write_phantom_msd(root / "test", n_cases=1, shape=(21, 19, 17), seed=5)
    run = _train(root, CFG_3D, data)
    onnx_path = root / "dm.onnx"
    assert main(["export", "--model", str(run), "--onnx", str(onnx_path)]) == 0  # through the CLI
    return root, test, run, onnx_path


def _parity(model: torch.nn.Module, onnx_path: Path, size, batch: int = 2) -> float:
    run, _ = onnx_predictor(onnx_path)
    x = torch.randn(batch, model.in_channels if hasattr(model, "in_channels") else 1, *size,
                    generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = model(x)
    got = run(x)
    assert got.shape == ref.shape
    return float((got - ref).abs().max())


@pytest.mark.parametrize("name,size", [("akmamba_net_tiny", (16, 16)), ("unet_tiny", (32, 32)),
                                       ("transunet_tiny", (32, 32)), ("segmamba_tiny", (16, 16, 16))])
def test_parity_tiny_models(tmp_path, name, size):
    torch.manual_seed(0)
    kwargs = {"in_channels": 1, "out_channels": 3}
    net = build_model(name, **kwargs).eval()
    ckpt = tmp_path / "m.pt"
    save_checkpoint({"model_name": name, "model_kwargs": kwargs, "state_dict": net.state_dict(),
                     "config": {"infer": {"patch_size": list(size)}}, "data": {"spatial_dims": len(size)}}, ckpt)
    meta = export_onnx(ckpt, tmp_path / "m.onnx")
    assert _parity(net, tmp_path / "m.onnx", size) <= 1e-4
    assert meta["dynamic_batch"] is True
    if meta["mamba"]:  # the scan is unrolled for one length: always exported at a fixed size
        assert meta["fixed_size"] == list(size) and name in ("akmamba_net_tiny", "segmamba_tiny")
    if meta["fixed_size"]:
        run, _ = onnx_predictor(tmp_path / "m.onnx")
        with pytest.raises(ValueError, match=r"fixed size \[" + ", ".join(str(s) for s in size)):
            run(torch.zeros(1, 1, *[s + 16 for s in size]))
    else:  # dynamic spatial axes were verified at a second size by the export: check another one here
        assert _parity(net, tmp_path / "m.onnx", [s + 3 for s in size], batch=1) <= 1e-4


def test_parity_dm_segnet_and_predict_3d(run3d, tmp_path):
    root, test, run, onnx_path = run3d
    ckpt = load_checkpoint(run / "checkpoint_best.pt")
    net = model_from_checkpoint(ckpt)
    assert _parity(net, onnx_path, (16, 16, 16)) <= 1e-4
    out_pt, out_onnx = tmp_path / "pt", tmp_path / "onnx"
    args = ["-i", str(test / "imagesTr"), "--no-progress"]
    assert main(["predict", "-m", str(run), "-o", str(out_pt)] + args) == 0
    assert main(["predict", "-m", str(onnx_path), "-o", str(out_onnx)] + args) == 0
    files = sorted(out_pt.glob("*.nii.gz"))
    assert files and [f.name for f in files] == sorted(f.name for f in out_onnx.glob("*.nii.gz"))
    for f in files:
        a, b = nib.load(f), nib.load(out_onnx / f.name)
        assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        assert np.allclose(a.affine, b.affine)


def test_predict_2d_onnx_matches_checkpoint(run2d, tmp_path):
    root, data, run, onnx_path, meta = run2d
    assert meta["fixed_size"] == [48, 48]  # the any-size padding is traced as constants: dynamic H/W rejected
    args = ["-i", str(data / "test" / "images"), "--no-progress"]
    assert main(["predict", "-m", str(run), "-o", str(tmp_path / "pt")] + args) == 0
    assert main(["predict", "-m", str(onnx_path), "-o", str(tmp_path / "onnx")] + args) == 0
    names = sorted(p.name for p in (tmp_path / "pt").glob("*.png"))
    assert names == ["01_test.png", "02_test.png"]
    for n in names:
        a = np.array(Image.open(tmp_path / "pt" / n))
        b = np.array(Image.open(tmp_path / "onnx" / n))
        assert a.shape == (60, 70) and np.array_equal(a, b)


def test_metadata_round_trip(run2d, run3d):
    _, _, run, onnx_path, _ = run2d
    ckpt = load_checkpoint(run / "checkpoint_best.pt")
    meta = read_onnx_metadata(onnx_path)
    assert meta["model_name"] == "unet_tiny" and meta["in_channels"] == 3 and meta["fixed_size"] == [48, 48]
    assert meta["model_kwargs"] == ckpt["model_kwargs"]
    assert meta["config"] == json.loads(json.dumps(ckpt["config"]))
    assert meta["data"]["fov_diameter"] == pytest.approx(ckpt["data"]["fov_diameter"])
    _, pred_ckpt = onnx_predictor(onnx_path)
    assert {k: pred_ckpt[k] for k in ("model_name", "model_kwargs")} == {k: meta[k] for k in ("model_name",
                                                                                              "model_kwargs")}
    _, _, run3, onnx3 = run3d
    meta3 = read_onnx_metadata(onnx3)
    plan = load_checkpoint(run3 / "checkpoint_best.pt")["data"]["plan"]
    assert meta3["data"]["spatial_dims"] == 3 and meta3["fixed_size"] == [int(s) for s in plan["patch_size"]]
    assert meta3["data"]["plan"]["target_spacing"] == pytest.approx(list(plan["target_spacing"]))


def test_refuses_overwrite(run2d, capsys):
    _, _, run, onnx_path, _ = run2d
    before = onnx_path.read_bytes()
    with pytest.raises(ValueError, match="already exists"):
        export_onnx(run, onnx_path)
    code = main(["export", "--model", str(run), "--onnx", str(onnx_path)])
    err = capsys.readouterr().err
    assert code == 2 and str(onnx_path) in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert onnx_path.read_bytes() == before
    assert main(["export", "--model", str(run), "--onnx", str(onnx_path), "--size", "32", "32", "--overwrite"]) == 0
    assert read_onnx_metadata(onnx_path)["fixed_size"] == [32, 32]
    export_onnx(run, onnx_path, overwrite=True)  # restore the default export for the other tests


def test_bad_arguments(run2d, tmp_path):
    _, _, run, _, _ = run2d
    with pytest.raises(ValueError, match="size must be 2"):
        export_onnx(run, tmp_path / "a.onnx", size=[16, 16, 16])
    with pytest.raises(ValueError, match=r"\.onnx"):
        export_onnx(run, tmp_path / "a.txt")
    with pytest.raises(ValueError, match="nope"):
        export_onnx(tmp_path / "nope", tmp_path / "b.onnx")
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Conv2d(1, 1, 1), (torch.zeros(1, 1, 4, 4),), str(plain), dynamo=False)
    with pytest.raises(ValueError, match="not a mambaseg export"):
        onnx_predictor(plain)
    assert not (tmp_path / "a.onnx").exists() and not list(tmp_path.glob(".*.tmp"))


def test_multi_block_scan_exports_with_dynamic_batch(tmp_path, monkeypatch):
    """Long sequences are scanned in several blocks whose length the chunked scan derives from batch x channels.
    A small block budget makes a 16x16 map (256 tokens) take several blocks, as the 65 536-token skip of the shipped
    DRIVE model does at 256x256: the export must keep a dynamic batch and agree with PyTorch at batch 2 (the block
    ends were once traced as functions of the batch size, so batch 2 failed in a Reshape of SS2D)."""
    import mambaseg.ssm.chunked as chunked

    # level-1 skip of akmamba_net_tiny: 4 directions x 8 channels x 4 states = 128 per batch item; 16384 elements
    # give blocks of 128 tokens at batch 1 and 64 at batch 2
    monkeypatch.setattr(chunked, "DEFAULT_BLOCK_ELEMENTS", 16384)
    torch.manual_seed(0)
    kwargs = {"in_channels": 1, "out_channels": 2}
    net = build_model("akmamba_net_tiny", **kwargs).eval()
    assert chunked._Plan(256, 32, 4, None, None).bounds == [(0, 128), (128, 256)]
    ckpt = tmp_path / "m.pt"
    save_checkpoint({"model_name": "akmamba_net_tiny", "model_kwargs": kwargs, "state_dict": net.state_dict(),
                     "config": {"infer": {"patch_size": [16, 16]}}, "data": {"spatial_dims": 2}}, ckpt)
    meta = export_onnx(ckpt, tmp_path / "m.onnx")
    assert meta["dynamic_batch"] is True
    assert _parity(net, tmp_path / "m.onnx", (16, 16), batch=3) <= 1e-4
