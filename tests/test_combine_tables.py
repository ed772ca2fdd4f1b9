"""benchmarks/combine_tables.py: benchmark folders pooled into one table by the benchmark's own statistics; a run
in two folders or unlike budgets refused with exit 2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import load_script


def _load():
    return load_script("benchmarks/combine_tables.py")


def _folder(path: Path, runs: dict[tuple[str, int], list[float]], steps: int = 600, commit: str = "abc") -> Path:
    """A benchmark output folder: summary.json (budget, test, runs) and results.csv (per-case dice)."""
    path.mkdir(parents=True)
    summary = dict(budget={"minutes": None, "steps": steps, "clock": None}, test={"images": "t/images"},
                   runs=[dict(model=m, seed=s, steps=steps, cpu_seconds=120.0, commit=commit) for m, s in runs])
    (path / "summary.json").write_text(json.dumps(summary))
    with (path / "results.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "seed", "case", "metric", "value"])
        for (m, s), values in runs.items():
            for i, v in enumerate(values):
                w.writerow([m, s, f"c{i}", "dice", v])
    return path


def test_pooled_seeds_average_per_case_and_pair_against_the_reference(tmp_path, capsys):
    mod = _load()
    a = _folder(tmp_path / "a", {("base", 0): [0.5, 0.6, 0.7, 0.8], ("net", 0): [0.6, 0.7, 0.8, 0.9]}, commit="c1")
    b = _folder(tmp_path / "b", {("base", 1): [0.7, 0.6, 0.5, 0.4]}, commit="c2")
    out = tmp_path / "pooled.json"
    assert mod.main([str(a), str(b), "--reference", "base", "--out", str(out)]) == 0
    stats = json.loads(out.read_text())["statistics"]
    base = stats["models"]["base"]["metrics"]["dice"]
    # each case averaged over seeds 0 and 1 first: (0.5+0.7)/2, (0.6+0.6)/2, ... = 0.6 every case
    assert base["over_cases"]["mean"] == pytest.approx(0.6) and base["over_seeds"]["seeds"] == [0, 1]
    assert base["over_seeds"]["values"] == pytest.approx([0.65, 0.55])
    comp = next(c for c in stats["comparisons"] if c["a"] == "base" and c["b"] == "net")
    assert comp["mean_difference"] == pytest.approx(np.mean([0.0, 0.1, 0.2, 0.3]))
    printed = capsys.readouterr().out
    assert "| net | 0 |" in printed and "base_seed1 c2" in printed


def test_a_run_in_two_folders_or_unlike_budgets_are_refused(tmp_path, capsys):
    mod = _load()
    a = _folder(tmp_path / "a", {("base", 0): [0.5, 0.6]})
    dup = _folder(tmp_path / "dup", {("base", 0): [0.5, 0.6]})
    other = _folder(tmp_path / "other", {("base", 1): [0.5, 0.6]}, steps=300)
    for folders in ([a, dup], [a, other]):
        with pytest.raises(SystemExit) as e:
            mod.main([str(f) for f in folders] + ["--reference", "base"])
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert "base_seed0 is also in" in err and "budget or test set differs" in err
