"""One rule for 2D and 3D (issue 11): evaluate picks 2D or 3D scoring by the arrays' dimensionality, not by the file
suffix (a folder of 2D NIfTI predictions is scored like PNGs); predict groups channel files as training does."""

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


def test_predict_groups_channel_files_as_training_does(tmp_path):
    """c1_0000 + c1_0001 are one 2-channel case; c2_0000 + c2_0002 (channel 1 missing) is an error in predict as in
    training (one grouping rule), naming the case."""
    from mambaseg.data.errors import DataError
    from mambaseg.engine.predict.volumes import gather_volume_cases

    vol = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    for name in ("c1_0000", "c1_0001", "single"):
        nib.save(vol, tmp_path / f"{name}.nii.gz")
    cases = gather_volume_cases(tmp_path)
    assert [(cid, [f.name for f in files]) for cid, files in cases] == [
        ("c1", ["c1_0000.nii.gz", "c1_0001.nii.gz"]), ("single", ["single.nii.gz"])]
    for name in ("c2_0000", "c2_0002"):
        nib.save(vol, tmp_path / f"{name}.nii.gz")
    with pytest.raises(DataError, match=r"case 'c2': channel files \[0, 2\] are not contiguous"):
        gather_volume_cases(tmp_path)
