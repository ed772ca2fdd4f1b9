"""``mambaseg demo`` (issue 25): budgets in optimiser steps (the same model on every machine), and the shipped models
on a few real cases when the data is found, one line saying how to enable that part when it is not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mambaseg.apps import demo, demo_real
from mambaseg.cli import main
from mambaseg.config import apply_overrides, config_from_dict
from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


class _Stop(Exception):
    pass


@pytest.mark.parametrize("base", [demo.DEMO_2D, demo.DEMO_3D])
def test_step_budget_is_exact_and_has_no_time_limit(base):
    per_epoch = base["train"]["iters_per_epoch"]
    for steps in (1, per_epoch, 3 * per_epoch + 1, 300):
        cfg = apply_overrides(config_from_dict(base), demo.step_overrides(base, steps, seed=5))
        assert cfg.train.time_limit_min == 0  # a wall-clock budget gives a busy machine a worse model
        assert cfg.train.epochs * per_epoch >= steps > (cfg.train.epochs - 1) * per_epoch  # whole epochs, >= steps
        assert 1 <= cfg.train.val_every <= cfg.train.epochs  # the last epoch is validated at least once
        assert cfg.seed == 5
    with pytest.raises(ValueError, match="steps"):
        demo.step_overrides(base, 0, seed=0)


def test_default_budgets_are_steps_and_the_configs_train_exactly_them():
    for base, steps in ((demo.DEMO_2D, demo.DEMO_2D_STEPS), (demo.DEMO_3D, demo.DEMO_3D_STEPS)):
        assert base["train"]["epochs"] * base["train"]["iters_per_epoch"] == steps
        assert "time_limit_min" not in base["train"]


def test_run_demo_trains_the_requested_steps(tmp_path, monkeypatch):
    """The config handed to train() carries the step budget (train is stopped there: no training in this test)."""
    seen = []

    def fake_train(cfg, run_dir, progress=True):
        seen.append(cfg)
        raise _Stop

    monkeypatch.setattr("mambaseg.engine.train.train", fake_train)
    with pytest.raises(_Stop):
        demo.run_demo(tmp_path, steps_2d=37, seed=3, log=lambda m: None)
    cfg = seen[0]
    assert cfg.train.epochs * cfg.train.iters_per_epoch == 40 and cfg.train.time_limit_min == 0 and cfg.seed == 3


def test_demo_cli_refuses_a_bad_step_count(capsys):
    assert main(["demo", "--steps", "0", "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert "--steps" in err and ">= 1" in err


def test_summary_lines_show_every_part():
    report = {"2d": {"steps": 300, "evaluation": {"dice": 0.91}}, "3d": {"steps": 150, "evaluation": {"Dice": 0.88}},
              "real": {"DRIVE": {"dice": 0.8, "cases": 2}}}
    text = "\n".join(demo.summary_lines(report))
    assert "300 steps" in text and "0.910" in text and "150 steps" in text and "0.880" in text
    assert "DRIVE" in text and "0.800" in text and "2 case(s)" in text


def test_real_part_without_data_logs_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # <cwd>/../shared/data does not exist under a fresh tmp folder
    lines = []
    assert demo_real.run_demo_real(tmp_path, log=lines.append, env={}) == {}
    assert len(lines) == 1 and "MAMBASEG_DATA" in lines[0] and "DRIVE" in lines[0]


def test_find_data_root_prefers_the_environment(tmp_path):
    env_root, cwd = tmp_path / "env", tmp_path / "work" / "repo"
    (env_root / "Task04_Hippocampus").mkdir(parents=True)
    (tmp_path / "work" / "shared" / "data" / "DRIVE").mkdir(parents=True)
    cwd.mkdir()
    assert demo_real.find_data_root(env={"MAMBASEG_DATA": str(env_root)}, cwd=cwd) == env_root
    assert demo_real.find_data_root(env={}, cwd=cwd).resolve() == (tmp_path / "work" / "shared" / "data").resolve()


def test_hippocampus_cases_are_the_held_out_split_of_the_benchmark_script(tmp_path):
    """The demo must score the shipped model on cases it never saw: the same rule as benchmarks/hippocampus_split."""
    mod = load_script("benchmarks/hippocampus_split.py")
    root = tmp_path / "Task04"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i in range(23):
        for sub in ("imagesTr", "labelsTr"):
            (root / sub / f"hippocampus_{i:03d}.nii.gz").write_bytes(b"x")
        training.append({"image": f"./imagesTr/hippocampus_{i:03d}.nii.gz",
                         "label": f"./labelsTr/hippocampus_{i:03d}.nii.gz"})
    meta = {"labels": {"0": "bg", "1": "a"}, "modality": {"0": "MRI"}, "training": training[::-1]}
    (root / "dataset.json").write_text(json.dumps(meta))
    mod.make_split(root, tmp_path / "split")
    held_out = sorted(p.name for p in (tmp_path / "split" / "test" / "imagesTs").iterdir())
    assert demo_real.hippocampus_held_out(meta) == held_out and len(held_out) == 5


@pytest.mark.slow
def test_real_part_on_the_shared_data(tmp_path, shared_data):
    """The shipped models on the real cases (needs $MAMBASEG_DATA or ../shared/data; about a minute)."""
    shared_data("DRIVE", "test")
    root = shared_data("Task04_Hippocampus").parent
    parts = demo_real.run_demo_real(tmp_path, log=lambda m: None, env={"MAMBASEG_DATA": str(root)})
    # the shipped models' published figures: DRIVE test Dice 0.79 (20 images), Hippocampus held-out 0.877 (42)
    assert parts["DRIVE"]["cases"] == demo_real.DRIVE_CASES and parts["DRIVE"]["dice"] > 0.7
    assert parts["Task04_Hippocampus"]["cases"] == demo_real.HIPPOCAMPUS_CASES
    assert parts["Task04_Hippocampus"]["dice"] > 0.8


def test_an_incomplete_data_folder_skips_that_part_with_a_reason(tmp_path):
    data = tmp_path / "data"
    (data / "DRIVE" / "test" / "images").mkdir(parents=True)  # no images in it
    (data / "Task04_Hippocampus").mkdir()  # no dataset.json
    lines = []
    assert demo_real.run_demo_real(tmp_path / "out", log=lines.append, env={"MAMBASEG_DATA": str(data)}) == {}
    text = "\n".join(lines)
    assert "DRIVE: skipped" in text and "no .tif images" in text
    assert "Task04_Hippocampus: skipped" in text and "dataset.json" in text
