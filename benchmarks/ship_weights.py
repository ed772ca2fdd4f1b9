"""Copy chosen checkpoints to weights/ (model, config, data plan, metrics, provenance; no optimiser state) and
rewrite their sections of weights/README.md (data, recipe, budget, seed, commit, validation and test figures, the
command that made them). Sections of models not named on the command line are kept as they are.

Usage: python benchmarks/ship_weights.py NAME=RUN [NAME=RUN ...] [--made-by NAME="command"] [--note NAME="text"]
       python benchmarks/ship_weights.py --write-manifest   # only rewrite src/mambaseg/shipped_models.json
e.g.   python benchmarks/ship_weights.py \
           dm_segnet_hippocampus=benchmarks/results/hippocampus_benchmark/runs/dm_segnet_cpu_seed1

``RUN`` is a run folder holding ``checkpoint_best.pt`` (the best-on-validation checkpoint is the one shipped) and,
optionally, ``test_eval/summary.json`` from ``mambaseg evaluate``. When the run belongs to a ``mambaseg benchmark``
(``RUN/../../summary.json``), its command is recorded as the one that made it. Choose what to ship on validation
figures only. Either way the manifest of shipped models (file, SHA-256, size, description; what ``mambaseg predict
--model NAME`` checks before loading) is rewritten from the files in weights/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from mambaseg.engine.checkpoint import load_checkpoint, slim_checkpoint
from mambaseg.resources import MANIFEST, write_manifest

OUT = Path("weights")
DESCRIPTIONS = {
    "akmamba_net_drive": "Akmamba-Net (CPU width), retinal vessels, fundus photos; trained on DRIVE",
    "dm_segnet_hippocampus": "DM-SegNet (CPU width), hippocampus anterior/posterior, T1 MRI; trained on MSD Task04",
    "dm_segnet_brats_wt": "DM-SegNet (CPU width), glioma whole tumour from FLAIR alone; trained on 10 BraTS 2018 cases",
}
TITLES = {
    "akmamba_net_drive": "retinal vessels (Akmamba-Net)",
    "dm_segnet_hippocampus": "hippocampus MRI (DM-SegNet)",
    "dm_segnet_brats_wt": "glioma whole tumour on FLAIR (DM-SegNet)",
}
PLAN_KEYS = ("orientation", "target_spacing", "normalization", "crop_nonzero", "median_shape")
HEADER = ("# Shipped models\n\n"
          "Checkpoints hold `model_name`, `model_kwargs`, `state_dict`, the resolved config, the data plan, training "
          "history and provenance (no optimiser state); they load with `torch.load(weights_only=True)` and are "
          "rebuilt through the model registry. Use them by name, `mambaseg predict --model akmamba_net_drive -i INPUT "
          "-o OUT` (or `--model weights/<file>.pt`); `mambaseg models` lists them with their SHA-256, which is checked "
          "before loading (manifest: `src/mambaseg/shipped_models.json`, rewritten by `benchmarks/ship_weights.py`). "
          "A wheel carries them as package data; `MAMBASEG_WEIGHTS=DIR` is looked up first.\n")


def _write_manifest() -> None:
    models = write_manifest(OUT, DESCRIPTIONS)
    print(f"{MANIFEST}: " + ", ".join(f"{n} {e['sha256'][:12]}" for n, e in models.items()))


def _json(p: Path) -> dict:
    return json.loads(p.read_text()) if p.is_file() else {}


def _rel(p: str) -> str:
    return os.path.relpath(Path(p).resolve(), Path.cwd().resolve())


def _test_line(ev: dict, labels: dict) -> str:
    """One line of test figures from a ``mambaseg evaluate`` summary (2D: mean over images; 3D: per class)."""
    if not ev:
        return "- Test set: not evaluated."
    where = _rel(ev.get("reference_folder", "?"))
    if ev.get("kind") == "2d":
        m = ev["mean_2d"]
        return (f"- Test set (`{where}`, {ev['n_cases']} images, inside the FOV masks, per image then averaged, "
                "`mambaseg evaluate`): " + ", ".join(f"{k} {v:.4f}" for k, v in m.items()) + ".")
    names = {str(v): k for k, v in labels.items()}
    per = "; ".join(f"{names.get(c, c)}: Dice {m['Dice']:.4f}, HD95 {m['HD95']:.2f} mm" for c, m in ev["mean"].items())
    fg = ev["foreground_mean"]
    return (f"- Held-out cases never trained on (`{where}`, {ev['n_cases']} cases, original geometry, `mambaseg "
            f"evaluate`, empty policy {ev.get('empty_policy', 'nan')}): {per}; mean Dice {fg['Dice']:.4f}, "
            f"mean HD95 {fg['HD95']:.2f} mm.")


def section(name: str, run: Path, made_by: str | None, note: str | None = None) -> tuple[str, dict]:
    """Ship ``run``'s best checkpoint as ``weights/<name>.pt`` and return its README section and test summary."""
    ev = _json(run / "test_eval" / "summary.json")
    extra = {"test_metrics": ev.get("mean_2d") or ev.get("foreground_mean") or {}}
    dst = slim_checkpoint(run / "checkpoint_best.pt", OUT / f"{name}.pt", extra=extra, overwrite=True)
    ck = load_checkpoint(dst)
    cfg, data = ck["config"], ck["data"]
    s = _json(run / "summary.json")
    bench = _json(run.parent.parent / "summary.json")
    tr, d, o, lo = cfg["train"], cfg["data"], cfg["optim"], cfg["loss"]
    clock = tr.get("budget_clock", "wall")
    prov = ck["provenance"]
    made_by = made_by or bench.get("command") or "(not recorded)"
    opts = [f"augment {d.get('augment')}"] + ([f"fundus_norm {d['fundus_norm']}"] if d.get("fundus_norm") else [])
    val_n = len(data.get("val_ids") or [])
    lines = [
        f"## `{name}.pt` — {TITLES.get(name, name)}", "",
        f"- Model: `{ck['model_name']}` {json.dumps(ck['model_kwargs'])}, "
        f"{sum(v.numel() for v in ck['state_dict'].values()) / 1e6:.2f} M parameters, "
        f"{dst.stat().st_size / 2**20:.1f} MB.",
        f"- Data: layout `{d['layout']}`, root `{d['root']}`, {len(data.get('train_ids') or [])} cases for training, "
        f"{val_n} for validation (split seeded by the run's seed)" + (f"; {note}" if note else "") + "."
        + (f" Labels: {json.dumps(data['labels'])}." if data.get("labels") else ""),
        *(["- Preprocessing plan (stored in the checkpoint): "
           + ", ".join(f"{k} {json.dumps(data['plan'][k])}" for k in PLAN_KEYS if k in data['plan']) + "."]
          if isinstance(data.get("plan"), dict) else []),
        f"- Recipe: {o['name']} lr {o['lr']} {o.get('schedule')} schedule, weight decay {o.get('weight_decay')}, "
        f"loss {lo['name']}, batch {tr['batch_size']} of {d['patch_size']} patches, {', '.join(opts)}, "
        f"threshold {cfg.get('infer', {}).get('threshold')}"
        + (f" ({data['threshold']:.2f} chosen on validation)" if isinstance(data.get("threshold"), float) else "")
        + f"; seed {cfg['seed']}; budget "
        f"{tr.get('time_limit_min')} min ({clock} clock) on {prov.get('threads')} thread(s), "
        f"{s.get('epochs_done', ck.get('epoch'))} epochs x {tr['iters_per_epoch']} iterations, "
        f"{s.get('train_seconds', ck.get('train_seconds', 0)) / 60:.1f} min counted; commit {prov.get('git_commit')}.",
        f"- Made by: `{made_by}`, then `python benchmarks/ship_weights.py {name}={run}` ("
        + ("best checkpoint on validation)." if val_n else "the final checkpoint: no validation split)."),
        (f"- Validation (best epoch, {val_n} cases): Dice {ck.get('best_val_dice', float('nan')):.4f}." if val_n
         else "- Validation: none in this run (every case trained on); see the held-out figures of its recipe."),
        _test_line(ev, data.get("labels") or {}), ""]
    if d.get("fov"):
        lines.insert(-1, "- Other cameras and sizes: without `--mask` the field of view is estimated from the photo, "
                     "and the photo is rescaled so its FOV diameter matches the training data "
                     f"({data.get('fov_diameter', 0):.0f} px) before tiled inference; masks are written at the "
                     "input's size.")
    return "\n".join(lines), ev


def _sections(text: str) -> dict[str, str]:
    """The README's per-model sections, keyed by model name (``## `NAME.pt` ...``)."""
    out = {}
    for part in re.split(r"\n(?=## `)", text)[1:]:
        m = re.match(r"## `([^`]+)\.pt`", part)
        if m:
            out[m.group(1)] = part.rstrip() + "\n"
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("items", nargs="*", help="NAME=RUN pairs")
    ap.add_argument("--made-by", action="append", default=[], help='NAME="command" that trained the run')
    ap.add_argument("--note", action="append", default=[], help='NAME="text" added to the data line')
    ap.add_argument("--write-manifest", action="store_true")
    a = ap.parse_args(argv)
    if not a.write_manifest:
        if not a.items:
            ap.error("give NAME=RUN pairs or --write-manifest")
        made = dict(m.split("=", 1) for m in a.made_by)
        notes = dict(m.split("=", 1) for m in a.note)
        readme = OUT / "README.md"
        secs = _sections(readme.read_text()) if readme.is_file() else {}
        for item in a.items:
            name, _, run = item.partition("=")
            if name not in DESCRIPTIONS or not run:
                ap.error(f"{item!r}: expected NAME=RUN with NAME one of {sorted(DESCRIPTIONS)}")
            if not (Path(run) / "checkpoint_best.pt").is_file():
                ap.error(f"{run}: no checkpoint_best.pt in this run folder")
            secs[name], _ = section(name, Path(run), made.get(name), notes.get(name))
            print(secs[name])
        readme.write_text(HEADER + "\n" + "\n".join(secs[n] for n in DESCRIPTIONS if n in secs))
    _write_manifest()


if __name__ == "__main__":
    main()
