"""``mambaseg train`` checks the model name, the model kwargs and the patch sizes before any data is read: one
line, exit 2, no run folder written, and the dataset loader never called."""

from __future__ import annotations

import pytest

import mambaseg.engine.train as train_mod
from mambaseg.cli import main
from mambaseg.config import load_config


@pytest.fixture
def no_data(monkeypatch, tmp_path):
    """data.root: a folder that must not be touched; any attempt to load the dataset fails the test loudly."""
    def forbidden(*args, **kwargs):
        raise AssertionError("the dataset was read before the model configuration was checked")

    monkeypatch.setattr(train_mod, "load_dataset", forbidden)
    root = tmp_path / "data_must_not_be_read"  # empty: a 2D or 3D loader would fail on it too
    root.mkdir()
    return root


@pytest.mark.parametrize("cfg_text,needle", [
    ("model: {name: akmamba_net_tinyy}", "Did you mean 'akmamba_net_tiny'"),
    ("model: {name: akmamba_net_tiny, kwargs: {widths: [4, 8]}}", "model.kwargs"),
    ("model: {name: unet_tiny, kwargs: {no_such_arg: 1}}", "no_such_arg"),
    ("model: {name: akmamba_net_tiny}\ninfer: {patch_size: [32, 32, 32]}", "infer.patch_size"),
    ("model: {name: dm_segnet_tiny}", "3D model"),
])
def test_2d_config_errors_before_data(tmp_path, capsys, no_data, cfg_text, needle):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"{cfg_text}\ndata: {{layout: drive, root: '{no_data}', patch_size: [32, 32]}}\n")
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("patch,needle", [("[32, 32]", "is 3D: give 3 positive ints"),
                                          ("[16, 16, 16]", "accepts only its img_size [32, 32, 32]")])
def test_3d_patch_size_errors_before_data(tmp_path, capsys, no_data, patch, needle):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {{name: unetr_tiny}}\ndata: {{layout: msd, root: '{no_data}', patch_size: {patch}}}\n")
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "data.patch_size" in err and needle in err and len(err.splitlines()) == 1


def test_good_config_reaches_the_data(tmp_path, no_data):
    """The checks pass a valid configuration through: the loader is then called (and here refuses)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {{name: akmamba_net_tiny}}\ndata: {{layout: drive, root: '{no_data}', "
                   f"patch_size: [32, 32]}}\n")
    with pytest.raises(AssertionError, match="dataset was read"):
        train_mod.train(load_config(cfg), tmp_path / "run", progress=False)
