"""Build hook: copy the reference configs and the shipped models into the wheel as package data.

``configs/`` and ``weights/`` at the repository root stay the only copies in git (benchmark scripts, tests and
README use those paths); a wheel gets them as ``mambaseg/configs/<dataset>/<name>.yaml`` and
``mambaseg/weights/<name>.pt``, where :mod:`mambaseg.resources` looks first. Editable installs skip the copy:
there the package finds the checkout's folders itself. Everything else is configured in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# (folder at the repository root, files to copy, folder inside the package)
SHIPPED = [("configs", "*/*.yaml", "configs"), ("weights", "*.pt", "weights"), ("weights", "README.md", "weights")]


class BuildPyWithShippedData(build_py):
    """``build_py`` that also copies :data:`SHIPPED` into ``<build_lib>/mambaseg/``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for folder, pattern, dest in SHIPPED:
            for src in sorted((ROOT / folder).glob(pattern)):
                target = Path(self.build_lib, "mambaseg", dest, src.relative_to(ROOT / folder))
                self.mkpath(str(target.parent))
                self.copy_file(str(src), str(target))


setup(cmdclass={"build_py": BuildPyWithShippedData})
