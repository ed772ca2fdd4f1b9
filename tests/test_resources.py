"""Self-sufficient install (#13): reference configs by name, data roots from --data-root / $MAMBASEG_DATA, shipped
models by name with a SHA-256 check, provenance from package metadata, outputs with the ordinary file mode."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import mambaseg.resources as res
from mambaseg.cli import build_parser, main
from mambaseg.engine.provenance import provenance

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv(res.DATA_ENV, raising=False)
    monkeypatch.delenv(res.WEIGHTS_ENV, raising=False)


@pytest.fixture
def no_kernel(monkeypatch):
    """provenance() without loading (maybe compiling) the scan kernel."""
    import mambaseg.ssm

    monkeypatch.setattr(mambaseg.ssm, "resolve_backend", lambda *a, **k: "test")


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


# ---------------------------------------------------------------- reference configs


def test_config_names_are_the_configs_folder():
    expected = sorted(str(p.relative_to(ROOT / "configs").with_suffix("")) for p in (ROOT / "configs").rglob("*.yaml"))
    assert res.list_configs() == expected and "drive/akmamba_net_cpu" in expected
    assert res.configs_dir() == ROOT / "configs"  # a checkout uses its configs/ (no copy under src/)
    assert not (ROOT / "src" / "mambaseg" / "configs").exists()


def test_config_list_and_show(capsys):
    assert main(["config", "list"]) == 0
    assert capsys.readouterr().out.split() == res.list_configs()
    assert main(["config", "show", "hippocampus/dm_segnet_cpu"]) == 0
    assert capsys.readouterr().out == (ROOT / "configs/hippocampus/dm_segnet_cpu.yaml").read_text()
    assert res.config_path("configs/drive/unet_cpu.yaml") == ROOT / "configs/drive/unet_cpu.yaml"


def test_config_show_unknown_name_is_one_line(capsys):
    assert main(["config", "show", "drive/akmamba_net_cp"]) == 2
    err = _one_error_line(capsys)
    assert "drive/akmamba_net_cp" in err and "Did you mean drive/akmamba_net_cpu" in err


def test_train_help_points_to_no_developer_path():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    text = sub.choices["train"].format_help()
    assert "config list" in text and "--data-root" in text and "MAMBASEG_DATA" in text
    assert "configs/" not in text and "../shared" not in text


@pytest.fixture
def fake_train(monkeypatch):
    """Replace the training loop: record the resolved config and run folder."""
    import mambaseg.engine.train as train_mod

    seen = {}

    def train(cfg, out, resume=False, progress=True):
        seen["cfg"], seen["out"] = cfg, out
        return {"train_seconds": 0.0, "epochs_done": 0, "best_val_dice": 0.0}

    monkeypatch.setattr(train_mod, "train", train)
    return seen


def test_train_by_name_with_data_root(fake_train, tmp_path):
    data = tmp_path / "my DRIVE: copy"  # YAML-special characters survive the override
    data.mkdir()
    assert main(["train", "drive/akmamba_net_cpu", "--data-root", str(data), "--out", str(tmp_path / "run")]) == 0
    cfg = fake_train["cfg"]
    assert cfg.model.name == "akmamba_net_cpu" and cfg.data.root == str(data)
    assert cfg.data.patch_size == (128, 128)  # the reference config's values


def test_train_data_root_from_environment(fake_train, tmp_path, monkeypatch):
    (tmp_path / "DRIVE").mkdir()
    monkeypatch.setenv(res.DATA_ENV, str(tmp_path))
    monkeypatch.chdir(tmp_path)  # no ../shared here
    assert main(["train", "drive/unet_cpu", "--out", str(tmp_path / "run")]) == 0
    assert fake_train["cfg"].data.root == str(tmp_path / "DRIVE")
    other = tmp_path / "other"
    other.mkdir()
    assert main(["train", "drive/unet_cpu", "--set", f"data.root={other}", "--out", str(tmp_path / "r2")]) == 0
    assert fake_train["cfg"].data.root == str(other)  # an explicit --set wins over the environment


def test_missing_data_root_is_one_line_naming_key_and_variable(fake_train, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "hippocampus/dm_segnet_cpu", "--out", str(tmp_path / "run")]) == 2
    err = _one_error_line(capsys)
    assert "data.root" in err and "MAMBASEG_DATA" in err and "Task04_Hippocampus" in err and "--data-root" in err
    monkeypatch.setenv(res.DATA_ENV, str(tmp_path / "nowhere"))
    assert main(["train", "drive/unet_cpu", "--out", str(tmp_path / "run")]) == 2
    err = _one_error_line(capsys)
    assert str(tmp_path / "nowhere" / "DRIVE") in err and "MAMBASEG_DATA" in err and "data.root" in err
    assert main(["train", "drive/unet_cpu", "--data-root", str(tmp_path / "missing"), "--out", "x"]) == 2
    assert str(tmp_path / "missing") in _one_error_line(capsys)
    assert "cfg" not in fake_train  # nothing started


def test_dataset_subpath_and_env_overrides():
    assert res.dataset_subpath("../shared/data/DRIVE") == "DRIVE"
    assert res.dataset_subpath("data/Synapse/RawData") == "Synapse/RawData"
    assert res.dataset_subpath("./Task04_Hippocampus") == "Task04_Hippocampus"
    assert res.dataset_subpath("/abs/DRIVE") is None and res.dataset_subpath("") is None
    from mambaseg.config import config_from_dict

    cfg = config_from_dict({"data": {"root": "../shared/data/DRIVE", "val_root": "/abs/val"}})
    assert res.data_root_overrides(cfg, env={}) == []
    assert res.data_root_overrides(cfg, env={res.DATA_ENV: "/d"}) == ['data.root="/d/DRIVE"']  # absolute kept
    res.check_data_roots(config_from_dict({"data": {"layout": "synthetic_drive"}}))  # generates its data


# ---------------------------------------------------------------- shipped models


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_manifest_agrees_with_weight_files():
    """Fails when weights/ is replaced without `python benchmarks/ship_weights.py --write-manifest`."""
    models = res.load_manifest()
    assert set(models) == {"akmamba_net_drive", "dm_segnet_brats_wt", "dm_segnet_hippocampus"}
    assert {e["file"] for e in models.values()} == {p.name for p in WEIGHTS.glob("*.pt")}
    for name, e in models.items():
        f = WEIGHTS / e["file"]
        assert e["sha256"] == _sha(f) and e["size"] == f.stat().st_size <= 20 * 2**20, name
        assert e["description"]


def test_models_command_lists_sha(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name, e in res.load_manifest().items():
        assert name in out and e["sha256"] in out and str(WEIGHTS / e["file"]) in out


def test_resolve_model_names_and_paths(tmp_path):
    assert res.resolve_model("akmamba_net_drive") == str(WEIGHTS / "akmamba_net_drive.pt")
    for spec in (str(WEIGHTS / "dm_segnet_hippocampus.pt"), str(tmp_path)):  # files and run folders as given
        assert res.resolve_model(spec) == spec
    assert res.resolve_model("runs/missing/checkpoint_best.pt") == "runs/missing/checkpoint_best.pt"  # loader says
    with pytest.raises(res.ResourceError, match="akmamba_net_drive, dm_segnet_brats_wt, dm_segnet_hippocampus"):
        res.resolve_model("akmamba_net")


def test_sha_mismatch_is_refused_before_loading(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "akmamba_net_drive.pt"
    data = bytearray((WEIGHTS / "akmamba_net_drive.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    bad.write_bytes(bytes(data))
    monkeypatch.setenv(res.WEIGHTS_ENV, str(tmp_path))  # looked up first
    import mambaseg.engine.predict as predict_mod

    monkeypatch.setattr(predict_mod, "predict", lambda *a, **k: pytest.fail("model loaded despite a bad hash"))
    (tmp_path / "in.png").write_bytes(b"")
    assert main(["predict", "--model", "akmamba_net_drive", "-i", str(tmp_path / "in.png"),
                 "-o", str(tmp_path / "out")]) == 2
    err = _one_error_line(capsys)
    assert str(bad) in err and _sha(bad) in err and res.load_manifest()["akmamba_net_drive"]["sha256"] in err


def test_weights_environment_folder_is_used(tmp_path, monkeypatch):
    shutil.copy(WEIGHTS / "dm_segnet_hippocampus.pt", tmp_path)
    monkeypatch.setenv(res.WEIGHTS_ENV, str(tmp_path))
    assert res.shipped_model_path("dm_segnet_hippocampus") == tmp_path / "dm_segnet_hippocampus.pt"
    assert res.weights_dirs()[0] == tmp_path


def test_predict_and_export_take_a_shipped_model_name(tmp_path, monkeypatch):
    """The CLI hands the checked file to predict/export (inference by name runs in the slow wheel test and in
    test_shipped_weights by path)."""
    import mambaseg.apps.export as export_mod
    import mambaseg.engine.predict as predict_mod

    got = {}
    monkeypatch.setattr(predict_mod, "predict", lambda model, *a, **k: got.setdefault("predict", model) and [])
    monkeypatch.setattr(export_mod, "export_onnx", lambda model, *a, **k: got.setdefault("export", model) and 0 / 0)
    assert main(["predict", "--model", "dm_segnet_hippocampus", "-i", str(tmp_path), "-o", str(tmp_path / "o")]) == 0
    assert got["predict"] == str(WEIGHTS / "dm_segnet_hippocampus.pt")
    with pytest.raises(ZeroDivisionError):
        main(["export", "--model", "akmamba_net_drive", "--onnx", str(tmp_path / "m.onnx")])
    assert got["export"] == str(WEIGHTS / "akmamba_net_drive.pt")


def test_write_manifest_round_trip(tmp_path):
    w = tmp_path / "w"
    w.mkdir()
    (w / "a.pt").write_bytes(b"abc")
    manifest = tmp_path / "m.json"
    res.write_manifest(w, {"a": "model A"}, path=manifest)
    (w / "a.pt").write_bytes(b"abcd")  # replaced: the description is kept, hash and size follow the file
    models = res.write_manifest(w, path=manifest)
    assert models == {"a": {"file": "a.pt", "sha256": hashlib.sha256(b"abcd").hexdigest(), "size": 4,
                            "description": "model A"}}
    assert json.loads(manifest.read_text())["models"] == models


# ---------------------------------------------------------------- provenance


def test_provenance_version_from_metadata_and_commit_of_this_checkout(monkeypatch, no_kernel):
    assert res.source_checkout() == ROOT
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "9.9.9")
    prov = provenance(0)
    assert prov["versions"]["mambaseg"] == "9.9.9"
    if (ROOT / ".git").exists():
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        assert prov["git_commit"].removesuffix("+dirty") == head


def _fake_tree(root: Path, name: str) -> Path:
    pkg = root / "src" / "mambaseg"
    pkg.mkdir(parents=True)
    (root / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "1"\n')
    return pkg


def test_no_commit_outside_a_mambaseg_checkout(tmp_path, monkeypatch, no_kernel):
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    other = tmp_path / "other_repo"  # a repository that merely contains an installation
    site = other / "venv" / "lib" / "site-packages" / "mambaseg"
    site.mkdir(parents=True)
    subprocess.run([*git, "init", "-q", str(other)], check=True)
    (other / "f").write_text("x")
    subprocess.run([*git, "-C", str(other), "add", "f"], check=True)
    subprocess.run([*git, "-C", str(other), "commit", "-qm", "x"], check=True)
    monkeypatch.setattr(res, "PACKAGE_DIR", site)
    assert res.source_checkout() is None and provenance(0)["git_commit"] is None
    pkg = _fake_tree(other / "vendored", "mambaseg")  # a source tree, but not its own repository
    monkeypatch.setattr(res, "PACKAGE_DIR", pkg)
    assert res.source_checkout() == other / "vendored" and res.git_commit() is None
    pkg = _fake_tree(tmp_path / "elsewhere", "not-mambaseg")
    monkeypatch.setattr(res, "PACKAGE_DIR", pkg)
    assert res.source_checkout() is None


# ---------------------------------------------------------------- file modes


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_cache_and_atomic_outputs_are_0644(tmp_path, umask022):
    from mambaseg.utils.atomic import atomic_path, atomic_write_text

    with atomic_path(tmp_path / "case.npz") as tmp:  # how the preprocessing cache writes its files
        np.savez(tmp, a=np.zeros(2))
    atomic_write_text(tmp_path / "x.json", "{}")
    for f in ("case.npz", "x.json"):
        assert (tmp_path / f).stat().st_mode & 0o777 == 0o644, f
    os.umask(0o077)  # the umask is respected
    with atomic_path(tmp_path / "private.npz") as tmp:
        np.savez(tmp, a=np.zeros(2))
    assert (tmp_path / "private.npz").stat().st_mode & 0o777 == 0o600


def test_exported_onnx_is_0644(tmp_path, umask022):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from mambaseg.apps.export import export_onnx
    from mambaseg.engine.checkpoint import save_checkpoint
    from mambaseg.models import build_model

    torch.manual_seed(0)
    kwargs = {"in_channels": 1, "out_channels": 2}
    net = build_model("unet_tiny", **kwargs).eval()
    save_checkpoint({"model_name": "unet_tiny", "model_kwargs": kwargs, "state_dict": net.state_dict(),
                     "config": {"infer": {"patch_size": [32, 32]}}, "data": {"spatial_dims": 2}}, tmp_path / "m.pt")
    export_onnx(tmp_path / "m.pt", tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").stat().st_mode & 0o777 == 0o644


def test_project_name_without_tomllib(tmp_path, monkeypatch):
    """Python 3.10 has no tomllib: the [project] name is read with a pattern."""
    import sys

    (tmp_path / "pyproject.toml").write_text('[build-system]\nname = "x"\n\n[project]\nversion = "1"\n'
                                             'name = "mambaseg"\n\n[tool.y]\nname = "z"\n')
    monkeypatch.setitem(sys.modules, "tomllib", None)  # import tomllib -> ImportError
    assert res._project_name(tmp_path / "pyproject.toml") == "mambaseg"
    assert res._project_name(ROOT / "pyproject.toml") == "mambaseg"
    (tmp_path / "pyproject.toml").write_text('[tool.x]\nname = "mambaseg"\n')
    assert res._project_name(tmp_path / "pyproject.toml") is None
    (tmp_path / "pyproject.toml").write_text('[project]\nkeywords = ["a", "[b]"]\nname = "mambaseg"\n')
    assert res._project_name(tmp_path / "pyproject.toml") == "mambaseg"
