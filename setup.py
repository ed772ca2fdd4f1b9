"""Build hooks: the compiled CPU kernels, and the reference configs and shipped models copied in as package data.

Kernels: the two C++ CPU kernels (``mambaseg/ssm/csrc``: the selective scan; ``mambaseg/nn/csrc``: AKConv) are
compiled here, when the package is built or installed, with torch's extension tooling and the flags of
:data:`mambaseg.utils.cpp_ext.FLAGS` (``-O3 -fno-trapping-math -fopenmp``; no ``-march=native``, so a wheel runs on
any x86-64 CPU). Next to each compiled module a small JSON record names the torch version it was built against and
a hash of its sources; at run time :mod:`mambaseg.utils.cpp_ext` imports the prebuilt module only when both match
and otherwise falls back to the build-at-first-use path. torch must be importable when this file runs: it is in
``[build-system] requires`` (pinned like the runtime pin), and ``make install`` builds with ``--no-build-isolation``
against the torch already in the venv. ``MAMBASEG_SKIP_KERNEL_BUILD=1`` (or torch missing) builds a pure-Python
package whose kernels are compiled at first use as before.

Data: ``configs/`` and ``weights/`` at the repository root stay the only copies in git (benchmark scripts, tests and
README use those paths); a wheel gets them as ``mambaseg/configs/<dataset>/<name>.yaml`` and
``mambaseg/weights/<name>.pt``, where :mod:`mambaseg.resources` looks first. Editable installs skip the copy:
there the package finds the checkout's folders itself. Everything else is configured in pyproject.toml.
"""

import hashlib
import json
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# (folder at the repository root, files to copy, folder inside the package)
SHIPPED = [("configs", "*/*.yaml", "configs"), ("weights", "*.pt", "weights"), ("weights", "README.md", "weights")]
# (module, sources, headers): keep in step with the names the loaders import (ssm/cpu_kernel.py, nn/akconv_kernel.py)
KERNELS = [
    ("mambaseg.ssm._selective_scan_cpu", ["src/mambaseg/ssm/csrc/selective_scan_cpu.cpp"],
     ["src/mambaseg/ssm/csrc/selective_scan_cpu_kernels.h"]),
    ("mambaseg.nn._akconv_cpu", ["src/mambaseg/nn/csrc/akconv_cpu.cpp"], ["src/mambaseg/nn/csrc/akconv_cpu_kernels.h"]),
]
FLAGS = ["-O3", "-fno-trapping-math", "-fopenmp"]  # = mambaseg.utils.cpp_ext.FLAGS (tests/test_packaging.py checks)
RECORD_SUFFIX = ".build.json"  # = mambaseg.utils.cpp_ext.RECORD_SUFFIX


def sources_digest(files) -> str:
    """SHA-256 over the kernel's source and header contents (the same rule as cpp_ext.sources_digest)."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(Path(f).read_bytes())
    return digest.hexdigest()


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


def kernel_setup() -> dict:
    """``ext_modules`` and the ``build_ext`` command for the kernels, or nothing (a pure-Python build) when
    ``MAMBASEG_SKIP_KERNEL_BUILD`` is set or torch cannot be imported."""
    if os.environ.get("MAMBASEG_SKIP_KERNEL_BUILD", "").strip() not in ("", "0"):
        print("mambaseg: MAMBASEG_SKIP_KERNEL_BUILD is set: the CPU kernels will be compiled at first use instead.",
              file=sys.stderr)
        return {}
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        print("mambaseg: torch is not importable at build time: the CPU kernels will be compiled at first use "
              "instead (build with torch installed, e.g. pip install --no-build-isolation .).", file=sys.stderr)
        return {}

    class BuildKernels(BuildExtension):
        """torch's ``BuildExtension`` that writes, next to each compiled module (and its in-place copy in an
        editable install), the record the runtime loader checks: torch version, source digest, flags."""

        def run(self) -> None:
            super().run()
            build_py_cmd = self.get_finalized_command("build_py")
            for ext in self.extensions:
                record = {"module": ext.name, "torch": torch.__version__,
                          "sources_sha256": sources_digest([ROOT / f for f in (*ext.sources, *ext.depends)]),
                          "flags": FLAGS}
                package = ext.name.rsplit(".", 1)[0]
                targets = [Path(self.build_lib, *package.split("."))]
                if self.inplace:  # editable install: the module is also copied into the source package
                    targets.append(Path(build_py_cmd.get_package_dir(package)))
                for folder in targets:
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / (ext.name.rsplit(".", 1)[-1] + RECORD_SUFFIX)).write_text(json.dumps(record, indent=1))

    modules = [CppExtension(name, sources, depends=headers, extra_compile_args=FLAGS, extra_link_args=["-fopenmp"])
               for name, sources, headers in KERNELS]
    return {"ext_modules": modules, "cmdclass": {"build_ext": BuildKernels}}


kernels = kernel_setup()
setup(ext_modules=kernels.get("ext_modules", []),
      cmdclass={"build_py": BuildPyWithShippedData, **kernels.get("cmdclass", {})})
