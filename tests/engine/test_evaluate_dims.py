"""Evaluate picks 2D or 3D scoring by the arrays' dimensionality, not by the file suffix (issue 11): a folder of 2D
NIfTI predictions is scored like PNGs."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mambaseg.engine.evaluate import evaluate


@pytest.mark.parametrize("trailing_axis", [False, True])
def test_2d_nifti_predictions_are_scored_as_2d(tmp_path, trailing_axis):
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    ref = np.zeros((20, 24), np.uint8)
    ref[4:12, 5:15] = 1  # 80 pixels
    pred = ref.copy()
    pred[4:6, 5:15] = 0  # 60 of them predicted, nothing else
    arr = pred[..., None] if trailing_axis else pred
    nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / "pred" / "a.nii.gz")
    Image.fromarray(ref * 255).save(tmp_path / "gt" / "a.png")
    result = evaluate(tmp_path / "pred", tmp_path / "gt", tmp_path / "out")
    assert result["kind"] == "2d"
    assert result["mean_2d"]["dice"] == pytest.approx(2 * 60 / (60 + 80))


def test_3d_nifti_predictions_stay_3d(tmp_path):
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    ref = np.zeros((8, 9, 6), np.uint8)
    ref[2:6, 2:6, 1:4] = 1
    for folder in ("pred", "gt"):
        nib.save(nib.Nifti1Image(ref, np.eye(4)), tmp_path / folder / "c.nii.gz")
    result = evaluate(tmp_path / "pred", tmp_path / "gt", tmp_path / "out")
    assert result["kind"] == "3d" and result["foreground_mean"]["Dice"] == 1.0
