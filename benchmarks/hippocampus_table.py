"""Assemble benchmarks/results/hippocampus.{json,md} from the runs made by benchmarks/hippocampus_train.sh.

Usage: python benchmarks/hippocampus_table.py [runs/hippocampus]
Each row: per-class Dice and HD95 (mm) on the held-out, seeded 20 % validation split of MSD Task04 (42 cases),
predicted in the original geometry and scored with `mambaseg evaluate` (empty-mask policy nan), with the model,
config, seed, training time, epochs and commit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ORDER = ["dm_segnet", "dm_segnet_5min", "segmamba", "unet3d"]


def main(root: Path) -> None:
    rows = []
    for name in ORDER:
        run = root / name
        ev = run / "val_eval" / "summary.json"
        if not ev.is_file():
            continue
        summary = json.loads((run / "summary.json").read_text())
        prov = json.loads((run / "provenance.json").read_text())
        result = json.loads(ev.read_text())
        rows.append({
            "model": name, "variant": f"{name.split('_5min')[0]}_cpu" + (" (5 min)" if name.endswith("5min") else ""),
            "parameters": summary["parameters"],
            "per_class": {c: {k: m[k] for k in ("Dice", "IoU", "HD95")} for c, m in result["mean"].items()},
            "mean": {k: result["foreground_mean"][k] for k in ("Dice", "IoU", "HD95")},
            "n_cases": result["n_cases"], "empty_policy": result["empty_policy"],
            "train_seconds": summary["train_seconds"], "epochs": summary["epochs_done"],
            "best_val_dice_during_training": summary["best_val_dice"], "seed": prov["seed"],
            "commit": prov["git_commit"], "scan_backend": prov["scan_backend"],
            "config": f"configs/hippocampus/{name.split('_5min')[0]}_cpu.yaml",
            "config_resolved": (run / "config.yaml").read_text(),
        })
    out = Path("benchmarks/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "hippocampus.json").write_text(json.dumps({
        "dataset": "MSD Task04 Hippocampus: 208 labelled MRI; seeded split (seed 0) 166 train / 42 validation; "
                   "metrics on the 42 held-out cases in the original geometry",
        "commands": {"train+predict+evaluate": "bash benchmarks/hippocampus_train.sh dm_segnet:10 segmamba:5 unet3d:5 "
                                               "dm_segnet:5:5min"},
        "reference": "nnU-Net on MSD: about 0.90 (anterior) / 0.89 (posterior) Dice",
        "rows": rows}, indent=2))
    lines = ["# Hippocampus (MSD Task04): DM-SegNet vs SegMamba vs 3D U-Net on a 2-core CPU", "",
             "Held-out seeded validation split (42 cases), per case then mean; HD95 in mm; empty-mask policy `nan`. "
             "Reference: nnU-Net reaches about 0.90 / 0.89 Dice (anterior / posterior) with a full GPU schedule.", "",
             "| model | params | train time | epochs | Dice anterior | Dice posterior | mean Dice | HD95 ant. (mm) "
             "| HD95 post. (mm) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pc = r["per_class"]
        ant, post = pc.get("Anterior", {}), pc.get("Posterior", {})
        lines.append(f"| {r['variant']} | {r['parameters'] / 1e6:.2f} M | {r['train_seconds'] / 60:.1f} min | "
                     f"{r['epochs']} | {ant.get('Dice', float('nan')):.4f} | {post.get('Dice', float('nan')):.4f} | "
                     f"{r['mean']['Dice']:.4f} | {ant.get('HD95', float('nan')):.2f} | "
                     f"{post.get('HD95', float('nan')):.2f} |")
    lines += ["", "Seed 0; configs `configs/hippocampus/<model>_cpu.yaml`; commits and resolved configs in "
              "`hippocampus.json`."]
    (out / "hippocampus.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/hippocampus"))
