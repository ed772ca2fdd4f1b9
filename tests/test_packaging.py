"""Package metadata (#13): --version, LICENSE, CITATION.cff and pyproject's license, URLs and classifiers agree."""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

import pytest
import yaml

import mambaseg
from mambaseg.cli import main, package_version

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
APACHE_2_0_MD5 = "3b83ef96387f14655fc854ddc3c6bd57"  # https://www.apache.org/licenses/LICENSE-2.0.txt


def test_version_flag_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"mambaseg {mambaseg.__version__}"
    assert mambaseg.__version__ == PYPROJECT["version"]


def test_version_from_metadata_with_fallback(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "9.9.9")
    assert package_version() == "9.9.9"

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert package_version() == mambaseg.__version__


def test_license_file_is_apache_2_0_and_declared():
    text = (ROOT / "LICENSE").read_bytes()
    assert hashlib.md5(text).hexdigest() == APACHE_2_0_MD5  # the verbatim text, not a paraphrase
    assert PYPROJECT["license"] == "Apache-2.0" and "LICENSE" in PYPROJECT["license-files"]


def test_citation_cff_cites_the_software_and_both_papers():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert cff["version"] == mambaseg.__version__ and cff["license"] == "Apache-2.0"
    assert cff["authors"] and cff["message"]
    refs = {r["title"]: r for r in cff["references"]}
    dm = next(r for t, r in refs.items() if t.startswith("DM-SegNet"))
    assert dm["doi"] == "10.1016/j.cag.2025.104334" and dm["year"] == 2025
    assert [a["family-names"] for a in dm["authors"]] == ["Zhu", "Ji", "Liu", "Tang", "Kang", "Xiao"]
    ak = next(r for t, r in refs.items() if "Improved Mamba" in t)
    assert [a["family-names"] for a in ak["authors"]] == ["Gao", "Ding", "Hu", "Ding"]
    for r in cff["references"]:  # required by the CFF 1.2.0 schema
        assert r["type"] and r["title"] and all(a.get("family-names") or a.get("name") for a in r["authors"])


def test_pyproject_urls_and_classifiers():
    assert PYPROJECT["urls"] and all(u.startswith("https://") for u in PYPROJECT["urls"].values())
    classifiers = PYPROJECT["classifiers"]
    assert "Topic :: Scientific/Engineering :: Medical Science Apps." in classifiers
    assert not any(c.startswith("License ::") for c in classifiers)  # PEP 639: the SPDX expression says it
    lowest = PYPROJECT["requires-python"].removeprefix(">=")
    assert f"Programming Language :: Python :: {lowest}" in classifiers
