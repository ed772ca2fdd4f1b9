"""Preprocessing plans (issue 11): one object per dimensionality with fit / forward / inverse, stored in and rebuilt
from the checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mambaseg.config import config_from_dict
from mambaseg.data.errors import DataError
from mambaseg.data.plans.plan import Plan2D, Plan3D, fov_diameter, plan_from_checkpoint


def _disc(h, w, r):
    yy, xx = np.mgrid[:h, :w]
    return (yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= r * r  # boolean, as read_mask returns


def test_fit_2d_takes_the_median_fov_diameter_and_round_trips_through_the_checkpoint():
    cases = [{"mask": _disc(64, 64, r)} for r in (10, 20, 30)] + [{"mask": None}]
    plan = Plan2D.fit(cases, fov=True)
    assert plan.fov_diameter == pytest.approx(fov_diameter(_disc(64, 64, 20)))
    assert plan.to_checkpoint() == {"fov_diameter": plan.fov_diameter}
    cfg = config_from_dict({"data": {"fov": True}})
    assert plan_from_checkpoint(cfg, {"spatial_dims": 2, **plan.to_checkpoint()}) == Plan2D(
        fov=True, fov_diameter=plan.fov_diameter)
    assert Plan2D.fit([{"mask": None}], fov=False).to_checkpoint() == {}


def test_forward_2d_rescales_to_the_training_fov_and_inverse_restores_the_size():
    mask = _disc(60, 80, 20)  # diameter ~40 px; the training FOV was twice that
    raw = np.random.default_rng(0).random((3, 60, 80)).astype(np.float32) * 255
    plan = Plan2D(fov=True, fov_diameter=2 * fov_diameter(mask))
    image, props = plan.forward({"image": raw, "mask": mask})
    assert props["scale"] == pytest.approx(2.0) and image.shape == (3, 120, 160) and image.dtype == np.float32
    assert props["mask"] is mask and props["shape"] == (60, 80)
    scores = torch.ones((1, 120, 160))
    back = plan.inverse(scores, props)
    assert back.shape == (1, 60, 80) and torch.allclose(back, torch.ones((1, 60, 80)))
    # inside the FOV the image is z-scored; outside it is 0
    same, props1 = Plan2D(fov=True, fov_diameter=fov_diameter(mask)).forward({"image": raw, "mask": mask})
    assert props1["scale"] == 1.0 and same.shape == raw.shape
    inside = same[:, mask]
    assert np.allclose(inside.mean(axis=1), 0, atol=1e-4) and np.all(same[:, ~mask] == 0)


def test_forward_2d_without_fov_is_a_per_image_zscore_and_no_mask():
    raw = np.random.default_rng(1).random((1, 20, 30)).astype(np.float32)
    image, props = Plan2D().forward({"image": raw, "mask": None})
    assert props == {"shape": (20, 30), "scale": 1.0, "mask": None}
    assert image.mean() == pytest.approx(0, abs=1e-5) and image.std() == pytest.approx(1, abs=1e-3)


def test_plan_3d_forward_inverse_restores_the_original_grid():
    from mambaseg.data.plans.fingerprint import fingerprint

    rng = np.random.default_rng(2)
    image = np.zeros((1, 12, 10, 8), np.float32)
    image[:, 2:10, 2:9, 1:7] = rng.random((1, 8, 7, 6)) + 1
    label = np.zeros((12, 10, 8), np.int64)
    label[4:8, 3:7, 2:5] = 1
    affine = np.diag([1.0, 2.0, 1.5, 1.0])
    case = {"case_id": "c", "image": image, "label": label, "meta": {"affine": affine, "spacing": (1.0, 2.0, 1.5)}}
    plan = Plan3D.fit(fingerprint([case]), "MR", target_spacing=[1.0, 1.0, 1.0])
    x, props = plan.forward(case)
    assert x.dtype == np.float32 and x.shape[0] == 1
    back = plan.inverse((x[0] > 0.5).astype(np.int64), props)
    assert back.shape == label.shape
    assert plan.to_checkpoint() == {"plan": plan.plan}
    cfg = config_from_dict({})
    assert plan_from_checkpoint(cfg, {"spatial_dims": 3, "plan": plan.plan}).plan == plan.plan
    with pytest.raises(DataError, match="m.pt: checkpoint has no 3D preprocessing plan"):
        plan_from_checkpoint(cfg, {"spatial_dims": 3}, "m.pt")
