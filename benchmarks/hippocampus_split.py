"""Held-out split of MSD Task04 Hippocampus for the equal-budget benchmark (issue 12).

MSD ships no labelled test set, so this makes one: a seeded 20 % of the labelled cases become ``test/imagesTs`` +
``test/labelsTs``, the rest a training root ``train/`` (imagesTr, labelsTr, dataset.json listing only those cases).
Everything is symbolic links into the read-only data folder, written under an ignored folder of the checkout, so
no data is copied. Training then splits ``train/`` further into train/validation (checkpoint selection) with its
own seeded ``val_fraction``; the test cases are never seen before the final evaluation.

Usage: python benchmarks/hippocampus_split.py [--root ../shared/data/Task04_Hippocampus] [--out runs/hippocampus_split]
       [--test-fraction 0.2] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path


def make_split(root: Path, out: Path, test_fraction: float = 0.2, seed: int = 0) -> tuple[int, int]:
    """Write the split; returns (training cases, test cases). Refuses to overwrite a different existing split."""
    meta = json.loads((root / "dataset.json").read_text())
    cases = sorted(meta["training"], key=lambda t: t["image"])
    rng = random.Random(seed)
    test = sorted(rng.sample(range(len(cases)), max(1, round(test_fraction * len(cases)))))
    test_set = set(test)
    plan = {"root": str(root.resolve()), "seed": seed, "test_fraction": test_fraction,
            "test": [Path(cases[i]["image"]).name for i in test]}
    marker = out / "split.json"
    if marker.is_file():
        if json.loads(marker.read_text()) != plan:
            sys.exit(f"error: {out} holds another split (see {marker}); remove it or choose another --out")
        return len(cases) - len(test), len(test)
    for sub in ("train/imagesTr", "train/labelsTr", "test/imagesTs", "test/labelsTs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    train_list = []
    for i, case in enumerate(cases):
        img, lab = root / case["image"], root / case["label"]
        if i in test_set:
            (out / "test/imagesTs" / img.name).symlink_to(img.resolve())
            (out / "test/labelsTs" / lab.name).symlink_to(lab.resolve())
        else:
            (out / "train/imagesTr" / img.name).symlink_to(img.resolve())
            (out / "train/labelsTr" / lab.name).symlink_to(lab.resolve())
            train_list.append(case)
    train_meta = dict(meta, training=train_list, numTraining=len(train_list),
                      description=f"{meta.get('description', '')} Training part of a seeded held-out split "
                                  f"(seed {seed}, {len(test)} test cases in ../test).".strip())
    (out / "train/dataset.json").write_text(json.dumps(train_meta, indent=1))
    marker.write_text(json.dumps(plan, indent=1))
    return len(train_list), len(test)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="../shared/data/Task04_Hippocampus")
    ap.add_argument("--out", default="runs/hippocampus_split")
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    root = Path(a.root)
    if not (root / "dataset.json").is_file():
        sys.exit(f"error: {root / 'dataset.json'} not found (--root must be an MSD Task04 folder)")
    if not 0 < a.test_fraction < 1:
        sys.exit(f"error: --test-fraction must be in (0, 1), got {a.test_fraction}")
    n_train, n_test = make_split(root, Path(a.out), a.test_fraction, a.seed)
    print(f"{a.out}: {n_train} training cases (train/), {n_test} held-out test cases (test/)")


if __name__ == "__main__":
    main()
