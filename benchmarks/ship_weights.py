"""Copy the chosen checkpoints to weights/ (model, config, data plan, metrics, provenance; no optimiser state) and
write weights/README.md (data, recipe, metrics, the commands that made them).

Usage: python benchmarks/ship_weights.py runs/drive/akmamba_net runs/hippocampus/dm_segnet
       python benchmarks/ship_weights.py --write-manifest   # only rewrite src/mambaseg/shipped_models.json

Either way the manifest of shipped models (file, SHA-256, size, description; what `mambaseg predict --model NAME`
checks before loading) is rewritten from the files in weights/.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mambaseg.engine.checkpoint import load_checkpoint, slim_checkpoint
from mambaseg.resources import MANIFEST, write_manifest

OUT = Path("weights")
DESCRIPTIONS = {
    "akmamba_net_drive": "Akmamba-Net (CPU width), retinal vessels, fundus photos; trained on DRIVE",
    "dm_segnet_hippocampus": "DM-SegNet (CPU width), hippocampus anterior/posterior, T1 MRI; trained on MSD Task04",
}


def _write_manifest() -> None:
    models = write_manifest(OUT, DESCRIPTIONS)
    print(f"{MANIFEST}: " + ", ".join(f"{n} {e['sha256'][:12]}" for n, e in models.items()))


def _eval(run: Path, sub: str) -> dict:
    p = run / sub / "summary.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def main(drive_run: Path, hippo_run: Path) -> None:
    OUT.mkdir(exist_ok=True)
    lines = ["# Shipped models", "",
             "Checkpoints hold `model_name`, `model_kwargs`, `state_dict`, the resolved config, the data plan, "
             "training history and provenance (no optimiser state); they load with `torch.load(weights_only=True)` "
             "and are rebuilt through the model registry. Use them by name, `mambaseg predict --model "
             "akmamba_net_drive -i INPUT -o OUT` (or `--model weights/<file>.pt`); `mambaseg models` lists them with "
             "their SHA-256, which is checked before loading (manifest: `src/mambaseg/shipped_models.json`, "
             "rewritten by `benchmarks/ship_weights.py`). A wheel carries them as package data; "
             "`MAMBASEG_WEIGHTS=DIR` is looked "
             "up first.", ""]
    if (drive_run / "checkpoint_best.pt").is_file():
        ev = _eval(drive_run, "test_eval").get("mean", {})
        dst = slim_checkpoint(drive_run / "checkpoint_best.pt", OUT / "akmamba_net_drive.pt",
                              extra={"test_metrics_drive": ev}, overwrite=True)
        ck = load_checkpoint(dst)
        s = json.loads((drive_run / "summary.json").read_text())
        lines += [
            "## `akmamba_net_drive.pt` — retinal vessels (Akmamba-Net)", "",
            f"- Model: `{ck['model_name']}` {json.dumps(ck['model_kwargs'])}, "
            f"{sum(v.numel() for v in ck['state_dict'].values()) / 1e6:.2f} M parameters, "
            f"{dst.stat().st_size / 2**20:.1f} MB.",
            "- Data: DRIVE training set (`../shared/data/DRIVE/training`, 20 images; 17 used for training, 3 for "
            "validation, split seeded), FOV masks restrict loss and metrics.",
            f"- Recipe: `configs/drive/akmamba_net_cpu.yaml` (Adam, lr 2e-3 cosine under a time budget, weight decay "
            "1e-4, batch 8 of 128x128 patches, flips/rotations/scaling/intensity augmentation), "
            f"seed {ck['config']['seed']}, "
            f"{s['train_seconds'] / 60:.1f} min on 2 CPU cores ({s['epochs_done']} epochs x 20 iterations), "
            f"commit {ck['provenance']['git_commit']}.",
            "- Made by: `bash benchmarks/drive_train.sh akmamba_net:12` then "
            "`python benchmarks/ship_weights.py runs/drive/akmamba_net runs/hippocampus/dm_segnet`.",
            "- DRIVE test set (20 images, inside the FOV masks, per image then averaged; "
            "`mambaseg evaluate --pred runs/drive/akmamba_net/test_pred --gt ../shared/data/DRIVE/test -o ...`): "
            + ", ".join(f"{k} {v:.4f}" for k, v in ev.items()) + ".",
            "- Other cameras and sizes: without `--mask` the field of view is estimated from the photo, and the photo "
            f"is rescaled so its FOV diameter matches the training data ({ck['data'].get('fov_diameter', 0):.0f} px) "
            "before tiled inference; masks are written at the input's size.", ""]
    if (hippo_run / "checkpoint_best.pt").is_file():
        ev = _eval(hippo_run, "val_eval")
        dst = slim_checkpoint(hippo_run / "checkpoint_best.pt", OUT / "dm_segnet_hippocampus.pt",
                              extra={"val_metrics_hippocampus": ev.get("mean", {})}, overwrite=True)
        ck = load_checkpoint(dst)
        s = json.loads((hippo_run / "summary.json").read_text())
        per = ev.get("mean", {})
        lines += [
            "## `dm_segnet_hippocampus.pt` — hippocampus MRI (DM-SegNet)", "",
            f"- Model: `{ck['model_name']}` {json.dumps(ck['model_kwargs'])}, "
            f"{sum(v.numel() for v in ck['state_dict'].values()) / 1e6:.2f} M parameters, "
            f"{dst.stat().st_size / 2**20:.1f} MB. Output labels 0 background, 1 anterior, 2 posterior.",
            "- Data: MSD Task04 Hippocampus (`../shared/data/Task04_Hippocampus`, 208 labelled MRI), seeded split "
            f"{len(ck['data']['train_ids'])} train / {len(ck['data']['val_ids'])} validation; preprocessing plan "
            f"(stored in the checkpoint): target spacing {ck['data']['plan']['target_spacing']} mm, MR z-score on "
            "non-zero voxels, crop to non-zero.",
            f"- Recipe: `configs/hippocampus/dm_segnet_cpu.yaml` (AdamW 2e-3 cosine under a time budget, Dice + CE, "
            f"batch 2 of {ck['data']['plan']['patch_size']} patches), seed {ck['config']['seed']}, "
            f"{s['train_seconds'] / 60:.1f} min on 2 CPU cores ({s['epochs_done']} epochs), "
            f"commit {ck['provenance']['git_commit']}.",
            "- Made by: `bash benchmarks/hippocampus_train.sh dm_segnet:10` then "
            "`python benchmarks/ship_weights.py ...`.",
            "- Held-out validation cases (predicted in the original geometry, `mambaseg evaluate`, policy nan): "
            + "; ".join(f"{c}: Dice {m['Dice']:.4f}, HD95 {m['HD95']:.2f} mm" for c, m in per.items()) + ".", ""]
    (OUT / "README.md").write_text("\n".join(lines))
    print("\n".join(lines))
    _write_manifest()


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-manifest"]:
        _write_manifest()
    else:
        main(Path(sys.argv[1]), Path(sys.argv[2]))
