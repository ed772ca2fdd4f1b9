"""End-to-end ``layout: case_folders`` on tiny synthetic BraTS-like case folders: train (preset brats2018_wt, FLAIR
alone and FLAIR + T1) -> the channel names and patterns in the checkpoint -> predict on case folders of every BraTS
naming and on plain FLAIR files -> evaluate whole tumour / BraTS regions against case-folder references; bad inputs
(missing channel, a pattern matching two files, channels on different grids, wrong channel count) are one-line
errors naming the case and the file."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from mambaseg.cli import main
from tests.conftest import tiny_3d_yaml
from tests.data.test_case_folders import brain_case, write_case_folders

BRATS2018 = ("data.layout=case_folders", "data.preset=brats2018_wt", "data.num_classes=2")  # on TINY_3D
SHAPE = (20, 18, 16)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("casefolders")
    data = write_case_folders(root / "brats2018", "brats2018_wt", n_cases=4, shape=SHAPE)
    out = {}
    for name, channels in (("flair", ["data.channels=[FLAIR]"]), ("both", [])):
        cfg = root / f"{name}.yaml"
        cfg.write_text(tiny_3d_yaml(data, *BRATS2018, *channels))
        assert main(["train", str(cfg), "--out", str(root / name), "--no-progress"]) == 0
        out[name] = root / name
    return root, data, out


def _err(capsys, *args):
    code = main(list(args))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_checkpoint_stores_channel_names_and_patterns(runs):
    _, _, out = runs
    for name, channels in (("flair", ["FLAIR"]), ("both", ["FLAIR", "T1"])):
        ck = torch.load(out[name] / "checkpoint_last.pt", map_location="cpu", weights_only=False)
        assert ck["data"]["channel_names"] == channels
        assert list(ck["data"]["case_folders"]["channels"]) == channels
        assert ck["data"]["case_folders"]["label"] == "GT_W.nii*"
        assert ck["model_kwargs"]["in_channels"] == len(channels)
        schemes = [e["scheme"] for e in ck["data"]["plan"]["normalization"]]
        assert schemes == ["zscore_brain"] * len(channels)  # one brain mask shared by the channels


@pytest.mark.parametrize("naming", ["brats2018_wt", "brats2021", "brats2023"])
def test_flair_model_predicts_case_folders_of_every_naming(runs, tmp_path, naming):
    _, _, out = runs
    data = write_case_folders(tmp_path / naming, naming, n_cases=2, shape=(17, 19, 15))
    pred = tmp_path / "pred"
    assert main(["predict", "-m", str(out["flair"]), "-i", str(data), "-o", str(pred), "--no-progress"]) == 0
    for cid in ("Case_000", "Case_001"):
        p = nib.load(pred / f"{cid}.nii.gz")
        assert p.shape == (17, 19, 15) and set(np.unique(np.asarray(p.dataobj))) <= {0, 1}
    prov = json.loads((pred / "predict_provenance.json").read_text())
    flair = {"brats2018_wt": "FLAIR.nii.gz", "brats2021": "Case_000_flair.nii.gz",
             "brats2023": "Case_000-t2f.nii.gz"}[naming]
    assert flair in json.dumps(prov) or (pred / "Case_000.nii.gz").exists()


def test_flair_model_predicts_plain_files_and_one_case_folder(runs, tmp_path):
    _, data, out = runs
    plain = tmp_path / "plain"
    plain.mkdir()
    for cid in ("a_flair", "b_flair"):  # several cases' FLAIR files in one folder: not one case folder
        shutil.copy(data / "Case_000" / "FLAIR.nii.gz", plain / f"{cid}.nii.gz")
    assert main(["predict", "-m", str(out["flair"]), "-i", str(plain), "-o", str(tmp_path / "p1"),
                 "--no-progress"]) == 0
    assert sorted(f.name for f in (tmp_path / "p1").glob("*.nii.gz")) == ["a_flair.nii.gz", "b_flair.nii.gz"]
    assert main(["predict", "-m", str(out["both"]), "-i", str(data / "Case_001"), "-o", str(tmp_path / "p2"),
                 "--no-progress"]) == 0
    assert (tmp_path / "p2" / "Case_001.nii.gz").is_file()


def test_predict_refuses_bad_case_folders(runs, tmp_path, capsys):
    _, data, out = runs
    model = str(out["both"])

    def fresh(name):
        d = tmp_path / name
        shutil.copytree(data, d)
        return d

    d = fresh("missing")
    (d / "Case_002" / "T1.nii.gz").unlink()
    err = _err(capsys, "predict", "-m", model, "-i", str(d), "-o", str(tmp_path / "o1"))
    assert "case 'Case_002': missing channel T1" in err
    d = fresh("twice")
    shutil.copy(d / "Case_001" / "FLAIR.nii.gz", d / "Case_001" / "FLAIR.nii")
    err = _err(capsys, "predict", "-m", model, "-i", str(d), "-o", str(tmp_path / "o2"))
    assert "case 'Case_001'" in err and "FLAIR.nii, FLAIR.nii.gz" in err
    d = fresh("grids")
    img = nib.load(d / "Case_003" / "T1.nii.gz")
    moved = img.affine.copy()
    moved[1, 3] += 3.0
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), moved), d / "Case_003" / "T1.nii.gz")
    err = _err(capsys, "predict", "-m", model, "-i", str(d), "-o", str(tmp_path / "o3"))
    assert "case Case_003" in err and "T1.nii.gz" in err and "affine" in err
    d = fresh("shape")
    arr, _ = brain_case((20, 18, 15), n_channels=1)
    nib.save(nib.Nifti1Image(arr[0], np.eye(4)), d / "Case_000" / "T1.nii.gz")
    err = _err(capsys, "predict", "-m", model, "-i", str(d), "-o", str(tmp_path / "o4"))
    assert "case Case_000" in err and "T1.nii.gz" in err and "shape" in err
    (tmp_path / "single").mkdir()
    one = tmp_path / "single" / "one.nii.gz"
    shutil.copy(data / "Case_000" / "FLAIR.nii.gz", one)  # a plain file into a FLAIR + T1 model
    err = _err(capsys, "predict", "-m", model, "-i", str(one), "-o", str(tmp_path / "o5"))
    assert "expects 2 (FLAIR, T1)" in err
    for o in ("o1", "o2", "o3", "o4", "o5"):
        assert not (tmp_path / o).exists() or not any((tmp_path / o).glob("*.nii.gz"))


def test_evaluate_whole_tumour_against_case_folders(runs, tmp_path):
    _, data, out = runs
    pred = tmp_path / "pred"
    assert main(["predict", "-m", str(out["both"]), "-i", str(data), "-o", str(pred), "--no-progress"]) == 0
    ev = tmp_path / "ev"
    assert main(["evaluate", "--pred", str(pred), "--gt", str(data), "-o", str(ev), "--regions", "wt"]) == 0
    summary = json.loads((ev / "summary.json").read_text())
    assert summary["class_names"] == {"(1, 2, 3)": "WT"} and summary["n_cases"] == 4
    assert summary["metric_per_case"][0]["reference_file"].endswith("GT_W.nii.gz")
    # a perfect prediction: the references themselves, as integer maps
    perfect = tmp_path / "perfect"
    perfect.mkdir()
    for case in sorted(data.iterdir()):
        lab = nib.load(case / "GT_W.nii.gz")
        nib.save(nib.Nifti1Image(np.asarray(lab.dataobj).astype(np.uint8), lab.affine), perfect / f"{case.name}.nii.gz")
    res = main(["evaluate", "--pred", str(perfect), "--gt", str(data), "-o", str(tmp_path / "ev2"), "--regions",
                "wt"])
    assert res == 0
    mean = json.loads((tmp_path / "ev2" / "summary.json").read_text())["mean"]
    assert mean["(1, 2, 3)"]["Dice"] == 1.0


def test_evaluate_brats_regions_reads_label_4_as_enhancing(tmp_path):
    data = write_case_folders(tmp_path / "d", "brats2021", n_cases=2)
    pred = tmp_path / "pred"
    pred.mkdir()
    for case in sorted(data.iterdir()):
        lab = nib.load(case / f"{case.name}_seg.nii.gz")
        arr = np.asarray(lab.dataobj).astype(np.uint8)
        assert 4 in arr and 3 not in arr
        arr[arr == 4] = 3  # what a model trained with the 4 -> 3 relabelling predicts
        nib.save(nib.Nifti1Image(arr, lab.affine), pred / f"{case.name}.nii.gz")
    assert main(["evaluate", "--pred", str(pred), "--gt", str(data), "-o", str(tmp_path / "ev"), "--regions",
                 "brats"]) == 0
    mean = json.loads((tmp_path / "ev" / "summary.json").read_text())["mean"]
    assert {k: v["Dice"] for k, v in mean.items()} == {"(1, 2, 3)": 1.0, "(1, 3)": 1.0, "(3,)": 1.0}
