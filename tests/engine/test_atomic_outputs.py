"""Crash-safe outputs: a writer that dies mid-way leaves nothing under the final name (predict, evaluate, NIfTI),
``predict --continue`` keeps finished outputs and writes the rest, and stale temporary files of killed runs are
removed at the next start (predict outputs, evaluate, the training run folder)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import mambaseg.engine.predict.images as images_mod
from mambaseg.cli import main
from mambaseg.data.io.volume import write_nifti
from mambaseg.data.synthetic import write_phantom_msd, write_synthetic_drive
from mambaseg.engine.predict_provenance import PROVENANCE_NAME
from mambaseg.utils.atomic import atomic_path, atomic_write_text, clean_stale_temp, is_temp_name
from tests.conftest import tiny_3d_yaml

CFG2D = """
seed: 0
model: {name: unet_tiny}
data: {layout: drive, root: "%s", val_fraction: 0.25, patch_size: [32, 32], fov: true, augment: none}
train: {epochs: 1, iters_per_epoch: 1, batch_size: 2, val_every: 1}
infer: {patch_size: [48, 48]}
"""



@pytest.fixture(scope="module")
def world2d(tmp_path_factory):
    root = tmp_path_factory.mktemp("atomic2d")
    data = write_synthetic_drive(root / "drive", n_train=3, n_test=3, size=(48, 52), seed=4)
    cfg = root / "c.yaml"
    cfg.write_text(CFG2D % data)
    run = root / "run"
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0
    return data, run


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file())


# ------------------------------------------------------------------------------------------------------- the utility
def test_atomic_path_failure_leaves_nothing_and_keeps_old_file(tmp_path):
    final = tmp_path / "x.json"
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".x.json.") and tmp.name.endswith(".json")
        tmp.write_text('{"half": ')
        raise RuntimeError("disk full")
    assert os.listdir(tmp_path) == []
    atomic_write_text(final, '{"ok": 1}')
    with pytest.raises(KeyboardInterrupt), atomic_path(final) as tmp:
        tmp.write_text("partial")
        raise KeyboardInterrupt
    assert json.loads(final.read_text()) == {"ok": 1} and os.listdir(tmp_path) == ["x.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert final.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not mkstemp's 0600


def test_temp_names_and_cleaning(tmp_path):
    with atomic_path(tmp_path / "case.nii.gz") as tmp:
        assert tmp.name.endswith(".tmp.nii.gz") and is_temp_name(tmp.name)
        tmp.write_bytes(b"x")
    stale = tmp_path / ".case.nii.gz.zzzzzzzz.tmp.nii.gz"  # the same kind of name, left by a killed writer
    stale.write_bytes(b"half")
    (tmp_path / ".checkpoint_last.pt.ab_12cd3.tmp").write_bytes(b"half")
    (tmp_path / ".hidden_user_file").write_bytes(b"keep")
    (tmp_path / "other.png").write_bytes(b"keep")
    assert [p.name for p in clean_stale_temp(tmp_path, {"other.png"})] == []
    removed = {p.name for p in clean_stale_temp(tmp_path)}
    assert removed == {stale.name, ".checkpoint_last.pt.ab_12cd3.tmp"}
    assert sorted(os.listdir(tmp_path)) == [".hidden_user_file", "case.nii.gz", "other.png"]


def test_write_nifti_crash_leaves_no_file(tmp_path, monkeypatch):
    meta = {"shape": (4, 5, 6), "affine": np.eye(4)}
    target = tmp_path / "case.nii.gz"
    real_save = nib.save

    def dying_save(img, filename):
        Path(filename).write_bytes(b"\x1f\x8b partial gzip")  # what a kill during the write leaves
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib, "save", dying_save)
    with pytest.raises(OSError):
        write_nifti(target, np.zeros((4, 5, 6), np.uint8), meta)
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(nib, "save", real_save)
    write_nifti(target, np.ones((4, 5, 6), np.uint8), meta)
    assert np.asarray(nib.load(target).dataobj).sum() == 120 and os.listdir(tmp_path) == ["case.nii.gz"]


# ------------------------------------------------------------------------------------------------------ predict (2D)
def test_predict_crash_then_continue(world2d, tmp_path, monkeypatch, capsys):
    data, run = world2d
    images = data / "test" / "images"
    out = tmp_path / "pred"
    real = images_mod.write_png
    calls = {"n": 0}

    def dying_write_png(path, array):
        calls["n"] += 1
        if calls["n"] == 2:  # the second label map: half a file, then the process "dies"
            Path(path).write_bytes(b"\x89PNG\r\n")
            raise OSError(28, "No space left on device")
        return real(path, array)

    monkeypatch.setattr(images_mod, "write_png", dying_write_png)
    code = main(["predict", "-m", str(run), "-i", str(images), "-o", str(out), "--probs", "--no-progress"])
    assert code == 2 and "No space left" in capsys.readouterr().err
    stems = sorted(p.name.split(".")[0] for p in images.iterdir())
    assert _visible(out) == [f"{stems[0]}.png", PROVENANCE_NAME]  # no 0-byte / partial file under a final name
    assert not [p for p in out.rglob("*") if is_temp_name(p.name)]
    monkeypatch.setattr(images_mod, "write_png", real)

    # without --continue the existing output is still refused
    code = main(["predict", "-m", str(run), "-i", str(images), "-o", str(out), "--probs", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "already exists" in err and "--continue" in err
    code = main(["predict", "-m", str(run), "-i", str(images), "-o", str(out), "--continue", "--overwrite"])
    assert code == 2 and "exclude each other" in capsys.readouterr().err

    first = out / f"{stems[0]}.png"
    os.utime(first, ns=(1_000_000_000, 1_000_000_000))
    before = first.read_bytes()
    stale = out / f".{stems[1]}.png.abcd_123.tmp.png"  # what a SIGKILL during a write leaves
    stale.write_bytes(b"half")
    assert main(["predict", "-m", str(run), "-i", str(images), "-o", str(out), "--probs", "--continue",
                 "--no-progress"]) == 0
    assert "wrote 2 prediction(s)" in capsys.readouterr().out
    assert first.stat().st_mtime_ns == 1_000_000_000 and first.read_bytes() == before  # skipped, untouched
    assert _visible(out) == [*(f"{s}.png" for s in stems), PROVENANCE_NAME]
    assert _visible(out / "probs") == [f"{s}.png" for s in stems]
    assert not stale.exists()
    # all done: --continue writes nothing
    assert main(["predict", "-m", str(run), "-i", str(images), "-o", str(out), "--probs", "--continue",
                 "--no-progress"]) == 0
    assert "wrote 0 prediction(s)" in capsys.readouterr().out


def test_continue_redoes_a_case_missing_a_requested_output(world2d, tmp_path, capsys):
    data, run = world2d
    images = data / "test" / "images"
    out = tmp_path / "pred"
    assert main(["predict", "-m", str(run), "-i", str(images), "-o", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    # labels exist but the overlays asked for now do not: every case is redone
    assert main(["predict", "-m", str(run), "-i", str(images), "-o", str(out), "--overlay", "--continue",
                 "--no-progress"]) == 0
    assert "wrote 3 prediction(s)" in capsys.readouterr().out
    assert len(_visible(out / "overlays")) == 3


# ------------------------------------------------------------------------------------------------------ predict (3D)
def test_predict_3d_crash_then_continue(tmp_path, monkeypatch, capsys):
    data = write_phantom_msd(tmp_path / "task", n_cases=2, shape=(16, 18, 16))
    test = write_phantom_msd(tmp_path / "test", n_cases=3, shape=(17, 16, 16), seed=3)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(tiny_3d_yaml(data, "data.val_fraction=0.0"))
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0
    out = tmp_path / "pred"
    real = nib.save
    calls = {"n": 0}

    def dying_save(img, filename):
        calls["n"] += 1
        if calls["n"] == 2:
            Path(filename).write_bytes(b"")  # the 0-byte file a kill used to leave under the final name
            raise OSError(28, "No space left on device")
        return real(img, filename)

    monkeypatch.setattr(nib, "save", dying_save)
    assert main(["predict", "-m", str(run), "-i", str(test / "imagesTr"), "-o", str(out), "--no-progress"]) == 2
    names = sorted(p.name for p in (test / "imagesTr").iterdir())
    assert _visible(out) == sorted([*names[:1], PROVENANCE_NAME]) == sorted(os.listdir(out))
    monkeypatch.setattr(nib, "save", real)
    os.utime(out / names[0], ns=(2_000_000_000, 2_000_000_000))
    capsys.readouterr()
    assert main(["predict", "-m", str(run), "-i", str(test / "imagesTr"), "-o", str(out), "--continue",
                 "--no-progress"]) == 0
    assert "wrote 2 prediction(s)" in capsys.readouterr().out
    assert _visible(out) == sorted([*names, PROVENANCE_NAME]) and (out / names[0]).stat().st_mtime_ns == 2_000_000_000
    for n in names:
        assert nib.load(out / n).shape == nib.load(test / "imagesTr" / n).shape


# ---------------------------------------------------------------------------------------------------------- evaluate
def test_evaluate_crash_keeps_previous_outputs(world2d, tmp_path, monkeypatch, capsys):
    data, run = world2d
    pred = tmp_path / "pred"
    assert main(["predict", "-m", str(run), "-i", str(data / "test" / "images"), "-o", str(pred),
                 "--no-progress"]) == 0
    ev = tmp_path / "eval"
    assert main(["evaluate", "--pred", str(pred), "--gt", str(data / "test"), "-o", str(ev)]) == 0
    before = {n: (ev / n).read_bytes() for n in ("summary.json", "metrics.csv")}

    def dying_writerows(self, rows):
        self.writerow(rows[0])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerows", dying_writerows)
    (ev / ".metrics.csv.zzzz_999.tmp.csv").write_bytes(b"stale")
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(pred), "--gt", str(data / "test"), "-o", str(ev), "--overwrite"]) == 2
    assert (ev / "metrics.csv").read_bytes() == before["metrics.csv"]  # old complete file, not a truncated one
    json.loads((ev / "summary.json").read_text())  # complete JSON
    assert sorted(os.listdir(ev)) == ["metrics.csv", "summary.json"]  # no temporary files left
    monkeypatch.undo()
    new = tmp_path / "eval2"
    monkeypatch.setattr(csv.DictWriter, "writerows", dying_writerows)
    assert main(["evaluate", "--pred", str(pred), "--gt", str(data / "test"), "-o", str(new)]) == 2
    assert sorted(os.listdir(new)) == ["summary.json"]  # metrics.csv absent, not 0 bytes


# ---------------------------------------------------------------------------------------------------------- training
def test_training_start_removes_stale_checkpoint_temp(world2d, tmp_path):
    data, _ = world2d
    run = tmp_path / "run"
    run.mkdir()
    stale = [run / ".checkpoint_last.pt.k1ll3d_x.tmp", run / ".checkpoint_best.pt.abcdefgh.tmp"]
    for p in stale:
        p.write_bytes(b"PK\x03\x04 half a zip")
    keep = run / "notes.txt"
    keep.write_text("mine")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CFG2D % data)
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0
    assert not any(p.exists() for p in stale) and keep.read_text() == "mine"
    assert not [p for p in run.iterdir() if is_temp_name(p.name)]
    assert "left by an interrupted run" in (run / "train.log").read_text()
