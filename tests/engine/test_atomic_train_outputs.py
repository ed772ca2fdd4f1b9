"""Crash-safe outputs of train, export, report and benchmark (#14): a writer that fails half-way leaves the earlier
file (or nothing) under the final name and no temporary file; metrics.jsonl is appended one line per write, a torn
last line is skipped by readers and repaired by --resume."""

from __future__ import annotations

import errno
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

import mambaseg.engine.train as train_mod
from mambaseg.config import apply_overrides, config_from_dict, config_to_dict
from mambaseg.engine.checkpoint import load_checkpoint, save_checkpoint
from mambaseg.utils.atomic import append_line, is_temp_name, read_jsonl, truncate_partial_line

BASE = {
    "seed": 0,
    "model": {"name": "unet_tiny"},
    "data": {"layout": "drive", "val_fraction": 0.0, "patch_size": [32, 32], "augment": "none"},
    "train": {"epochs": 1, "iters_per_epoch": 2, "batch_size": 2, "num_threads": 1},
}
SENTINEL = b"an earlier complete file\n"


@pytest.fixture(scope="module")
def data(tiny_drive):
    return tiny_drive  # conftest: 2 training + 1 test image, 40x44


def _cfg(data, *extra):
    return apply_overrides(config_from_dict(BASE), [f"data.root={data}", *extra])


def _temps(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if is_temp_name(p.name)]


def _failing_write_bytes(monkeypatch, final_name: str):
    """Path.write_bytes writes half of the data, then fails like a full disk, for the temporary of ``final_name``."""
    original = Path.write_bytes
    seen = []

    def write_bytes(self, payload):
        if self.name.startswith(f".{final_name}."):
            seen.append(self)
            original(self, payload[: len(payload) // 2])
            raise OSError(errno.ENOSPC, "No space left on device (test)")
        return original(self, payload)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    return seen


# ---------------------------------------------------------------------------------------------- append-only lines
def test_append_line_and_tolerant_reader(tmp_path):
    path = tmp_path / "m.jsonl"
    append_line(path, json.dumps({"epoch": 1}))
    append_line(path, json.dumps({"epoch": 2}) + "\n")  # a newline is not doubled
    assert path.read_text() == '{"epoch": 1}\n{"epoch": 2}\n'
    with open(path, "ab") as fh:  # a kill mid-write: half a line, no newline
        fh.write(b'{"epoch": 3, "train_lo')
    assert read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]
    assert truncate_partial_line(path) == len(b'{"epoch": 3, "train_lo')
    assert path.read_text() == '{"epoch": 1}\n{"epoch": 2}\n'
    assert truncate_partial_line(path) == 0  # nothing torn: unchanged
    # a complete last record without its newline is read; a missing file is empty
    path.write_text('{"a": 1}\n{"a": 2}')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    assert read_jsonl(tmp_path / "nope.jsonl") == [] and truncate_partial_line(tmp_path / "nope.jsonl") == 0


# ------------------------------------------------------------------------------------------------------ training
@pytest.mark.parametrize("name", ["config.yaml", "provenance.json", "summary.json"])
def test_train_text_outputs_fail_without_partial_file(data, tmp_path, monkeypatch, name):
    run = tmp_path / "run"
    run.mkdir()
    (run / name).write_bytes(SENTINEL)
    seen = _failing_write_bytes(monkeypatch, name)
    with pytest.raises(OSError, match="No space left"):
        train_mod.train(_cfg(data), run, progress=False)
    assert seen, f"{name} was not written through the atomic writer"
    assert (run / name).read_bytes() == SENTINEL  # the earlier file, not half of the new one
    assert _temps(run) == []
    monkeypatch.undo()  # the writer works again: the same folder trains (the run lock was released)
    for p in run.glob("checkpoint_*.pt"):
        p.unlink()
    train_mod.train(_cfg(data), run, progress=False)
    text = (run / name).read_text()
    parsed = yaml.safe_load(text) if name.endswith(".yaml") else json.loads(text)
    assert isinstance(parsed, dict) and parsed


def test_progress_png_fails_without_partial_file(data, tmp_path, monkeypatch):
    import matplotlib.figure

    run = tmp_path / "run"
    run.mkdir()
    (run / "progress.png").write_bytes(SENTINEL)

    def savefig(self, fname, *a, **k):
        Path(fname).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device (test)")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    with pytest.raises(OSError, match="No space left"):
        train_mod.train(_cfg(data), run, progress=False)
    assert (run / "progress.png").read_bytes() == SENTINEL and _temps(run) == []


def test_torn_metrics_line_is_repaired_on_resume(data, tmp_path):
    run = tmp_path / "run"
    train_mod.train(_cfg(data), run, progress=False)
    with open(run / "metrics.jsonl", "ab") as fh:  # killed while appending epoch 2's line
        fh.write(b'{"epoch": 2, "train_loss": 0.4')
    assert [h["epoch"] for h in read_jsonl(run / "metrics.jsonl")] == [1]
    train_mod.train(_cfg(data, "train.epochs=2"), run, resume=True, progress=False)
    raw = (run / "metrics.jsonl").read_text()
    assert raw.endswith("\n")
    lines = [json.loads(x) for x in raw.splitlines()]  # every line parses: the torn text is gone
    assert [h["epoch"] for h in lines] == [1, 2]
    assert "skipped_steps" in lines[1] and "seconds" in lines[1]  # the resumed epoch's own line


def test_resume_without_history_cuts_only_the_torn_line(data, tmp_path):
    run = tmp_path / "run"
    train_mod.train(_cfg(data), run, progress=False)
    ck = load_checkpoint(run / "checkpoint_last.pt")
    del ck["history"]  # a checkpoint of an older version
    save_checkpoint(ck, run / "checkpoint_last.pt")
    good = (run / "metrics.jsonl").read_text()
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 2, "tr')
    train_mod.train(_cfg(data, "train.epochs=2"), run, resume=True, progress=False)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert lines[0] == good.splitlines()[0] and [json.loads(x)["epoch"] for x in lines] == [1, 2]


# ------------------------------------------------------------------------------------ export, report, benchmark
def test_export_onnx_failure_leaves_no_partial_file(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from mambaseg.apps.export import export_onnx
    from mambaseg.models import build_model

    cfg = config_from_dict({"model": {"name": "unet_tiny"}, "data": {"patch_size": [32, 32]}})
    net = build_model("unet_tiny", in_channels=1, out_channels=1)
    ck = tmp_path / "ck.pt"
    save_checkpoint({"model_name": "unet_tiny", "model_kwargs": {"in_channels": 1, "out_channels": 1},
                     "state_dict": net.state_dict(), "config": config_to_dict(cfg), "data": {"spatial_dims": 2}}, ck)
    original = onnx.save

    def save(proto, f, *a, **k):
        Path(f).write_bytes(b"half an onnx file")
        raise OSError(errno.ENOSPC, "No space left on device (test)")

    monkeypatch.setattr(onnx, "save", save)
    out = tmp_path / "out" / "m.onnx"
    with pytest.raises(OSError, match="No space left"):
        export_onnx(ck, out)
    assert not out.exists() and _temps(tmp_path) == []
    monkeypatch.setattr(onnx, "save", original)
    meta = export_onnx(ck, out)
    assert out.is_file() and meta["in_channels"] == 1 and _temps(tmp_path) == []


def test_report_html_failure_keeps_earlier_report(data, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from mambaseg.apps.report.page import _REPORT_HEAD, write_report

    run = tmp_path / "run"
    train_mod.train(_cfg(data), run, progress=False)
    earlier = _REPORT_HEAD.encode() + SENTINEL  # an earlier report (report -o replaces only those)
    (run / "report.html").write_bytes(earlier)
    seen = _failing_write_bytes(monkeypatch, "report.html")
    with pytest.raises(OSError, match="No space left"):
        write_report(run)
    assert seen and (run / "report.html").read_bytes() == earlier and _temps(run) == []


def test_benchmark_outputs_fail_without_partial_file(tmp_path, monkeypatch):
    from mambaseg.apps import benchmark
    from mambaseg.apps.benchmark import html as benchmark_html

    csv_path = tmp_path / "results.csv"
    csv_path.write_bytes(SENTINEL)
    rows = [{"model": "a", "seed": 1, "case": "01", "metric": "dice", "value": 0.5},
            {"model": "a", "seed": 1, "case": "02", "metric": "dice", "value": "not a number"}]
    with pytest.raises(ValueError):  # fails after the header and the first row were written
        benchmark.write_results_csv(csv_path, rows)
    assert csv_path.read_bytes() == SENTINEL and _temps(tmp_path) == []
    benchmark.write_results_csv(csv_path, rows[:1])
    assert csv_path.read_text().splitlines() == ["model,seed,case,metric,value", "a,1,01,dice,0.5"]

    html_path = tmp_path / "index.html"
    html_path.write_bytes(SENTINEL)
    monkeypatch.setattr(benchmark_html, "render_html", lambda summary, rows: "<html>" + "x" * 1000 + "</html>")
    seen = _failing_write_bytes(monkeypatch, "index.html")
    with pytest.raises(OSError, match="No space left"):
        benchmark_html.write_html({}, [], None, html_path)
    assert seen and html_path.read_bytes() == SENTINEL and _temps(tmp_path) == []


def test_nan_free_summary_after_normal_training(data, tmp_path):
    """The plain path still writes every output (and nothing temporary)."""
    run = tmp_path / "run"
    summary = train_mod.train(_cfg(data), run, progress=False)
    for name in ("config.yaml", "provenance.json", "summary.json", "metrics.jsonl", "checkpoint_last.pt",
                 "checkpoint_best.pt"):
        assert (run / name).is_file(), name
    assert _temps(run) == [] and not math.isnan(summary["last"]["train_loss"])
    assert all(torch.isfinite(v).all() for v in load_checkpoint(run / "checkpoint_best.pt")["state_dict"].values())
