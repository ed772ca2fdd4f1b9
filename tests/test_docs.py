"""The documentation site (issue 25): ``mkdocs build --strict`` succeeds (warnings are errors: broken links, pages
left out of the navigation, docstrings mkdocstrings cannot render), the command-line reference is generated from
the parser and the API reference from the docstrings. Skipped, with the extra to install, without mkdocs."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mambaseg.cli import build_parser
from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
_MISSING = [m for m in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python") if not importlib.util.find_spec(m)]
needs_mkdocs = pytest.mark.skipif(bool(_MISSING), reason=f"{', '.join(_MISSING)} not installed: pip install -e "
                                                          "'.[docs]' (the dev extra includes it)")


def _hook():
    return load_script("docs/hooks/cli_reference.py")


def _commands() -> dict:
    import argparse

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_cli_reference_is_the_parsers_help_for_every_command():
    text = _hook().cli_reference()
    for name, sub in _commands().items():
        assert f"## mambaseg {name}\n" in text
        for action in sub._actions:  # every option of every command is documented
            for opt in action.option_strings:
                assert opt in text, (name, opt)
    assert "--steps-3d" in text  # e.g. the demo's step budgets
    assert text == _hook().cli_reference()  # fixed width: the same page whatever the terminal


def test_cli_reference_page_holds_the_marker_and_every_page_is_in_the_nav():
    import yaml

    assert _hook().MARKER in (ROOT / "docs" / "reference" / "cli.md").read_text()

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_multi_constructor("tag:", lambda loader, suffix, node: None)
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_Loader)  # a SafeLoader: !!python tags are ignored

    def pages(nav):
        for item in nav:
            for value in item.values():
                yield from (pages(value) if isinstance(value, list) else [value])

    listed = set(pages(config["nav"]))
    on_disk = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert listed == on_disk
    for task in ("vessels-2d", "mri-3d", "brats", "nnunet", "benchmarking", "export", "multi-node"):
        assert f"guides/{task}.md" in listed


@needs_mkdocs
def test_strict_build(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(site)], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cli = (site / "reference" / "cli" / "index.html").read_text()
    assert "mambaseg demo" in cli and "--no-real" in cli
    api = (site / "reference" / "api" / "index.html").read_text()
    assert "selective_scan" in api and "Selective scan" in api and "build_model" in api
    for page in ("install", "quickstart", "guides/brats", "guides/multi-node"):
        assert (site / page / "index.html").is_file()
