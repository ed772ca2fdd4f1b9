"""Planning, preprocessing and its inversion (non-RAS anisotropic round trip), normalisation, cache reuse."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

import mambaseg.data.plans.cache as cache_module
import mambaseg.data.plans.geometry as geo
from mambaseg.data.io.volume import read_nifti_label, write_nifti
from mambaseg.data.layouts.detect3d import list_cases3d
from mambaseg.data.plans.cache import PreprocessCache
from mambaseg.data.plans.fingerprint import fingerprint
from mambaseg.data.plans.preprocess import invert_prediction, plan, preprocess_case

SHAPE = (12, 20, 24)  # voxel axes (I, L, A), spacing (3.0, 0.8, 1.1) -> RAS shape (20, 24, 12), spacing (0.8, 1.1, 3)


def affine_ila() -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = np.array([[0, -0.8, 0], [0, 0, 1.1], [-3.0, 0, 0]])  # axcodes ("I", "L", "A")
    aff[:3, 3] = [5.0, -7.0, 9.0]
    return aff


def make_case(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    lab = np.zeros(SHAPE, np.int64)
    lab[3:8, 4:12, 5:15] = 1
    lab[6:10, 13:18, 2:9] = 2
    img = (rng.normal(size=(1, *SHAPE)) + 5.0).astype(np.float32)
    img[:, :2] = 0  # zero border -> non-zero crop is a strict sub-box
    img[:, :, :, -3:] = 0
    aff = affine_ila()
    meta = dict(path="synthetic", shape=SHAPE, spacing=np.sqrt((aff[:3, :3] ** 2).sum(0)), affine=aff, qform=aff,
                qform_code=1, sform=aff, sform_code=1, xyzt_units=("mm", "sec"))
    return dict(case_id=f"c{seed}", image=img, label=lab, meta=meta)


def test_fingerprint_spacing_in_ras_order_and_foreground_intensities():
    case = make_case()
    case["image"][0][case["label"] == 0] += 1000.0  # background far brighter: must not enter the statistics
    case["image"][:, :2] = 0
    case["image"][:, :, :, -3:] = 0
    fp = fingerprint([case])
    assert fp["spacings"] == [pytest.approx([0.8, 1.1, 3.0])]
    assert fp["shapes"] == [[20, 24, 12]]
    assert fp["shapes_after_crop"] == [[20, 21, 10]]
    assert fp["intensity"]["0"]["max"] < 100 and abs(fp["intensity"]["0"]["mean"] - 5.0) < 0.2


def test_plan_median_spacing_patch_and_bad_args():
    fp = fingerprint([make_case(0), make_case(1)])
    p = plan(fp, "MR")
    assert p["target_spacing"] == pytest.approx([0.8, 1.1, 3.0])
    assert all(s % 16 == 0 and 16 <= s <= 128 for s in p["patch_size"])
    assert p["normalization"] == [{"scheme": "zscore_nonzero"}]
    with pytest.raises(ValueError, match="modality"):
        plan(fp, "PET")
    with pytest.raises(ValueError, match="target_spacing"):
        plan(fp, "MR", target_spacing=[1, 0, 1])


@pytest.mark.parametrize("target", [None, (0.8, 1.1, 1.5)])
def test_round_trip_is_exact_without_or_with_integer_upsampling(tmp_path, target):
    case = make_case()
    p = plan(fingerprint([case]), "MR", target_spacing=target)
    image, label, props = preprocess_case(case, p)
    aff_pre = np.asarray(props["affine_preprocessed"])
    assert nib.aff2axcodes(aff_pre) == ("R", "A", "S")
    np.testing.assert_allclose(np.sqrt((aff_pre[:3, :3] ** 2).sum(0)), target or (0.8, 1.1, 3.0), atol=1e-9)
    assert image.shape[1:] == label.shape
    props = json.loads(json.dumps(props))  # props must survive JSON (the cache stores them so)
    back = invert_prediction(label, props)
    np.testing.assert_array_equal(back, case["label"])
    out = write_nifti(tmp_path / "pred.nii.gz", back, props["original_meta"])
    reread, meta = read_nifti_label(out)
    assert reread.shape == SHAPE
    np.testing.assert_allclose(meta["affine"], affine_ila(), atol=1e-5)


def test_round_trip_with_non_integer_resampling_is_close():
    case = make_case()
    p = plan(fingerprint([case]), "MR", target_spacing=(1.0, 1.0, 1.0))
    _, label, props = preprocess_case(case, p)
    back = invert_prediction(label, props)
    assert back.shape == SHAPE
    ref = case["label"]
    assert (back == ref).mean() > 0.97
    # every disagreement sits on a class boundary of the original (a voxel with a differently labelled neighbour)
    padded = np.pad(ref, 1, mode="edge")
    on_boundary = np.zeros(SHAPE, bool)
    for shift in np.ndindex(3, 3, 3):
        sl = tuple(slice(o, o + n) for o, n in zip(shift, SHAPE))
        on_boundary |= padded[sl] != ref
    assert on_boundary[back != ref].all()
    probs = np.stack([label == k for k in range(3)]).astype(np.float32)
    back_p = invert_prediction(probs, props)
    assert back_p.shape == (3, *SHAPE)
    assert (back_p.argmax(0) == case["label"]).mean() > 0.99


def test_preprocessed_grid_maps_to_the_same_world_points():
    """The centroid of each label in world mm is the same before and after (affine_preprocessed is correct)."""
    case = make_case()
    p = plan(fingerprint([case]), "MR", target_spacing=(1.0, 1.0, 1.0))
    _, label, props = preprocess_case(case, p)

    def centroid(lab, aff, cls):
        ijk = np.argwhere(lab == cls).mean(0)
        return aff[:3, :3] @ ijk + aff[:3, 3]

    for cls in (1, 2):
        np.testing.assert_allclose(centroid(label, np.asarray(props["affine_preprocessed"]), cls),
                                   centroid(case["label"], affine_ila(), cls), atol=0.5)


def test_mr_zscore_on_nonzero_voxels():
    case = make_case()
    p = plan(fingerprint([case]), "MR", target_spacing=(0.8, 1.1, 3.0))
    image, _, props = preprocess_case(case, p)
    ras_img = geo.crop(geo.apply_ornt(case["image"], geo.ras_transform(affine_ila())), props["bbox"])
    nz = ras_img[0] != 0
    assert abs(image[0][nz].mean()) < 1e-5 and abs(image[0][nz].std() - 1) < 1e-4
    assert (image[0][~nz] == 0).all()


def test_ct_normalisation_fingerprint_and_window():
    case = make_case()
    img = case["image"][0]
    img[case["label"] > 0] = np.linspace(-200, 400, int((case["label"] > 0).sum()))
    fp = fingerprint([case])
    st = fp["intensity"]["0"]
    p = plan(fp, "CT", target_spacing=(0.8, 1.1, 3.0))
    image, _, _ = preprocess_case(case, p)
    lo, hi = (st["percentile_00_5"] - st["mean"]) / st["std"], (st["percentile_99_5"] - st["mean"]) / st["std"]
    assert image.min() == pytest.approx(lo, abs=1e-5) and image.max() == pytest.approx(hi, abs=1e-5)
    pw = plan(fp, "CT", target_spacing=(0.8, 1.1, 3.0), ct_window=(-125, 275))
    imw, _, props = preprocess_case(case, pw)
    assert imw.min() == 0.0 and imw.max() == 1.0
    ras = geo.crop(geo.apply_ornt(case["image"], geo.ras_transform(affine_ila())), props["bbox"])
    np.testing.assert_allclose(imw[0], (np.clip(ras[0], -125, 275) + 125) / 400, atol=1e-6)


def _write_dataset(root):
    case = make_case()
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for cid in ("x", "y"):
        nib.save(nib.Nifti1Image(case["image"][0], affine_ila()), str(root / "imagesTr" / f"{cid}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(case["label"].astype(np.uint8), affine_ila()),
                 str(root / "labelsTr" / f"{cid}.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MR"}, "file_ending": ".nii.gz",
                                                   "labels": {"background": 0, "a": 1, "b": 2}}))


def test_cache_reuses_and_invalidates(tmp_path, monkeypatch):
    _write_dataset(tmp_path / "ds")
    cases = list_cases3d(tmp_path / "ds")
    calls = []
    real = cache_module.preprocess_case
    monkeypatch.setattr(cache_module, "preprocess_case", lambda c, p: calls.append(c["case_id"]) or real(c, p))
    p1 = plan(fingerprint(cases), "MR")
    cache = PreprocessCache(tmp_path / "cache")
    first = [cache.load(c, p1) for c in cases]
    second = [cache.load(c, p1) for c in cases]
    assert calls == ["x", "y"] and cache.hits == 2 and cache.misses == 2
    for (i1, l1, pr1), (i2, l2, pr2) in zip(first, second):
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(l1, l2)
        assert l2.dtype == np.int64 and pr1["bbox"] == pr2["bbox"]
    # a new PreprocessCache on the same folder (a later run) reuses the files too
    again = PreprocessCache(tmp_path / "cache")
    again.load(cases[0], p1)
    assert again.hits == 1 and calls == ["x", "y"]
    # a changed plan is preprocessed again, in its own folder
    p2 = plan(fingerprint(cases), "MR", target_spacing=(1.0, 1.0, 1.0))
    img2, _, _ = cache.load(cases[0], p2)
    assert calls == ["x", "y", "x"] and img2.shape != first[0][0].shape
    assert len(list((tmp_path / "cache").glob("plan_*"))) == 2
    # a changed source file invalidates its entry
    lab = np.zeros(SHAPE, np.uint8)
    lab[1:4, 1:4, 1:4] = 1
    nib.save(nib.Nifti1Image(lab, affine_ila()), str(cases[1].label))
    _, l_new, _ = cache.load(cases[1], p1)
    assert calls[-1] == "y" and l_new.sum() != first[1][1].sum()
