"""K-fold cross-validation (nnU-Net's protocol): the folds of :mod:`mambaseg.data.splits`, the ``data.folds`` /
``data.fold`` config keys, training that never sees its held-out fold, and ``mambaseg benchmark --folds`` end to end
on tiny synthetic case folders (every held-out case predicted once, by the run that did not train on it)."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
import torch

from mambaseg.apps.benchmark.options import BenchmarkError
from mambaseg.apps.benchmark.plan import parse_folds, plan_benchmark
from mambaseg.cli import main
from mambaseg.config import ConfigError, config_from_dict
from mambaseg.data.splits import fold_ids, split_cases, split_ids
from tests.conftest import tiny_3d_yaml
from tests.data.test_case_folders import write_case_folders

IDS = [f"case_{i:02d}" for i in range(11)]


# ---------------------------------------------------------------------------------------------------------- splits
@pytest.mark.parametrize("k", [2, 3, 5, 11])
def test_folds_partition_the_cases(k):
    held = [fold_ids(IDS, k, f)[1] for f in range(k)]
    flat = [i for h in held for i in h]
    assert sorted(flat) == sorted(IDS)  # each case held out by exactly one fold
    sizes = [len(h) for h in held]
    assert max(sizes) - min(sizes) <= 1
    for f in range(k):
        kept, out = fold_ids(IDS, k, f)
        assert set(kept).isdisjoint(out) and sorted(kept + out) == sorted(IDS)


def test_folds_do_not_depend_on_order_or_training_seed():
    assert fold_ids(list(reversed(IDS)), 5, 2) == fold_ids(IDS, 5, 2)
    a = split_cases(IDS, 0.25, seed=0, folds=5, fold=2)
    b = split_cases(IDS, 0.25, seed=7, folds=5, fold=2)
    assert a[2] == b[2]  # the held-out fold is the same for every seed ...
    assert a[:2] != b[:2]  # ... while the seed splits the rest into training and validation
    for train, val, held in (a, b):
        assert set(held).isdisjoint(train) and set(held).isdisjoint(val) and set(train).isdisjoint(val)
        assert sorted(train + val + held) == sorted(IDS)


def test_without_folds_nothing_is_held_out():
    assert split_cases(IDS, 0.2, 3) == (*split_ids(IDS, 0.2, 3), [])


@pytest.mark.parametrize("k, f, needle", [(1, 0, "data.folds"), (12, 0, "data.folds"), (3, 3, "data.fold")])
def test_bad_folds(k, f, needle):
    with pytest.raises(ValueError, match=needle):
        fold_ids(IDS, k, f)


@pytest.mark.parametrize("over, needle", [({"folds": 1}, "data.folds"), ({"folds": 3, "fold": 3}, "data.fold"),
                                          ({"fold": 1}, "data.fold")])
def test_config_checks_folds(over, needle):
    with pytest.raises(ConfigError, match=needle):
        config_from_dict({"data": {"layout": "msd", **over}})


def test_config_yaml_unchanged_without_folds():
    """Runs saved before cross-validation existed stay comparable (their config has no folds keys)."""
    from mambaseg.config import config_to_dict

    assert "folds" not in config_to_dict(config_from_dict({}))["data"]
    assert config_to_dict(config_from_dict({"data": {"folds": 5, "fold": 4}}))["data"]["fold"] == 4


@pytest.mark.parametrize("folds, ids, needle", [("1", "", "--folds"), ("x", "", "--folds"), ("3", "3", "--fold-ids"),
                                                ("3", "0,0", "--fold-ids"), ("3", "a", "--fold-ids"),
                                                ("", "0", "--fold-ids")])
def test_parse_folds_errors(folds, ids, needle):
    with pytest.raises(BenchmarkError, match=needle):
        parse_folds(folds, ids)


def test_parse_folds():
    assert parse_folds("", "") == (0, ())
    assert parse_folds("5", "") == (5, (0, 1, 2, 3, 4))
    assert parse_folds("5", "3,1") == (5, (3, 1))


# ------------------------------------------------------------------------------------------------------ benchmark
@pytest.fixture(scope="module")
def cv_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cv")
    data = write_case_folders(root / "brats", "brats2018_wt", n_cases=6, shape=(20, 18, 16))
    cfg = root / "cfg.yaml"
    cfg.write_text(tiny_3d_yaml(data, "data.layout=case_folders", "data.preset=brats2018_wt", "data.channels=[FLAIR]",
                                "data.num_classes=2"))
    return root, data, cfg


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_plan_with_folds(cv_data, tmp_path):
    _, data, cfg = cv_data
    plan = plan_benchmark([str(cfg)], steps=1, seeds="0", out=tmp_path / "b", folds=3, fold_ids="2,0")
    assert [r.name for r in plan.runs] == ["dm_segnet_tiny_seed0_fold0", "dm_segnet_tiny_seed0_fold2"]
    assert all({"data.folds=3", f"data.fold={r.fold}"} <= set(r.overrides) for r in plan.runs)
    assert [r.cfg.data.fold for r in plan.runs] == [0, 2]
    assert plan.test.folds == 3 and plan.test.images == data
    with pytest.raises(BenchmarkError, match="give no --test"):
        plan_benchmark([str(cfg)], steps=1, out=tmp_path / "b", folds=3, test={"test": str(data)})
    with pytest.raises(BenchmarkError, match="7 folds need 2 ... 6"):  # found before anything trains
        plan_benchmark([str(cfg)], steps=1, out=tmp_path / "b", folds=7)


def test_folds_refuse_2d_data(tmp_path, tiny_drive):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {{name: unet_tiny}}\ndata: {{layout: drive, root: '{tiny_drive}'}}\n")
    with pytest.raises(BenchmarkError, match="--folds needs a 3D dataset"):
        plan_benchmark([str(cfg)], steps=1, out=tmp_path / "b", folds=2)


def test_benchmark_cross_validation_end_to_end(cv_data, tmp_path, monkeypatch):
    monkeypatch.setenv("MAMBASEG_NO_CPU_KERNEL", "1")
    _, data, cfg = cv_data
    before = _digest(data)
    out = tmp_path / "bench"
    assert main(["benchmark", str(cfg), "--steps", "1", "--seeds", "0", "--folds", "3", "--fold-ids", "0,1",
                 "--out", str(out), "--threads", "1", "--n-boot", "100"]) == 0
    with open(out / "results.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["metric"] == "dice"]
    held = {k: fold_ids([p.name for p in data.iterdir() if p.is_dir()], 3, k)[1] for k in (0, 1)}
    # every case of folds 0 and 1 predicted exactly once, and nothing else
    assert sorted(r["case"] for r in rows) == sorted(held[0] + held[1])
    for k in (0, 1):
        run = out / "runs" / f"dm_segnet_tiny_seed0_fold{k}"
        ck = torch.load(run / "checkpoint_best.pt", map_location="cpu", weights_only=False)
        info = ck["data"]
        assert info["held_out_ids"] == held[k]
        assert set(held[k]).isdisjoint(info["train_ids"] + info["val_ids"])  # never trained or validated on
        assert sorted(p.name.split(".")[0] for p in (run / "test_pred").glob("*.nii.gz")) == held[k]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"]["folds"] == 3 and summary["test"]["fold_ids"] == [0, 1]
    assert [r["fold"] for r in summary["runs"]] == [0, 1]
    assert "3-fold cross-validation" in (out / "summary.md").read_text()
    assert _digest(data) == before  # the data are read, never written
    # a rerun finds both runs done
    assert main(["benchmark", str(cfg), "--steps", "1", "--seeds", "0", "--folds", "3", "--fold-ids", "0,1",
                 "--out", str(out), "--threads", "1", "--n-boot", "100", "--dry-run"]) == 0


def test_cross_validation_scores_brats_labels_as_regions(tmp_path, monkeypatch):
    """BraTS 2019-2021 case folders (label 4 = enhancing tumour): the held-out cases are scored as whole tumour,
    tumour core and enhancing tumour, label 4 read as 3 (as training relabels it)."""
    monkeypatch.setenv("MAMBASEG_NO_CPU_KERNEL", "1")
    data = write_case_folders(tmp_path / "b21", "brats2021", n_cases=4, shape=(18, 16, 16))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(tiny_3d_yaml(data, "data.layout=case_folders", "data.preset=brats2021", "data.num_classes=4"))
    out = tmp_path / "bench"
    assert main(["benchmark", str(cfg), "--steps", "1", "--seeds", "0", "--folds", "2", "--fold-ids", "1",
                 "--out", str(out), "--threads", "1", "--n-boot", "50"]) == 0
    with open(out / "results.csv", newline="") as f:
        metrics = {r["metric"] for r in csv.DictReader(f)}
    assert {"dice:WT", "dice:TC", "dice:ET"} <= metrics
