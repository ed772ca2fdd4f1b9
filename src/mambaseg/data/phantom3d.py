"""Synthetic 3D phantoms in the MSD layout (for the demo and tests): an MRI-like head with two adjacent structures
(labels 1 and 2, like the hippocampus' anterior/posterior parts) on anisotropic, non-RAS-oriented grids."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["make_phantom", "write_phantom_msd"]


def make_phantom(shape=(40, 48, 36), rng: np.random.Generator | int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One phantom: float32 image and uint8 label (0 background, 1 and 2 two touching ellipsoids)."""
    rng = np.random.default_rng(rng)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"), -1)
    centre = np.array(shape) / 2 + rng.uniform(-3, 3, 3)
    head = (((grid - np.array(shape) / 2) / (np.array(shape) * 0.45)) ** 2).sum(-1) < 1
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    radii = rng.uniform(3.0, 5.0, 3)
    label = np.zeros(shape, np.uint8)
    for k, sign in ((1, -1.0), (2, 1.0)):
        c = centre + sign * axis * radii.max() * 0.9
        label[(((grid - c) / radii) ** 2).sum(-1) < 1] = k
    image = head * (60 + 10 * rng.standard_normal(shape)) + (label == 1) * 50 + (label == 2) * 90
    return image.astype(np.float32), label


def write_phantom_msd(root: str | Path, n_cases: int = 12, shape=(40, 48, 36), seed: int = 0) -> Path:
    """Write an MSD-style task (``dataset.json``, ``imagesTr``, ``labelsTr``) with anisotropic LPS-like affines."""
    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    training = []
    for i in range(n_cases):
        image, label = make_phantom(shape, rng=seed * 1000 + i)
        affine = np.diag([-1.0, -1.2, 1.5, 1.0])
        affine[:3, 3] = [20.0, 30.0, -10.0]
        name = f"phantom_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / name)
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {"name": "Phantom", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "Anterior",
            "2": "Posterior"}, "numTraining": n_cases, "training": training, "test": []}
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))
    return root
