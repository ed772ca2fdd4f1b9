"""The one overlay drawer of ``mambaseg predict --overlay``, ``mambaseg report`` and ``mambaseg demo``; the dimension
is only a parameter (the shape of the arrays).

:func:`overlay_panels` cuts the panels and colours them: a 2D image is one panel; a 3D volume gives axial, coronal
and sagittal slices through one voxel, reoriented to RAS with its affine (``nibabel``) and shown in the radiological
convention whatever the file's orientation (the patient's right on the image's left in the axial and coronal panels,
anterior on the left in the sagittal one, anterior (axial) or superior (coronal, sagittal) up), each panel with its
orientation letters, the slice's index along the file's voxel axis and its voxel spacing. Two colourings:
``"labels"`` (every class in its own colour over the grey image, as predicted) and ``"errors"``
(:func:`mambaseg.data.io.overlay_rgb`: true positive green, false positive red, false negative blue).
:func:`overlay_figure` puts the panels side by side in one RGB image without matplotlib, each enlarged (nearest
neighbour) to ``panel_px`` pixels on its longer side in mm, titled. :func:`orthogonal_overlay` is the figure of a 3D
prediction (``predict --overlay``)."""

from __future__ import annotations

import numpy as np

from ...data.io.png import overlay_rgb, to_rgb_uint8

__all__ = ["PALETTE", "default_centre", "orthogonal_overlay", "overlay_figure", "overlay_panels", "ras_note"]

#: RGB colour of class ``v`` (``v >= 1``) in the ``"labels"`` colouring: ``PALETTE[(v - 1) % len(PALETTE)]``
PALETTE = np.asarray([(255, 220, 0), (0, 200, 255), (255, 0, 200), (0, 220, 0), (255, 120, 0), (150, 90, 255),
                      (255, 60, 60), (0, 255, 170), (200, 200, 255), (170, 110, 40)], dtype=np.float32)

# RAS axis -> (letter at the high end, letter at the low end)
_LETTERS = {0: ("R", "L"), 1: ("A", "P"), 2: ("S", "I")}
COLOURINGS = ("labels", "errors")


def _grey_range(image: np.ndarray) -> tuple[float, float]:
    finite = image[np.isfinite(image)]
    return (float(np.percentile(finite, 0.5)), float(np.percentile(finite, 99.5))) if finite.size else (0.0, 1.0)


def _label_rgb(base: np.ndarray, labels: np.ndarray, alpha: float) -> np.ndarray:
    """Classes of ``labels`` blended over ``base`` (float (H, W, 3) in [0, 255]) in the :data:`PALETTE` colours."""
    rgb = base.astype(np.float32, copy=True)
    for v in sorted(int(u) for u in np.unique(labels) if u > 0):
        sel = labels == v
        rgb[sel] = (1 - alpha) * rgb[sel] + alpha * PALETTE[(v - 1) % len(PALETTE)]
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def _colour(grey: np.ndarray, labels: np.ndarray, ref: np.ndarray | None, colouring: str, alpha: float | None,
            grey_range: tuple[float, float] | None) -> np.ndarray:
    if colouring == "errors":
        return overlay_rgb(grey, labels, ref, **({} if alpha is None else {"alpha": alpha}))
    if grey_range is None:  # 2D: the image as it is shown everywhere else
        base = to_rgb_uint8(grey).astype(np.float32)
    else:
        lo, hi = grey_range
        g = np.clip((grey.astype(np.float32) - lo) / max(hi - lo, 1e-6) * 255.0, 0, 255)
        base = np.repeat(g[..., None], 3, -1)
    return _label_rgb(base, labels, 0.5 if alpha is None else alpha)


def default_centre(labels: np.ndarray, ref: np.ndarray | None = None) -> list[int]:
    """The foreground voxel of ``ref`` (else of ``labels``) nearest its centroid, so every slice cuts through a
    structure; the middle of the grid when there is no foreground."""
    fg = np.argwhere(np.asarray(ref if ref is not None and np.any(ref) else labels) > 0)
    if not len(fg):
        return [s // 2 for s in np.shape(labels)]
    return [int(v) for v in fg[np.argmin(((fg - fg.mean(0)) ** 2).sum(1))]]


def overlay_panels(image: np.ndarray, labels: np.ndarray, affine: np.ndarray | None = None,
                   ref: np.ndarray | None = None, centre: list[int] | None = None, colouring: str = "errors",
                   alpha: float | None = None) -> list[dict]:
    """The coloured panels of a 2D image or a 3D volume (see the module docstring).

    Args:
        image: 2D: ``(H, W)``, ``(C, H, W)`` with C in (1, 3) or ``(H, W, 3)``; 3D: ``(X, Y, Z)`` intensities in the
            file's voxel order.
        labels: the prediction on the same grid (``(H, W)`` or ``(X, Y, Z)``): class values (``"labels"``) or > 0
            foreground (``"errors"``).
        affine: 3D only: voxel -> world (RAS mm) matrix of the grid.
        ref: the reference on the same grid, or None (``"errors"``: the prediction tinted only).
        centre: 3D only: the voxel (file indices) the three slices go through (default :func:`default_centre`).
        colouring: ``"labels"`` or ``"errors"``.
        alpha: opacity of the colours (default 0.5 for ``"labels"``, 0.6 for ``"errors"``).

    Returns:
        One dict per panel: ``name`` (``image`` in 2D; ``axial``, ``coronal``, ``sagittal`` in 3D), ``rgb`` (uint8
        (H, W, 3), displayed as it is), ``spacing`` (mm of a row, mm of a column; 1 in 2D), ``aspect`` (height /
        width of a pixel), ``letters`` (top, bottom, left, right; None in 2D), ``label`` (``"axial: k = 12 of 40"``,
        the slice's index along the file's voxel axis; empty in 2D) and ``orientation`` (the file's axis codes,
        e.g. ``"LPS"``; None in 2D).
    """
    if colouring not in COLOURINGS:
        raise ValueError(f"colouring must be one of {COLOURINGS}, got {colouring!r}")
    labels = np.asarray(labels)
    if labels.ndim == 2:
        rgb = _colour(np.asarray(image), labels, ref, colouring, alpha, None)
        return [{"name": "image", "rgb": rgb, "spacing": (1.0, 1.0), "aspect": 1.0, "letters": None, "label": "",
                 "orientation": None}]
    if labels.ndim != 3 or affine is None:
        raise ValueError(f"overlay_panels: labels must be 2D, or 3D with an affine; got shape {labels.shape}")
    import nibabel as nib

    affine = np.asarray(affine, dtype=np.float64)
    codes = "".join(nib.aff2axcodes(affine))
    ornt = nib.orientations.io_orientation(affine)
    img, lab = (nib.orientations.apply_orientation(np.asarray(a), ornt) for a in (image, labels))  # RAS voxel axes
    rf = None if ref is None else nib.orientations.apply_orientation(np.asarray(ref), ornt)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    centre = default_centre(labels, ref) if centre is None else centre
    spacing, ras_centre = [1.0, 1.0, 1.0], [0, 0, 0]
    for i in range(3):  # file axis i became RAS axis ornt[i, 0], reversed when ornt[i, 1] < 0
        a = int(ornt[i, 0])
        spacing[a] = float(zooms[i])
        c = min(max(int(centre[i]), 0), img.shape[a] - 1)
        ras_centre[a] = c if ornt[i, 1] > 0 else img.shape[a] - 1 - c
    grey_range = _grey_range(img) if colouring == "labels" else None
    panels = []
    for name, axis in (("axial", 2), ("coronal", 1), ("sagittal", 0)):
        sl = [slice(None)] * 3
        sl[axis] = ras_centre[axis]
        sl = tuple(sl)
        first, second = (a for a in range(3) if a != axis)
        # rows: the second remaining RAS axis decreasing (anterior / superior up); columns: the first one decreasing
        # (patient's right on the image's left; sagittal: anterior on the left)
        g, p = img[sl].T[::-1, ::-1], lab[sl].T[::-1, ::-1]
        r = None if rf is None else rf[sl].T[::-1, ::-1]
        src = int(np.flatnonzero(ornt[:, 0] == axis)[0])  # the file's voxel axis behind this RAS axis
        idx = ras_centre[axis] if ornt[src, 1] > 0 else img.shape[axis] - 1 - ras_centre[axis]
        panels.append({"name": name, "rgb": _colour(g, p, r, colouring, alpha, grey_range),
                       "spacing": (spacing[second], spacing[first]), "aspect": spacing[second] / spacing[first],
                       "letters": (_LETTERS[second][0], _LETTERS[second][1], _LETTERS[first][0], _LETTERS[first][1]),
                       "label": f"{name}: {'ijk'[src]} = {idx} of {img.shape[axis]}", "orientation": codes})
    return panels


def ras_note(codes: str) -> str:
    """The line under a 3D figure's title that says how it is shown."""
    return f"file orientation {codes}; radiological view (patient's right on the left)"


def _font():
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=13)
    except (TypeError, OSError):  # Pillow < 10.1 or without FreeType: the small bitmap font
        return ImageFont.load_default()


def overlay_figure(panels: list[dict], title: str = "", note: str | None = None, panel_px: int = 256,
                   letters: bool = True) -> np.ndarray:
    """The panels of :func:`overlay_panels` side by side as one RGB uint8 image: each enlarged (nearest neighbour)
    so its longer side in mm is ``panel_px`` pixels, labelled, with its orientation letters (``letters``); the
    ``title`` and an optional ``note`` line above."""
    from PIL import Image, ImageDraw

    font = _font()
    ims = []
    for pan in panels:
        h, w = pan["rgb"].shape[:2]
        h_mm, w_mm = h * pan["spacing"][0], w * pan["spacing"][1]
        scale = panel_px / max(h_mm, w_mm, 1e-6)
        size = (max(1, round(w_mm * scale)), max(1, round(h_mm * scale)))
        pim = Image.fromarray(np.ascontiguousarray(pan["rgb"])).resize(size, Image.NEAREST)
        if letters and pan["letters"]:
            d = ImageDraw.Draw(pim)
            top, bottom, left, right = pan["letters"]
            for text, (x, y) in ((top, (size[0] // 2 - 4, 2)), (bottom, (size[0] // 2 - 4, size[1] - 16)),
                                 (left, (3, size[1] // 2 - 8)), (right, (size[0] - 12, size[1] // 2 - 8))):
                d.text((x, y), text, fill=(255, 255, 0), font=font)
        ims.append((pan["label"], pim))
    pad, head = 8, (34 if note is None else 52)
    width = sum(p.width for _, p in ims) + pad * (len(ims) + 1)
    height = max(p.height for _, p in ims) + head + pad
    fig = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(fig)
    draw.text((pad, 2), title, fill=(255, 255, 255), font=font)
    if note is not None:
        draw.text((pad, 18), note, fill=(200, 200, 200), font=font)
    x = pad
    for label, p in ims:
        fig.paste(p, (x, head))
        draw.text((x, head - 16), label, fill=(255, 255, 255), font=font)
        x += p.width + pad
    return np.asarray(fig)


def orthogonal_overlay(image: np.ndarray, labels: np.ndarray, affine: np.ndarray, title: str = "",
                       panel_px: int = 256, alpha: float = 0.5) -> np.ndarray:
    """The figure of a 3D prediction (``predict --overlay``): axial, coronal and sagittal slices through the
    predicted foreground voxel nearest its centre (the volume's middle when nothing is predicted), the image in grey
    with the classes coloured (:func:`overlay_panels`, ``"labels"``; :func:`overlay_figure` without letters).

    Args:
        image: ``(X, Y, Z)`` intensities (voxel array of the file with ``affine``).
        labels: ``(X, Y, Z)`` integer labels, same grid.
        affine: voxel -> world (RAS mm) matrix of that grid.
        title: text written above the panels.
        panel_px: the longest side of each panel, in pixels (small volumes are enlarged, nearest neighbour).
    """
    panels = overlay_panels(image, labels, affine, colouring="labels", alpha=alpha)
    return overlay_figure(panels, title, panel_px=panel_px, letters=False)
