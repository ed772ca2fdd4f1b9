"""Command-line interface: argparse subcommands that parse, then call one library function each.

Errors the user can fix (bad paths, bad files, bad configs) print one line ``mambaseg <cmd>: error: ...`` and exit 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

from .resources import package_version

__all__ = ["build_parser", "main", "package_version"]


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show full tracebacks")


def _print_profiles(report: dict, out: Path) -> int:
    """The top operators of each profiled training step in a bench report, and where it was written."""
    for name, table in report.get("profiles", {}).items():
        print(f"top operators, one training step of {name}:")
        for r in table:
            print(f"  {r['op'][:40]:40s} {r['self_ms']:9.1f} ms {100 * r['share']:5.1f} % {r['calls']:5d} calls")
    print(f"results written to {out}")
    return 0


def _cmd_bench(args) -> int:
    import json

    from .apps.speed import (
        format_scan_table,
        run_amp_bench,
        run_infer_bench,
        run_models2d_bench,
        run_models3d_bench,
        run_scan_bench,
    )

    command = shlex.join(["mambaseg", *args.argv])  # the exact command, recorded in the result file
    if args.what in ("amp", "infer"):
        out = Path(args.out or f"benchmarks/results/{args.what}{'_quick' if args.quick else ''}.json")
        if args.what == "amp":
            report = run_amp_bench(args.threads, out, command, args.rounds, args.quick)
            print(json.dumps({"step_seconds": report["step_seconds"], "ratios": report["ratios"],
                              "bf16_gains": report["bf16_gains"]}, indent=1))
        else:
            report = run_infer_bench(args.threads, out, command, args.rounds, args.quick, tuple(args.case))
            print(json.dumps({"results": report["results"], "ratios": report["ratios"]}, indent=1))
        return _print_profiles(report, out)
    if args.what in ("models2d", "models3d"):
        out = Path(args.out or f"benchmarks/results/{args.what}.json")
        if args.what == "models2d":
            report = run_models2d_bench(args.threads, out, command, args.weights, args.rounds)
        else:
            report = run_models3d_bench(args.threads, out, command, args.quick, args.rounds)
        print(json.dumps({"results": report["results"], "ratios": report["ratios"]}, indent=1))
        return _print_profiles(report, out)
    out = Path(args.out or "benchmarks/results/scan.json")
    report = run_scan_bench(quick=args.quick, threads=args.threads, out=out, command=command,
                            progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_scan_table(report))
    print(f"results written to {out}")
    return 0


def _cmd_train(args) -> int:
    import json

    from .config import load_config
    from .engine.train import train
    from .resources import check_data_roots, data_root_overrides, resolve_config

    # `train --set k=v CFG`: argparse hands CFG to --set (nargs="*"); the one item without "=" is the config
    sets = list(args.set)
    if args.config is None:
        files = [s for s in sets if "=" not in s]
        if len(files) != 1:
            raise ValueError("a config file is required: mambaseg train CONFIG.yaml [--set KEY=VALUE ...]")
        args.config = files[0]
        sets.remove(args.config)
    path = resolve_config(args.config)  # a YAML file, or a reference config name (mambaseg config list)
    sets += (["train.deterministic=true"] if args.deterministic else []) + (
        [f"data.root={json.dumps(args.data_root)}"] if args.data_root else [])
    cfg = load_config(path, data_root_overrides(load_config(path)) + sets)  # $MAMBASEG_DATA first, then --set
    check_data_roots(cfg)
    out = Path(args.out) if args.out else Path("runs") / f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    summary = train(cfg, out, resume=args.resume, progress=not args.no_progress)
    print(f"training done in {summary['train_seconds']:.0f} s, {summary['epochs_done']} epochs; "
          f"best validation Dice {summary['best_val_dice']:.4f}")
    files = [n for n in ("checkpoint_best.pt", "checkpoint_last.pt", "train.log", "metrics.jsonl", "progress.png")
             if (out / n).exists()]
    print(f"run folder: {out}  ({', '.join(files)})")
    print(f"report: mambaseg report {out} -o {out / 'report.html'}")
    return 0


def _cmd_predict(args) -> int:
    from .engine.predict import predict
    from .resources import resolve_model

    written = predict(resolve_model(args.model), args.input, args.output, overlay=args.overlay, probs=args.probs,
                      mask=args.mask, tta=args.tta, overlap=args.overlap, overwrite=args.overwrite,
                      progress=not args.no_progress, device=args.device, skip_existing=args.skip_existing)
    print(f"wrote {len(written)} prediction(s) to {args.output}")
    return 0


def _cmd_evaluate(args) -> int:
    from .engine.evaluate import evaluate, format_table

    result = evaluate(args.pred, args.gt, args.output, mask=args.mask, empty_policy=args.empty_policy,
                      regions=args.regions, overwrite=args.overwrite, threshold=args.threshold,
                      allow_missing=args.allow_missing, workers=args.workers, ignore_extra=args.ignore_extra)
    print(format_table(result))
    print(f"results written to {args.output}")
    print(f"report: mambaseg report {args.output} -o {Path(args.output) / 'report.html'}")
    return 0


def _cmd_report(args) -> int:
    from .apps.report import write_report

    src = Path(args.path)
    out = Path(args.output) if args.output else (src if src.is_dir() else src.parent) / "report.html"
    written = write_report(src, out)
    print(f"report written to {written}")
    return 0


def _cmd_export(args) -> int:
    from .resources import resolve_model

    if args.bundle:
        if args.size:
            raise ValueError("--size applies to --onnx; a MONAI bundle takes any input size (sliding window).")
        from .apps.bundle import export_bundle

        res = export_bundle(resolve_model(args.model), args.bundle, overwrite=args.overwrite)
        print(f"MONAI bundle of {res['model_name']} written to {res['path']} ({', '.join(res['files'])})")
        print(f"run: cd {res['path']} && python -m monai.bundle run --config_file configs/inference.json "
              f"--dataset_dir IMAGES --output_dir OUTPUT")
        return 0
    from .apps.export import export_onnx

    meta = export_onnx(resolve_model(args.model), args.onnx, size=args.size, overwrite=args.overwrite)
    shape = "fixed size " + "x".join(str(s) for s in meta["fixed_size"]) if meta["fixed_size"] else \
        "dynamic spatial size"
    print(f"exported {meta['model_name']} to {meta['path']} ({shape}, {'dynamic' if meta['dynamic_batch'] else 'fixed'}"
          f" batch; onnxruntime vs PyTorch max abs difference {meta['check_max_abs_diff']:.2g})")
    print(f"predict: mambaseg predict --model {meta['path']} -i INPUT -o OUTPUT")
    return 0


def _cmd_demo(args) -> int:
    from .apps.demo import DEMO_2D_STEPS, run_demo

    for opt in ("steps", "steps_3d"):
        if getattr(args, opt) is not None and getattr(args, opt) < 1:
            print(f"error: --{opt.replace('_', '-')} must be an integer >= 1, got {getattr(args, opt)}",
                  file=sys.stderr)
            return 2
    out = run_demo(Path(args.out), steps_2d=args.steps or DEMO_2D_STEPS, steps_3d=args.steps_3d,
                   with_3d=not args.no_3d, with_real=not args.no_real, seed=args.seed,
                   log=lambda m: print(m, flush=True))
    print(f"demo results: {out}")
    return 0


def benchmark_command(args, threads: int, parallel: int) -> str:
    """The ``mambaseg benchmark`` command line recorded in summary.json: every option that shapes the runs."""
    clock = args.budget_clock if args.budget_minutes and args.budget_clock not in (None, "wall") else None
    opts = [("--models", args.models), ("--budget-minutes", args.budget_minutes), ("--budget-clock", clock),
            ("--steps", args.steps), *[("--budget", b) for b in args.budget or []], ("--seeds", args.seeds),
            *[("--arm-seeds", a) for a in getattr(args, "arm_seeds", None) or []],
            ("--reference", getattr(args, "reference", "")), ("--test", args.test),
            ("--test-images", args.test_images), ("--test-labels", args.test_labels), ("--test-mask", args.test_mask),
            ("--folds", getattr(args, "folds", "")), ("--fold-ids", getattr(args, "fold_ids", "")),
            ("--out", args.out), ("--threads", threads), ("--parallel", parallel)]
    return shlex.join(["mambaseg", "benchmark", *args.configs, *[x for k, v in opts if v for x in (k, str(v))]]
                      + (["--allow-mixed-commits"] if getattr(args, "allow_mixed_commits", False) else [])
                      + (["--set", *args.set] if args.set else []))


def _cmd_benchmark(args) -> int:
    from .apps.benchmark import format_plan, parse_n_boot, plan_benchmark, plan_budgets, run_benchmarks

    n_boot = parse_n_boot(args.n_boot)
    test = {"test": args.test, "images": args.test_images, "labels": args.test_labels, "mask": args.test_mask}
    common = {"configs": args.configs, "models": args.models, "seeds": args.seeds, "threads": args.threads,
              "parallel": args.parallel, "sets": args.set, "test": test, "arm_seeds": args.arm_seeds,
              "reference": args.reference, "folds": args.folds, "fold_ids": args.fold_ids}
    if args.budget:
        given = [o for o, v in (("--steps", args.steps), ("--budget-minutes", args.budget_minutes),
                                ("--budget-clock", args.budget_clock)) if v]
        if given:
            raise ValueError(f"--budget: give the budgets either as --budget KIND:VALUE (repeatable) or as "
                             f"{'/'.join(given)}, not both.")
        plans = plan_budgets(args.budget, args.out, **common)
    else:
        plans = [plan_benchmark(budget_minutes=args.budget_minutes, steps=args.steps, out=args.out,
                                budget_clock=args.budget_clock or "wall", **common)]
    if args.dry_run:
        print("\n".join(format_plan(p) for p in plans))
        return 0
    command = benchmark_command(args, plans[0].threads, plans[0].parallel)
    run_benchmarks(plans, n_boot=n_boot, command=command, log=lambda m: print(m, file=sys.stderr, flush=True),
                   allow_mixed_commits=args.allow_mixed_commits, out=args.out)
    return 0


def _cmd_config(args) -> int:
    from .resources import config_path, configs_dir, list_configs

    if args.action == "list":
        names = list_configs()
        print("\n".join(names) if names else "no reference configs installed")
        if names:
            print(f"({len(names)} configs in {configs_dir()}; train one: mambaseg train NAME --data-root DIR)",
                  file=sys.stderr)
        return 0
    if not args.name:
        raise ValueError("config show needs a NAME (see mambaseg config list)")
    print(config_path(args.name).read_text(), end="")
    return 0


def _cmd_models(args) -> int:
    from .resources import format_models

    print(format_models())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mambaseg",
                                     description="Mamba medical image segmentation that runs anywhere.")
    parser.add_argument("--version", action="version", version=f"mambaseg {package_version()}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("bench", help="benchmarks: scan, models2d, models3d, amp, infer")
    p.add_argument("what", choices=["scan", "models2d", "models3d", "amp", "infer"],
                   help="scan: the selective-scan backends; models2d: Akmamba-Net vs U-Net steps and inference; "
                        "models3d: DM-SegNet vs 3D U-Net steps; amp: training steps of both Mamba networks vs "
                        "their baselines in fp32 and bf16 autocast; infer: inference at real size (DRIVE image, "
                        "Hippocampus and BraTS volumes), fp32 and bf16, seconds and peak memory")
    p.add_argument("--quick", action="store_true", help="scan: only the 2D case, no reference loop; models3d: only "
                   "the CPU-width DM-SegNet vs 3D U-Net steps; amp/infer: tiny inputs (checks that it runs)")
    p.add_argument("--case", action="append", default=[], metavar="NAME",
                   help="infer: only this case (repeatable): drive_565x584, hippocampus_36x50x35, brats_240x240x155")
    p.add_argument("--rounds", type=int, default=5, help="models2d/3d: alternated rounds (best of each is kept)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for the timings (default 2)")
    p.add_argument("--weights", default="", help="models2d: checkpoint to time full-image inference with")
    p.add_argument("--out", default="", help="result file (default benchmarks/results/<what>.json)")
    _add_common(p)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("benchmark", help="equal-budget benchmark: train models x seeds, test, statistics, HTML")
    p.add_argument("configs", nargs="*", help="training config YAML file(s), one per model")
    p.add_argument("--models", default="", help="comma-separated model names replacing the model of one config")
    p.add_argument("--budget-minutes", default=None, help="training budget per run in minutes (train.time_limit_min)")
    p.add_argument("--budget-clock", default=None, choices=("wall", "cpu"),
                   help="what --budget-minutes counts: wall (elapsed, the default) or cpu (each run's CPU time, all "
                        "its threads; not shrunk by other work on the machine)")
    p.add_argument("--steps", default=None, help="training-step budget per run (rounded up to whole epochs)")
    p.add_argument("--budget", action="append", default=[], metavar="KIND:VALUE",
                   help="a budget, repeatable instead of --steps/--budget-minutes: steps:N, cpu:MINUTES (CPU time "
                        "per run) or wall:MINUTES; every (arm, seed) is trained once per budget, each budget in "
                        "OUT/<tag>/ (steps600, cpu30min, wall60min) when there are several, and OUT/summary.md holds "
                        "their tables one after the other")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1")
    p.add_argument("--arm-seeds", action="append", default=[], metavar="ARM[,ARM...]=SEEDS",
                   help="the seeds of some arms instead of --seeds, repeatable, e.g. --seeds 0,1 --arm-seeds "
                        "akmamba_net_cpu_base,akmamba_net_cpu=0,1,2")
    p.add_argument("--reference", default="", metavar="ARM",
                   help="the arm the paired comparisons are made against (default: the first arm)")
    p.add_argument("--allow-mixed-commits", action="store_true",
                   help="train new or resumed runs even where runs of the same table were trained at another "
                        "commit (a warning stays in the summary); by default that is refused")
    p.add_argument("--test", default="", help="test folder (DRIVE split, MSD imagesTs/labelsTs, or images/labels)")
    p.add_argument("--test-images", default="", help="test images (file or folder)")
    p.add_argument("--test-labels", default="", help="test labels folder")
    p.add_argument("--test-mask", default="", help="2D: field-of-view masks folder")
    p.add_argument("--folds", default="", metavar="K",
                   help="3D: K-fold cross-validation on data.root instead of a test set (nnU-Net's protocol): each "
                        "arm trains once per fold and predicts the cases it never saw")
    p.add_argument("--fold-ids", default="", metavar="K[,K...]",
                   help="with --folds: run these folds only (default all), e.g. 0,1")
    p.add_argument("--out", default="", help="output folder (runs/, results.csv, summary.json, index.html)")
    p.add_argument("--threads", default="0", help="threads per training run (default: CPU cores / --parallel)")
    p.add_argument("--parallel", default="1", help="trainings run side by side as subprocesses")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every run")
    p.add_argument("--n-boot", default="10000", help="bootstrap resamples (1 ... 1000000, default 10000)")
    p.add_argument("--dry-run", action="store_true", help="check the inputs and print the plan; train nothing")
    _add_common(p)
    p.set_defaults(func=_cmd_benchmark)

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", nargs="?", help="YAML config file or reference config name, e.g. "
                   "drive/akmamba_net_cpu (see mambaseg config list)")
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config keys, e.g. train.epochs=5 (repeatable; before or after the config)")
    p.add_argument("--out", help="run folder (default runs/<config>-<time>)")
    p.add_argument("--data-root", metavar="DIR", help="dataset folder, replacing the config's data.root (default: "
                   "data.root, looked up under $MAMBASEG_DATA when that is set)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoint_last.pt")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress line on stderr (shown by default: redrawn on a terminal, one line per 30 s "
                        "in a log)")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms (bit-exact resume on CPU)")
    _add_common(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("predict", help="segment images or volumes with a trained model")
    p.add_argument("--model", "-m", required=True, help="run folder, checkpoint (.pt), ONNX file or shipped model "
                   "name (see mambaseg models)")
    p.add_argument("--input", "-i", required=True, help="image/volume file or folder")
    p.add_argument("--output", "-o", required=True, help="output folder (must not be the input folder)")
    p.add_argument("--mask", help="2D fundus models only: folder of field-of-view masks (default: estimated from "
                   "each image); refused for 3D models")
    p.add_argument("--overlay", action="store_true", help="also write colour overlays (overlays/<name>.png; 3D: "
                   "labelled axial/coronal/sagittal slices)")
    p.add_argument("--probs", action="store_true", help="also write probabilities (2D: probs/<name>.png, 16-bit "
                   "foreground; 3D: <case>.npz 'probabilities' (K, X, Y, Z) + <case>.json, as nnU-Net "
                   "--save_probabilities)")
    p.add_argument("--tta", action="store_true",
                   help="mirror test-time augmentation (on by default when the model's config sets infer.tta: true)")
    p.add_argument("--overlap", type=float, default=None, help="tile overlap in [0, 1)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--continue", dest="skip_existing", action="store_true",
                   help="keep outputs that already exist (finished by an interrupted run) and write the rest")
    p.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda, cuda:N or mps")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress line on stderr (images or cases and tiles done; one line per 30 s in a log)")
    _add_common(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("evaluate", help="score predictions against ground truth")
    p.add_argument("--pred", required=True, help="folder of predictions")
    p.add_argument("--gt", required=True, help="folder of ground-truth labels (or a DRIVE split folder)")
    p.add_argument("--mask", help="2D: folder of field-of-view masks; metrics are computed inside them")
    p.add_argument("--output", "-o", required=True, help="output folder for metrics.csv and summary.json")
    p.add_argument("--empty-policy", default=None, choices=["nan", "transunet", "segmamba", "brats"],
                   help="3D only: score when prediction or reference is empty (default nan)")
    p.add_argument("--regions", default="", choices=["", "brats", "wt"],
                   help="3D only: score BraTS regions: brats = whole tumour, tumour core, enhancing tumour (BraTS "
                        "2021/2023 labels; 4 read as 3), wt = whole tumour alone (binary whole-tumour labels)")
    p.add_argument("--threshold", type=float, default=None,
                   help="2D only (default 0.5): foreground where p > threshold, for predictions stored as "
                        "probability maps (float 0-1, 8- or 16-bit); label masks (0 and one other value) are "
                        "foreground where non-zero")
    p.add_argument("--allow-missing", action="store_true",
                   help="score only the cases that have a prediction (missing ones are listed, with a warning); "
                        "by default a reference without prediction is an error")
    p.add_argument("--ignore-extra", action="store_true",
                   help="leave out predictions without their own reference (listed in summary.json under "
                        "extra_predictions, with a warning); by default each one is an error")
    p.add_argument("--workers", "-np", type=int, default=1, metavar="N",
                   help="cases scored in parallel: 1 = in this process (default), N > 1 = a pool of N processes, "
                        "one case in memory and one thread each; same outputs (nnU-Net: -np)")
    p.add_argument("--overwrite", action="store_true", help="replace existing result files in the output folder")
    _add_common(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("report", help="self-contained HTML report of a run or evaluation folder")
    p.add_argument("path", help="run folder (config.yaml, metrics.jsonl, ...) or evaluation folder (summary.json)")
    p.add_argument("--output", "-o", default="", help="HTML file (default <path>/report.html)")
    _add_common(p)
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("export", help="export a trained model to ONNX (checked with onnxruntime) or as a MONAI bundle")
    p.add_argument("--model", "-m", required=True, help="run folder, checkpoint (.pt) or shipped model name")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--onnx", help="output .onnx file")
    target.add_argument("--bundle", help="output MONAI bundle folder (configs/, models/model.pt, docs/, LICENSE)")
    p.add_argument("--size", type=int, nargs="+", default=None, metavar="N",
                   help="export size H W (2D) or D H W (3D); default: the checkpoint's inference tile")
    p.add_argument("--overwrite", action="store_true", help="replace an existing .onnx file or bundle folder")
    _add_common(p)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("config", help="reference configs shipped with the package: list, show NAME")
    p.add_argument("action", choices=["list", "show"], help="list the names, or print one config's YAML")
    p.add_argument("name", nargs="?", help="config name, e.g. drive/akmamba_net_cpu")
    _add_common(p)
    p.set_defaults(func=_cmd_config)

    p = sub.add_parser("models", help="shipped models (name, SHA-256, file) usable as predict --model NAME")
    _add_common(p)
    p.set_defaults(func=_cmd_models)

    from .apps.demo import DEMO_2D_STEPS, DEMO_3D_STEPS

    p = sub.add_parser("demo", help="train, predict and evaluate on built-in synthetic data; the shipped models on "
                                    "a few real cases when $MAMBASEG_DATA (or ../shared/data) holds them")
    p.add_argument("--out", default="demo_results", help="output folder (default demo_results)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"2D training budget in optimiser steps (default {DEMO_2D_STEPS}: the same model on every "
                   "machine, a busy one only takes longer)")
    p.add_argument("--steps-3d", type=int, default=None,
                   help=f"3D training budget in optimiser steps (default {DEMO_3D_STEPS})")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and of both trainings")
    p.add_argument("--no-3d", action="store_true", help="skip the 3D part")
    p.add_argument("--no-real", action="store_true", help="skip the shipped models on real cases")
    _add_common(p)
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mambaseg").setLevel(logging.INFO if args.command in ("train", "demo") else logging.WARNING)
    try:
        return args.func(args)
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", 2)  # a benchmark stopped by SIGTERM/SIGHUP says which
        print(f"mambaseg {args.command}: interrupted" + (f" (signal {signum})" if signum != 2 else ""),
              file=sys.stderr)
        return 128 + signum
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, PermissionError, RuntimeError, OSError) as e:
        if args.debug:
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"mambaseg {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
