"""Best/worst-case figures for :mod:`mambaseg.report`: 2D image / ground truth / prediction / errors, and 3D
orthogonal slices through each structure, coloured with :func:`mambaseg.data.io.overlay_rgb` (TP green, FP red,
FN blue). Each returns a PNG data URI, or None when the files are missing or do not match."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data.io import SUPPORTED_2D, overlay_rgb, read_image, read_label, suffix_of
from .utils.optional import require

__all__ = ["overlay_2d", "overlay_3d"]


def _plt():
    matplotlib = require("matplotlib", purpose="mambaseg report (figures)")
    matplotlib.use("Agg")
    return require("matplotlib.pyplot", purpose="mambaseg report (figures)")


def _fig_uri(fig) -> str:
    """Render a matplotlib figure as a PNG data URI (and close it)."""
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    _plt().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _find_image_2d(case: str, ref: Path) -> Path | None:
    key = case.split("_")[0]
    for d in (ref.parent.parent / n for n in ("images", "image", "imagesTs", "imagesTr")):
        if d.is_dir():
            files = [f for f in sorted(d.iterdir()) if suffix_of(f) in SUPPORTED_2D]
            for f in files:
                stem = f.name[: -len(suffix_of(f))]
                if stem == case or stem.split("_")[0] == key:
                    return f
    return None


def overlay_2d(row: dict, title: str) -> str | None:
    pred_p, ref_p = Path(row.get("prediction", "")), Path(row.get("reference", ""))
    if not (pred_p.is_file() and ref_p.is_file()):
        return None
    pred = read_image(pred_p)[0][0]
    pred = pred > (127 if pred.max() > 1 else 0)
    ref = read_label(ref_p, num_classes=2)[0] > 0
    img_p = _find_image_2d(str(row.get("case", "")), ref_p)
    image = read_image(img_p)[0] if img_p is not None else None
    if image is None or image.shape[1:] != ref.shape or pred.shape != ref.shape:
        image = np.zeros((1,) + ref.shape, np.float32)
    if pred.shape != ref.shape:
        return None
    errors = overlay_rgb(image, pred, ref)
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.8))
    rgb = np.moveaxis(image, 0, -1)
    rgb = (rgb - rgb.min()) / max(float(np.ptp(rgb)), 1e-6)
    for ax, (im, name) in zip(axes, [(rgb if rgb.shape[-1] == 3 else rgb[..., 0], "image"), (ref, "ground truth"),
                                     (pred, "prediction"), (errors, "errors")]):
        ax.imshow(im, cmap="gray", interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(title)
    return _fig_uri(fig)


def _find_volume_image(case: str, ref: Path) -> Path | None:
    cands = []
    for d in (ref.parent.parent / "imagesTr", ref.parent.parent / "imagesTs", ref.parent.parent / "images"):
        cands += [d / f"{case}.nii.gz", d / f"{case}_0000.nii.gz", d / f"{case}.nii", d / f"{case}_0000.nii"]
    cands += sorted(ref.parent.glob(f"{case}*-t2f.nii.gz")) + sorted(ref.parent.glob(f"{case}*_flair.nii.gz"))
    return next((c for c in cands if c.is_file()), None)


def overlay_3d(case: dict, classes: dict, title: str) -> str | None:
    import nibabel as nib

    pred_p, ref_p = Path(case.get("prediction_file", "")), Path(case.get("reference_file", ""))
    if not (pred_p.is_file() and ref_p.is_file()):
        return None
    pred, ref = np.asarray(nib.load(pred_p).dataobj), np.asarray(nib.load(ref_p).dataobj)
    if pred.shape != ref.shape or pred.ndim != 3:
        return None
    img_p = _find_volume_image(str(case.get("case_id", "")), ref_p)
    image = np.asarray(nib.load(img_p).dataobj, dtype=np.float32) if img_p is not None else None
    if image is not None and image.ndim == 4:
        image = image[..., 0]
    if image is None or image.shape != ref.shape:
        image = np.zeros(ref.shape, np.float32)
    classes = classes or {str(v): [int(v)] for v in np.unique(ref) if v != 0}
    structures = []
    for name, labels in classes.items():
        p, r = np.isin(pred, labels), np.isin(ref, labels)
        pts = np.argwhere(r if r.any() else p)
        if len(pts):
            structures.append((name, p, r, [int(round(c)) for c in pts.mean(0)]))
    if not structures:
        return None
    plt = _plt()
    fig, axes = plt.subplots(len(structures), 3, figsize=(10, 3.2 * len(structures)), squeeze=False)
    for row, (name, p, r, ctr) in zip(axes, structures):
        for ax, axis in zip(row, range(3)):
            sl = [slice(None)] * 3
            sl[axis] = ctr[axis]
            ax.imshow(np.rot90(overlay_rgb(image[tuple(sl)], p[tuple(sl)], r[tuple(sl)])), interpolation="nearest")
            ax.set_title(f"{name}: axis {axis} = {ctr[axis]}", fontsize=9)
            ax.axis("off")
    fig.suptitle(title)
    return _fig_uri(fig)
