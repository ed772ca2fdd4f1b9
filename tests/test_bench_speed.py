"""``mambaseg bench scan | models2d | models3d`` with tiny settings: the result file holds every backend / variant, the
ratios computed from its own numbers and the exact command; the fresh-process workers answer. Nothing here asserts on
a time."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mambaseg.cli import main


@pytest.mark.slow  # ~1 min with mambapy installed
def test_bench_scan_quick_runs_each_backend_in_a_worker(tmp_path):
    out = tmp_path / "scan.json"
    argv = ["bench", "scan", "--quick", "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["command"] == "mambaseg " + " ".join(argv)
    rows = {r["backend"]: r for r in report["results"]}
    assert "chunked" in rows and {r["case"] for r in report["results"]} == {"2d_skip_D128_L64x64"}
    for r in rows.values():  # measured in a fresh process (python -m mambaseg.apps.speed --worker)
        assert "error" not in r, r
        assert r["forward_ms"] > 0 and r["fwd_bwd_ms"] > 0
        assert r["repeats"] == (3 if r["backend"] == "mambapy" else 5)
    for q in report["ratios"]:  # ratios only from this run's numbers
        ratio = rows[q["baseline"]]["fwd_bwd_ms"] / rows[q["backend"]]["fwd_bwd_ms"]
        assert q["speedup_fwd_bwd"] == pytest.approx(ratio)


def test_speed_worker_entry_point_refuses_an_unknown_flag():
    p = subprocess.run([sys.executable, "-m", "mambaseg.apps.speed", "--nope", "{}"], capture_output=True, text=True)
    assert p.returncode != 0 and "usage: python -m mambaseg.apps.speed" in p.stderr


@pytest.mark.slow
def test_bench_models3d_quick_ratios_and_profile(tmp_path):
    out = tmp_path / "m3.json"
    assert main(["bench", "models3d", "--quick", "--rounds", "1", "--threads", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["results"]
    for size in (48, 64):
        key = f"train_step_s_2x1x{size}^3"
        assert report["ratios"][f"dm_segnet_cpu_over_unet3d_cpu_{size}^3"] == pytest.approx(
            rows["dm_segnet_cpu"][key] / rows["unet3d_cpu"][key])
    assert rows["dm_segnet_cpu"]["parameters"] > 0 and rows["unet3d_cpu"]["parameters"] > 0
    assert report["profiles"]["dm_segnet_cpu_2x1x48^3"] and report["command"].startswith("mambaseg bench models3d")


@pytest.mark.slow
def test_bench_models2d_default_size_kernel_matches_reference(tmp_path):
    out = tmp_path / "m2.json"
    assert main(["bench", "models2d", "--rounds", "1", "--threads", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["results"]
    assert set(rows) == {"unet_cpu", "akmamba_net_cpu", "akmamba_net_cpu[reference]"}
    assert report["ratios"]["akmamba_train_step_over_unet"] == pytest.approx(
        rows["akmamba_net_cpu"]["train_step_s_8x3x128x128"] / rows["unet_cpu"]["train_step_s_8x3x128x128"])
    # the compiled AKConv and the PyTorch reference give the same full-image mask (up to a few boundary pixels)
    assert report["mask_pixels_differing_kernel_vs_reference"] < 1e-3
