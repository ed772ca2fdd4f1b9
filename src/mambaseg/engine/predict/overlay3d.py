"""The overlay figure of a 3D prediction (``mambaseg predict --overlay``, 3D): axial, coronal and sagittal slices
(labelled with the file's voxel index) through the predicted foreground voxel nearest its centre (the volume's middle
when nothing is predicted), the first channel in grey with the classes coloured; reoriented to RAS and drawn with
superior (coronal, sagittal) / anterior (axial) up, the patient's right on the image's left (radiological
convention), anterior on the left in the sagittal panel, voxel spacing respected."""

from __future__ import annotations

import numpy as np

__all__ = ["orthogonal_overlay"]

_PALETTE = np.asarray([(255, 220, 0), (0, 200, 255), (255, 0, 200), (0, 220, 0), (255, 120, 0), (150, 90, 255),
                       (255, 60, 60), (0, 255, 170), (200, 200, 255), (170, 110, 40)], dtype=np.float32)


def _grey(sl: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((sl.astype(np.float32) - lo) / max(hi - lo, 1e-6) * 255.0, 0, 255)


def orthogonal_overlay(image: np.ndarray, labels: np.ndarray, affine: np.ndarray, title: str = "",
                       panel_px: int = 256, alpha: float = 0.5) -> np.ndarray:
    """RGB uint8 figure of axial, coronal and sagittal slices with the labels coloured (see the module docstring).

    Args:
        image: ``(X, Y, Z)`` intensities (voxel array of the file with ``affine``).
        labels: ``(X, Y, Z)`` integer labels, same grid.
        affine: voxel -> world (RAS mm) matrix of that grid.
        title: text written above the panels.
        panel_px: the longest side of each panel, in pixels (small volumes are enlarged, nearest neighbour).
    """
    import nibabel as nib
    from PIL import Image, ImageDraw, ImageFont

    ornt = nib.orientations.io_orientation(np.asarray(affine, dtype=np.float64))
    img = nib.orientations.apply_orientation(np.asarray(image), ornt)  # now RAS voxel axes
    lab = nib.orientations.apply_orientation(np.asarray(labels), ornt)
    zooms = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(0))
    spacing = [1.0, 1.0, 1.0]
    for i in range(3):  # input axis i became RAS axis ornt[i, 0]
        spacing[int(ornt[i, 0])] = float(zooms[i])
    fg = np.argwhere(lab > 0)
    # the foreground voxel nearest the foreground's centre: every panel then cuts through a predicted structure
    ctr = [int(v) for v in fg[np.argmin(((fg - fg.mean(0)) ** 2).sum(1))]] if len(fg) else [s // 2 for s in lab.shape]
    finite = img[np.isfinite(img)]
    lo, hi = (float(np.percentile(finite, 0.5)), float(np.percentile(finite, 99.5))) if finite.size else (0.0, 1.0)
    panels = []
    for name, axis in (("axial", 2), ("coronal", 1), ("sagittal", 0)):
        sl = [slice(None)] * 3
        sl[axis] = min(max(ctr[axis], 0), lab.shape[axis] - 1)
        g, m = img[tuple(sl)], lab[tuple(sl)]  # the two remaining RAS axes: (x, y), (x, z) or (y, z)
        rem = [a for a in range(3) if a != axis]
        # rows: the second remaining axis decreasing (anterior / superior up); columns: the first one decreasing
        # (x grows towards the patient's right, so the right is on the image's left; sagittal: anterior on the left)
        g, m = g.T[::-1, ::-1], m.T[::-1, ::-1]
        rgb = np.repeat(_grey(g, lo, hi)[..., None], 3, -1)
        for v in sorted(int(u) for u in np.unique(m) if u > 0):
            sel = m == v
            rgb[sel] = (1 - alpha) * rgb[sel] + alpha * _PALETTE[(v - 1) % len(_PALETTE)]
        h_mm, w_mm = g.shape[0] * spacing[rem[1]], g.shape[1] * spacing[rem[0]]
        scale = panel_px / max(h_mm, w_mm, 1e-6)
        size = (max(1, round(w_mm * scale)), max(1, round(h_mm * scale)))
        pim = Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8)).resize(size, Image.NEAREST)
        src_axis = int(np.flatnonzero(ornt[:, 0] == axis)[0])  # the file's voxel axis behind this RAS axis
        idx = sl[axis] if ornt[src_axis, 1] > 0 else lab.shape[axis] - 1 - sl[axis]
        panels.append((f"{name}: {'ijk'[src_axis]} = {idx} of {lab.shape[axis]}", pim))
    pad, head = 8, 34
    width = sum(p.width for _, p in panels) + pad * (len(panels) + 1)
    height = max(p.height for _, p in panels) + head + pad
    fig = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(fig)
    try:
        font = ImageFont.load_default(size=13)
    except (TypeError, OSError):  # Pillow < 10.1 or without FreeType: the small bitmap font
        font = ImageFont.load_default()
    draw.text((pad, 2), title, fill=(255, 255, 255), font=font)
    x = pad
    for label, p in panels:
        fig.paste(p, (x, head))
        draw.text((x, head - 16), label, fill=(255, 255, 255), font=font)
        x += p.width + pad
    return np.asarray(fig)
