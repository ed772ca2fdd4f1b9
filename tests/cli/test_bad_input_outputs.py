"""Bad-input corpus of issue 24, by theme, for predict, evaluate, train, export and report (``benchmark`` has its own):

- outputs never touch inputs (``probs/`` or ``overlays/`` that are, or link to, the input folder; an output file that
  links to an input; stale outputs without ``--overwrite``; the lock file that is a link, a hard link, a FIFO or a
  user's file; ``export --bundle --overwrite`` keeps the user's files);
- exact pairing and applicable options in ``evaluate`` (extra, duplicate and ambiguous predictions; 2D-only and
  3D-only options); ``dataset.json`` entries inside the dataset folder, one per case;
- names and paths unambiguous (a shipped-model name never loads a same-named folder; shipped weights are
  SHA-256-checked by name, path or link; the provenance records the hash).

Each case asserts exit code 2, one line naming the offending thing, every file under the test folder byte-identical
(links: same target) and no new file but a lock file (``train``: no checkpoint, config or metrics either).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from mambaseg.cli import main
from mambaseg.engine.checkpoint import save_checkpoint
from mambaseg.models import build_model
from mambaseg.resources import sha256_file
from mambaseg.utils.runlock import LOCK_NAME, RunLock
from tests.conftest import tiny_3d_yaml

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="links, FIFOs and fcntl locks (POSIX)")

PLAN = {"version": 1, "modality": ["MR"], "normalization": [{"scheme": "zscore_nonzero"}],
        "target_spacing": [1.0, 1.0, 1.0], "patch_size": [16, 16, 16], "crop_nonzero": True, "image_order": 3,
        "orientation": "RAS"}
@pytest.fixture(autouse=True)
def _chunked_scan(monkeypatch):
    monkeypatch.setenv("MAMBASEG_SCAN_BACKEND", "chunked")  # pure PyTorch scan: no kernel build in these tests


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _nifti(arr: np.ndarray) -> bytes:
    return gzip.compress(nib.Nifti1Image(arr, np.eye(4)).to_bytes())


def _write(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


def _ckpt2d(path: Path) -> Path:
    torch.manual_seed(0)
    net = build_model("unet_tiny", in_channels=3, out_channels=1)
    save_checkpoint({"model_name": "unet_tiny", "model_kwargs": {"in_channels": 3, "out_channels": 1},
                     "state_dict": net.state_dict(),
                     "config": {"data": {"patch_size": [32, 32]}, "infer": {"overlap": 0.25, "threshold": 0.5}},
                     "data": {"spatial_dims": 2}}, path)
    return path


def _ckpt3d(path: Path) -> Path:
    torch.manual_seed(0)
    net = build_model("dm_segnet_tiny")
    save_checkpoint({"model_name": "dm_segnet_tiny", "model_kwargs": {}, "state_dict": net.state_dict(),
                     "config": {"infer": {"overlap": 0.25, "batch_size": 2}},
                     "data": {"spatial_dims": 3, "plan": PLAN, "labels": {"background": 0, "lesion": 1}}}, path)
    return path


def _mask(seed: int) -> np.ndarray:
    m = np.zeros((32, 36), np.uint8)
    m[4 + seed:20, 6:30 - seed] = 255
    return m


def _label3d(seed: int) -> np.ndarray:
    a = np.zeros((20, 22, 18), np.uint8)
    a[4:12 + seed, 5:15, 4:12] = 1
    return a


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Models, 2D images and references, 3D volumes and references, an evaluation folder: shared, read-only."""
    root = tmp_path_factory.mktemp("corpus24 ü")
    rng = np.random.default_rng(0)
    w = {"root": root, "c2": _ckpt2d(root / "c2.pt"), "c3": _ckpt3d(root / "c3.pt")}
    w["imgs"] = _write(root / "imgs", {f"case0{i}.png": _png(rng.integers(0, 255, (32, 36, 3), np.uint8))
                                       for i in range(4)})
    w["gt2"] = _write(root / "gt2", {f"case0{i}.png": _png(_mask(i)) for i in range(4)})
    w["pred2"] = _write(root / "pred2", {f"case0{i}.png": _png(_mask(i)) for i in range(4)})
    vol = np.zeros((20, 22, 18), np.float32)
    vol[2:-2, 3:-2, 2:-2] = rng.normal(100, 20, (16, 17, 14))
    w["vols"] = _write(root / "vols", {"v1.nii.gz": _nifti(vol), "v2.nii.gz": _nifti(vol[::-1].copy())})
    w["gt3"] = _write(root / "gt3", {f"v{i}.nii.gz": _nifti(_label3d(i)) for i in (1, 2)})
    w["pred3"] = _write(root / "pred3", {f"v{i}.nii.gz": _nifti(_label3d(i)) for i in (1, 2)})
    w["eval"] = root / "eval2"
    assert main(["evaluate", "--pred", str(w["pred2"]), "--gt", str(w["gt2"]), "-o", str(w["eval"])]) == 0
    return w


# ------------------------------------------------------------------------------------------------ the corpus
# each builder gets the shared world and an empty folder of its own, sets up what it needs there and returns
# (argv, text the one-line message must hold)


def _predict(w, *args) -> list[str]:
    return ["predict", "-m", str(w["c2"]), "--no-progress", *[str(a) for a in args]]


def _predict3d(w, *args) -> list[str]:
    return ["predict", "-m", str(w["c3"]), "--no-progress", *[str(a) for a in args]]


def p_input_is_out_probs(w, d):  # predict -i RUN/probs -o RUN --probs: would write every probability over its input
    shutil.copytree(w["imgs"], d / "run" / "probs")
    return _predict(w, "-i", d / "run" / "probs", "-o", d / "run", "--probs"), "input folder"


def p_input_is_out_overlays(w, d):
    shutil.copytree(w["imgs"], d / "run" / "overlays")
    return _predict(w, "-i", d / "run" / "overlays", "-o", d / "run", "--overlay", "--overwrite"), "input folder"


def p_overlays_link_to_input(w, d):
    (d / "out").mkdir()
    (d / "out" / "overlays").symlink_to(w["imgs"], target_is_directory=True)
    return _predict(w, "-i", w["imgs"], "-o", d / "out", "--overlay"), "input folder"


def p_probs_link_to_input(w, d):
    (d / "out").mkdir()
    (d / "out" / "probs").symlink_to(w["imgs"], target_is_directory=True)
    return _predict(w, "-i", w["imgs"], "-o", d / "out", "--probs", "--overwrite"), "input folder"


def p_out_link_to_input(w, d):
    (d / "out").symlink_to(w["imgs"], target_is_directory=True)
    return _predict(w, "-i", w["imgs"], "-o", d / "out", "--overwrite"), "input folder"


def p_out_is_input_file_folder(w, d):
    return _predict(w, "-i", w["imgs"] / "case00.png", "-o", w["imgs"]), "input folder"


def p_out_inside_input(w, d):
    return _predict(w, "-i", w["imgs"], "-o", w["imgs"] / "sub"), "input folder"


def p_out_is_mask_folder(w, d):
    masks = _write(d / "masks", {f"case0{i}_mask.png": _png(_mask(i)) for i in range(4)})
    return _predict(w, "-i", w["imgs"], "-o", masks, "--mask", masks), "input folder"


def p_out_file_links_to_input(w, d):  # with --overwrite: the link's target is an input image
    (d / "out").mkdir()
    (d / "out" / "case00.png").symlink_to(w["imgs"] / "case00.png")
    return _predict(w, "-i", w["imgs"], "-o", d / "out", "--overwrite"), "would replace the input"


def p_stale_probs(w, d):  # a probability map of an earlier run, no label map: replaced only with --overwrite
    _write(d / "out" / "probs", {"case02.png": b"user's file"})
    return _predict(w, "-i", w["imgs"], "-o", d / "out", "--probs"), "probs/case02.png: output already exists"


def p_stale_overlay(w, d):
    _write(d / "out" / "overlays", {"case01.png": b"user's file"})
    return _predict(w, "-i", w["imgs"], "-o", d / "out", "--overlay"), "overlays/case01.png: output already exists"


def p_dangling_link_output(w, d):  # a link where an output goes (even a dangling one) needs --overwrite
    (d / "out").mkdir()
    (d / "out" / "case03.png").symlink_to(d / "nowhere.png")
    return _predict(w, "-i", w["imgs"], "-o", d / "out"), "case03.png: output already exists"


def p_out_is_file(w, d):
    _write(d, {"out": b"a file"})
    return _predict(w, "-i", w["imgs"], "-o", d / "out"), "not a folder"


def p_lock_symlink(w, d):  # the lock must never truncate a user's file through a link
    _write(d, {"precious.txt": b"user data"})
    (d / "out").mkdir()
    (d / "out" / LOCK_NAME).symlink_to(d / "precious.txt")
    return _predict(w, "-i", w["imgs"], "-o", d / "out"), "symbolic link"


def p_lock_dangling_symlink(w, d):  # nor create a file where a dangling link points
    (d / "out").mkdir()
    (d / "out" / LOCK_NAME).symlink_to(d / "created-through-link.txt")
    return _predict(w, "-i", w["imgs"], "-o", d / "out"), "symbolic link"


def p_lock_hardlink(w, d):
    _write(d, {"precious.txt": b""})  # empty, as a released lock is: only the link count tells
    (d / "out").mkdir()
    os.link(d / "precious.txt", d / "out" / LOCK_NAME)
    return _predict(w, "-i", w["imgs"], "-o", d / "out"), "hard links"


def p_lock_user_file(w, d):
    _write(d / "out", {LOCK_NAME: b"my notes, not a lock\n"})
    return _predict(w, "-i", w["imgs"], "-o", d / "out"), "other content"


def p_lock_fifo(w, d):  # must not wait on it
    (d / "out").mkdir()
    os.mkfifo(d / "out" / LOCK_NAME)
    return _predict(w, "-i", w["imgs"], "-o", d / "out"), "not a regular file"


_HELD: dict[str, RunLock] = {}


def _held(folder: Path) -> Path:
    if str(folder) not in _HELD:
        _HELD[str(folder)] = RunLock(folder).acquire()  # flock: a second open file description conflicts
    return folder


def p_locked(w, d):  # a second writer into one folder (another predict, a training) is refused
    return _predict(w, "-i", w["imgs"], "-o", _held(d / "out")), f"pid {os.getpid()}"


def p3_overlays_link_to_input(w, d):
    (d / "out").mkdir()
    (d / "out" / "overlays").symlink_to(w["vols"], target_is_directory=True)
    return _predict3d(w, "-i", w["vols"], "-o", d / "out", "--overlay"), "input folder"


def p3_stale_probs(w, d):
    _write(d / "out", {"v2.npz": b"user's file"})
    return _predict3d(w, "-i", w["vols"], "-o", d / "out", "--probs"), "v2.npz: output already exists"


def p3_mask(w, d):
    return _predict3d(w, "-i", w["vols"], "-o", d / "out", "--mask", w["gt2"]), "--mask"


def p3_out_inside_input(w, d):
    return _predict3d(w, "-i", w["vols"] / "v1.nii.gz", "-o", w["vols"] / "preds"), "input folder"


# ---- shipped models: names resolve only to the shipped file; its SHA-256 is checked however it is named

@pytest.fixture
def shipped(world, tmp_path, monkeypatch):
    """A shipped model ``tiny_shipped`` (manifest and weights folder of this test) and a folder of that name in the
    working folder holding another model."""
    from mambaseg import resources

    weights = tmp_path / "weights"
    weights.mkdir()
    f = _ckpt2d(weights / "tiny_shipped.pt")
    manifest = tmp_path / "shipped_models.json"
    manifest.write_text(json.dumps({"models": {"tiny_shipped": {"file": f.name, "sha256": sha256_file(f),
                                                                "size": f.stat().st_size, "description": "t"}}}))
    monkeypatch.setattr(resources, "MANIFEST", manifest)
    monkeypatch.setenv(resources.WEIGHTS_ENV, str(weights))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    torch.manual_seed(1)
    other = build_model("unet_tiny", in_channels=3, out_channels=1)
    save_checkpoint({"model_name": "unet_tiny", "model_kwargs": {"in_channels": 3, "out_channels": 1},
                     "state_dict": other.state_dict(), "config": {"data": {"patch_size": [32, 32]}},
                     "data": {"spatial_dims": 2}}, cwd / "tiny_shipped" / "checkpoint_best.pt")
    monkeypatch.chdir(cwd)
    return f


def _flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_shipped_name_never_loads_a_same_named_folder(world, shipped, tmp_path, caplog):
    out = tmp_path / "out"
    assert main(["predict", "-m", "tiny_shipped", "-i", str(world["imgs"]), "-o", str(out), "--no-progress"]) == 0
    model = json.loads((out / "predict_provenance.json").read_text())["model"]
    assert model["checkpoint"] == str(shipped.resolve()) and model["shipped_model"] == "tiny_shipped"
    assert model["checkpoint_sha256"] == sha256_file(shipped)
    assert "./tiny_shipped" in caplog.text  # says how to use the folder instead
    out2 = tmp_path / "out2"  # the folder, given as a path
    assert main(["predict", "-m", "./tiny_shipped", "-i", str(world["imgs"]), "-o", str(out2), "--no-progress"]) == 0
    model2 = json.loads((out2 / "predict_provenance.json").read_text())["model"]
    assert model2["shipped_model"] is None and model2["checkpoint_sha256"] != model["checkpoint_sha256"]


@pytest.mark.parametrize("how", ["name", "path", "link", "export"])
def test_damaged_shipped_weights_refused_however_named(world, shipped, tmp_path, capsys, how):
    _flip_bit(shipped)
    (tmp_path / "link.pt").symlink_to(shipped)
    before = _snapshot(tmp_path)
    model = {"name": "tiny_shipped", "path": str(shipped), "link": str(tmp_path / "link.pt"),
             "export": "tiny_shipped"}[how]
    argv = ["export", "-m", model, "--bundle", str(tmp_path / "b")] if how == "export" else \
        ["predict", "-m", model, "-i", str(world["imgs"]), "-o", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and "SHA-256" in err[0] and "tiny_shipped.pt" in err[0], err
    assert _snapshot(tmp_path) == before  # nothing written


# ------------------------------------------------------------------------------------------------ evaluate

def _eval(pred, gt, out, *args) -> list[str]:
    return ["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(out), *[str(a) for a in args]]


def e_extra_prediction_prefix(w, d):  # case00_old would be scored against case00 by its prefix
    pred = shutil.copytree(w["pred2"], d / "pred")
    (pred / "case00_old.png").write_bytes(_png(np.zeros((32, 36), np.uint8)))
    return _eval(pred, w["gt2"], d / "ev"), "case00_old.png: extra prediction"


def e_prediction_without_reference(w, d):
    pred = shutil.copytree(w["pred2"], d / "pred")
    (pred / "case77.png").write_bytes(_png(_mask(0)))
    return _eval(pred, w["gt2"], d / "ev"), "case77.png"


def e_two_fallbacks_one_reference(w, d):  # DRIVE-style key pairing only when it is unambiguous
    gt = _write(d / "gt", {"01_manual1.png": _png(_mask(0))})
    pred = _write(d / "pred", {"01_test.png": _png(_mask(0)), "01_retest.png": _png(_mask(1))})
    return _eval(pred, gt, d / "ev"), "extra prediction"


def e_duplicate_prediction_id(w, d):
    pred = shutil.copytree(w["pred2"], d / "pred")
    Image.fromarray(_mask(1)).save(pred / "case01.tif")
    return _eval(pred, w["gt2"], d / "ev"), "'case01'"


def e_duplicate_reference_id(w, d):
    gt = shutil.copytree(w["gt2"], d / "gt")
    Image.fromarray(_mask(2)).save(gt / "case02.bmp")
    return _eval(w["pred2"], gt, d / "ev"), "'case02'"


def e3_duplicate_prediction_id(w, d):
    pred = shutil.copytree(w["pred3"], d / "pred")
    nib.save(nib.Nifti1Image(_label3d(1), np.eye(4)), pred / "v1.nii")
    return _eval(pred, w["gt3"], d / "ev"), "'v1'"


def e3_extra_prediction(w, d):
    pred = shutil.copytree(w["pred3"], d / "pred")
    (pred / "v9.nii.gz").write_bytes(_nifti(_label3d(0)))
    return _eval(pred, w["gt3"], d / "ev"), "--ignore-extra"


def e_regions_on_2d(w, d):
    return _eval(w["pred2"], w["gt2"], d / "ev", "--regions", "brats"), "--regions"


def e_empty_policy_on_2d(w, d):
    return _eval(w["pred2"], w["gt2"], d / "ev", "--empty-policy", "nan"), "--empty-policy"


def e3_mask(w, d):
    return _eval(w["pred3"], w["gt3"], d / "ev", "--mask", w["gt2"]), "--mask"


def e3_threshold(w, d):
    return _eval(w["pred3"], w["gt3"], d / "ev", "--threshold", "0.3"), "--threshold"


def e_out_inside_references(w, d):
    gt = shutil.copytree(w["gt2"], d / "gt")
    return _eval(w["pred2"], gt, gt / "eval"), "input folder"


def e_out_link_to_references(w, d):
    gt = shutil.copytree(w["gt2"], d / "gt")
    (d / "ev").symlink_to(gt, target_is_directory=True)
    return _eval(w["pred2"], gt, d / "ev"), "input folder"


def e_summary_links_to_reference(w, d):  # with --overwrite: the link's target is a reference
    gt = shutil.copytree(w["gt2"], d / "gt")
    (d / "ev").mkdir()
    (d / "ev" / "summary.json").symlink_to(gt / "case01.png")
    return _eval(w["pred2"], gt, d / "ev", "--overwrite"), "would replace the input"


def e_stale_metrics_only(w, d):
    _write(d / "ev", {"metrics.csv": b"user's table"})
    return _eval(w["pred2"], w["gt2"], d / "ev"), "metrics.csv: output already exists"


def e_lock_symlink(w, d):
    _write(d, {"precious.txt": b"user data"})
    (d / "ev").mkdir()
    (d / "ev" / LOCK_NAME).symlink_to(d / "precious.txt")
    return _eval(w["pred2"], w["gt2"], d / "ev"), "symbolic link"


def e_locked(w, d):
    return _eval(w["pred2"], w["gt2"], _held(d / "ev")), f"pid {os.getpid()}"


# ------------------------------------------------------------------------------------------------ train

def _task(d: Path, edit=None) -> Path:
    """A 2-case MSD phantom task in ``d/task`` (its dataset.json edited by ``edit``) and its config file."""
    from mambaseg.data.synthetic import write_phantom_msd

    data = write_phantom_msd(d / "task", n_cases=2, shape=(12, 12, 12))
    if edit is not None:
        ds = json.loads((data / "dataset.json").read_text())
        edit(ds)
        (data / "dataset.json").write_text(json.dumps(ds))
    cfg = d / "c.yaml"
    cfg.write_text(tiny_3d_yaml(data, "data.patch_size=[8, 8, 8]", "data.val_fraction=0.0"))
    return cfg


def t_out_is_data_root(w, d):
    return ["train", str(_task(d)), "--out", str(d / "task")], "input folder"


def t_out_inside_data_root(w, d):
    return ["train", str(_task(d)), "--out", str(d / "task" / "runs" / "r1")], "input folder"


def t_out_link_to_data_root(w, d):
    cfg = _task(d)
    (d / "run").symlink_to(d / "task", target_is_directory=True)
    return ["train", str(cfg), "--out", str(d / "run")], "input folder"


def t_entry_escapes_dataset(w, d):
    def edit(ds):
        ds["training"][0]["image"] = "../outside/" + ds["training"][0]["image"].split("/")[-1]

    cfg = _task(d, edit)
    _write(d / "outside", {n.name: n.read_bytes() for n in (d / "task" / "imagesTr").iterdir()})
    return ["train", str(cfg), "--out", str(d / "run")], "outside the dataset folder"


def t_entry_absolute_outside(w, d):
    def edit(ds):
        ds["training"][1]["label"] = str(d / "elsewhere.nii.gz")

    cfg = _task(d, edit)
    _write(d, {"elsewhere.nii.gz": min((d / "task" / "labelsTr").iterdir()).read_bytes()})
    return ["train", str(cfg), "--out", str(d / "run")], "outside the dataset folder"


def t_entry_not_a_path(w, d):
    def edit(ds):
        ds["training"][0]["image"] = 7

    return ["train", str(_task(d, edit)), "--out", str(d / "run")], "not a file path"


def t_duplicate_case_id(w, d):
    def edit(ds):
        ds["training"][1] = dict(ds["training"][0])

    return ["train", str(_task(d, edit)), "--out", str(d / "run")], "twice"


def t_lock_symlink(w, d):
    cfg = _task(d)
    _write(d, {"precious.txt": b"user data"})
    (d / "run").mkdir()
    (d / "run" / LOCK_NAME).symlink_to(d / "precious.txt")
    return ["train", str(cfg), "--out", str(d / "run")], "symbolic link"


# ------------------------------------------------------------------------------------------------ export

def x_onnx_links_to_checkpoint(w, d):  # with --overwrite: the link's target is the model itself
    (d / "m.onnx").symlink_to(w["c2"])
    return ["export", "-m", str(w["c2"]), "--onnx", str(d / "m.onnx"), "--overwrite"], "would replace the input"


def x_onnx_exists(w, d):
    _write(d, {"m.onnx": b"user's file"})
    return ["export", "-m", str(w["c2"]), "--onnx", str(d / "m.onnx")], "already exists"


def x_bundle_not_a_bundle(w, d):
    _write(d / "b", {"notes.txt": b"user's notes"})
    return ["export", "-m", str(w["c2"]), "--bundle", str(d / "b"), "--overwrite"], "not empty"


def x_bundle_is_file(w, d):
    _write(d, {"b": b"a file"})
    return ["export", "-m", str(w["c2"]), "--bundle", str(d / "b"), "--overwrite"], "not a folder"


def _bundle(w, d) -> Path:
    b = d / "b"
    assert main(["export", "-m", str(w["c2"]), "--bundle", str(b)]) == 0
    return b


def x_bundle_subfolder_links_out(w, d):  # B/models linked to the user's folder: nothing written through it
    b = _bundle(w, d)
    _write(d / "mine", {"model.pt": b"user's model"})
    shutil.rmtree(b / "models")
    (b / "models").symlink_to(d / "mine", target_is_directory=True)
    return ["export", "-m", str(w["c2"]), "--bundle", str(b), "--overwrite"], "outside the bundle folder"


def x_bundle_manifest_escapes(w, d):  # a tampered list of written files: never used to delete outside the bundle
    b = _bundle(w, d)
    _write(d, {"victim.txt": b"user data"})
    man = b / ".mambaseg_bundle.json"
    man.write_text(json.dumps({"files": ["LICENSE", "../victim.txt"]}))
    return ["export", "-m", str(w["c2"]), "--bundle", str(b), "--overwrite"], ".mambaseg_bundle.json"


def x_bundle_lock_symlink(w, d):
    b = _bundle(w, d)
    _write(d, {"precious.txt": b"user data"})
    (b / LOCK_NAME).symlink_to(d / "precious.txt")
    return ["export", "-m", str(w["c2"]), "--bundle", str(b), "--overwrite"], "symbolic link"


# ------------------------------------------------------------------------------------------------ report

def r_out_is_run_file(w, d):  # -o naming one of the evaluation's own files
    ev = shutil.copytree(w["eval"], d / "ev")
    return ["report", str(ev), "-o", str(ev / "summary.json")], "not a mambaseg report"


def r_out_is_user_page(w, d):
    _write(d, {"index.html": b"<html>my page</html>"})
    return ["report", str(w["eval"]), "-o", str(d / "index.html")], "not a mambaseg report"


def r_out_is_link(w, d):
    _write(d, {"precious.txt": b"user data"})
    (d / "r.html").symlink_to(d / "precious.txt")
    return ["report", str(w["eval"]), "-o", str(d / "r.html")], "symbolic link"


def r_out_is_folder(w, d):
    (d / "r.html").mkdir()
    return ["report", str(w["eval"]), "-o", str(d / "r.html")], "a folder"


CASES = {f.__name__: f for f in (
    p_input_is_out_probs, p_input_is_out_overlays, p_overlays_link_to_input, p_probs_link_to_input,
    p_out_link_to_input, p_out_is_input_file_folder, p_out_inside_input, p_out_is_mask_folder,
    p_out_file_links_to_input, p_stale_probs, p_stale_overlay, p_dangling_link_output, p_out_is_file, p_lock_symlink,
    p_lock_dangling_symlink, p_lock_hardlink, p_lock_user_file, p_lock_fifo, p_locked, p3_overlays_link_to_input,
    p3_stale_probs, p3_mask, p3_out_inside_input,
    e_extra_prediction_prefix, e_prediction_without_reference, e_two_fallbacks_one_reference,
    e_duplicate_prediction_id, e_duplicate_reference_id, e3_duplicate_prediction_id, e3_extra_prediction,
    e_regions_on_2d, e_empty_policy_on_2d, e3_mask, e3_threshold, e_out_inside_references, e_out_link_to_references,
    e_summary_links_to_reference, e_stale_metrics_only, e_lock_symlink, e_locked,
    t_out_is_data_root, t_out_inside_data_root, t_out_link_to_data_root, t_entry_escapes_dataset,
    t_entry_absolute_outside, t_entry_not_a_path, t_duplicate_case_id, t_lock_symlink,
    x_onnx_links_to_checkpoint, x_onnx_exists, x_bundle_not_a_bundle, x_bundle_is_file, x_bundle_subfolder_links_out,
    x_bundle_manifest_escapes, x_bundle_lock_symlink,
    r_out_is_run_file, r_out_is_user_page, r_out_is_link, r_out_is_folder,
)}


def _snapshot(folder: Path) -> dict:
    """Every entry under ``folder`` (links not followed): file bytes, link targets, other kinds by name."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                out[p] = ("link", os.readlink(p))
            elif p.is_file():
                out[p] = p.read_bytes()
            elif not p.is_dir():
                out[p] = "special"
    return out


def count_cases() -> dict[str, int]:
    """Cases per command in this file (reported in issue 24's closing note)."""
    names = {"p": "predict", "e": "evaluate", "t": "train", "x": "export", "r": "report"}
    counts: dict[str, int] = {}
    for name in CASES:
        cmd = names[name.split("_")[0].rstrip("3")]
        counts[cmd] = counts.get(cmd, 0) + 1
    counts["predict"] += 1 + 3  # the shipped-name and damaged-weights tests below (by name, path, link)
    counts["export"] += 1  # damaged shipped weights given to export
    return counts


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_fails_cleanly(world, tmp_path, capsys, name):
    d = tmp_path / "case"
    d.mkdir()
    argv, needle = CASES[name](world, d)
    capsys.readouterr()
    before_world, before = _snapshot(world["root"]), _snapshot(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip() and not x.startswith("WARNING")]
    assert code == 2 and "Traceback" not in err and len(lines) == 1 and needle in lines[0], (code, err)
    after = _snapshot(tmp_path)
    assert {p: v for p, v in after.items() if p in before} == before  # every input byte-identical, links intact
    new = sorted(str(p.relative_to(tmp_path)) for p in set(after) - set(before))
    allowed = {LOCK_NAME} | ({"train.log"} if argv[0] == "train" else set())
    assert all(Path(p).name in allowed for p in new), new  # no misleading output left behind
    assert _snapshot(world["root"]) == before_world


def test_corpus_counts():
    counts = count_cases()
    assert set(counts) == {"predict", "evaluate", "train", "export", "report"} and min(counts.values()) >= 4, counts


# ------------------------------------------------------------------------------------------------ valid input

def test_ignore_extra_and_exact_pairing(world, tmp_path, capsys):
    """--ignore-extra scores the 4 references once each (Dice 1), lists the extra; exact pairing first."""
    pred = shutil.copytree(world["pred2"], tmp_path / "pred")
    (pred / "case00_old.png").write_bytes(_png(np.zeros((32, 36), np.uint8)))
    assert main(_eval(pred, world["gt2"], tmp_path / "ev", "--ignore-extra")) == 0
    s = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert s["n_cases"] == 4 and s["mean_2d"]["dice"] == pytest.approx(1.0)  # identical masks: exactly 1
    assert [Path(p).name for p in s["extra_predictions"]] == ["case00_old.png"]
    assert {Path(r["prediction_file"]).name for r in s["metric_per_case"]} == {f"case0{i}.png" for i in range(4)}


def test_drive_key_pairing_still_works(tmp_path):
    gt = _write(tmp_path / "gt", {"01_manual1.png": _png(_mask(0)), "02_manual1.png": _png(_mask(1))})
    pred = _write(tmp_path / "pred", {"01_test.png": _png(_mask(0)), "02_test.png": _png(_mask(1))})
    assert main(_eval(pred, gt, pred)) == 0  # nnU-Net's habit: the summary next to the predictions
    s = json.loads((pred / "summary.json").read_text())
    assert s["n_cases"] == 2 and s["mean_2d"]["dice"] == pytest.approx(1.0)


def test_bundle_overwrite_keeps_user_files(world, tmp_path):
    b = _bundle(world, tmp_path)
    _write(b, {"data/img.nii.gz": b"user data", "eval/summary.json": b"{}", "docs/notes.md": b"mine"})
    listed = json.loads((b / ".mambaseg_bundle.json").read_text())["files"]
    assert "models/model.pt" in listed and "data/img.nii.gz" not in listed
    assert main(["export", "-m", str(world["c2"]), "--bundle", str(b), "--overwrite"]) == 0
    assert (b / "data" / "img.nii.gz").read_bytes() == b"user data" and (b / "eval" / "summary.json").is_file()
    assert (b / "docs" / "notes.md").read_bytes() == b"mine" and (b / "models" / "model.pt").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_report_replaces_its_own_report(world, tmp_path):
    ev = shutil.copytree(world["eval"], tmp_path / "ev")
    assert main(["report", str(ev)]) == 0
    first = (ev / "report.html").stat().st_mtime_ns
    assert main(["report", str(ev)]) == 0 and (ev / "report.html").stat().st_mtime_ns >= first


def test_lock_file_is_reused_after_release(tmp_path):
    with RunLock(tmp_path / "f") as lock:
        assert lock.held and (tmp_path / "f" / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    with RunLock(tmp_path / "f") as lock:  # the released (empty) lock file of an earlier run is ours to take
        assert lock.held
    assert (tmp_path / "f" / LOCK_NAME).read_text() == ""
