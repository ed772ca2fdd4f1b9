"""Best/worst-case figures for :mod:`mambaseg.apps.report`: 2D image / ground truth / prediction / errors (plus the
image and the error overlay at full resolution), and 3D axial / coronal / sagittal slices through each structure,
coloured with :func:`mambaseg.data.io.overlay_rgb` (TP green, FP red, FN blue). Each returns PNG data URIs, or None
when the files are missing or do not match.

3D slices are shown in the radiological convention whatever the file's orientation: the volume is reoriented to
RAS with its affine (``nibabel``), the patient's right is on the image's left (axial, coronal), anterior on the
left in the sagittal panel, anterior (axial) or superior (coronal, sagittal) up; each panel carries its
orientation letters and the slice's index along the file's voxel axis, and the voxel spacing sets its aspect.
:func:`orthogonal_error_figure` draws the same panels without matplotlib (``mambaseg demo``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.io.png import overlay_rgb
from ..data.io.raster import read_image, read_label
from ..data.io.suffixes import SUPPORTED_2D, stem_of, suffix_of
from ..utils.optional import require

__all__ = ["orthogonal_error_figure", "overlay_2d", "overlay_2d_full", "overlay_3d", "ras_panels"]


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


def overlay_2d(row: dict, title: str) -> str | None:
    """Image / ground truth / prediction / errors of one 2D case, side by side (a figure of reduced size)."""
    loaded = _load_2d(row)
    if loaded is None:
        return None
    image, ref, pred = loaded
    errors = overlay_rgb(image, pred, ref)
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
    from ..data.io.png import to_rgb_uint8

    loaded = _load_2d(row)
    if loaded is None:
        return None
    image, ref, pred = loaded
    return [("image", _png_uri(to_rgb_uint8(image))), ("errors", _png_uri(overlay_rgb(image, pred, ref)))]


def _find_volume_image(case: str, ref: Path) -> Path | None:
    cands = []
    for d in (ref.parent.parent / "imagesTr", ref.parent.parent / "imagesTs", ref.parent.parent / "images"):
        cands += [d / f"{case}.nii.gz", d / f"{case}_0000.nii.gz", d / f"{case}.nii", d / f"{case}_0000.nii"]
    cands += sorted(ref.parent.glob(f"{case}*-t2f.nii.gz")) + sorted(ref.parent.glob(f"{case}*_flair.nii.gz"))
    return next((c for c in cands if c.is_file()), None)


# RAS axis -> (letter at the high end, letter at the low end)
_LETTERS = {0: ("R", "L"), 1: ("A", "P"), 2: ("S", "I")}


def ras_panels(image: np.ndarray, pred: np.ndarray, ref: np.ndarray | None, affine: np.ndarray,
               centre: list[int] | None = None) -> list[dict]:
    """Axial, coronal and sagittal error overlays through ``centre`` (voxel indices of the file's grid).

    Args:
        image: ``(X, Y, Z)`` intensities in the file's voxel order.
        pred: ``(X, Y, Z)`` prediction (> 0 foreground).
        ref: ``(X, Y, Z)`` reference or None (prediction tinted only).
        affine: voxel -> world matrix of the grid.
        centre: the voxel the three slices go through (default: the volume's middle).

    Returns:
        One dict per panel (``axial``, ``coronal``, ``sagittal``): ``name``, ``rgb`` (uint8 (H, W, 3), displayed
        as it is), ``aspect`` (height / width of a pixel, from the voxel spacing), ``letters`` (top, bottom, left,
        right), ``label`` (``"axial: k = 12 of 40"``, the slice's index along the file's voxel axis) and
        ``orientation`` (the file's axis codes, e.g. ``"LPS"``).
    """
    import nibabel as nib

    affine = np.asarray(affine, dtype=np.float64)
    codes = "".join(nib.aff2axcodes(affine))
    ornt = nib.orientations.io_orientation(affine)
    img, prd = (nib.orientations.apply_orientation(np.asarray(a), ornt) for a in (image, pred))
    rf = None if ref is None else nib.orientations.apply_orientation(np.asarray(ref), ornt)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    spacing, ras_centre = [1.0, 1.0, 1.0], [s // 2 for s in img.shape]
    for i in range(3):  # file axis i became RAS axis ornt[i, 0], reversed when ornt[i, 1] < 0
        a = int(ornt[i, 0])
        spacing[a] = float(zooms[i])
        if centre is not None:
            c = min(max(int(centre[i]), 0), img.shape[a] - 1)
            ras_centre[a] = c if ornt[i, 1] > 0 else img.shape[a] - 1 - c
    panels = []
    for name, axis in (("axial", 2), ("coronal", 1), ("sagittal", 0)):
        sl = [slice(None)] * 3
        sl[axis] = ras_centre[axis]
        sl = tuple(sl)
        first, second = (a for a in range(3) if a != axis)
        # rows: the second remaining RAS axis decreasing (anterior / superior up); columns: the first one decreasing
        # (patient's right on the image's left; sagittal: anterior on the left)
        g, p = img[sl].T[::-1, ::-1], prd[sl].T[::-1, ::-1]
        r = None if rf is None else rf[sl].T[::-1, ::-1]
        src = int(np.flatnonzero(ornt[:, 0] == axis)[0])  # the file's voxel axis behind this RAS axis
        idx = ras_centre[axis] if ornt[src, 1] > 0 else img.shape[axis] - 1 - ras_centre[axis]
        panels.append({"name": name, "rgb": overlay_rgb(g, p, r), "aspect": spacing[second] / spacing[first],
                       "letters": (_LETTERS[second][0], _LETTERS[second][1], _LETTERS[first][0], _LETTERS[first][1]),
                       "label": f"{name}: {'ijk'[src]} = {idx} of {img.shape[axis]}", "orientation": codes})
    return panels


def _ras_note(codes: str) -> str:
    return f"file orientation {codes}; radiological view (patient's right on the left)"


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
            structures.append((name, ras_panels(image, p, r, ref_img.affine, [round(float(c)) for c in pts.mean(0)])))
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
    fig.suptitle(f"{title}\n{_ras_note(structures[0][1][0]['orientation'])}")
    return fig_uri(fig)


def orthogonal_error_figure(image: np.ndarray, pred: np.ndarray, ref: np.ndarray | None, affine: np.ndarray,
                            title: str = "", centre: list[int] | None = None, panel_px: int = 256) -> np.ndarray:
    """The :func:`ras_panels` as one RGB uint8 image without matplotlib: each panel enlarged (nearest neighbour)
    so its longer side is ``panel_px`` pixels (voxel spacing respected), labelled, with orientation letters.

    ``centre`` defaults to the reference's (else the prediction's) foreground voxel nearest its centroid."""
    from PIL import Image, ImageDraw, ImageFont

    if centre is None:
        fg = np.argwhere(np.asarray(ref if ref is not None and np.any(ref) else pred) > 0)
        centre = ([int(v) for v in fg[np.argmin(((fg - fg.mean(0)) ** 2).sum(1))]] if len(fg)
                  else [s // 2 for s in np.shape(pred)])
    panels = ras_panels(image, pred, ref, affine, centre)
    try:
        font = ImageFont.load_default(size=13)
    except (TypeError, OSError):  # Pillow < 10.1 or without FreeType: the small bitmap font
        font = ImageFont.load_default()
    ims = []
    for pan in panels:
        h, w = pan["rgb"].shape[:2]
        h_mm, w_mm = h * pan["aspect"], float(w)
        scale = panel_px / max(h_mm, w_mm, 1e-6)
        size = (max(1, round(w_mm * scale)), max(1, round(h_mm * scale)))
        pim = Image.fromarray(pan["rgb"]).resize(size, Image.NEAREST)
        d = ImageDraw.Draw(pim)
        top, bottom, left, right = pan["letters"]
        for text, (x, y) in ((top, (size[0] // 2 - 4, 2)), (bottom, (size[0] // 2 - 4, size[1] - 16)),
                             (left, (3, size[1] // 2 - 8)), (right, (size[0] - 12, size[1] // 2 - 8))):
            d.text((x, y), text, fill=(255, 255, 0), font=font)
        ims.append((pan["label"], pim))
    pad, head = 8, 52
    width = sum(p.width for _, p in ims) + pad * (len(ims) + 1)
    height = max(p.height for _, p in ims) + head + pad
    fig = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(fig)
    draw.text((pad, 2), title, fill=(255, 255, 255), font=font)
    draw.text((pad, 18), _ras_note(panels[0]["orientation"]), fill=(200, 200, 200), font=font)
    x = pad
    for label, p in ims:
        fig.paste(p, (x, head))
        draw.text((x, head - 16), label, fill=(255, 255, 255), font=font)
        x += p.width + pad
    return np.asarray(fig)
