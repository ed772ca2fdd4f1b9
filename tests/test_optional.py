"""Optional dependencies (#13): a missing one is a one-line error naming the pip extra; the CLI exits 2.

``sys.modules[name] = None`` makes ``import name`` raise ImportError, as on a machine without the package.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from mambaseg.cli import main
from mambaseg.data.errors import DataError
from mambaseg.utils.optional import MissingDependency, require


def _block(monkeypatch, *names):
    for name in names:
        monkeypatch.setitem(__import__("sys").modules, name, None)


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


def test_require_names_the_extra(monkeypatch):
    assert require("json", purpose="x").dumps([1]) == "[1]"
    _block(monkeypatch, "onnx")
    with pytest.raises(MissingDependency) as e:
        require("onnx", purpose="mambaseg export")
    assert str(e.value) == "mambaseg export needs onnx, which is not installed: pip install 'mambaseg[export]'."
    _block(monkeypatch, "matplotlib", "matplotlib.pyplot")
    with pytest.raises(MissingDependency, match=r"matplotlib.*mambaseg\[viz\]"):
        require("matplotlib.pyplot", purpose="figures")


@pytest.mark.parametrize("blocked,dist", [("onnx", "onnx"), ("onnxruntime", "onnxruntime")])
def test_export_without_onnx_exits_2_with_one_line(tmp_path, monkeypatch, capsys, blocked, dist):
    _block(monkeypatch, blocked)
    out = tmp_path / "m.onnx"
    rc = main(["export", "--model", str(tmp_path / "run"), "--onnx", str(out)])
    assert rc == 2
    _one_line_error(capsys, "mambaseg export:", f"needs {dist}", "pip install 'mambaseg[export]'")
    assert not out.exists()


@pytest.mark.parametrize("blocked", ["onnx", "onnxruntime"])
def test_predict_onnx_model_without_onnx_exits_2_with_one_line(tmp_path, monkeypatch, capsys, blocked):
    from PIL import Image

    model = tmp_path / "m.onnx"
    model.write_bytes(b"not checked before the dependency")
    if blocked == "onnxruntime":  # a readable export, so that onnx (present) gets past the metadata
        pytest.importorskip("onnx")
        import onnx
        from onnx import TensorProto, helper

        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])])
        proto = helper.make_model(graph)
        helper.set_model_props(proto, {"mambaseg": '{"fixed_size": null, "in_channels": 1, "spatial_dims": 2}'})
        onnx.save(proto, str(model))
    _block(monkeypatch, blocked)
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "in" / "a.png")
    rc = main(["predict", "--model", str(model), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
               "--no-progress"])
    assert rc == 2
    _one_line_error(capsys, "mambaseg predict:", str(model), f"needs {blocked}", "pip install 'mambaseg[export]'")
    assert not any((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_report_without_matplotlib_writes_the_page_without_figures(tmp_path, monkeypatch, capsys, caplog):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 0.5}\n{"epoch": 2, "train_loss": 0.4}\n')
    assert main(["report", str(run), "-o", str(tmp_path / "with.html")]) == 0  # control: a learning-curve figure
    assert "<img" in (tmp_path / "with.html").read_text()
    capsys.readouterr()
    _block(monkeypatch, "matplotlib", "matplotlib.pyplot")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mambaseg"):
        assert main(["report", str(run)]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "without figures" in warnings[0], warnings
    assert "pip install 'mambaseg[viz]'" in warnings[0]
    assert "Traceback" not in capsys.readouterr().err
    page = (run / "report.html").read_text()
    assert "<img" not in page and "Figures left out" in page and "mambaseg[viz]" in page


def test_training_without_matplotlib_skips_progress_png_with_one_warning(tmp_path, monkeypatch, caplog):
    from mambaseg.engine import train as engine_train

    _block(monkeypatch, "matplotlib", "matplotlib.pyplot")
    monkeypatch.setattr(engine_train._plot_progress, "warned", False, raising=False)
    history = [{"epoch": 1, "train_loss": 0.5}]
    with caplog.at_level(logging.WARNING, logger="mambaseg.train"):
        engine_train._plot_progress(history, tmp_path / "progress.png")
        engine_train._plot_progress(history, tmp_path / "progress.png")
    assert not (tmp_path / "progress.png").exists()
    warnings = [r.getMessage() for r in caplog.records if "progress.png" in r.getMessage()]
    assert len(warnings) == 1 and "pip install 'mambaseg[viz]'" in warnings[0]


def test_train_cli_lists_only_the_files_it_wrote(tmp_path, monkeypatch, capsys):
    import mambaseg.engine.train as engine_train

    def fake_train(cfg, out, resume=False, progress=True):
        out.mkdir(parents=True)
        (out / "checkpoint_last.pt").write_bytes(b"")
        return {"train_seconds": 0, "epochs_done": 1, "best_val_dice": 0.0}

    monkeypatch.setattr(engine_train, "train", fake_train)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {name: unet_tiny}\n")
    assert main(["train", str(cfg), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "checkpoint_last.pt" in out and "progress.png" not in out and "checkpoint_best.pt" not in out


def test_simpleitk_and_h5py_missing_name_the_file_and_extra(tmp_path, monkeypatch):
    from mambaseg.data.io.volume import read_volume
    from mambaseg.data.layouts.detect3d import list_cases3d
    from mambaseg.data.load3d import load_case3d

    nrrd = tmp_path / "v.nrrd"
    nrrd.write_bytes(b"NRRD0004\n")
    _block(monkeypatch, "SimpleITK", "h5py")
    with pytest.raises(DataError, match=r"v\.nrrd: reading \.nrrd needs SimpleITK.*mambaseg\[io\]"):
        read_volume(nrrd)
    (tmp_path / "h5" / "test_vol_h5").mkdir(parents=True)
    (tmp_path / "h5" / "test_vol_h5" / "case0001.npy.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    (case,) = list_cases3d(tmp_path / "h5", split="test")
    with pytest.raises(DataError, match=r"case0001\.npy\.h5: reading \.h5 needs h5py.*mambaseg\[io\]"):
        load_case3d(case)
