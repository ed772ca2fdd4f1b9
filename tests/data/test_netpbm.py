"""Netpbm files (.ppm / .pgm / .pbm, as STARE ships them) read as 2D images, labels and masks, and accepted by
``predict`` and ``evaluate`` (STARE's ``im0001.ah.ppm`` labels pair with ``im0001`` predictions)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mambaseg.cli import main
from mambaseg.data.io.raster import read_image, read_label, read_mask
from mambaseg.data.io.suffixes import SUPPORTED_2D
from mambaseg.engine.checkpoint import save_checkpoint
from mambaseg.models import build_model


def _fundus(h: int = 24, w: int = 20) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def _vessels(h: int = 24, w: int = 20) -> np.ndarray:
    lab = np.zeros((h, w), np.uint8)
    lab[5:9, 3:15] = 255
    return lab


def test_suffixes_registered():
    assert {".ppm", ".pgm", ".pbm"} <= set(SUPPORTED_2D)


def test_binary_and_plain_netpbm(tmp_path):
    rgb = _fundus()
    Image.fromarray(rgb).save(tmp_path / "im0001.ppm")  # P6
    img, _meta = read_image(tmp_path / "im0001.ppm")
    assert img.shape == (3, 24, 20) and np.array_equal(img, np.moveaxis(rgb, -1, 0).astype(np.float32))
    lab = _vessels()
    Image.fromarray(lab).save(tmp_path / "im0001.ah.pgm")  # P5
    label, _ = read_label(tmp_path / "im0001.ah.pgm", num_classes=2)
    assert label.dtype == np.int64 and np.array_equal(label, lab > 0)
    Image.fromarray(lab > 0).save(tmp_path / "mask.pbm")  # P4, mode "1"
    mask, _ = read_mask(tmp_path / "mask.pbm")
    assert mask.dtype == bool and np.array_equal(mask, lab > 0)
    # plain (ASCII) P3: a 2x1 red/blue image
    (tmp_path / "plain.ppm").write_text("P3\n2 1\n255\n255 0 0  0 0 255\n")
    plain, _ = read_image(tmp_path / "plain.ppm")
    assert plain[:, 0, :].tolist() == [[255, 0], [0, 0], [0, 255]]
    # STARE label stored as a colour PPM with equal channels: still a single-channel label
    Image.fromarray(np.stack([lab] * 3, -1)).save(tmp_path / "im0001.vk.ppm")
    assert np.array_equal(read_label(tmp_path / "im0001.vk.ppm", num_classes=2)[0], lab > 0)


def test_truncated_ppm_is_one_line_error(tmp_path):
    Image.fromarray(_fundus()).save(tmp_path / "x.ppm")
    data = (tmp_path / "x.ppm").read_bytes()
    (tmp_path / "x.ppm").write_bytes(data[: len(data) // 2])
    from mambaseg.data.errors import DataError

    with pytest.raises(DataError, match="x.ppm"):
        read_image(tmp_path / "x.ppm")


@pytest.fixture()
def tiny_2d_model(tmp_path):
    torch.manual_seed(0)
    kwargs = {"in_channels": 3, "out_channels": 1}
    net = build_model("unet_tiny", **kwargs).eval()
    ckpt = tmp_path / "m.pt"
    save_checkpoint({"model_name": "unet_tiny", "model_kwargs": kwargs, "state_dict": net.state_dict(),
                     "config": {"infer": {"patch_size": [16, 16], "overlap": 0.0}, "data": {"fov": False}},
                     "data": {"spatial_dims": 2}}, ckpt)
    return ckpt


def test_predict_and_evaluate_stare_files(tmp_path, tiny_2d_model, capsys):
    imgs, labs = tmp_path / "stare-images", tmp_path / "labels-ah"
    imgs.mkdir()
    labs.mkdir()
    for i in (1, 2):
        Image.fromarray(_fundus()).save(imgs / f"im000{i}.ppm")
        Image.fromarray(_vessels()).save(labs / f"im000{i}.ah.ppm")
    out = tmp_path / "pred"
    assert main(["predict", "-m", str(tiny_2d_model), "-i", str(imgs), "-o", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["im0001.png", "im0002.png"]
    # evaluate the reference against itself (perfect Dice) and the prediction against the reference
    assert main(["evaluate", "--pred", str(labs), "--gt", str(labs), "-o", str(tmp_path / "self")]) == 0
    assert json.loads((tmp_path / "self" / "summary.json").read_text())["mean_2d"]["dice"] == pytest.approx(1.0)
    assert main(["evaluate", "--pred", str(out), "--gt", str(labs), "-o", str(tmp_path / "ev")]) == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert {r["reference"].rsplit("/", 1)[-1] for r in summary["metric_per_case"]} == {"im0001.ah.ppm",
                                                                                       "im0002.ah.ppm"}
    # netpbm predictions are accepted too
    pgm = tmp_path / "pgm_pred"
    pgm.mkdir()
    for i in (1, 2):
        Image.fromarray(_vessels()).save(pgm / f"im000{i}.pgm")
    assert main(["evaluate", "--pred", str(pgm), "--gt", str(labs), "-o", str(tmp_path / "ev2")]) == 0
    assert json.loads((tmp_path / "ev2" / "summary.json").read_text())["mean_2d"]["dice"] == pytest.approx(1.0)
