"""Best/worst-case figures for :mod:`mambaseg.apps.report`: 2D image / ground truth / prediction / errors (plus the
image and the error overlay at full resolution), and 3D axial / coronal / sagittal slices through each structure,
coloured by outcome (TP green, FP red, FN blue). Each returns PNG data URIs, or None when the files are missing or do
not match. The panels (2D or 3D, orientation, letters, spacing) come from the one overlay drawer,
:func:`mambaseg.engine.predict.overlay.overlay_panels`; this module finds the files and lays the panels out in
matplotlib figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...data.io.raster import read_image, read_label
from ...data.io.suffixes import SUPPORTED_2D, stem_of, suffix_of
from ...engine.predict.overlay import overlay_panels, ras_note
from ...utils.optional import require

__all__ = ["overlay_2d", "overlay_2d_full", "overlay_3d"]


def load_pyplot():
    matplotlib = require("matplotlib", purpose="mambaseg report (figures)")
    matplotlib.use("Agg")
    return require("matplotlib.pyplot", purpose="mambaseg report (figures)")


def fig_uri(fig) -> str:
    """Render a matplotlib figure as a PNG data URI (and close it)."""
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    load_pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _find_image_2d(case: str, ref: Path) -> Path | None:
    key = case.split("_")[0]
    for d in (ref.parent.parent / n for n in ("images", "image", "imagesTs", "imagesTr")):
        if d.is_dir():
            files = [f for f in sorted(d.iterdir()) if suffix_of(f) in SUPPORTED_2D]
            for f in files:
                stem = stem_of(f)
                if stem == case or stem.split("_")[0] == key:
                    return f
    return None


def _load_2d(row: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(image (C, H, W), reference (H, W) bool, prediction (H, W) bool) of a 2D summary row, or None."""
    pred_p, ref_p = Path(row.get("prediction", "")), Path(row.get("reference", ""))
    if not (pred_p.is_file() and ref_p.is_file()):
        return None
    pred = read_image(pred_p)[0][0]
    pred = pred > (127 if pred.max() > 1 else 0)
    ref = read_label(ref_p, num_classes=2)[0] > 0
    if pred.shape != ref.shape:
        return None
    img_p = _find_image_2d(str(row.get("case", "")), ref_p)
    image = read_image(img_p)[0] if img_p is not None else None
    if image is None or image.shape[1:] != ref.shape:
        image = np.zeros((1,) + ref.shape, np.float32)
    return image, ref, pred


def _png_uri(rgb: np.ndarray) -> str:
    """PNG data URI of a uint8 (H, W[, 3]) array at its own resolution."""
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _errors_2d(image: np.ndarray, pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return overlay_panels(image, pred, ref=ref, colouring="errors")[0]["rgb"]


def overlay_2d(row: dict, title: str) -> str | None:
    """Image / ground truth / prediction / errors of one 2D case, side by side (a figure of reduced size)."""
    loaded = _load_2d(row)
    if loaded is None:
        return None
    image, ref, pred = loaded
    errors = _errors_2d(image, pred, ref)
    plt = load_pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.8))
    rgb = np.moveaxis(image, 0, -1)
    rgb = (rgb - rgb.min()) / max(float(np.ptp(rgb)), 1e-6)
    for ax, (im, name) in zip(axes, [(rgb if rgb.shape[-1] == 3 else rgb[..., 0], "image"), (ref, "ground truth"),
                                     (pred, "prediction"), (errors, "errors")]):
        ax.imshow(im, cmap="gray", interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(title)
    return fig_uri(fig)


def overlay_2d_full(row: dict) -> list[tuple[str, str]] | None:
    """The image and the error overlay (TP/FP/FN) of one 2D case at full resolution: ``[(name, data URI)]``."""
    from ...data.io.png import to_rgb_uint8

    loaded = _load_2d(row)
    if loaded is None:
        return None
    image, ref, pred = loaded
    return [("image", _png_uri(to_rgb_uint8(image))), ("errors", _png_uri(_errors_2d(image, pred, ref)))]


def _find_volume_image(case: str, ref: Path) -> Path | None:
    cands = []
    for d in (ref.parent.parent / "imagesTr", ref.parent.parent / "imagesTs", ref.parent.parent / "images"):
        cands += [d / f"{case}.nii.gz", d / f"{case}_0000.nii.gz", d / f"{case}.nii", d / f"{case}_0000.nii"]
    cands += sorted(ref.parent.glob(f"{case}*-t2f.nii.gz")) + sorted(ref.parent.glob(f"{case}*_flair.nii.gz"))
    return next((c for c in cands if c.is_file()), None)


def overlay_3d(case: dict, classes: dict, title: str) -> str | None:
    """One row of axial / coronal / sagittal panels per structure, through the structure's centre."""
    import nibabel as nib

    pred_p, ref_p = Path(case.get("prediction_file", "")), Path(case.get("reference_file", ""))
    if not (pred_p.is_file() and ref_p.is_file()):
        return None
    ref_img = nib.load(ref_p)
    pred, ref = np.asarray(nib.load(pred_p).dataobj), np.asarray(ref_img.dataobj)
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
            centre = [round(float(c)) for c in pts.mean(0)]
            structures.append((name, overlay_panels(image, p, ref_img.affine, r, centre)))
    if not structures:
        return None
    plt = load_pyplot()
    fig, axes = plt.subplots(len(structures), 3, figsize=(12, 4.2 * len(structures)), squeeze=False)
    for row, (name, panels) in zip(axes, structures):
        for ax, pan in zip(row, panels):
            ax.imshow(pan["rgb"], interpolation="nearest", aspect=pan["aspect"])
            ax.set_title(f"{name} - {pan['label']}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            top, bottom, left, right = pan["letters"]
            kw = {"transform": ax.transAxes, "color": "yellow", "fontsize": 11, "fontweight": "bold"}
            ax.text(0.5, 0.98, top, ha="center", va="top", **kw)
            ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **kw)
            ax.text(0.02, 0.5, left, ha="left", va="center", **kw)
            ax.text(0.98, 0.5, right, ha="right", va="center", **kw)
    fig.suptitle(f"{title}\n{ras_note(structures[0][1][0]['orientation'])}")
    return fig_uri(fig)
