"""``evaluate --workers N`` (#14): cases scored in a pool of spawned processes give byte-identical outputs, the
parent holds no case, errors inside a worker keep their one-line message naming the file, bad values of the option
are a one-line error."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

import mambaseg.engine.eval_common as pool_mod
import mambaseg.engine.evaluate.images as ev_mod
import mambaseg.engine.evaluate.volumes as ev3_mod
from mambaseg.cli import main
from mambaseg.data.errors import DataError
from mambaseg.engine.eval_common import ordered_map
from mambaseg.engine.evaluate import evaluate


def _one_line(capsys, *needles):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


@pytest.fixture()
def data2d(tmp_path):
    """5 cases with FOV masks and probability maps: references, predictions, masks."""
    rng = np.random.default_rng(0)
    gt, pred, mask = tmp_path / "gt", tmp_path / "pred", tmp_path / "mask"
    for d in (gt, pred, mask, pred / "probs"):
        d.mkdir()
    for i in range(5):
        ref = (rng.random((20, 24)) < 0.3).astype(np.uint8) * 255
        p = np.where(rng.random((20, 24)) < 0.2, 255 - ref, ref).astype(np.uint8)
        fov = np.zeros((20, 24), np.uint8)
        fov[1:-1, 2:-2] = 255
        prob = np.clip(p.astype(np.float64) * 0.8 + rng.random((20, 24)) * 40, 0, 255).astype(np.uint8)
        Image.fromarray(ref).save(gt / f"c{i}.png")
        Image.fromarray(p).save(pred / f"c{i}.png")
        Image.fromarray(fov).save(mask / f"c{i}.png")
        Image.fromarray(prob).save(pred / "probs" / f"c{i}.png")
    return pred, gt, mask


def _save3d(path, arr):
    nib.save(nib.Nifti1Image(arr.astype(np.uint8), np.diag([1.5, 1.0, 2.0, 1.0])), str(path))


@pytest.fixture()
def data3d(tmp_path):
    """An nnU-Net dataset with 4 cases of labels {0, 1, 2} and noisy predictions."""
    rng = np.random.default_rng(1)
    root = tmp_path / "Dataset001_Toy"
    (root / "labelsTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"},
                                                   "labels": {"background": 0, "A": 1, "B": 2}}))
    pred = tmp_path / "pred3d"
    pred.mkdir()
    for i in range(4):
        ref = np.zeros((10, 12, 8), np.uint8)
        ref[2:7, 3:9, 1:6] = 1
        ref[6:9, 2:5, 4:7] = 2
        p = np.where(rng.random(ref.shape) < 0.08, rng.integers(0, 3, ref.shape), ref)
        _save3d(root / "labelsTr" / f"case_{i:03d}.nii.gz", ref)
        _save3d(pred / f"case_{i:03d}.nii.gz", p)
    return pred, root / "labelsTr"


class _Spy(pool_mod.ProcessPoolExecutor):
    used: list[int] = []

    def __init__(self, max_workers=None, **kw):
        _Spy.used.append(max_workers)
        super().__init__(max_workers=max_workers, **kw)


def _no_case_in_parent(monkeypatch):
    """The parent must not read a case when a pool scores them (spawned workers import the unpatched module)."""
    def refuse(*a, **k):
        raise AssertionError("a case was read in the parent process")

    for mod, name in ((ev_mod, "read_prediction_2d"), (ev_mod, "read_label"), (ev3_mod, "read_volume_label")):
        monkeypatch.setattr(mod, name, refuse)


def test_2d_pool_outputs_byte_identical(data2d, tmp_path, monkeypatch):
    pred, gt, mask = data2d
    serial = evaluate(pred, gt, tmp_path / "ev1", mask=mask)
    assert serial["n_cases"] == 5 and "auc" in serial["mean_2d"]
    _Spy.used = []
    monkeypatch.setattr(pool_mod, "ProcessPoolExecutor", _Spy)
    _no_case_in_parent(monkeypatch)
    pooled = evaluate(pred, gt, tmp_path / "ev2", mask=mask, workers=2)
    assert _Spy.used == [2]  # really a pool of 2
    for name in ("summary.json", "metrics.csv"):
        assert (tmp_path / "ev1" / name).read_bytes() == (tmp_path / "ev2" / name).read_bytes(), name
    assert [r["case"] for r in pooled["metric_per_case"]] == [f"c{i}" for i in range(5)]  # case order


def test_3d_pool_outputs_byte_identical(data3d, tmp_path, monkeypatch, capsys):
    pred, gt = data3d
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(tmp_path / "ev1")]) == 0
    _Spy.used = []
    monkeypatch.setattr(pool_mod, "ProcessPoolExecutor", _Spy)
    _no_case_in_parent(monkeypatch)
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(tmp_path / "ev2"), "--workers",
                 "2"]) == 0
    assert _Spy.used == [2]
    for name in ("summary.json", "metrics.csv"):
        assert (tmp_path / "ev1" / name).read_bytes() == (tmp_path / "ev2" / name).read_bytes(), name
    s = json.loads((tmp_path / "ev2" / "summary.json").read_text())
    assert [c["case_id"] for c in s["metric_per_case"]] == [f"case_{i:03d}" for i in range(4)]
    assert set(s["mean"]) == {"1", "2"} and 0.5 < s["foreground_mean"]["Dice"] < 1.0


def test_3d_pool_without_dataset_json_finds_labels_in_workers(data3d, tmp_path):
    """No class set: the first pass (label values of every file) runs in the pool too, same outputs."""
    pred, gt = data3d
    (gt.parent / "dataset.json").unlink()
    a = evaluate(pred, gt, tmp_path / "ev1")
    b = evaluate(pred, gt, tmp_path / "ev2", workers=3)
    assert set(a["mean"]) == {"1", "2"}
    assert (tmp_path / "ev1" / "summary.json").read_bytes() == (tmp_path / "ev2" / "summary.json").read_bytes()
    assert b["n_cases"] == 4


def test_unreadable_file_in_a_worker_is_one_line_naming_it(data2d, data3d, tmp_path, capsys):
    pred, gt, _ = data2d
    (pred / "c3.png").write_bytes(b"not a png at all")
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(tmp_path / "e2"), "-np", "2"]) == 2
    _one_line(capsys, "c3.png")
    assert not (tmp_path / "e2" / "summary.json").exists()
    pred3, gt3 = data3d
    (pred3 / "case_002.nii.gz").write_bytes(b"\x1f\x8b garbage")
    assert main(["evaluate", "--pred", str(pred3), "--gt", str(gt3), "-o", str(tmp_path / "e3"),
                 "--workers", "2"]) == 2
    _one_line(capsys, "case_002.nii.gz")
    assert not (tmp_path / "e3" / "summary.json").exists()


@pytest.mark.parametrize("value", ["0", "-3"])
def test_workers_below_one_is_a_one_line_error(data2d, tmp_path, capsys, value):
    pred, gt, _ = data2d
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(tmp_path / "ev"), "--workers",
                 value]) == 2
    _one_line(capsys, "--workers must be an integer >= 1", value)
    assert not (tmp_path / "ev").exists()


def test_ordered_map_keeps_order_and_reports_first_error():
    with pytest.raises(DataError, match="--workers"):
        list(ordered_map(abs, [1], workers=0))
    assert list(ordered_map(abs, [-3, 2, -1, 0], workers=2)) == [3, 2, 1, 0]
    with pytest.raises(TypeError):  # abs("x") fails in a worker: the error comes back, queued tasks cancelled
        list(ordered_map(abs, [1, "x", 2, 3], workers=2))


def test_worker_init_one_thread(monkeypatch):
    import torch

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(var, "8")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        pool_mod._worker_init()
        assert torch.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)


def test_a_dead_worker_is_a_one_line_error_naming_its_case():
    with pytest.raises(DataError, match=r"^case-3\.nii\.gz: an evaluation worker process died"):
        list(ordered_map(os._exit, [3, 4], workers=2, describe=lambda t: f"case-{t}.nii.gz"))
