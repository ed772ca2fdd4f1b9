"""Camera-shift robustness on the DRIVE *validation* images (issue 12): how a fundus model holds up on photos that
look as if another camera had taken them, measured without touching the test set.

The validation images of a run (``data.val_ids`` in its checkpoint; never trained on) are written again under
deterministic changes that mimic other fundus cameras: no FOV mask given (estimated from the photo), a larger
sensor (x1.6) and a smaller one (x0.75), a darker gamma, a colour cast, optical blur, uneven illumination, and all
of these at once. Each model predicts every condition with ``mambaseg predict`` *without* ``--mask`` (except the
``original`` condition, which uses the DRIVE masks as the in-domain reference), and ``mambaseg evaluate`` scores the
masks inside the true (identically transformed) field of view. Labels and masks are resized with nearest neighbour.

Usage:
    python benchmarks/fundus_shift_val.py --out benchmarks/results/drive_recipe/shift_val RUN [RUN ...] [--work DIR]
(``RUN``: a run folder or checkpoint; the first run's validation ids are used and every run must have the same.)
Writes ``shift_val.json`` (per run and condition: mean Dice/precision/recall over the validation images) and prints
a table. The transformed images, predictions and per-case evaluations live in ``--work`` (default
``runs/fundus_shift``, regenerated each time; derived from ../shared/data, so never inside the repository's results).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

CONDITIONS = ("original", "no_mask", "scale_1.6", "scale_0.75", "gamma_dark", "colour_cast", "blur",
              "uneven_light", "combined")


def _resize(arr: np.ndarray, factor: float, order: int) -> np.ndarray:
    """Zoom the two spatial axes of (H, W) or (H, W, C) by ``factor`` (order 3 images, 0 labels/masks)."""
    zoom = (factor, factor) + (1,) * (arr.ndim - 2)
    out = ndimage.zoom(arr.astype(np.float32), zoom, order=order, mode="nearest", grid_mode=True)
    return out


def _illumination(h: int, w: int) -> np.ndarray:
    """A smooth multiplicative field from 0.45 (lower left) to 1.15 (upper right): uneven lighting."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xx / max(w - 1, 1) + (1 - yy / max(h - 1, 1))) / 2
    return 0.45 + 0.7 * t


def transform(cond: str, img: np.ndarray, lab: np.ndarray, fov: np.ndarray):
    """Apply one condition to an RGB uint8 image (H, W, 3), a label (H, W) and a FOV mask (H, W)."""
    x = img.astype(np.float32) / 255.0
    lab = lab.astype(np.float32)
    fov = fov.astype(np.float32)
    if cond in ("scale_1.6", "scale_0.75", "combined"):
        f = {"scale_1.6": 1.6, "scale_0.75": 0.75, "combined": 1.3}[cond]
        x = np.clip(_resize(x, f, 3), 0, 1)
        lab, fov = _resize(lab, f, 0), _resize(fov, f, 0)
    if cond in ("gamma_dark", "combined"):
        x = 0.75 * x ** 1.6
    if cond in ("colour_cast", "combined"):
        x = x * np.array([1.15, 0.8, 1.35], dtype=np.float32)
    if cond in ("blur", "combined"):
        x = ndimage.gaussian_filter(x, sigma=(1.5, 1.5, 0))
    if cond in ("uneven_light", "combined"):
        x = x * _illumination(*x.shape[:2])[..., None]
    x = np.clip(x, 0, 1) * (fov[..., None] > 0)  # the photo stays black outside its (transformed) FOV
    return (x * 255 + 0.5).astype(np.uint8), (lab > 127).astype(np.uint8) * 255, (fov > 127).astype(np.uint8) * 255


def write_condition(drive: Path, ids: list[str], cond: str, out: Path) -> Path:
    d = out / cond
    for sub in ("images", "1st_manual", "mask"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    src = drive / "training"
    for i in ids:
        img = np.asarray(Image.open(src / "images" / f"{i}_training.tif").convert("RGB"))
        lab = np.asarray(Image.open(src / "1st_manual" / f"{i}_manual1.gif").convert("L"))
        fov = np.asarray(Image.open(src / "mask" / f"{i}_training_mask.gif").convert("L"))
        im2, lab2, fov2 = transform(cond, img, lab, fov)
        Image.fromarray(im2).save(d / "images" / f"{i}_training.tif")
        Image.fromarray(lab2).save(d / "1st_manual" / f"{i}_manual1.gif")
        Image.fromarray(fov2).save(d / "mask" / f"{i}_training_mask.gif")
    return d


def _run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"fundus_shift_val: {' '.join(cmd)} failed:\n{r.stderr.strip()[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--drive", type=Path, default=Path(os.environ.get("MAMBASEG_DATA", "../shared/data")) / "DRIVE")
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--work", type=Path, default=Path("runs/fundus_shift"))
    a = ap.parse_args()
    import torch

    from mambaseg.engine.checkpoint import resolve_checkpoint_path

    ids = None
    for r in a.runs:
        ck = torch.load(resolve_checkpoint_path(r), map_location="cpu", weights_only=True)
        v = list(ck["data"]["val_ids"])
        if ids is not None and v != ids:
            sys.exit(f"fundus_shift_val: {r}: validation ids {v} differ from the first run's {ids}")
        ids = v
    conds = [c for c in a.conditions.split(",") if c]
    bad = sorted(set(conds) - set(CONDITIONS))
    if bad:
        sys.exit(f"fundus_shift_val: --conditions: unknown {bad}; expected some of {list(CONDITIONS)}")
    data = a.work / "data"
    if data.exists():
        shutil.rmtree(data)
    exe = str(Path(sys.executable).with_name("mambaseg"))
    res: dict = {"val_ids": ids, "conditions": conds, "runs": {}}
    for r in a.runs:
        name = r.name if r.is_dir() else r.stem
        res["runs"][name] = {"path": str(r)}
        for c in conds:
            d = data / c if (data / c).exists() else write_condition(a.drive, ids, c, data)
            pred = a.work / "pred" / name / c
            cmd = [exe, "predict", "-m", str(r), "-i", str(d / "images"), "-o", str(pred), "--overwrite",
                   "--no-progress"]
            if c == "original":
                cmd += ["--mask", str(d / "mask")]
            _run(cmd)
            ev = a.work / "eval" / name / c
            _run([exe, "evaluate", "--pred", str(pred), "--gt", str(d), "-o", str(ev), "--overwrite"])
            m = json.loads((ev / "summary.json").read_text())["mean_2d"]
            res["runs"][name][c] = {k: m[k] for k in ("dice", "precision", "recall")}
            print(f"{name:42s} {c:13s} dice {m['dice']:.4f} precision {m['precision']:.4f} "
                  f"recall {m['recall']:.4f}", flush=True)
    for rr in res["runs"].values():
        shifted = [rr[c]["dice"] for c in conds if c != "original"]
        rr["mean_dice_shifted"] = float(np.mean(shifted)) if shifted else None
    res["command"] = " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "shift_val.json").write_text(json.dumps(res, indent=1))
    print(f"wrote {a.out / 'shift_val.json'}")


if __name__ == "__main__":
    main()
