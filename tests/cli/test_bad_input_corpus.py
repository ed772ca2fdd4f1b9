"""The bad-input corpus: for each kind of bad input, `train`, `predict` or `evaluate` exits != 0 with ONE line
naming the file and the problem, no traceback, and every input and existing output byte-identical afterwards."""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mambaseg.cli import main
from mambaseg.data.synthetic import write_synthetic_drive
from tests.conftest import tiny_3d_yaml

CFG2D = """
seed: 0
model: {name: unet_tiny}
data: {layout: drive, root: "%s", val_fraction: 0.25, patch_size: [32, 32], fov: true, augment: none}
train: {epochs: 1, iters_per_epoch: 1, batch_size: 2, val_every: 1}
infer: {patch_size: [48, 48]}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus ü")  # space and non-ASCII in every path
    data = write_synthetic_drive(root / "drive", n_train=3, n_test=2, size=(48, 52), seed=9)
    cfg = root / "ok.yaml"
    cfg.write_text(CFG2D % data)
    run = root / "run"
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0
    pred = root / "pred"
    assert main(["predict", "-m", str(run), "-i", str(data / "test" / "images"), "-o", str(pred), "--probs",
                 "--no-progress"]) == 0
    return root, data, run, pred


def _png_bytes(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _img_dir(root: Path, name: str, files: dict[str, bytes]) -> Path:
    d = root / "bad" / name
    d.mkdir(parents=True, exist_ok=True)
    for fname, content in files.items():
        (d / fname).write_bytes(content)
    return d


def _nifti_bytes(arr, affine=None) -> bytes:
    affine = np.eye(4) if affine is None else affine
    img = nib.Nifti1Image(arr, affine)
    return gzip.compress(img.to_bytes())


def corpus(root: Path, data: Path, run: Path, pred: Path):
    """(kind, argv, text expected in the message)."""
    good_tif = (data / "test" / "images" / "01_test.tif").read_bytes()
    rgb = np.zeros((40, 40, 3), np.uint8)
    out = root / "outs"
    p = ["predict", "-m", str(run), "-o"]
    cases = [
        ("truncated PNG", p + [str(out / "a"), "-i", str(_img_dir(root, "tpng", {"x.png": _png_bytes(rgb)[:60]}))],
         "x.png"),
        ("truncated TIF", p + [str(out / "b"), "-i", str(_img_dir(root, "ttif", {"x.tif": good_tif[:300]}))], "x.tif"),
        ("corrupt GIF", p + [str(out / "c"), "-i", str(_img_dir(root, "cgif", {"x.gif": b"GIF89a" + b"\x00" * 40}))],
         "x.gif"),
        ("zero-byte PNG", p + [str(out / "d"), "-i", str(_img_dir(root, "zpng", {"x.png": b""}))], "x.png"),
        ("text named .tif", p + [str(out / "e"), "-i", str(_img_dir(root, "txt", {"x.tif": b"hello world"}))],
         "x.tif"),
        ("wrong channel count", p + [str(out / "f"), "-i",
                                     str(_img_dir(root, "grey", {"g.png": _png_bytes(rgb[..., 0])}))], "channel"),
        ("NaN image (NIfTI)", p + [str(out / "g"), "-i", str(_img_dir(root, "nan", {
            "n.nii.gz": _nifti_bytes(np.full((20, 20, 3), np.nan, np.float32))}))], "n.nii.gz"),
        ("Inf image (NIfTI)", p + [str(out / "h"), "-i", str(_img_dir(root, "inf", {
            "i.nii.gz": _nifti_bytes(np.full((20, 20, 3), np.inf, np.float32))}))], "i.nii.gz"),
        ("3D volume to 2D model", p + [str(out / "i"), "-i", str(_img_dir(root, "vol", {
            "v.nii.gz": _nifti_bytes(np.zeros((8, 9, 10), np.float32))}))], "v.nii.gz"),
        ("empty input folder", p + [str(out / "j"), "-i", str(_img_dir(root, "empty", {}))], "no input files"),
        ("missing input", p + [str(out / "k"), "-i", str(root / "does-not-exist")], "does-not-exist"),
        ("output is the input folder", p + [str(data / "test" / "images"), "-i", str(data / "test" / "images")],
         "input folder"),
        ("existing output", p + [str(pred), "-i", str(data / "test" / "images")], "already exists"),
        ("missing mask", p + [str(out / "l"), "-i", str(data / "test" / "images"), "--mask",
                              str(_img_dir(root, "nomask", {"99_test_mask.gif": b""}))], "01_test"),
        ("truncated checkpoint", ["predict", "-m", str(_img_dir(root, "ck", {
            "c.pt": (run / "checkpoint_best.pt").read_bytes()[:1000]}) / "c.pt"), "-o", str(out / "m"), "-i",
            str(data / "test" / "images")], "c.pt"),
        ("evaluate: empty prediction folder", ["evaluate", "--pred", str(_img_dir(root, "empty2", {})), "--gt",
                                               str(data / "test"), "-o", str(out / "n")], "no files"),
        ("evaluate: size mismatch", ["evaluate", "--pred", str(_img_dir(root, "small", {
            "01_test.png": _png_bytes(np.zeros((10, 10), np.uint8))})), "--gt", str(data / "test"), "-o",
            str(out / "o"), "--allow-missing"], "01_test.png"),  # one of two cases: the size error, not the missing one
        ("evaluate: missing predictions", ["evaluate", "--pred", str(_img_dir(root, "missing", {
            "01_test.png": _png_bytes(np.zeros((48, 52), np.uint8))})), "--gt", str(data / "test"), "-o",
            str(out / "m")], "1 of 2 references have no prediction"),
        ("evaluate: no matching reference", ["evaluate", "--pred", str(_img_dir(root, "nomatch", {
            "77_test.png": _png_bytes(np.zeros((48, 52), np.uint8))})), "--gt", str(data / "test"), "-o",
            str(out / "p")], "77_test.png"),
        ("evaluate: existing output", ["evaluate", "--pred", str(pred), "--gt", str(data / "test"), "-o",
                                       str(root / "existing_eval")], "already exists"),
        ("train: bad YAML", ["train", str(_img_dir(root, "yaml", {"c.yaml": b"train: [1,\n"}) / "c.yaml")],
         "c.yaml"),
        ("train: unknown key", ["train", str(_img_dir(root, "yaml2", {"c.yaml": b"train: {epoch: 3}\n"}) / "c.yaml")],
         "train.epoch"),
        ("train: existing run", ["train", str(root / "ok.yaml"), "--out", str(run)], "--resume"),
        ("train: missing data root", ["train", str(_img_dir(root, "yaml3", {
            "c.yaml": (CFG2D % (root / "nowhere")).encode()}) / "c.yaml"), "--out", str(out / "q")], "nowhere"),
    ]
    cases += _corpus_14(root, data, out)
    return cases


_HELD_LOCKS: dict[str, object] = {}  # run-folder locks held for the whole test session (by this process)

def _corpus_14(root: Path, data: Path, out: Path):
    """Cases of issue 14: 3D training data (labels vs num_classes, dataset.json keys, pixdim 0), predict --continue
    with --overwrite, a locked run folder."""
    import json

    from mambaseg.data.synthetic import write_phantom_msd
    from mambaseg.utils.runlock import RunLock

    def task(name: str, num_classes: int = 3) -> tuple[Path, Path]:
        data = root / "bad" / name
        if not (data / "dataset.json").exists():
            write_phantom_msd(data, n_cases=2, shape=(12, 12, 12))
        cfg = data.parent / f"{name}.yaml"
        cfg.write_text(tiny_3d_yaml(data, "data.patch_size=[8, 8, 8]", "data.val_fraction=0.0",
                                    f"data.num_classes={num_classes}"))
        return data, cfg

    _, c_cls = task("labels3d", num_classes=2)  # phantom labels are 0, 1, 2
    d_key, c_key = task("dsjson_key")
    ds = json.loads((d_key / "dataset.json").read_text())
    ds["modality"] = {"zero": "MRI"}
    (d_key / "dataset.json").write_text(json.dumps(ds))
    d_lab, c_lab = task("dsjson_label")
    ds = json.loads((d_lab / "dataset.json").read_text())
    ds["labels"] = {"0": "background", "one": "Anterior"}
    (d_lab / "dataset.json").write_text(json.dumps(ds))
    d_pix, c_pix = task("pixdim0")
    img = min((d_pix / "imagesTr").glob("*.nii.gz"))
    raw = gzip.decompress(img.read_bytes())
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(raw), check=False)
    if hdr["pixdim"][1] != 0:
        hdr["pixdim"][1] = 0.0
        img.write_bytes(gzip.compress(hdr.binaryblock + raw[len(hdr.binaryblock):]))
    locked = root / "bad" / "locked_run"
    if str(locked) not in _HELD_LOCKS:
        _HELD_LOCKS[str(locked)] = RunLock(locked).acquire()
    t = ["train", "--out"]
    return [
        ("train 3D: labels >= num_classes", ["train", str(c_cls), "--out", str(out / "r1")], "num_classes=2"),
        ("train 3D: dataset.json modality key", ["train", str(c_key), "--out", str(out / "r2")], "'zero'"),
        ("train 3D: dataset.json label key", ["train", str(c_lab), "--out", str(out / "r3")], "'one'"),
        ("train 3D: pixdim 0", ["train", str(c_pix), "--out", str(out / "r4")], img.name),
        ("predict: --continue with --overwrite",
         ["predict", "-m", str(root / "run"), "-i", str(data / "test" / "images"), "-o", str(out / "r5"), "--continue",
          "--overwrite"],
         "exclude each other"),
        ("train: run folder locked", t + [str(locked), str(root / "ok.yaml")], f"pid {os.getpid()}"),
    ]


def snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_corpus_has_at_least_20_kinds(world):
    assert len(corpus(*world)) >= 20


def test_every_bad_input_fails_cleanly(world, capsys):
    root, data, run, pred = world
    ev = root / "existing_eval"
    assert main(["evaluate", "--pred", str(pred), "--gt", str(data / "test"), "-o", str(ev)]) == 0
    capsys.readouterr()
    cases = corpus(root, data, run, pred)
    before = snapshot(root)
    failures = []
    for kind, argv, needle in cases:
        code = main(argv)
        err = capsys.readouterr().err.strip()
        lines = [x for x in err.splitlines() if x.strip()]
        if code == 0 or "Traceback" in err or len(lines) != 1 or needle not in lines[0]:
            failures.append(f"{kind}: exit {code}, stderr {err!r}")
    assert not failures, "\n".join(failures)
    after = snapshot(root)
    changed = [str(p) for p in before if before[p] != after.get(p)]
    assert not changed, changed  # inputs and existing outputs byte-identical
