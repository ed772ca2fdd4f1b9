"""``mambaseg benchmark``: the statistics on constructed examples, the plan (budgets, subprocess command lines), bad
input, and end to end on tiny synthetic 2D and 3D data (train -> evaluate -> results; rerun skips; resume)."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from mambaseg.apps.benchmark import (
    BenchmarkError,
    BenchmarkTestSet,
    fairness_warnings,
    parse_budget,
    parse_models,
    parse_seeds,
    plan_benchmark,
    train_command,
)
from mambaseg.apps.benchmark.html import render_html
from mambaseg.apps.benchmark.markdown import render_markdown
from mambaseg.apps.benchmark.statistics import bootstrap_ci, describe, paired_comparison, summarize
from mambaseg.cli import main
from mambaseg.data.synthetic import write_synthetic_drive
from tests.conftest import tiny_3d_yaml

CONFIG = """
seed: 0
model: {name: unet_tiny}
data: {layout: drive, root: "%s", val_fraction: 0.25, patch_size: [32, 32], fov: true, augment: none}
optim: {lr: 3.0e-3}
train: {epochs: 7, iters_per_epoch: 2, batch_size: 2, val_every: 1, time_limit_min: 9}
infer: {patch_size: [48, 48]}
"""

MODELS = "unet_tiny,akmamba_net_tiny"


# ------------------------------------------------------------------------------------------------------ statistics
def test_describe_known_values():
    d = describe([1.0, 2.0, 3.0, 4.0, float("nan")])
    assert d["n"] == 4 and d["mean"] == 2.5 and d["median"] == 2.5
    assert d["sd"] == pytest.approx(math.sqrt(5 / 3))  # ddof=1: sum of squares 5 over 3
    assert d["ci95"][0] < 2.5 < d["ci95"][1]
    one = describe([0.7])
    assert one["n"] == 1 and one["ci95"] == [0.7, 0.7] and math.isnan(one["sd"])
    assert describe([])["n"] == 0


def test_bootstrap_ci_constant_reproducible_and_narrowing():
    assert bootstrap_ci([0.3] * 8) == (0.3, 0.3)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    rng = np.random.default_rng(1)
    x = rng.normal(0.8, 0.05, 20)
    lo, hi = bootstrap_ci(x, n_boot=5000, seed=3)
    assert (lo, hi) == bootstrap_ci(x, n_boot=5000, seed=3)  # seeded
    assert lo < x.mean() < hi
    # the percentile CI of a mean is close to mean +- 1.96 SE for a normal sample
    se = x.std(ddof=1) / math.sqrt(x.size)
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.2)
    big = rng.normal(0.8, 0.05, 400)
    lo2, hi2 = bootstrap_ci(big, n_boot=2000)
    assert hi2 - lo2 < (hi - lo) / 2


def test_paired_comparison_known_difference():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.6, 0.85, 12)
    b = a + 0.05
    res = paired_comparison(a, b)
    assert res["n"] == 12
    assert res["mean_difference"] == pytest.approx(0.05, abs=1e-12)
    assert res["ci95"][0] == pytest.approx(0.05, abs=1e-12) and res["ci95"][1] == pytest.approx(0.05, abs=1e-12)
    # every difference positive: the exact two-sided signed-rank p is 2 / 2^12
    assert res["wilcoxon_p"] == pytest.approx(2 / 2 ** 12)
    # direction: a - b is -0.05
    assert paired_comparison(b, a)["mean_difference"] == pytest.approx(-0.05, abs=1e-12)
    # symmetric noise around zero: no evidence of a difference
    noise = np.array([0.01, -0.012, 0.02, -0.018, 0.005, -0.004, 0.03, -0.031, 0.002, -0.001])
    res0 = paired_comparison(a[:10], a[:10] + noise)
    assert res0["wilcoxon_p"] > 0.5 and res0["ci95"][0] < 0 < res0["ci95"][1]
    # identical samples: p = 1, difference 0; NaN pairs are dropped
    same = paired_comparison(a, a)
    assert same["wilcoxon_p"] == 1.0 and same["mean_difference"] == 0.0
    with_nan = paired_comparison([np.nan, *a], [0.5, *b])
    assert with_nan["n"] == 12
    with pytest.raises(ValueError):
        paired_comparison([1.0, 2.0], [1.0])


def test_summarize_seed_and_case_averaging():
    rng = np.random.default_rng(5)
    base = rng.uniform(0.6, 0.8, 10)
    rows = []
    for seed, shift in ((0, 0.0), (1, 0.02)):
        for i, v in enumerate(base):
            rows.append({"model": "a", "seed": seed, "case": f"c{i}", "metric": "dice", "value": v + shift})
            rows.append({"model": "b", "seed": seed, "case": f"c{i}", "metric": "dice", "value": v + shift + 0.05})
            rows.append({"model": "a", "seed": seed, "case": f"c{i}", "metric": "hd95", "value": 3.0})
    s = summarize(rows, ["a", "b"], n_boot=2000)
    a = s["models"]["a"]["metrics"]["dice"]
    # over cases: each case averaged over the seeds first (base + 0.01), then 10 cases
    assert a["over_cases"]["n"] == 10 and a["over_cases"]["mean"] == pytest.approx(base.mean() + 0.01)
    assert a["over_cases"]["sd"] == pytest.approx(base.std(ddof=1))
    # over seeds: the two per-seed means
    assert a["over_seeds"]["values"] == pytest.approx([base.mean(), base.mean() + 0.02])
    assert a["over_seeds"]["sd"] == pytest.approx(0.02 / math.sqrt(2))
    assert s["models"]["a"]["metrics"]["hd95"]["higher_is_better"] is False
    (c,) = [c for c in s["comparisons"] if c["metric"] == "dice"]
    assert (c["a"], c["b"], c["n"]) == ("a", "b", 10)
    assert c["mean_difference"] == pytest.approx(0.05, abs=1e-12)
    assert c["ci95"] == pytest.approx([0.05, 0.05], abs=1e-12)
    assert c["wilcoxon_p"] == pytest.approx(2 / 2 ** 10)
    assert s["metrics"][0] == "dice"


def test_markdown_tables_hold_the_summary_figures():
    """summary.md: the per-model row, per-seed steps and the paired comparison carry summary.json's numbers."""
    base = np.linspace(0.6, 0.8, 10)
    rows = [{"model": m, "seed": seed, "case": f"c{i}", "metric": metric, "value": v}
            for seed in (0, 1) for i, b in enumerate(base)
            for m, metric, v in (("a", "dice", b), ("b", "dice", b + 0.05), ("a", "hd95", 3.0), ("b", "hd95", 2.0))]
    stats = summarize(rows, ["a", "b"], n_boot=500)
    for label, params, rss in (("a", 2_620_000, 900.0), ("b", 4_140_000, 1100.0)):
        stats["models"][label].update(parameters=params, peak_rss_mb={"mean": rss, "min": rss, "max": rss})
    runs = [{"model": m, "seed": s, "steps": steps, "epochs": steps // 25, "train_seconds": 1800.0 + s}
            for m, base_steps in (("a", 1000), ("b", 2950)) for s in (0, 1) for steps in [base_steps + 25 * s]]
    summary = {"primary_metric": "dice", "budget": {"minutes": 30.0, "steps": None, "clock": "cpu"},
               "threads_per_run": 1, "parallel": 2, "seeds": [0, 1], "test": {"images": "t/imagesTs",
               "labels": "t/labelsTs"}, "created": "now", "command": "mambaseg benchmark x.yaml",
               "models": stats["models"], "metrics": stats["metrics"], "comparisons": stats["comparisons"],
               "runs": runs, "checkpoint": "best", "failed": [],
               "statistics": {"over_cases": "c", "over_seeds": "s", "comparisons": "paired", "n_boot": 500}}
    md = render_markdown(summary)
    a = stats["models"]["a"]["metrics"]["dice"]["over_cases"]
    row_a = next(line for line in md.splitlines() if line.startswith("| a |"))
    assert f"{a['mean']:.4f} ± {a['sd']:.4f}" in row_a and "2.62 M" in row_a and "1000 / 1025" in row_a
    assert f"[{a['ci95'][0]:.4f}, {a['ci95'][1]:.4f}]" in row_a and "30.0 / 30.0" in row_a and "| 900 |" in row_a
    dice_cmp = next(line for line in md.splitlines() if line.startswith("| b − a | dice"))
    assert "| higher | 0.0500 | [0.0500, 0.0500] |" in dice_cmp and f"| {2 / 2 ** 10:.3g} | 10 |" in dice_cmp
    hd_cmp = next(line for line in md.splitlines() if line.startswith("| b − a | hd95"))
    assert "| lower | -1.0000 |" in hd_cmp
    assert "30 min (cpu clock)" in md and "`mambaseg benchmark x.yaml`" in md and "| model | hd95 |" in md
    assert "bootstrap with 500 resamples" in md


def test_fairness_warnings_commits_and_cpu_share():
    """Runs made at different commits, or given unequal CPU shares under a wall-clock budget, are flagged."""
    def rec(run, commit="abc", share=0.97):
        return {"run": run, "commit": commit, "cpu_share": share}

    assert fairness_warnings([rec("a_seed0"), rec("b_seed0", share=0.9)], "wall") == []  # within 20 %: fine
    (w,) = fairness_warnings([rec("a_seed0"), rec("b_seed0", commit="def+dirty")], "wall")
    assert "different commits" in w and "abc: a_seed0" in w and "def+dirty: b_seed0" in w
    sha = "fd37425b2d0dc95cf796f8354c4f6622687f90ec"
    (w,) = fairness_warnings([rec("a_seed0", commit=sha + "+dirty"), rec("b_seed0", commit=sha)], None)
    assert "fd37425b2d0d+dirty: a_seed0; fd37425b2d0d: b_seed0" in w
    (w,) = fairness_warnings([rec("a_seed0", share=0.45), rec("b_seed0", share=0.95)], "wall")
    assert "a_seed0 got 0.45" in w and "b_seed0 0.95" in w
    # under a CPU-time budget an unequal share does not change the compute each run got
    assert fairness_warnings([rec("a_seed0", share=0.45), rec("b_seed0", share=0.95)], "cpu") == []
    assert fairness_warnings([rec("a_seed0", share=0.45), rec("b_seed0", share=0.95)], None) == []
    w = fairness_warnings([rec("a_seed0", share=None), rec("b_seed0"), rec("c_seed0")], "wall")
    assert w == ["no CPU-time record for a_seed0 (trained before it was recorded): their share of the machine is "
                 "unknown."]


# ----------------------------------------------------------------------------------------------- parsing, the plan
def test_parsers():
    assert parse_seeds("0, 1,7") == [0, 1, 7]
    for bad in ("a,b", "1.5", "", "-1", "0,0"):
        with pytest.raises(BenchmarkError, match="--seeds"):
            parse_seeds(bad)
    assert parse_budget("1.5", None) == (1.5, 0) and parse_budget(None, "20") == (0.0, 20)
    for minutes, steps in (("0", None), ("-2", None), ("x", None), (None, "0"), (None, "2.5"), (None, None)):
        with pytest.raises(BenchmarkError):
            parse_budget(minutes, steps)
    assert parse_models("unet_tiny, akmamba_net_tiny") == ["unet_tiny", "akmamba_net_tiny"]
    with pytest.raises(BenchmarkError, match="unet_tinny"):
        parse_models("unet_tinny")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench ü")  # space and non-ASCII in every path
    d = write_synthetic_drive(root / "drive", n_train=4, n_test=3, size=(48, 52), seed=1)
    cfg = root / "cfg.yaml"
    cfg.write_text(CONFIG % d)
    return root, d, cfg


def test_plan_budgets_and_parallel_command_lines(data, tmp_path):
    _, d, cfg = data
    test = BenchmarkTestSet(d / "test" / "images", d / "test" / "1st_manual", d / "test" / "mask")
    plan = plan_benchmark([str(cfg)], MODELS, None, "5", "0,1", tmp_path / "out", "1", "2", [], test)
    # seed-major: the two models of one seed are neighbours, so --parallel 2 trains them side by side
    assert [s.name for s in plan.runs] == ["unet_tiny_seed0", "akmamba_net_tiny_seed0", "unet_tiny_seed1",
                                           "akmamba_net_tiny_seed1"]
    assert plan.threads == 1 and plan.parallel == 2
    spec = plan.runs[3]
    assert spec.run_dir == tmp_path / "out" / "runs" / "akmamba_net_tiny_seed1"
    # 5 steps at 2 per epoch -> 3 epochs; the config's time limit is switched off (only the step budget counts)
    assert (spec.cfg.train.epochs, spec.cfg.train.iters_per_epoch, spec.cfg.train.time_limit_min) == (3, 2, 0)
    assert spec.cfg.seed == 1 and spec.cfg.model.name == "akmamba_net_tiny" and spec.cfg.model.kwargs == {}
    assert spec.cfg.train.num_threads == 1
    cmd = train_command(spec)
    assert cmd[:5] == [sys.executable, "-m", "mambaseg", "train", str(cfg)]
    assert cmd[cmd.index("--out") + 1] == str(spec.run_dir) and "--resume" not in cmd
    sets = cmd[cmd.index("--set") + 1:]
    assert {"seed=1", "model.name=akmamba_net_tiny", "train.num_threads=1", "train.epochs=3",
            "train.iters_per_epoch=2", "train.time_limit_min=0"} <= set(sets)
    assert "--resume" in train_command(spec, resume=True)
    from mambaseg.apps.benchmark import train_env

    env = train_env(1, {"PATH": "/bin"})
    assert env["OMP_NUM_THREADS"] == "1" and env["MKL_NUM_THREADS"] == "1" and env["PATH"] == "/bin"
    # a time budget only: the clock ends training, not the epoch count
    plan = plan_benchmark([str(cfg)], "", "0.5", None, "3", tmp_path / "o2", "2", "1", [], test)
    (spec,) = plan.runs
    assert spec.cfg.train.time_limit_min == 0.5 and spec.cfg.train.epochs >= 10 ** 6 and spec.name == "unet_tiny_seed3"
    # 1 step: one epoch of one iteration
    plan = plan_benchmark([str(cfg)], "", None, "1", "0", tmp_path / "o3", "1", "1", [], test)
    assert (plan.runs[0].cfg.train.epochs, plan.runs[0].cfg.train.iters_per_epoch) == (1, 1)


def _one_line_error(capsys, args, needle):
    code = main(args)
    err = capsys.readouterr().err
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert code == 2, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert needle in lines[0], lines[0]


def test_bad_input(data, tmp_path, capsys):
    _, d, cfg = data
    common = ["--test", str(d / "test"), "--out", str(tmp_path / "o")]
    cases = [
        ([str(cfg), "--models", "unet_tiny,nope_net", "--steps", "2", *common], "nope_net"),
        (["--steps", "2", *common], "no training config"),
        ([str(cfg), "--steps", "2", "--seeds", "a,b", *common], "--seeds"),
        ([str(cfg), "--budget-minutes", "0", *common], "--budget-minutes"),
        ([str(cfg), "--budget-minutes", "-1", *common], "--budget-minutes"),
        ([str(cfg), "--steps", "0", *common], "--steps"),
        ([str(cfg), *common], "no budget"),
        ([str(cfg), "--steps", "2", "--test", str(tmp_path / "missing"), "--out", str(tmp_path / "o")], "missing"),
        ([str(cfg), "--steps", "2", "--test", str(tmp_path), "--out", str(tmp_path / "o")], "1st_manual"),
        ([str(cfg), "--steps", "2", "--test-images", str(d / "test" / "images"), "--out", str(tmp_path / "o")],
         "--test-labels"),
        ([str(tmp_path / "nope.yaml"), "--steps", "2", *common], "nope.yaml"),
        ([str(cfg), str(cfg), "--models", MODELS, "--steps", "2", *common], "--models"),
        ([str(cfg), "--steps", "2", "--parallel", "0", *common], "--parallel"),
    ]
    for args, needle in cases:
        _one_line_error(capsys, ["benchmark", *args], needle)
    assert not (tmp_path / "o").exists()


def test_dry_run_prints_plan(data, tmp_path, capsys):
    _, d, cfg = data
    out = tmp_path / "o"
    assert main(["benchmark", str(cfg), "--models", MODELS, "--budget-minutes", "60", "--seeds", "0,1",
                 "--parallel", "2", "--threads", "1", "--test", str(d / "test"), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert ("2 model(s) x 2 seed(s) = 4 run(s); budget 60 min (wall clock) per run; 1 thread(s) per run, 2 run(s) "
            "side by side") in text
    assert text.count("OMP_NUM_THREADS=1") == 4 and "akmamba_net_tiny_seed1 [new]" in text
    assert text.count("train.budget_clock=wall") == 4
    assert not out.exists()


def test_cpu_budget_clock_reaches_every_run(data, tmp_path, capsys):
    _, d, cfg = data
    assert main(["benchmark", str(cfg), "--models", MODELS, "--budget-minutes", "30", "--budget-clock", "cpu",
                 "--seeds", "0", "--test", str(d / "test"), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "budget 30 min (cpu clock) per run" in text and text.count("train.budget_clock=cpu") == 2
    with pytest.raises(BenchmarkError, match="--budget-clock: expected wall or cpu"):
        plan_benchmark([str(cfg)], MODELS, 30, None, "0", tmp_path / "o", test={"test": str(d / "test")},
                       budget_clock="gpu")


def test_recorded_command_keeps_the_budget_clock():
    """summary.json's command reproduces the runs: a CPU-time budget is part of it, the default wall clock is not."""
    from mambaseg.cli import benchmark_command, build_parser

    argv = ["benchmark", "a.yaml", "b.yaml", "--budget-minutes", "30", "--seeds", "0,1", "--test", "t", "--out", "o"]
    cpu = benchmark_command(build_parser().parse_args([*argv, "--budget-clock", "cpu"]), 1, 2)
    assert cpu == ("mambaseg benchmark a.yaml b.yaml --budget-minutes 30 --budget-clock cpu --seeds 0,1 --test t "
                   "--out o --threads 1 --parallel 2")
    assert "--budget-clock" not in benchmark_command(build_parser().parse_args(argv), 1, 2)
    multi = ["benchmark", "a.yaml", "--budget", "steps:600", "--budget", "cpu:30", "--arm-seeds", "x=0,1,2",
             "--reference", "x", "--allow-mixed-commits", "--test", "t", "--out", "o"]
    assert benchmark_command(build_parser().parse_args(multi), 1, 2) == (
        "mambaseg benchmark a.yaml --budget steps:600 --budget cpu:30 --seeds 0 --arm-seeds x=0,1,2 --reference x "
        "--test t --out o --threads 1 --parallel 2 --allow-mixed-commits")


def test_drive_benchmark_script_parses(capsys):
    repo = Path(__file__).resolve().parents[1]
    script = (repo / "benchmarks" / "drive_benchmark.sh").read_text()
    for needle in ("configs/drive/akmamba_net_cpu.yaml", "configs/drive/unet_cpu.yaml", "--budget-minutes 60",
                   "--seeds 0,1", "--parallel 2", "--threads 1", "benchmarks/results/drive_benchmark"):
        assert needle in script, needle


# ------------------------------------------------------------------------------------------------------ end to end
def _read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_end_to_end_2d_rerun_skips_and_resumes(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MAMBASEG_NO_CPU_KERNEL", "1")  # no compiled-kernel load in every training subprocess
    _, d, cfg = data
    out = tmp_path / "bench"
    args = ["benchmark", str(cfg), "--models", MODELS, "--steps", "4", "--seeds", "0,1", "--test", str(d / "test"),
            "--out", str(out), "--threads", "1", "--parallel", "1", "--n-boot", "500"]
    assert main(args) == 0, capsys.readouterr().err
    capsys.readouterr()
    runs = ["unet_tiny_seed0", "unet_tiny_seed1", "akmamba_net_tiny_seed0", "akmamba_net_tiny_seed1"]
    for r in runs:
        for name in ("checkpoint_best.pt", "metrics.jsonl", "benchmark_done.json", "test_eval/summary.json",
                     "test_pred/01_test.png", "train_stdout.log"):
            assert (out / "runs" / r / name).is_file(), (r, name)
    rows = _read_rows(out / "results.csv")
    assert set(rows[0]) == {"model", "seed", "case", "metric", "value"}
    keys = {(r["model"], r["seed"], r["case"], r["metric"]) for r in rows}
    assert len(keys) == len(rows)  # one row per model, seed, case, metric
    dice = {(r["model"], r["seed"], r["case"]) for r in rows if r["metric"] == "dice"}
    assert dice == {(m, s, c) for m in MODELS.split(",") for s in "01" for c in ("01_test", "02_test", "03_test")}
    assert {"dice", "iou", "precision", "recall", "auc"} <= {r["metric"] for r in rows}
    assert all(math.isnan(float(r["value"])) or 0.0 <= float(r["value"]) <= 1.0 for r in rows)
    # the per-case values are the run's own evaluation
    ev = json.loads((out / "runs" / "unet_tiny_seed1" / "test_eval" / "summary.json").read_text())
    ev02 = next(r for r in ev["metric_per_case"] if r["case"] == "02_test")
    row = next(r for r in rows if (r["model"], r["seed"], r["case"], r["metric"]) == ("unet_tiny", "1", "02_test",
                                                                                        "dice"))
    assert float(row["value"]) == pytest.approx(ev02["dice"])

    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["models"]) == ["unet_tiny", "akmamba_net_tiny"]
    assert summary["budget"] == {"minutes": None, "steps": 4, "clock": None} and summary["threads_per_run"] == 1
    for label, info in summary["models"].items():
        assert info["runs"] == 2 and info["steps"]["mean"] == 4 and info["epochs"]["mean"] == 2
        oc = info["metrics"]["dice"]["over_cases"]
        mine = [np.mean([float(r["value"]) for r in rows if r["model"] == label and r["case"] == c
                         and r["metric"] == "dice"]) for c in ("01_test", "02_test", "03_test")]
        assert oc["n"] == 3 and oc["mean"] == pytest.approx(np.mean(mine))
        assert info["metrics"]["dice"]["over_seeds"]["n"] == 2
    assert len(summary["runs"]) == 4
    for rec in summary["runs"]:
        assert rec["steps"] == 4 and rec["epochs"] == 2 and rec["threads"] == 1 and rec["budget_steps"] == 4
        assert rec["peak_rss_mb"] > 50 and rec["train_seconds"] >= 0 and rec["train_processes"] == 1
        # the child's own CPU time (user + system) is recorded: positive, and its share of wall x threads finite
        assert rec["cpu_seconds"] > 0 and rec["cpu_share"] == pytest.approx(
            rec["cpu_seconds"] / (rec["wall_seconds"] * rec["threads"]), abs=2e-3) and "commit" in rec
    (comp,) = [c for c in summary["comparisons"] if c["metric"] == "dice"]
    assert (comp["a"], comp["b"], comp["n"]) == ("unet_tiny", "akmamba_net_tiny", 3)
    assert 0 < comp["wilcoxon_p"] <= 1 and comp["ci95"][0] <= comp["mean_difference"] <= comp["ci95"][1]
    page = (out / "index.html").read_text()
    assert "unet_tiny" in page and "Paired comparisons" in page and "Wilcoxon" in page
    md = (out / "summary.md").read_text()
    assert "CPU share" in md and "| unet_tiny |" in md and "4 / 4" in md
    assert "| akmamba_net_tiny − unet_tiny | dice |" in md
    assert page.count("data:image/png;base64,") >= 2  # per-case plot + learning curves (matplotlib is a dev dep)

    # rerun the same command: every run is skipped, nothing retrained
    stamps = {r: (out / "runs" / r / "checkpoint_last.pt").stat().st_mtime_ns for r in runs}
    marker = out / "runs" / "unet_tiny_seed0" / "benchmark_done.json"  # as written before CPU time was recorded
    old = json.loads(marker.read_text())
    old["record"] = {k: v for k, v in old["record"].items() if k not in ("cpu_seconds", "cpu_share", "commit")}
    marker.write_text(json.dumps(old))
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.count("training skipped (finished earlier)") == 4 and "training started" not in err
    assert {r: (out / "runs" / r / "checkpoint_last.pt").stat().st_mtime_ns for r in runs} == stamps
    rerun = json.loads((out / "summary.json").read_text())
    assert rerun["models"]["unet_tiny"]["metrics"]["dice"] == summary["models"]["unet_tiny"]["metrics"]["dice"]
    rec0 = next(r for r in rerun["runs"] if r["run"] == "unet_tiny_seed0")  # recomputed from the run's files
    assert rec0["cpu_seconds"] > 0 and "commit" in rec0

    # two runs interrupted before training finished: they resume from checkpoint_last.pt, side by side
    for r in ("unet_tiny_seed1", "akmamba_net_tiny_seed0"):
        for name in ("summary.json", "benchmark_done.json", "checkpoint_best.pt"):
            (out / "runs" / r / name).unlink()
    assert main([*args[:-4], "--parallel", "2", "--n-boot", "500"]) == 0
    err = capsys.readouterr().err
    assert err.count("training started (resumed") == 2 and err.count("skipped (finished earlier)") == 2
    seg = json.loads((out / "runs" / "unet_tiny_seed1" / "benchmark_train.json").read_text())["segments"]
    assert [s["resumed"] for s in seg] == [False, True]
    assert (out / "runs" / "unet_tiny_seed0" / "checkpoint_last.pt").stat().st_mtime_ns == stamps["unet_tiny_seed0"]
    assert len(_read_rows(out / "results.csv")) == len(rows)

    # a changed budget in the same --out is refused (the runs would not be comparable)
    assert args[4:6] == ["--steps", "4"]
    _one_line_error(capsys, [*args[:4], "--steps", "6", *args[6:]], "different configuration")


def test_end_to_end_3d(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MAMBASEG_NO_CPU_KERNEL", "1")
    from mambaseg.data.synthetic import write_phantom_msd

    task = write_phantom_msd(tmp_path / "task", n_cases=4, shape=(20, 24, 18))
    test = write_phantom_msd(tmp_path / "test", n_cases=2, shape=(22, 19, 17), seed=3)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(tiny_3d_yaml(task))
    out = tmp_path / "bench"
    assert main(["benchmark", str(cfg), "--steps", "1", "--seeds", "0", "--test", str(test), "--out", str(out),
                 "--threads", "1", "--n-boot", "200"]) == 0
    rows = _read_rows(out / "results.csv")
    metrics = {r["metric"] for r in rows}
    assert {"dice", "iou", "hd95", "dice:Anterior", "dice:Posterior", "hd95:Anterior"} <= metrics
    assert {r["case"] for r in rows} == {"phantom_000", "phantom_001"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"]["dm_segnet_tiny"]["metrics"]["hd95"]["higher_is_better"] is False
    ev = json.loads((out / "runs" / "dm_segnet_tiny_seed0" / "test_eval" / "summary.json").read_text())
    assert summary["models"]["dm_segnet_tiny"]["metrics"]["dice"]["over_cases"]["mean"] == \
        pytest.approx(ev["foreground_mean"]["Dice"])


def test_html_without_matplotlib(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    for name in ("matplotlib", "matplotlib.pyplot"):  # also when an earlier test imported it (importlib path)
        monkeypatch.setitem(sys.modules, name, None)
    rows = [{"model": m, "seed": 0, "case": f"c{i}", "metric": "dice", "value": 0.5 + 0.1 * i}
            for m in ("a", "b") for i in range(3)]
    stats = summarize(rows, ["a", "b"], n_boot=100)
    agg = {"mean": 4.0, "min": 4.0, "max": 4.0}
    for info in stats["models"].values():
        info.update(steps=agg, epochs=agg, train_seconds=agg, peak_rss_mb=agg, parameters=10)
    summary = {"primary_metric": "dice", "budget": {"minutes": None, "steps": 4}, "threads_per_run": 1,
               "parallel": 1, "seeds": [0], "test": {"images": "x"}, "created": "now", "command": "mambaseg benchmark",
               "models": stats["models"], "metrics": stats["metrics"], "comparisons": stats["comparisons"],
               "runs": [], "statistics": {"over_cases": "c", "over_seeds": "s", "comparisons": "p"},
               "checkpoint": "best"}
    page = render_html(summary, rows)
    assert "matplotlib is not installed" in page and "data:image/png" not in page and "<table" in page


def test_saved_config_with_modality_mr_matches_auto_outside_nnunet():
    """Runs saved before data.modality defaulted to auto (they say MR) still resume: auto means MR there."""
    from mambaseg.apps.benchmark.records import _comparable

    saved = {"seed": 0, "data": {"layout": "drive", "modality": "MR"}}
    now = {"seed": 0, "data": {"layout": "drive", "modality": "auto"}}
    assert _comparable(saved) == _comparable(now)
    nn = {"seed": 0, "data": {"layout": "nnunet", "modality": "auto"}}
    assert _comparable(nn) != _comparable({"seed": 0, "data": {"layout": "nnunet", "modality": "MR"}})
    assert _comparable(dict(saved, seed=1)) != _comparable(now)


def test_saved_config_without_budget_clock_matches_wall_only():
    """Runs saved before train.budget_clock existed counted wall time: they match wall, not cpu."""
    from mambaseg.apps.benchmark.records import _comparable

    saved = {"seed": 0, "data": {"layout": "drive"}, "train": {"epochs": 3}}
    assert _comparable(saved) == _comparable({**saved, "train": {"epochs": 3, "budget_clock": "wall"}})
    assert _comparable(saved) != _comparable({**saved, "train": {"epochs": 3, "budget_clock": "cpu"}})


# ------------------------------------------------------------------ issue 24 (robustness) and issue 21 (budgets)
def test_budget_arm_seed_and_n_boot_parsers():
    from mambaseg.apps.benchmark import parse_budget_spec, parse_n_boot
    from mambaseg.apps.benchmark.options import parse_arm_seeds

    assert [parse_budget_spec(t).tag for t in ("steps:600", "cpu:30", "wall:60", "CPU:0.5", "wall:90min")] == [
        "steps600", "cpu30min", "wall60min", "cpu0.5min", "wall90min"]
    b = parse_budget_spec("cpu:30")
    assert (b.minutes, b.steps, b.clock) == (30.0, 0, "cpu")
    assert (parse_budget_spec("steps:600").steps, parse_budget_spec("wall:60").clock) == (600, "wall")
    for bad in ("steps:0", "steps:2.5", "steps:", "cpu:-1", "cpu:0", "wall:nan", "wall:inf", "gpu:3", "600", "",
                "steps:99999999999", "cpu:1e9"):
        with pytest.raises(BenchmarkError, match="--budget"):
            parse_budget_spec(bad)
    arms = ["a", "b", "c"]
    assert parse_arm_seeds(["a,b=0,1,2"], arms, [0, 1]) == {"a": [0, 1, 2], "b": [0, 1, 2], "c": [0, 1]}
    assert parse_arm_seeds([], arms, [3]) == {"a": [3], "b": [3], "c": [3]}
    for bad, needle in ((["d=0"], "'d' is not an arm"), (["a=x"], "not a non-negative integer"), (["a"], "ARM"),
                        (["=0"], "ARM"), (["a=0", "a,b=1"], "twice"), (["a=0,0"], "repeated")):
        with pytest.raises(BenchmarkError, match="--arm-seeds") as e:
            parse_arm_seeds(bad, arms, [0])
        assert needle in str(e.value)
    assert parse_n_boot("500") == 500
    for bad in ("0", "-3", "abc", "1.5", "10000001", ""):
        with pytest.raises(BenchmarkError, match="--n-boot"):
            parse_n_boot(bad)


def test_bad_input_refused_before_anything_is_written(data, tmp_path, capsys):
    """Every argument a tired user could get wrong is refused at once (exit 2, one line naming it), nothing made."""
    _, d, cfg = data
    out = tmp_path / "o"
    common = ["--test", str(d / "test"), "--out", str(out)]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    huge = "model.kwargs.widths=[1000000,1000000,1000000,1000000,1000000]"
    cases = [
        (["--steps", "2", "--n-boot", "0"], "--n-boot"),
        (["--steps", "2", "--n-boot", "-5"], "--n-boot"),
        (["--steps", "2", "--n-boot", "many"], "--n-boot"),
        (["--steps", "2", "--seeds", "a"], "--seeds"),
        (["--steps", "2", "--seeds", "99999999999"], "--seeds"),
        (["--steps", "2", "--threads", "abc"], "--threads"),
        (["--steps", "2", "--threads", "1.5"], "--threads"),
        (["--steps", "2", "--threads", "-1"], "--threads"),
        (["--steps", "2", "--threads", "100000"], "--threads"),
        (["--steps", "2", "--parallel", "x"], "--parallel"),
        (["--steps", "2", "--parallel", "1000"], "--parallel"),
        (["--steps", "2", "--models", ","], "--models"),
        (["--steps", "99999999999"], "--steps"),
        (["--budget-minutes", "1e12"], "--budget-minutes"),
        (["--budget", "steps:0"], "--budget"),
        (["--budget", "gpu:3"], "--budget"),
        (["--budget", "steps:2", "--budget", "steps:2"], "twice"),
        (["--budget", "steps:2", "--steps", "2"], "--steps"),
        (["--budget", "steps:2", "--budget-minutes", "3"], "--budget-minutes"),
        (["--steps", "2", "--models", MODELS, "--arm-seeds", "nope_net=0"], "nope_net"),
        (["--steps", "2", "--models", MODELS, "--arm-seeds", "unet_tiny=a"], "--arm-seeds"),
        (["--steps", "2", "--models", MODELS, "--reference", "nope_net"], "--reference"),
        (["--steps", "2", "--set", huge], "model.kwargs.widths"),
        (["--steps", "2", "--set", "model.kwargs.no_such_key=3"], "model.kwargs"),
    ]
    for args, needle in cases:
        _one_line_error(capsys, ["benchmark", str(cfg), *args, *common], needle)
    assert not out.exists()
    _one_line_error(capsys, ["benchmark", str(cfg), "--steps", "2", "--test", str(d / "test"), "--out", str(a_file)],
                    "not a folder")
    _one_line_error(capsys, ["benchmark", str(cfg), "--budget", "steps:2", "--budget", "steps:3", "--test",
                             str(d / "test"), "--out", str(a_file)], "not a folder")
    assert a_file.read_text() == "x"


def test_model_size_estimated_without_allocating(data):
    """An absurd width is refused from a meta-device build (no memory used), naming the key that makes it large."""
    from mambaseg.apps.benchmark.options import check_model_size
    from mambaseg.config import load_config

    _, _, cfg = data
    small = load_config(cfg)
    assert check_model_size(small, "x") == pytest.approx(21805, rel=0.5)  # unet_tiny (see mambaseg models)
    wide = load_config(cfg, ["model.kwargs.widths=[1000000,8,16,32,64]", "model.kwargs.in_channels=3"])
    with pytest.raises(BenchmarkError, match=r"model\.kwargs\.widths=\[1000000, 8, 16, 32, 64\]") as e:
        check_model_size(wide, "cfg.yaml")
    assert "in_channels" not in str(e.value)  # only the key that makes it too large is named
    # a limit given explicitly: the tiny model fits in 1 MiB, not in 100 KiB (16 bytes per parameter)
    assert check_model_size(small, "x", limit_bytes=2**20) > 0
    with pytest.raises(BenchmarkError, match="its defaults"):
        check_model_size(small, "x", limit_bytes=100 * 1024)


def test_several_budgets_plan_layout_matches_single_budget_runs(data, tmp_path, capsys):
    """--budget steps:N --budget cpu:M: every (arm, seed) once per budget in OUT/<tag>/; the step budget's runs are
    exactly those a single-budget benchmark --steps N --out OUT/stepsN makes (same folder, same config), so runs made
    that way are found as done."""
    from mambaseg.apps.benchmark import plan_budgets
    from mambaseg.config import config_to_dict

    _, d, cfg = data
    out = tmp_path / "abl"
    kw = {"configs": [str(cfg)], "models": MODELS, "seeds": "0,1", "threads": "1", "parallel": "1",
          "test": {"test": str(d / "test")}, "arm_seeds": ["akmamba_net_tiny=0,1,2"]}
    steps, cpu = plan_budgets(["steps:4", "cpu:0.5"], out, **kw)
    assert (steps.out, cpu.out) == (out / "steps4", out / "cpu0.5min")
    assert [s.name for s in steps.runs] == ["unet_tiny_seed0", "akmamba_net_tiny_seed0", "unet_tiny_seed1",
                                            "akmamba_net_tiny_seed1", "akmamba_net_tiny_seed2"]
    assert steps.runs[4].run_dir == out / "steps4" / "runs" / "akmamba_net_tiny_seed2"
    assert cpu.runs[0].run_dir == out / "cpu0.5min" / "runs" / "unet_tiny_seed0"
    assert {(r.cfg.train.budget_clock, r.cfg.train.time_limit_min, r.cfg.train.epochs >= 10 ** 6) for r in cpu.runs} \
        == {("cpu", 0.5, True)}
    assert steps.reference == "unet_tiny" and steps.seeds_by_label["akmamba_net_tiny"] == [0, 1, 2]
    old = plan_benchmark([str(cfg)], MODELS, None, "4", "0,1,2", out / "steps4", "1", "1", [],
                         {"test": str(d / "test")})
    old_runs = {r.name: r for r in old.runs}
    for r in steps.runs:
        assert r.run_dir == old_runs[r.name].run_dir and r.overrides == old_runs[r.name].overrides
        assert config_to_dict(r.cfg) == config_to_dict(old_runs[r.name].cfg)
    # one budget: today's layout (OUT/runs/...)
    (one,) = plan_budgets(["steps:4"], out, **kw)
    assert one.runs[0].run_dir == out / "runs" / "unet_tiny_seed0"
    assert main(["benchmark", str(cfg), "--models", MODELS, "--budget", "steps:4", "--budget", "cpu:0.5",
                 "--seeds", "0,1", "--arm-seeds", "akmamba_net_tiny=0,1,2", "--reference", "akmamba_net_tiny",
                 "--test", str(d / "test"), "--out", str(out), "--threads", "1", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "seeds unet_tiny 0,1; akmamba_net_tiny 0,1,2 = 5 run(s); budget 4 steps per run" in text
    assert "budget 0.5 min (cpu clock) per run" in text and "paired comparisons against akmamba_net_tiny" in text
    assert str(out / "cpu0.5min" / "runs" / "akmamba_net_tiny_seed2") in text
    assert not out.exists()


def test_summarize_reference_pairs_and_unequal_seeds():
    """Comparisons against a reference arm come first as (reference, other); an arm with more seeds pairs on its
    per-case seed means."""
    rows = [{"model": "a", "seed": 0, "case": f"c{i}", "metric": "dice", "value": 0.5 + 0.01 * i} for i in range(6)]
    for seed, shift in ((0, 0.02), (1, 0.06), (2, 0.10)):
        rows += [{"model": "b", "seed": seed, "case": f"c{i}", "metric": "dice", "value": 0.5 + 0.01 * i + shift}
                 for i in range(6)]
    s = summarize(rows, ["a", "b"], n_boot=200, reference="b")
    (c,) = s["comparisons"]
    assert (c["a"], c["b"]) == ("b", "a") and c["mean_difference"] == pytest.approx(-0.06)
    assert s["models"]["b"]["metrics"]["dice"]["over_seeds"]["n"] == 3
    from mambaseg.apps.benchmark.markdown import render_budgets_markdown

    for info, n in ((s["models"]["a"], 1), (s["models"]["b"], 3)):
        info.update(seeds=list(range(n)), steps={"mean": 4.0}, cpu_seconds={"mean": 90.0},
                    train_seconds={"mean": 120.0})
    summary = {"primary_metric": "dice", "reference": "b", "models": s["models"], "comparisons": s["comparisons"],
               "statistics": {"n_boot": 200}, "test": {"images": "t"}, "warnings": ["mixed"]}
    md = render_budgets_markdown([("4 steps", "steps4", summary), ("0.5 cpu minutes", "cpu0.5min", summary)], "cmd")
    row_a = next(line for line in md.splitlines() if line.startswith("| a |"))
    assert "| -0.0600 |" in row_a and "| 1.5 | 2.0 |" in row_a and "| 0 |" in row_a
    assert "| b | 0,1,2 |" in md and "reference" in md
    assert md.index("## 4 steps (`steps4/`)") < md.index("## 0.5 cpu minutes (`cpu0.5min/`)")
    assert md.count("- warning: mixed") == 2


def _benchmark_args(cfg, d, out, *extra):
    return ["benchmark", str(cfg), "--models", "unet_tiny,attention_unet_tiny", "--test", str(d / "test"), "--out",
            str(out), "--threads", "1", "--n-boot", "200", *extra]


def _fake_finished_runs(plan, commit):
    """Run folders as a finished, evaluated benchmark leaves them (config, training summary, checkpoints, provenance,
    cached test evaluation, done-marker), without training: the rerun logic reads nothing else."""
    import yaml

    from mambaseg.config import config_to_dict

    for i, spec in enumerate(plan.runs):
        d = spec.run_dir
        (d / "test_eval").mkdir(parents=True)
        (d / "config.yaml").write_text(yaml.safe_dump(config_to_dict(spec.cfg)))
        (d / "summary.json").write_text(json.dumps({"epochs_done": 1, "train_seconds": 3.0, "best_val_dice": 0.5,
                                                    "parameters": 100}))
        (d / "checkpoint_best.pt").write_bytes(b"not read")
        (d / "checkpoint_last.pt").write_bytes(b"not read")
        (d / "provenance.json").write_text(json.dumps({"git_commit": commit}))
        (d / "benchmark_train.json").write_text(json.dumps({"segments": [
            {"rc": 0, "wall_seconds": 4.0, "cpu_seconds": 3.5, "load_mean": None, "peak_rss_mb": 300.0}]}))
        cases = [{"case": f"0{k}_test", "dice": 0.5 + 0.1 * k + 0.01 * i, "iou": 0.4} for k in range(1, 4)]
        (d / "test_eval" / "summary.json").write_text(json.dumps({"kind": "2d", "metric_per_case": cases}))
        (d / "benchmark_done.json").write_text(json.dumps({"record": {"run": spec.name}, "test": plan.test.to_dict()}))


def test_damaged_files_mixed_commits_and_locks(data, tmp_path, capsys):
    """A rerun re-evaluates a run whose done-marker or cached evaluation is damaged, names a damaged training record
    (exit 2, nothing trained or written), refuses to train beside runs of another commit unless
    --allow-mixed-commits, and refuses a second benchmark on one --out or a run another process is training."""
    from mambaseg.apps.benchmark.records import run_state
    from mambaseg.apps.benchmark.run import _prepare
    from mambaseg.resources import git_commit
    from mambaseg.utils.runlock import RunLock

    _, d, cfg = data
    out = tmp_path / "b"
    args = _benchmark_args(cfg, d, out, "--steps", "2")
    plan = plan_benchmark([str(cfg)], "unet_tiny,attention_unet_tiny", None, "2", "0", out, "1", "1", [],
                          {"test": str(d / "test")})
    here = git_commit() or "abc"
    _fake_finished_runs(plan, here)
    a, b = (spec.run_dir for spec in plan.runs)
    assert main(args) == 0  # every run done: summarised from the cached evaluations, nothing trained
    err = capsys.readouterr().err
    assert err.count("training skipped (finished earlier)") == 2 and "training started" not in err
    assert json.loads((out / "summary.json").read_text())["models"]["unet_tiny"]["metrics"]["dice"]["over_cases"][
        "mean"] == pytest.approx(0.7)

    # damaged done-marker or cached evaluation: the run is evaluated again (not retrained)
    ev = a / "test_eval" / "summary.json"
    for path, text, needle in ((a / "benchmark_done.json", '{"record": ', "benchmark_done.json damaged"),
                               (a / "benchmark_done.json", "[]", "benchmark_done.json damaged"),
                               (ev, "{}", "test_eval/summary.json damaged"),
                               (ev, '{"kind": "2d", "metric_per_case": [{"dice": 1}]}', "test_eval/summary.json dam")):
        saved = path.read_text()
        path.write_text(text)
        state, why = run_state(plan.runs[0], plan.test)
        assert state == "evaluate" and needle in why, why
        path.write_text(saved)

    # damaged training records: a one-line error naming the file, before anything is trained or written
    stamp = (out / "summary.json").stat().st_mtime_ns
    for name, text in (("summary.json", "[1, 2"), ("summary.json", '{"epochs_done": "many"}'),
                       ("benchmark_train.json", '{"segments": 3}'), ("benchmark_train.json", "\x00\x01"),
                       ("provenance.json", "null"), ("config.yaml", "a: [")):
        saved = (a / name).read_text()
        (a / name).write_text(text)
        _one_line_error(capsys, args, str(a if name == "summary.json" and "many" in text else a / name))
        (a / name).write_text(saved)
    assert (out / "summary.json").stat().st_mtime_ns == stamp

    # run b interrupted (to be resumed) beside a run trained at another commit: refused, naming run and commit
    other = "0123456789abcdef0123456789abcdef01234567"
    (a / "provenance.json").write_text(json.dumps({"git_commit": other}))
    moved = {n: (b / n).read_bytes() for n in ("summary.json", "benchmark_done.json", "checkpoint_best.pt")}
    for n in moved:
        (b / n).unlink()
    _one_line_error(capsys, args, "0123456789ab: unet_tiny_seed0")
    assert (out / "summary.json").stat().st_mtime_ns == stamp and not (b / "summary.json").exists()
    states, jobs = _prepare(plan, True, lambda m: None)  # --allow-mixed-commits: b would be resumed
    assert [(spec.name, resume) for spec, resume in jobs] == [("attention_unet_tiny_seed0", True)]
    # another process training b (e.g. a benchmark of an older version, which held no lock on --out): refused
    with RunLock(b):
        _one_line_error(capsys, [*args, "--allow-mixed-commits"], "another process is training this run")
    for n, content in moved.items():
        (b / n).write_bytes(content)
    # nothing left to train: the mixed table is only summarised, with its warning
    assert main(args) == 0
    capsys.readouterr()
    warnings = json.loads((out / "summary.json").read_text())["warnings"]
    assert any("different commits" in w and "0123456789ab: unet_tiny_seed0" in w for w in warnings)

    # one benchmark per --out: a second one is refused while the first holds the lock; released, it runs again
    with RunLock(out, what="benchmark"):
        _one_line_error(capsys, args, "another benchmark is running in this folder")
    assert main(args) == 0
    capsys.readouterr()
    # a multi-budget benchmark is refused while a benchmark holds one of its budget folders
    with RunLock(tmp_path / "m" / "steps2", what="benchmark"):
        _one_line_error(capsys, _benchmark_args(cfg, d, tmp_path / "m", "--budget", "steps:2", "--budget", "steps:3"),
                        "another benchmark is running in this folder")
    assert not (tmp_path / "m" / "steps3").exists() and not (tmp_path / "m" / "steps2" / "runs").exists()


def test_sigterm_stops_the_training_and_releases_the_locks(data, tmp_path):
    """SIGTERM to a benchmark: its training subprocess is stopped and waited for, and every lock is released."""
    import os
    import signal
    import subprocess
    import time

    from mambaseg.utils.runlock import RunLock

    _, d, cfg = data
    out = tmp_path / "sig"
    env = dict(os.environ, MAMBASEG_NO_CPU_KERNEL="1", PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "mambaseg", "benchmark", str(cfg), "--steps", "100000", "--test",
                             str(d / "test"), "--out", str(out), "--threads", "1"],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        pid = None
        for line in proc.stderr:  # "unet_tiny_seed0: training started (new, pid N)"
            if "training started" in line:
                pid = int(line.rsplit("pid ", 1)[1].rstrip(")\n"))
                break
        assert pid is not None
        os.kill(proc.pid, 0)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM, rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "interrupted (signal 15)" in rest and "Traceback" not in rest
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the training child is gone (stopped and reaped)
    with RunLock(out, what="benchmark"), RunLock(out / "runs" / "unet_tiny_seed0"):
        pass  # both locks are free


def test_end_to_end_two_budgets_reuse_old_layout_and_unequal_seeds(data, tmp_path, capsys, monkeypatch):
    """Runs of a single-budget benchmark --steps 1 --out OUT/steps1 are found as done by --out OUT --budget steps:1
    --budget steps:2; an arm with an extra seed pairs on its per-case seed means; OUT/summary.md holds both tables
    with the comparisons against --reference."""
    monkeypatch.setenv("MAMBASEG_NO_CPU_KERNEL", "1")
    _, d, cfg = data
    out = tmp_path / "abl"
    assert main(_benchmark_args(cfg, d, out / "steps1", "--steps", "1", "--parallel", "2")) == 0
    capsys.readouterr()
    stamp = (out / "steps1" / "runs" / "unet_tiny_seed0" / "checkpoint_last.pt").stat().st_mtime_ns
    args = _benchmark_args(cfg, d, out, "--budget", "steps:1", "--budget", "steps:2", "--parallel", "2",
                           "--arm-seeds", "attention_unet_tiny=0,1", "--reference", "attention_unet_tiny")
    assert main(args) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert err.count("training skipped (finished earlier)") == 2 and err.count("training started (new") == 4
    assert (out / "steps1" / "runs" / "unet_tiny_seed0" / "checkpoint_last.pt").stat().st_mtime_ns == stamp
    for tag, steps in (("steps1", 1), ("steps2", 2)):
        s = json.loads((out / tag / "summary.json").read_text())
        assert s["budget"]["steps"] == steps and s["reference"] == "attention_unet_tiny"
        assert (s["models"]["unet_tiny"]["runs"], s["models"]["attention_unet_tiny"]["runs"]) == (1, 2)
        assert {r["steps"] for r in s["runs"]} == {steps}
        assert (out / tag / "runs" / "attention_unet_tiny_seed1" / "benchmark_done.json").is_file()
        for name in ("results.csv", "summary.md", "index.html"):
            assert (out / tag / name).is_file()
        # the paired difference: per case, unet's value minus the mean of attention's two seeds
        rows = [r for r in _read_rows(out / tag / "results.csv") if r["metric"] == "dice"]
        cases = sorted({r["case"] for r in rows})
        diff = np.mean([float(next(r["value"] for r in rows if r["model"] == "unet_tiny" and r["case"] == c))
                        - np.mean([float(r["value"]) for r in rows if r["model"] == "attention_unet_tiny"
                                   and r["case"] == c]) for c in cases])
        comp = next(c for c in s["comparisons"] if c["metric"] == "dice")
        assert (comp["a"], comp["b"]) == ("attention_unet_tiny", "unet_tiny")
        assert comp["mean_difference"] == pytest.approx(diff, abs=1e-9)
        md = (out / "summary.md").read_text()
        section = md.split(f"(`{tag}/`)")[1].split("## ")[0]
        row = next(line for line in section.splitlines() if line.startswith("| unet_tiny |"))
        assert f"| {comp['mean_difference']:.4f} |" in row and f"| {comp['wilcoxon_p']:.3g} |" in row
        assert "| attention_unet_tiny | 0,1 |" in section
    assert not (out / "runs").exists() and not (out / "results.csv").exists()
