"""benchmarks/hippocampus_split.py: a seeded held-out split made of symlinks, disjoint and complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import load_script


def _load():
    return load_script("benchmarks/hippocampus_split.py")


def test_split_is_disjoint_complete_seeded_and_linked(tmp_path):
    root = tmp_path / "Task04"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i in range(10):
        for sub in ("imagesTr", "labelsTr"):
            (root / sub / f"h_{i:03d}.nii.gz").write_bytes(b"x")
        training.append({"image": f"./imagesTr/h_{i:03d}.nii.gz", "label": f"./labelsTr/h_{i:03d}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "bg", "1": "a"}, "modality": {"0": "MRI"},
                                                   "training": training, "numTraining": 10}))
    mod = _load()
    out = tmp_path / "split"
    assert mod.make_split(root, out, 0.3, seed=0) == (7, 3)
    test = sorted(p.name for p in (out / "test/imagesTs").iterdir())
    train = sorted(p.name for p in (out / "train/imagesTr").iterdir())
    assert len(test) == 3 and not set(test) & set(train) and len(set(test) | set(train)) == 10
    assert sorted(p.name for p in (out / "test/labelsTs").iterdir()) == test
    assert all((out / "test/imagesTs" / n).is_symlink() for n in test)
    meta = json.loads((out / "train/dataset.json").read_text())
    assert meta["numTraining"] == 7 and {Path(t["image"]).name for t in meta["training"]} == set(train)
    assert mod.make_split(root, out, 0.3, seed=0) == (7, 3)  # same split again: accepted, nothing rewritten
    with pytest.raises(SystemExit, match="another split"):
        mod.make_split(root, out, 0.3, seed=1)
    other = tmp_path / "split1"
    mod.make_split(root, other, 0.3, seed=1)
    assert sorted(p.name for p in (other / "test/imagesTs").iterdir()) != test  # the seed chooses the cases
