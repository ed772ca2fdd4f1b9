"""The real-data part of ``mambaseg demo``: the shipped models applied to a few real cases, with their Dice against
the manual labels.

The package carries no real images (the project never copies data into the repository or the package): the cases
are read where they lie, from ``$MAMBASEG_DATA`` or else ``../shared/data`` (the reference configs' data roots),
when that folder holds ``DRIVE/`` (the DRIVE test set: images, FOV masks, ``1st_manual``) and/or
``Task04_Hippocampus/`` (MSD Task04). The hippocampus cases are taken from the 42 that the shipped model never saw
(the held-out split of ``benchmarks/hippocampus_split.py``, seed 0, :func:`hippocampus_held_out`). When neither is
found, one line says how to enable this part. Inputs are linked (symbolic links), never copied, into the demo's
output folder.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path

__all__ = ["DRIVE_CASES", "HIPPOCAMPUS_CASES", "find_data_root", "hippocampus_held_out", "run_demo_real"]

DRIVE_CASES = 2  # DRIVE test images (01_test.tif, 02_test.tif, ...): about 10 s each on one CPU core
HIPPOCAMPUS_CASES = 3  # held-out MSD Task04 volumes: about 1 s each
_DRIVE = "DRIVE"
_HIPPOCAMPUS = "Task04_Hippocampus"


def find_data_root(env: dict | None = None, cwd: Path | None = None) -> Path | None:
    """The first of ``$MAMBASEG_DATA`` and ``<cwd>/../shared/data`` that holds ``DRIVE/`` or
    ``Task04_Hippocampus/``; None when neither does."""
    env = os.environ if env is None else env
    candidates = [Path(env["MAMBASEG_DATA"])] if env.get("MAMBASEG_DATA") else []
    candidates.append((cwd or Path.cwd()) / ".." / "shared" / "data")
    for root in candidates:
        if (root / _DRIVE).is_dir() or (root / _HIPPOCAMPUS).is_dir():
            return root
    return None


def hippocampus_held_out(dataset_json: dict, test_fraction: float = 0.2, seed: int = 0) -> list[str]:
    """Image file names of the held-out test cases of ``benchmarks/hippocampus_split.py`` (same rule: the
    ``training`` entries sorted by image path, a seeded sample of ``round(test_fraction * n)`` of them)."""
    cases = sorted(dataset_json["training"], key=lambda t: t["image"])
    rng = random.Random(seed)
    test = sorted(rng.sample(range(len(cases)), max(1, round(test_fraction * len(cases)))))
    return [Path(cases[i]["image"]).name for i in test]


def _link(files: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        (folder / f.name).symlink_to(f.resolve())
    return folder


def _drive(data: Path, root: Path, log: Callable[[str], None]) -> dict:
    from ..engine.evaluate import evaluate
    from ..engine.predict import predict
    from ..resources import resolve_model

    test = data / _DRIVE / "test"
    images = sorted((test / "images").glob("*.tif"))[:DRIVE_CASES]
    if not images:
        raise FileNotFoundError(f"{test / 'images'}: no .tif images")
    inputs = _link(images, root / "real_inputs" / "drive")
    out = root / "real_drive_predictions"
    log(f"[real] akmamba_net_drive on {len(images)} DRIVE test image(s) from {test}")
    predict(resolve_model("akmamba_net_drive"), inputs, out, mask=test / "mask", progress=False)
    result = evaluate(out, test, root / "real_drive_evaluation", allow_missing=True)
    return {"model": "akmamba_net_drive", "cases": len(images), "dice": result["mean_2d"]["dice"]}


def _hippocampus(data: Path, root: Path, log: Callable[[str], None]) -> dict:
    from ..engine.evaluate import evaluate
    from ..engine.predict import predict
    from ..resources import resolve_model

    task = data / _HIPPOCAMPUS
    names = hippocampus_held_out(json.loads((task / "dataset.json").read_text()))[:HIPPOCAMPUS_CASES]
    inputs = _link([task / "imagesTr" / n for n in names], root / "real_inputs" / "hippocampus")
    out = root / "real_hippocampus_predictions"
    log(f"[real] dm_segnet_hippocampus on {len(names)} held-out MSD Task04 case(s) from {task}")
    predict(resolve_model("dm_segnet_hippocampus"), inputs, out, progress=False)
    result = evaluate(out, task / "labelsTr", root / "real_hippocampus_evaluation", allow_missing=True)
    return {"model": "dm_segnet_hippocampus", "cases": len(names), "dice": result["foreground_mean"]["Dice"]}


def run_demo_real(root: Path, log: Callable[[str], None] = print, env: dict | None = None) -> dict:
    """Apply the shipped models to the real cases found (see the module docstring); returns
    ``{"DRIVE": {...}, "Task04_Hippocampus": {...}}`` for the datasets found (model, cases, dice)."""
    data = find_data_root(env)
    if data is None:
        log("[real] skipped: set MAMBASEG_DATA to a folder holding DRIVE/ and/or Task04_Hippocampus/ (MSD Task04) "
            "to see the shipped models on real cases")
        return {}
    from ..data.errors import DataError
    from ..resources import ResourceError

    parts = {}
    for name, part in ((_DRIVE, _drive), (_HIPPOCAMPUS, _hippocampus)):
        if not (data / name).is_dir():
            log(f"[real] {name}: not found under {data}; skipped")
            continue
        try:  # an incomplete data folder or a missing shipped model skips this part, not the whole demo
            parts[name] = part(data, Path(root), log)
        except (DataError, ResourceError, OSError, KeyError, ValueError) as exc:
            log(f"[real] {name}: skipped ({type(exc).__name__}: {exc})")
            continue
        log(f"[real] {name}: Dice {parts[name]['dice']:.3f} ({parts[name]['cases']} case(s))")
    return parts
