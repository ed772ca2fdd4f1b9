"""The shared loader of the compiled CPU kernels: names carry a source hash, builds are announced, failures fall
back with one warning naming what to install."""

from __future__ import annotations

import logging

from mambaseg.utils import cpp_ext


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
