"""Reference configs, shipped models and data roots, wherever mambaseg is installed.

Where things are looked up:

- **Reference configs** (``mambaseg config list``): the package's own ``mambaseg/configs/<dataset>/<name>.yaml``
  (in a wheel; copied there from the repository's ``configs/`` by ``setup.py`` at build time), else the
  ``configs/`` folder of the source checkout the package is imported from. ``configs/`` in git is the only copy.
  A config is named by its path below ``configs/`` without ``.yaml``, e.g. ``drive/akmamba_net_cpu``.
- **Shipped models** (``mambaseg models``): the manifest ``mambaseg/shipped_models.json`` (name -> file, SHA-256,
  size, description) says which files exist; each file is looked up in ``$MAMBASEG_WEIGHTS``, then the package's
  ``mambaseg/weights/`` (in a wheel), then the checkout's ``weights/``, and its SHA-256 is checked before it is
  loaded. The manifest is rewritten by ``python benchmarks/ship_weights.py --write-manifest``.
- **Data roots**: a config's ``data.root`` (and ``data.val_root``) is used as written (relative to the working
  folder) unless ``$MAMBASEG_DATA`` is set: then a relative root is looked up under it by its dataset part, the
  path without its leading ``..``, ``shared`` and ``data`` folders (``../shared/data/DRIVE`` ->
  ``$MAMBASEG_DATA/DRIVE``). ``mambaseg train --data-root DIR`` replaces ``data.root`` with the dataset folder DIR.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import re
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = [
    "DATA_ENV",
    "MANIFEST",
    "WEIGHTS_ENV",
    "ResourceError",
    "check_data_roots",
    "check_shipped",
    "config_path",
    "configs_dir",
    "data_root_overrides",
    "dataset_subpath",
    "format_models",
    "git_commit",
    "list_configs",
    "load_manifest",
    "package_version",
    "resolve_config",
    "resolve_model",
    "sha256_file",
    "shipped_model_path",
    "shipped_name_of",
    "source_checkout",
    "weights_dirs",
    "write_manifest",
]

logger = logging.getLogger("mambaseg")
PACKAGE_DIR = Path(__file__).resolve().parent
MANIFEST = PACKAGE_DIR / "shipped_models.json"
WEIGHTS_ENV = "MAMBASEG_WEIGHTS"
DATA_ENV = "MAMBASEG_DATA"
_CONFIG_SUFFIXES = (".yaml", ".yml")
_NO_DATA_ROOT = ("synthetic_drive",)  # layouts that generate their data


class ResourceError(ValueError):
    """A config name, shipped model or data root cannot be resolved (one-line message; the CLI exits 2)."""


def _project_name(pyproject: Path) -> str | None:
    """``[project] name`` of a pyproject.toml, or None when absent or unreadable."""
    try:
        text = pyproject.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        import tomllib  # Python >= 3.11
    except ImportError:  # 3.10: the name = "..." line of the [project] table
        table = ""
        for line in text.splitlines():
            header = re.match(r"\s*\[([^\[\]]+)\]\s*(#.*)?$", line)
            if header:
                table = header.group(1).strip()
            elif table == "project" and (m := re.match(r"name\s*=\s*[\"']([^\"']+)[\"']", line)):
                return m.group(1)
        return None
    try:
        name = tomllib.loads(text).get("project", {}).get("name")
    except (tomllib.TOMLDecodeError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def source_checkout() -> Path | None:
    """The root of the mambaseg source tree this package is imported from (``<root>/src/mambaseg``, with
    ``<root>/pyproject.toml`` naming the project ``mambaseg``); None for an installed wheel, whatever folder or
    repository the installation sits in."""
    root = PACKAGE_DIR.parent.parent
    if PACKAGE_DIR.parent.name != "src" or _project_name(root / "pyproject.toml") != "mambaseg":
        return None
    return root


# ---------------------------------------------------------------- reference configs


def configs_dir() -> Path | None:
    """The folder of reference configs: the package's ``configs/`` (wheel), else the checkout's; None if neither."""
    checkout = source_checkout()
    for cand in (PACKAGE_DIR / "configs", checkout / "configs" if checkout else None):
        if cand is not None and cand.is_dir():
            return cand
    return None


def list_configs() -> list[str]:
    """Names of the reference configs, e.g. ``drive/akmamba_net_cpu``, sorted."""
    root = configs_dir()
    if root is None:
        return []
    return sorted(str(PurePosixPath(*p.relative_to(root).with_suffix("").parts))
                  for p in root.rglob("*") if p.suffix in _CONFIG_SUFFIXES and p.is_file())


def _config_name(spec: str) -> str:
    name = spec.replace("\\", "/").strip("/")
    for suf in _CONFIG_SUFFIXES:
        name = name.removesuffix(suf)
    return name.removeprefix("configs/")


def config_path(name: str) -> Path:
    """The file of the reference config ``name`` (``drive/akmamba_net_cpu``; ``.yaml`` and a leading ``configs/``
    are accepted); :class:`ResourceError` naming the close matches otherwise."""
    names = list_configs()
    key = _config_name(name)
    if key in names:
        root = configs_dir()
        assert root is not None
        return next(root / f"{key}{suf}" for suf in _CONFIG_SUFFIXES if (root / f"{key}{suf}").is_file())
    if not names:
        raise ResourceError(f"{name}: no such config file, and no reference configs are installed.")
    close = difflib.get_close_matches(key, names, n=3) or [n for n in names if n.split("/")[-1] == key.split("/")[-1]]
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ResourceError(f"{name}: no such config file or reference config name.{hint} "
                        f"List them with: mambaseg config list")


def resolve_config(spec: str | os.PathLike) -> Path:
    """A config argument: an existing YAML file as given, else a reference config name (see :func:`config_path`)."""
    p = Path(spec)
    if p.is_file():
        return p
    return config_path(str(spec))


# ---------------------------------------------------------------- data roots


def dataset_subpath(root: str) -> str | None:
    """The dataset part of a relative ``data.root``: without its leading ``..``, ``.``, ``shared`` and ``data``
    folders (``../shared/data/DRIVE`` -> ``DRIVE``, ``data/Synapse/RawData`` -> ``Synapse/RawData``); None for an
    absolute or empty root."""
    if not root or Path(root).is_absolute():
        return None
    parts = list(PurePosixPath(root.replace("\\", "/")).parts)
    while parts and parts[0] in ("..", "."):
        parts.pop(0)
    for folder in ("shared", "data"):
        if len(parts) > 1 and parts[0] == folder:
            parts.pop(0)
    return "/".join(parts) or None


def data_root_overrides(cfg: Any, env: dict | None = None) -> list[str]:
    """``--set`` items moving the config's relative ``data.root`` / ``data.val_root`` under ``$MAMBASEG_DATA``
    (none when the variable is unset or empty)."""
    base = (os.environ if env is None else env).get(DATA_ENV, "")
    if not base:
        return []
    out = []
    for key in ("root", "val_root"):
        sub = dataset_subpath(getattr(cfg.data, key))
        if sub is not None:
            out.append(f"data.{key}={json.dumps(str(Path(base) / sub))}")
    return out


def check_data_roots(cfg: Any, env: dict | None = None) -> None:
    """One-line :class:`ResourceError` naming the config key and the ways to set it when a configured data root
    does not exist."""
    if cfg.data.layout in _NO_DATA_ROOT:
        return
    base = (os.environ if env is None else env).get(DATA_ENV, "")
    for key in ("root", "val_root"):
        root = getattr(cfg.data, key)
        if not root or Path(root).exists():  # an empty root is the data loader's to report, per layout
            continue
        sub = dataset_subpath(root) or "<dataset>"
        what = f"data root {root!r} does not exist"
        how = (f" ({DATA_ENV}={base} is set: relative roots are looked up under it)" if base else
               f", or set {DATA_ENV} to the folder that holds {sub}")
        raise ResourceError(f"{what} (config key data.{key}); pass --data-root DIR (the dataset folder) or --set "
                            f"data.{key}=DIR{how}.")


# ---------------------------------------------------------------- shipped models


def load_manifest(path: Path | None = None) -> dict[str, dict]:
    """The shipped-model manifest: name -> {file, sha256, size, description}."""
    path = MANIFEST if path is None else path
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ResourceError(f"{path}: cannot read the shipped-model manifest ({e}).") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise ResourceError(f"{path}: the shipped-model manifest has no 'models' mapping.")
    return models


def weights_dirs(env: dict | None = None) -> list[Path]:
    """Where shipped weight files are looked up, in order: ``$MAMBASEG_WEIGHTS``, the package's ``weights/``,
    the checkout's ``weights/``."""
    dirs = []
    base = (os.environ if env is None else env).get(WEIGHTS_ENV, "")
    if base:
        dirs.append(Path(base))
    dirs.append(PACKAGE_DIR / "weights")
    checkout = source_checkout()
    if checkout is not None:
        dirs.append(checkout / "weights")
    return dirs


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _find_weights(entry: dict, env: dict | None = None) -> Path | None:
    return next((d / entry["file"] for d in weights_dirs(env) if (d / entry["file"]).is_file()), None)


def shipped_model_path(name: str, verify: bool = True, env: dict | None = None) -> Path:
    """The file of the shipped model ``name``, its SHA-256 checked against the manifest (when ``verify``)."""
    models = load_manifest()
    if name not in models:
        shipped = ", ".join(sorted(models)) or "none"
        raise ResourceError(f"{name}: not a shipped model (shipped: {shipped}).")
    entry = models[name]
    path = _find_weights(entry, env)
    if path is None:
        where = ", ".join(str(d) for d in weights_dirs(env))
        raise ResourceError(f"{name}: weight file {entry['file']} not found in {where}; set {WEIGHTS_ENV} to the "
                            f"folder that holds it.")
    if verify:
        got = sha256_file(path)
        if got != entry["sha256"]:
            raise ResourceError(f"{path}: SHA-256 {got} does not match the manifest's {entry['sha256']} for "
                                f"shipped model {name} (damaged or replaced file).")
    return path


def shipped_name_of(path: str | os.PathLike, env: dict | None = None) -> str | None:
    """The shipped model whose weight file ``path`` is (links resolved: the file in a weights folder, reached by
    any path), or None."""
    real = os.path.realpath(path)
    for name, entry in load_manifest().items():
        file = entry.get("file") if isinstance(entry, dict) else None
        if isinstance(file, str) and any(os.path.realpath(d / file) == real for d in weights_dirs(env)):
            return name
    return None


def check_shipped(path: str | os.PathLike, env: dict | None = None) -> str | None:
    """When ``path`` is a shipped model's weight file however it is named (name, path, link), its SHA-256 checked
    against the manifest (:class:`ResourceError` naming the file on a mismatch); returns the model's name or
    None for any other file."""
    name = shipped_name_of(path, env)
    if name is not None:
        shipped_model_path(name, env=env)  # the hash check
    return name


def resolve_model(spec: str, env: dict | None = None) -> str:
    """A ``--model`` argument: a shipped model name -> its checked weight file (always: a file or folder of that
    name in the working folder is given as ``./NAME``); else an existing path as given (a shipped weight file named
    by its path is hash-checked too).

    A name-like argument (no folder, no suffix) that is neither is an error listing the shipped names; other
    missing paths are returned unchanged for the loader to report.
    """
    models = load_manifest()
    if spec in models:
        if os.path.lexists(spec):
            logger.warning("--model %s: the shipped model of that name is used, not %s in the working folder "
                           "(give it as ./%s to use that)", spec, spec, spec)
        return str(shipped_model_path(spec, env=env))
    if Path(spec).exists():
        check_shipped(spec, env)
        return spec
    if "/" not in spec and "\\" not in spec and not Path(spec).suffix:
        shipped = ", ".join(sorted(models)) or "none"
        raise ResourceError(f"{spec}: model not found (expected a run folder, a .pt checkpoint, an .onnx file or a "
                            f"shipped model name: {shipped}; see mambaseg models).")
    return spec


def write_manifest(weights_dir: Path, descriptions: dict[str, str] | None = None,
                   path: Path | None = None) -> dict[str, dict]:
    """Rewrite the manifest from the ``*.pt`` files of ``weights_dir`` (name = file stem); descriptions come from
    ``descriptions``, else the current manifest. Returns the new ``models`` mapping."""
    path = MANIFEST if path is None else path
    old = load_manifest(path)
    models = {}
    for f in sorted(Path(weights_dir).glob("*.pt")):
        name = f.stem
        desc = (descriptions or {}).get(name) or old.get(name, {}).get("description", "")
        models[name] = {"file": f.name, "sha256": sha256_file(f), "size": f.stat().st_size, "description": desc}
    doc = {"about": "Shipped models: name -> weight file, SHA-256, size in bytes. Regenerate with "
                    "`python benchmarks/ship_weights.py --write-manifest` after replacing files in weights/.",
           "models": models}
    from .utils.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return models


def format_models(env: dict | None = None) -> str:
    """A table of the shipped models: name, size, SHA-256, where the file is (or 'missing'), description."""
    models = load_manifest()
    if not models:
        return "no shipped models"
    lines = []
    for name, e in sorted(models.items()):
        path = _find_weights(e, env)
        lines += [f"{name}  ({e['size'] / 2**20:.1f} MB)  {e['description']}",
                  f"  sha256 {e['sha256']}",
                  f"  file   {path if path else 'missing: ' + e['file'] + ' (set ' + WEIGHTS_ENV + ')'}"]
    lines.append("use: mambaseg predict --model NAME -i INPUT -o OUTPUT")
    return "\n".join(lines)


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], check=False, cwd=root, capture_output=True, text=True, timeout=5)


def git_commit() -> str | None:
    """``<sha>[+dirty]`` of the mambaseg checkout the package is imported from; None for an installed package
    (or a source tree that is not its own git repository); "unknown" when git fails."""
    root = source_checkout()
    if root is None:
        return None
    try:
        top = _git(root, "rev-parse", "--show-toplevel")
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root.resolve():
            return None  # e.g. an unpacked sdist inside some other repository
        out = _git(root, "rev-parse", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def package_version() -> str:
    """The installed distribution's version (package metadata), else ``mambaseg.__version__`` (source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mambaseg")
    except PackageNotFoundError:
        from . import __version__

        return __version__
