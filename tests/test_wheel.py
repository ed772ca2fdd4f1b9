"""The wheel is self-sufficient (#13): it carries the reference configs, the kernel sources, the shipped models
with their manifest and the LICENSE, and an installation of it works from an empty folder, outside the checkout.

Slow (builds a ~26 MB platform wheel, compiling the CPU kernels, and runs the CLI in subprocesses): ``make
test-slow`` or ``pytest -m slow``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from mambaseg.data.synthetic import make_vessel_image
from mambaseg.resources import list_configs, load_manifest
from mambaseg.utils import cpp_ext

ROOT = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "CITATION.cff", "src", "configs",
                "weights"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the build inputs (no build/ or egg-info left in the checkout)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "*.so", "*.build.json")  # in-place builds
    for name in BUILD_INPUTS:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=ignore)
        elif p.is_file():
            shutil.copy2(p, src / name)
    dist = base / "dist"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(dist), str(src)], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheels = list(dist.glob("mambaseg-*.whl"))
    assert len(wheels) == 1
    return wheels[0]


def test_wheel_carries_configs_kernels_models_and_license(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = list_configs()
    assert configs and {f"mambaseg/configs/{c}.yaml" for c in configs} <= names
    for sub in ("ssm", "nn"):
        for f in (ROOT / "src" / "mambaseg" / sub / "csrc").iterdir():
            if f.suffix in (".cpp", ".h"):
                assert f"mambaseg/{sub}/csrc/{f.name}" in names
    assert "mambaseg/shipped_models.json" in names
    for module in ("ssm/_selective_scan_cpu", "nn/_akconv_cpu"):  # the CPU kernels, compiled at build time
        assert any(n.startswith(f"mambaseg/{module}.") and n.endswith(".so") for n in names), module
        record = json.loads(zipfile.ZipFile(wheel).read(f"mambaseg/{module}{cpp_ext.RECORD_SUFFIX}"))
        assert record["torch"] == torch.__version__ and record["flags"] == cpp_ext.FLAGS
    assert "mambaseg/apps/bundle_meta_schema.json" in names  # verify_metadata offline (MONAI bundles)
    for e in load_manifest().values():
        info = zipfile.ZipFile(wheel).getinfo(f"mambaseg/weights/{e['file']}")
        assert info.file_size == e["size"]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "benchmarks/", "configs/", "weights/")) for n in names)


def test_installed_wheel_works_from_an_empty_folder(wheel, tmp_path):
    """Installed into a fresh virtual environment (its dependencies borrowed from this one through a .pth line, so
    no network; the checkout's editable install is not visible there), run from an empty folder: --version,
    config list/show, models, predict --model akmamba_net_drive, export without onnx, train without data."""
    import site
    import venv

    fresh = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(fresh)
    py = fresh / "bin" / "python"
    fresh_site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     capture_output=True, text=True, check=True).stdout.strip())
    (fresh_site / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")  # .pth files there: not read
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True, timeout=600)
    target = fresh_site
    blocked = tmp_path / "blocked"  # onnx made unimportable, as if not installed
    (blocked / "onnx").mkdir(parents=True)
    (blocked / "onnx" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'onnx'\", name='onnx')\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    extensions = tmp_path / "torch_extensions"  # a build at first use would land here: it must stay empty
    env = dict(os.environ, PYTHONPATH=str(blocked), OMP_NUM_THREADS="1", TORCH_EXTENSIONS_DIR=str(extensions))
    for k in ("MAMBASEG_WEIGHTS", "MAMBASEG_DATA"):
        env.pop(k, None)

    def run(*args: str) -> subprocess.CompletedProcess:
        exe = [str(fresh / "bin" / "mambaseg"), *args[2:]] if args[:2] == ("-m", "mambaseg") else [str(py), *args]
        return subprocess.run(exe, cwd=empty, env=env, capture_output=True, text=True, timeout=600, check=False)

    where = run("-c", "import mambaseg, mambaseg.resources as r, mambaseg.engine.provenance as s; "
                      "print(mambaseg.__file__); print(r.source_checkout()); print(s.provenance()['git_commit'])")
    assert where.returncode == 0, where.stderr
    pkg, checkout, commit = where.stdout.split()
    assert Path(pkg).is_relative_to(target) and checkout == "None" and commit == "None"
    version = run("-m", "mambaseg", "--version")
    assert version.returncode == 0 and version.stdout.strip().startswith("mambaseg ")
    listed = run("-m", "mambaseg", "config", "list")
    assert listed.returncode == 0 and listed.stdout.split() == list_configs()
    assert str(target) in listed.stderr  # the package's own copies
    shown = run("-m", "mambaseg", "config", "show", "drive/akmamba_net_cpu")
    assert shown.stdout == (ROOT / "configs/drive/akmamba_net_cpu.yaml").read_text()
    models = run("-m", "mambaseg", "models")
    assert models.returncode == 0 and str(target / "mambaseg" / "weights" / "akmamba_net_drive.pt") in models.stdout
    image, _, _ = make_vessel_image((120, 130), rng=1)
    (empty / "in").mkdir()
    Image.fromarray(image).save(empty / "in" / "eye.png")
    pred = run("-m", "mambaseg", "predict", "--model", "akmamba_net_drive", "-i", "in", "-o", "out", "--no-progress")
    assert pred.returncode == 0, pred.stderr[-2000:]
    assert "compiling" not in pred.stderr and not any(extensions.glob("*/*.so"))  # the prebuilt kernels were used
    kernels = run("-c", "from mambaseg.ssm import cpu_kernel; from mambaseg.nn import akconv_kernel; "
                        "print(cpu_kernel._load().__file__); print(akconv_kernel._load().__file__)")
    assert kernels.returncode == 0 and all(Path(f).is_relative_to(target) for f in kernels.stdout.split())
    assert Image.open(empty / "out" / "eye.png").size == (130, 120)
    assert (empty / "out" / "eye.png").stat().st_mode & 0o777 == 0o666 & ~_umask()
    export = run("-m", "mambaseg", "export", "--model", "akmamba_net_drive", "--onnx", "m.onnx")
    err = export.stderr.strip()
    assert export.returncode == 2 and "\n" not in err and "onnx" in err and "Traceback" not in err
    train = run("-m", "mambaseg", "train", "drive/akmamba_net_cpu", "--out", "run")
    assert train.returncode == 2 and "data.root" in train.stderr and "MAMBASEG_DATA" in train.stderr


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m
