"""The shared loader of the compiled CPU kernels: names carry a source hash, builds are announced, failures fall
back with one warning naming what to install."""

from __future__ import annotations

import ast
import json
import logging
import sys
from pathlib import Path

import torch

from mambaseg.nn import akconv_kernel
from mambaseg.ssm import cpu_kernel
from mambaseg.utils import cpp_ext

ROOT = Path(__file__).resolve().parents[2]


def test_name_carries_source_hash_and_build_is_announced(tmp_path, monkeypatch, caplog):
    src = tmp_path / "k.cpp"
    src.write_text("// v1\n")
    seen = []

    def fake_load(name, sources, **kwargs):
        seen.append(name)
        return object()

    monkeypatch.setattr("torch.utils.cpp_extension.load", fake_load)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="mambaseg.utils.cpp_ext"):
        assert cpp_ext.load_extension("demo_ext", [src], what="demo kernel") is not None
    assert "compiling" in caplog.text and "demo kernel" in caplog.text  # a first build is visible at WARNING
    src.write_text("// v2\n")
    cpp_ext.load_extension("demo_ext", [src], what="demo kernel")
    assert seen[0].startswith("demo_ext_") and seen[1].startswith("demo_ext_") and seen[0] != seen[1]


def test_build_failure_falls_back_with_install_hint(tmp_path, monkeypatch, caplog):
    src = tmp_path / "k.cpp"
    src.write_text("// v1\n")

    def failing_load(name, sources, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr("torch.utils.cpp_extension.load", failing_load)
    with caplog.at_level(logging.WARNING, logger="mambaseg.utils.cpp_ext"):
        assert cpp_ext.load_extension("demo_ext", [src], what="demo kernel") is None
    assert "cpu-kernel" in caplog.text and "pure-PyTorch" in caplog.text


def test_missing_source_and_disable_switches(tmp_path, monkeypatch):
    assert cpp_ext.load_extension("demo_ext", [tmp_path / "absent.cpp"]) is None
    monkeypatch.delenv(cpp_ext.ENV_DISABLE_ALL, raising=False)
    monkeypatch.setenv("MAMBASEG_NO_DEMO", "1")
    assert cpp_ext.disabled("MAMBASEG_NO_DEMO") == "MAMBASEG_NO_DEMO"
    monkeypatch.setenv(cpp_ext.ENV_DISABLE_ALL, "1")
    assert cpp_ext.disabled("MAMBASEG_NO_DEMO") == cpp_ext.ENV_DISABLE_ALL
    monkeypatch.setenv(cpp_ext.ENV_DISABLE_ALL, "0")
    monkeypatch.setenv("MAMBASEG_NO_DEMO", "0")
    assert cpp_ext.disabled("MAMBASEG_NO_DEMO") is None



def test_same_sources_in_two_checkouts_get_two_build_names(tmp_path, monkeypatch):
    """torch's build files name sources by absolute path: two checkouts must not share (and rebuild) one build."""
    seen = []
    monkeypatch.setattr("torch.utils.cpp_extension.load", lambda name, sources, **kw: seen.append(name) or object())
    for where in ("a", "b"):
        (tmp_path / where).mkdir()
        (tmp_path / where / "k.cpp").write_text("// same\n")
        cpp_ext.load_extension("demo_ext", [tmp_path / where / "k.cpp"])
    assert seen[0] != seen[1]


def test_stale_build_lock_is_removed_fresh_one_kept(tmp_path, caplog):
    import os
    import time

    lock = tmp_path / "lock"
    lock.write_text("")
    cpp_ext._remove_stale_lock(lock, "demo kernel")
    assert lock.exists()  # a live build's lock stays
    old = time.time() - cpp_ext.STALE_LOCK_SECONDS - 60
    os.utime(lock, (old, old))
    with caplog.at_level(logging.WARNING, logger="mambaseg.utils.cpp_ext"):
        cpp_ext._remove_stale_lock(lock, "demo kernel")
    assert not lock.exists() and "stale build lock" in caplog.text


# --- prebuilt kernels (issue 25): imported when their build record matches, else the build at first use ---------


def _fake_prebuilt(tmp_path, monkeypatch, record):
    """A package ``fakekern`` holding a pure-Python stand-in ``_k`` for a compiled module, with ``record`` beside it
    (None: no record), and the kernel's source file; returns the source."""
    pkg = tmp_path / "fakekern"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "_k.py").write_text("MARK = 'prebuilt'\n")
    src = tmp_path / "k.cpp"
    src.write_text("// v1\n")
    if record is not None:
        (pkg / ("_k" + cpp_ext.RECORD_SUFFIX)).write_text(json.dumps(record))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("fakekern", "fakekern._k"):
        sys.modules.pop(name, None)
    return src


def _record(src, torch_version=None):
    return {"torch": torch_version or torch.__version__, "sources_sha256": cpp_ext.sources_digest([src])}


def test_prebuilt_mismatch_names_the_reason():
    assert cpp_ext.prebuilt_mismatch({"torch": "2.13.0", "sources_sha256": "ab"}, "2.13.0", "ab") is None
    assert "build record" in cpp_ext.prebuilt_mismatch(None, "2.13.0", "ab")
    reason = cpp_ext.prebuilt_mismatch({"torch": "2.12.0", "sources_sha256": "ab"}, "2.13.0", "ab")
    assert "2.12.0" in reason and "2.13.0" in reason
    assert "sources" in cpp_ext.prebuilt_mismatch({"torch": "2.13.0", "sources_sha256": "cd"}, "2.13.0", "ab")


def test_matching_prebuilt_module_is_imported_without_a_build(tmp_path, monkeypatch, caplog):
    src = tmp_path / "k.cpp"
    src.write_text("// v1\n")
    src = _fake_prebuilt(tmp_path, monkeypatch, _record(src))

    def no_build(*a, **k):
        raise AssertionError("a matching prebuilt kernel must not be compiled again")

    monkeypatch.setattr("torch.utils.cpp_extension.load", no_build)
    with caplog.at_level(logging.WARNING, logger="mambaseg.utils.cpp_ext"):
        module = cpp_ext.load_extension("demo_ext", [src], what="demo kernel", prebuilt="fakekern._k")
    assert module.MARK == "prebuilt" and caplog.text == ""


def test_prebuilt_for_another_torch_falls_back_to_a_build_with_the_reason(tmp_path, monkeypatch, caplog):
    src = tmp_path / "k.cpp"
    src.write_text("// v1\n")
    src = _fake_prebuilt(tmp_path, monkeypatch, _record(src, torch_version="1.0.0"))
    built = []
    monkeypatch.setattr("torch.utils.cpp_extension.load", lambda name, sources, **kw: built.append(name) or "jit")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="mambaseg.utils.cpp_ext"):
        assert cpp_ext.load_extension("demo_ext", [src], what="demo kernel", prebuilt="fakekern._k") == "jit"
    assert built and "built for torch 1.0.0" in caplog.text and cpp_ext.BUILD_ESTIMATE in caplog.text
    assert "fakekern._k" not in sys.modules  # a module built for another torch is never imported


def test_prebuilt_with_edited_sources_or_no_record_is_not_imported(tmp_path, monkeypatch, caplog):
    src = tmp_path / "k.cpp"
    src.write_text("// v0\n")
    src = _fake_prebuilt(tmp_path, monkeypatch, _record(src))  # recorded for v0, the file now holds v1
    monkeypatch.setattr("torch.utils.cpp_extension.load", lambda name, sources, **kw: "jit")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="mambaseg.utils.cpp_ext"):
        assert cpp_ext.load_extension("demo_ext", [src], what="demo kernel", prebuilt="fakekern._k") == "jit"
    assert "sources have changed" in caplog.text
    (tmp_path / "fakekern" / ("_k" + cpp_ext.RECORD_SUFFIX)).unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mambaseg.utils.cpp_ext"):
        assert cpp_ext.load_extension("demo_ext", [src], what="demo kernel", prebuilt="fakekern._k") == "jit"
    assert "no build record" in caplog.text


def test_no_prebuilt_in_this_install_says_so(tmp_path, monkeypatch, caplog):
    src = tmp_path / "k.cpp"
    src.write_text("// v1\n")
    monkeypatch.setattr("torch.utils.cpp_extension.load", lambda name, sources, **kw: "jit")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="mambaseg.utils.cpp_ext"):
        assert cpp_ext.load_extension("demo_ext", [src], what="demo kernel", prebuilt="nosuchpkg_h25._k") == "jit"
    assert "no prebuilt kernel in this install" in caplog.text


def test_setup_py_builds_the_modules_the_loaders_import_with_the_same_flags():
    """setup.py (not importable: it runs setup()) lists the kernels as literals; they must match the loaders."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    consts = {t.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
              for t in node.targets if isinstance(t, ast.Name) and t.id in ("FLAGS", "KERNELS", "RECORD_SUFFIX")}
    assert consts["FLAGS"] == cpp_ext.FLAGS and consts["RECORD_SUFFIX"] == cpp_ext.RECORD_SUFFIX
    kernels = {name: [*sources, *headers] for name, sources, headers in consts["KERNELS"]}
    for loader in (cpu_kernel, akconv_kernel):
        name = f"{loader.__package__}.{'_selective_scan_cpu' if loader is cpu_kernel else '_akconv_cpu'}"
        assert [ROOT / f for f in kernels[name]] == [loader._SOURCE.resolve(), loader._HEADER.resolve()]
