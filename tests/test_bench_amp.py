"""``mambaseg bench amp`` / ``bench infer`` with tiny settings: the result files hold every variant, the ratios
computed from them, the exact command and the commit. Nothing here asserts on a time."""

from __future__ import annotations

import json

import pytest

from mambaseg.apps import speed
from mambaseg.cli import main


@pytest.mark.slow
def test_bench_amp_quick_writes_ratios_and_provenance(tmp_path, capsys):
    out = tmp_path / "amp.json"
    assert main(["bench", "amp", "--quick", "--rounds", "1", "--threads", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["benchmark"] == "amp" and report["quick"] is True
    assert report["command"].startswith("mambaseg bench amp --quick") and "commit" in report
    names = {f"{n}/{p}" for _, b, m, *_ in speed.AMP_PAIRS for n in (b, m) for p in speed.PRECISIONS}
    assert set(report["step_seconds"]) == names and all(t > 0 for t in report["step_seconds"].values())
    s = report["step_seconds"]
    assert report["ratios"]["akmamba_net_cpu_over_unet_cpu_bf16"] == pytest.approx(
        s["akmamba_net_cpu/bf16"] / s["unet_cpu/bf16"])
    assert report["bf16_gains"]["dm_segnet_cpu_bf16_speedup"] == pytest.approx(
        s["dm_segnet_cpu/fp32"] / s["dm_segnet_cpu/bf16"])
    assert set(report["profiles"]) == {"akmamba_net_cpu/fp32", "akmamba_net_cpu/bf16", "dm_segnet_cpu/fp32",
                                       "dm_segnet_cpu/bf16"}
    assert "results written to" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_infer_quick_one_case(tmp_path):
    out = tmp_path / "infer.json"
    assert main(["bench", "infer", "--quick", "--rounds", "1", "--threads", "1", "--case", "hippocampus_36x50x35",
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    case = report["results"]["hippocampus_36x50x35"]
    assert case["tile"] == list(speed.QUICK_TILE)
    assert set(case["variants"]) == {"unet3d_cpu/fp32", "unet3d_cpu/bf16", "dm_segnet_cpu/fp32", "dm_segnet_cpu/bf16"}
    for row in case["variants"].values():
        assert row["seconds"] > 0 and row["peak_extra_mb"] is not None and "peak_error" not in row
    assert set(report["ratios"]) == {"hippocampus_36x50x35/dm_segnet_cpu_over_unet3d_cpu_fp32",
                                     "hippocampus_36x50x35/dm_segnet_cpu_over_unet3d_cpu_bf16"}


def test_bench_infer_unknown_case_is_a_clear_error(tmp_path, capsys):
    assert main(["bench", "infer", "--quick", "--case", "nope", "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "drive_565x584" in err and "Traceback" not in err
    assert not (tmp_path / "x.json").exists()
