"""Case folders with user-named channels (``layout: case_folders``): the BraTS presets (2023, 2019-2021 with label 4,
the 2018 whole-tumour export), channel subsets, the relabelling, bad case folders (one-line errors naming the case
and the file), and the shared brain mask of the multi-channel MR normalisation. Tiny synthetic volumes only."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mambaseg.config import ConfigError, config_from_dict
from mambaseg.data.errors import DataError
from mambaseg.data.layouts.case_folders import PRESETS, case_folder_cases, case_folder_spec
from mambaseg.data.load3d import load_case3d
from mambaseg.data.plans.normalize import brain_mask, normalize_channels
from mambaseg.data.plans.preprocess import plan

SHAPE = (12, 10, 8)

# naming -> (file name per channel (T2, FLAIR, T1, T1c order of the preset), label file name, label values)
NAMINGS = {
    "brats2023": (lambda c: [f"{c}-t2w.nii.gz", f"{c}-t2f.nii.gz", f"{c}-t1n.nii.gz", f"{c}-t1c.nii.gz"],
                  lambda c: f"{c}-seg.nii.gz", (0, 1, 2, 3)),
    "brats2021": (lambda c: [f"{c}_t2.nii.gz", f"{c}_flair.nii.gz", f"{c}_t1.nii.gz", f"{c}_t1ce.nii.gz"],
                  lambda c: f"{c}_seg.nii.gz", (0, 1, 2, 4)),
    "brats2018_wt": (lambda c: ["FLAIR.nii.gz", "T1.nii.gz"], lambda c: "GT_W.nii.gz", (0, 1)),
}


def brain_case(shape=SHAPE, seed=0, values=(0, 1, 2, 3), n_channels=4):
    """(channels (C, *shape) float32 zero outside an ellipsoid 'brain', label map with ``values`` inside it)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float64)
    centre = (np.asarray(shape) - 1) / 2
    r = np.sqrt((((grid - centre[:, None, None, None]) / (np.asarray(shape)[:, None, None, None] * 0.4)) ** 2)
                .sum(0))
    brain = r < 1
    label = np.zeros(shape, np.int16)
    label[r < 0.7] = values[1]
    if len(values) > 2:
        label[r < 0.5] = values[2]
        label[r < 0.3] = values[3]
    chans = np.stack([np.where(brain, 100 + 20 * c + 10 * rng.standard_normal(shape) + 30 * (label > 0), 0)
                      for c in range(n_channels)]).astype(np.float32)
    return chans, label


def write_case_folders(root: Path, naming: str, n_cases: int = 3, shape=SHAPE, float_label: bool | None = None,
                       with_label: bool = True) -> Path:
    """``n_cases`` case folders in one BraTS naming under ``root`` (2018 export: float 0/1 labels, as GT_W)."""
    names, label_name, values = NAMINGS[naming]
    float_label = naming == "brats2018_wt" if float_label is None else float_label
    for i in range(n_cases):
        cid = f"Case_{i:03d}"
        folder = root / cid
        folder.mkdir(parents=True, exist_ok=True)
        chans, label = brain_case(shape, seed=i, values=values, n_channels=len(names(cid)))
        for arr, name in zip(chans, names(cid)):
            nib.save(nib.Nifti1Image(arr, np.eye(4)), folder / name)
        if with_label:
            lab = label.astype(np.float32) if float_label else label.astype(np.uint8)
            nib.save(nib.Nifti1Image(lab, np.eye(4)), folder / label_name(cid))
    return root


@pytest.mark.parametrize("naming", list(NAMINGS))
def test_presets_list_and_read_every_naming(tmp_path, naming):
    root = write_case_folders(tmp_path / naming, naming)
    spec = case_folder_spec(naming)
    cases = case_folder_cases(root, spec)
    assert [c.case_id for c in cases] == ["Case_000", "Case_001", "Case_002"]
    assert cases[0].channel_names == tuple(PRESETS[naming]["channels"])
    names = NAMINGS[naming][0]("Case_000")
    assert [p.name for p in cases[0].images] == names  # the preset's channel order
    d = load_case3d(cases[0])
    assert d["image"].shape == (len(names), *SHAPE)
    assert d["label"].dtype == np.int64
    expected = {"brats2021": {0, 1, 2, 3}, "brats2023": {0, 1, 2, 3}, "brats2018_wt": {0, 1}}[naming]
    assert set(np.unique(d["label"]).tolist()) == expected  # 2021: 4 -> 3; 2018: float 0/1 -> integers
    if naming == "brats2021":
        raw = np.asarray(nib.load(cases[0].label).dataobj)
        assert np.array_equal(d["label"] == 3, raw == 4)


def test_channel_subset_and_own_patterns(tmp_path):
    root = write_case_folders(tmp_path / "d", "brats2018_wt")
    flair = case_folder_spec("brats2018_wt", ["FLAIR"])
    assert flair.channels == (("FLAIR", "FLAIR.nii*"),) and flair.label == "GT_W.nii*"
    case = case_folder_cases(root, flair)[0]
    assert [p.name for p in case.images] == ["FLAIR.nii.gz"]
    assert load_case3d(case)["image"].shape == (1, *SHAPE)
    # the issue's own-pattern form, in another channel order, no preset
    own = case_folder_spec(channels={"T1": "*T1.nii.gz", "FLAIR": "*FLAIR.nii.gz"}, label="GT_W.nii.gz")
    case = case_folder_cases(root, own)[0]
    assert [p.name for p in case.images] == ["T1.nii.gz", "FLAIR.nii.gz"] and case.label.name == "GT_W.nii.gz"
    assert own.labels is None and own.preset == ""
    with pytest.raises(DataError, match=r"'data.channels.T1c'.*brats2018_wt.*FLAIR, T1"):
        case_folder_spec("brats2018_wt", ["T1c"])
    with pytest.raises(DataError, match=r"'data.preset'.*brats2023"):
        case_folder_spec("brats2017")
    with pytest.raises(DataError, match=r"'data.channels' is empty"):
        case_folder_spec()
    with pytest.raises(DataError, match=r"'data.channels.FLAIR'.*no folder part"):
        case_folder_spec(channels={"FLAIR": "sub/FLAIR.nii.gz"})


def test_config_keys(tmp_path):
    cfg = config_from_dict({"data": {"layout": "case_folders", "preset": "brats2018_wt", "channels": ["FLAIR"],
                                     "root": str(tmp_path)}})
    assert cfg.data.channels == {"FLAIR": ""}
    with pytest.raises(ConfigError, match=r"'data.preset'"):
        config_from_dict({"data": {"layout": "case_folders", "preset": "nope"}})
    with pytest.raises(ConfigError, match=r"'data.channels' applies to data.layout case_folders"):
        config_from_dict({"data": {"layout": "msd", "channels": {"FLAIR": "*.nii.gz"}}})
    # user label map (raw -> training value) replaces the preset's
    spec = case_folder_spec("brats2021", label_map={"4": 3, "2": 1})
    assert dict(spec.label_map) == {4: 3, 2: 1} and spec.labels is None


def test_bad_case_folders_are_one_line_errors(tmp_path):
    root = write_case_folders(tmp_path / "d", "brats2018_wt")
    spec = case_folder_spec("brats2018_wt")
    (root / "Case_001" / "T1.nii.gz").unlink()
    with pytest.raises(DataError, match=r"case 'Case_001': missing channel T1 \(no file matching 'T1.nii\*'\)"):
        case_folder_cases(root, spec)
    root = write_case_folders(tmp_path / "e", "brats2018_wt")
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), np.eye(4)), root / "Case_002" / "FLAIR.nii")
    with pytest.raises(DataError, match=r"case 'Case_002': channel FLAIR pattern 'FLAIR.nii\*' matches 2 files "
                                        r"\(FLAIR.nii, FLAIR.nii.gz\)") as err:
        case_folder_cases(root, spec)
    assert "\n" not in str(err.value)
    # one file claimed by two channels
    root = write_case_folders(tmp_path / "f", "brats2018_wt")
    both = case_folder_spec(channels={"A": "*1.nii.gz", "B": "T*.nii.gz"})
    with pytest.raises(DataError, match=r"T1.nii.gz matches both channel A and channel B"):
        case_folder_cases(root, both)
    # channels on different grids: refused when read, naming the case and both files
    root = write_case_folders(tmp_path / "g", "brats2018_wt")
    moved = np.eye(4)
    moved[0, 3] = 5.0
    nib.save(nib.Nifti1Image(np.ones(SHAPE, np.float32), moved), root / "Case_000" / "T1.nii.gz")
    case = case_folder_cases(root, spec)[0]
    with pytest.raises(DataError, match=r"case 'Case_000': geometry mismatch between .*FLAIR.nii.gz .*T1.nii.gz"):
        load_case3d(case)
    # no case folder at all
    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no case folders .*FLAIR: FLAIR.nii\*"):
        case_folder_cases(tmp_path / "empty", spec)
    # labels required (training) but absent
    root = write_case_folders(tmp_path / "h", "brats2018_wt", with_label=False)
    assert case_folder_cases(root, spec)[0].label is None
    with pytest.raises(DataError, match=r"case 'Case_000': no label file matching 'GT_W.nii\*'"):
        case_folder_cases(root, spec, require_label=True)


def test_one_case_folder_as_root(tmp_path):
    root = write_case_folders(tmp_path / "d", "brats2023", n_cases=1)
    cases = case_folder_cases(root / "Case_000", case_folder_spec("brats2023"))
    assert [c.case_id for c in cases] == ["Case_000"]


def test_brain_mask_normalisation_shared_by_channels():
    """nnU-Net: one mask = union of non-zero over all channels, holes filled; z-score of each channel inside it."""
    image = np.zeros((2, 9, 9, 9), np.float32)
    image[0, 2:7, 2:7, 2:7] = 10.0 + np.arange(125).reshape(5, 5, 5)
    image[0, 4, 4, 4] = 0.0  # a hole inside the brain in channel 0 (e.g. a dark voxel)
    image[1, 2:7, 2:7, 3:8] = 5.0 + np.arange(125).reshape(5, 5, 5)  # channel 1 reaches one slice further
    mask = brain_mask(image)
    assert mask[4, 4, 4] and mask[2, 2, 7] and not mask[0, 0, 0]
    assert mask.sum() == 5 * 5 * 6
    out, stats = normalize_channels(image, [{"scheme": "zscore_brain"}] * 2)
    for c in range(2):
        vals = image[c][mask].astype(np.float64)
        assert stats[c]["mean"] == pytest.approx(vals.mean(), rel=1e-9)
        assert np.allclose(out[c][mask], (vals - vals.mean()) / vals.std(), atol=1e-5)
        assert np.all(out[c][~mask] == 0)
    # the zero voxels inside the mask are normalised (not kept at 0), unlike per-channel non-zero masking
    assert out[0, 4, 4, 4] == pytest.approx((0 - image[0][mask].mean()) / image[0][mask].std(), rel=1e-5)
    old, _ = normalize_channels(image, [{"scheme": "zscore_nonzero"}] * 2)
    assert old[0, 4, 4, 4] == 0


def test_plan_uses_the_brain_mask_for_multichannel_mr():
    fp = {"n_channels": 2, "median_spacing": [1, 1, 1], "spacings": [[1, 1, 1]], "shapes_after_crop": [[8, 8, 8]],
          "shapes": [[10, 10, 10]], "intensity": {}}
    assert [e["scheme"] for e in plan(fp, "MR")["normalization"]] == ["zscore_brain"] * 2
    assert [e["scheme"] for e in plan(dict(fp, n_channels=1), "MR")["normalization"]] == ["zscore_nonzero"]
    one = plan(dict(fp, n_channels=1), "MR", brain_mask=True)["normalization"]
    assert [e["scheme"] for e in one] == ["zscore_brain"]


def test_predict_gathers_case_folders_by_channel_name(tmp_path):
    """predict's gathering with a model's stored spec: case folders of another release by the channel's name, one
    case folder, and a flat folder of several cases' FLAIR files (each its own case, not one case folder)."""
    from mambaseg.engine.predict.volumes import gather_volume_cases

    flair = case_folder_spec("brats2018_wt", ["FLAIR"])
    both = case_folder_spec("brats2018_wt")
    root = write_case_folders(tmp_path / "r2021", "brats2021", n_cases=2, with_label=False)
    got = gather_volume_cases(root, both)
    assert [(cid, [f.name for f in files]) for cid, files in got] == [
        ("Case_000", ["Case_000_flair.nii.gz", "Case_000_t1.nii.gz"]),
        ("Case_001", ["Case_001_flair.nii.gz", "Case_001_t1.nii.gz"])]
    got = gather_volume_cases(root / "Case_001", flair)
    assert [(cid, [f.name for f in files]) for cid, files in got] == [("Case_001", ["Case_001_flair.nii.gz"])]
    flat = tmp_path / "flat"
    flat.mkdir()
    for cid in ("a", "b"):
        (flat / f"{cid}_flair.nii.gz").write_bytes((root / "Case_000" / "Case_000_flair.nii.gz").read_bytes())
    got = gather_volume_cases(flat, flair)
    assert [cid for cid, _ in got] == ["a_flair", "b_flair"]
    (root / "Case_000" / "Case_000_t1.nii.gz").unlink()
    with pytest.raises(DataError, match=r"case 'Case_000': missing channel T1 \(no file matching 'T1.nii\*' or "
                                        r"'\*-t1n.nii\*' or '\*_t1.nii\*'\)"):
        gather_volume_cases(root, both)


def test_config_knows_the_layouts_presets():
    """config (a floor below data) names the presets itself; the two lists must stay one."""
    from mambaseg.config import CASE_FOLDER_PRESETS
    from mambaseg.data.layouts.case_folders import PRESETS

    assert tuple(PRESETS) == CASE_FOLDER_PRESETS
