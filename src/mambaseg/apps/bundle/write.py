"""Writing a MONAI bundle folder: :func:`export_bundle` (built in a temporary folder, then moved into place; an
earlier bundle's own files are replaced one by one, the user's other files are left as they are)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ...engine.checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint_path
from ...utils.atomic import set_default_mode
from ...utils.jsonable import to_jsonable
from ..bundle_components import SETUP_FILE
from .config import bundle_inference_config
from .metadata import (
    SCHEMA_FILE,
    bundle_metadata,
    check_metadata,
    differences,
    license_text,
    model_setup,
    readme,
    schema_path,
)

logger = logging.getLogger(__name__)

LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""


#: the files this tool wrote into a bundle folder (relative paths); ``--overwrite`` replaces or removes only those
FILES_MANIFEST = ".mambaseg_bundle.json"
#: what a bundle written before the manifest existed holds (an old bundle's other files are the user's)
_KNOWN_FILES = ("LICENSE", "configs/inference.json", "configs/logging.conf", "configs/metadata.json",
                "docs/README.md", "models/model.pt")


def _owned_files(out: Path) -> list[str]:
    """The files of the existing bundle folder ``out`` that this tool wrote: its manifest's list (each checked to
    be a relative path inside the folder), or for an older bundle without one the standard bundle files present."""
    man = out / FILES_MANIFEST
    if not man.is_file():
        return [rel for rel in _KNOWN_FILES if (out / rel).is_file()]
    try:
        doc = json.loads(man.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{man}: unreadable list of the bundle's files ({e}); it is left untouched - remove the "
                         f"bundle folder yourself or choose another --bundle.") from None
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, str) and f and not Path(f).is_absolute()
                                              and ".." not in Path(f).parts for f in files):
        raise ValueError(f"{man}: 'files' is not a list of relative paths inside the bundle; it is left untouched - "
                         f"remove the bundle folder yourself or choose another --bundle.")
    return files


def _prepare_out(out: Path, overwrite: bool) -> list[str]:
    """Check the bundle folder before anything is made; returns the files of an earlier bundle there that
    ``overwrite`` may replace or remove (nothing else in the folder is touched)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder; --bundle needs a folder path.")
    if out.exists() and not overwrite:
        raise ValueError(f"{out}: bundle folder already exists (use --overwrite to replace it).")
    if not out.exists():
        return []
    if any(out.iterdir()) and not (out / "configs" / "metadata.json").is_file():
        raise ValueError(f"{out}: folder is not empty and holds no bundle (configs/metadata.json); --overwrite "
                         f"only replaces an earlier bundle, choose an empty or new folder.")
    return _owned_files(out)


def _inside(folder: Path, rel: str) -> bool:
    """``folder/rel`` lands inside ``folder`` with links resolved (no sub-folder of the bundle links elsewhere)."""
    base = os.path.realpath(folder)
    return os.path.commonpath([os.path.realpath(folder / rel), base]) == base


def _replace_into(tmp: Path, out: Path, written: list[str], owned: list[str]) -> None:
    """Move the new bundle's files from ``tmp`` into the existing bundle ``out`` one by one and remove the files of
    the earlier bundle that it no longer has; the user's other files in ``out`` stay as they are."""
    for rel in sorted(set(written) | set(owned)):
        if not _inside(out, rel):
            raise ValueError(f"{out / rel}: lies outside the bundle folder once links are resolved; nothing is "
                             f"written through a link - choose another --bundle.")
        if (out / rel).is_dir() and not (out / rel).is_symlink():
            raise ValueError(f"{out / rel}: is a folder where the bundle writes a file; move it away.")
    for rel in written:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / rel, out / rel)
    for rel in sorted(set(owned) - set(written)):
        if (out / rel).is_file() or (out / rel).is_symlink():
            (out / rel).unlink()


def export_bundle(model: str | Path, out: str | Path, overwrite: bool = False) -> dict:
    """Write a trained model (run folder or ``.pt`` checkpoint) as a MONAI bundle folder.

    Args:
        model: run folder (``checkpoint_best.pt`` / ``checkpoint_last.pt``) or checkpoint file.
        out: bundle folder to create; an existing one is refused unless ``overwrite`` (and then only an earlier
            bundle or an empty folder is replaced).
        overwrite: replace an existing bundle folder.

    Returns:
        ``{"path", "model_name", "spatial_dims", "files", "differences"}``.

    Raises:
        ValueError: ``out`` exists (without ``overwrite``) or is not a bundle; the checkpoint's preprocessing has no
            MONAI equivalent; CheckpointError (a ValueError) for unusable checkpoints.
    """
    out = Path(out)
    owned = _prepare_out(out, overwrite)
    ckpt_path = resolve_checkpoint_path(model, allow_onnx=False)
    from ...engine.outputs import check_apart

    check_apart(out_files=[out / rel for rel in (*_KNOWN_FILES, *owned, FILES_MANIFEST)], in_files=[ckpt_path],
                option="--bundle")
    ckpt = load_checkpoint(ckpt_path)
    net = model_from_checkpoint(ckpt, ckpt_path).float()  # validates the weights against the model
    setup = model_setup(ckpt, net, ckpt_path)
    name = str(ckpt["model_name"])
    inference = bundle_inference_config(name, setup)
    meta = bundle_metadata(name, setup, str(ckpt_path))
    missing = check_metadata(meta)
    if missing:  # pragma: no cover - a programming error, not a user error
        raise RuntimeError(f"bundle metadata lacks {missing}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        files = {
            "configs/metadata.json": json.dumps(meta, indent=2) + "\n",
            f"configs/{SCHEMA_FILE}": schema_path().read_text(encoding="utf-8"),
            "configs/inference.json": json.dumps(inference, indent=2) + "\n",
            "configs/logging.conf": LOGGING_CONF,
            "docs/README.md": readme(name, setup, meta),
            "LICENSE": license_text(),
        }
        if setup["spatial_dims"] == 2:  # what mambaseg's own 2D components need: predict's configuration
            files[f"configs/{SETUP_FILE}"] = json.dumps(to_jsonable(
                {"model_name": name, "model_kwargs": ckpt.get("model_kwargs") or {}, "config": ckpt.get("config") or {},
                 "data": ckpt.get("data") or {}}), indent=1) + "\n"
        for rel, text in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text, encoding="utf-8")
        (tmp / "models").mkdir()
        state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        torch.save(state, tmp / "models" / "model.pt")
        written = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        (tmp / FILES_MANIFEST).write_text(json.dumps({"about": "the files mambaseg export --bundle wrote here; "
                                                      "--overwrite replaces or removes only these", "files": written},
                                                     indent=1) + "\n", encoding="utf-8")
        for p in tmp.rglob("*"):
            if p.is_file():
                set_default_mode(p)
            else:
                os.chmod(p, 0o777 & ~_umask())
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp made it 0700
        if out.exists():
            from ...utils.runlock import RunLock

            with RunLock(out, what="mambaseg export", option="--bundle", remove=True):  # one writer per bundle folder
                _replace_into(tmp, out, written + [FILES_MANIFEST], owned + [FILES_MANIFEST])
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    diffs = differences(setup)
    logger.info("MONAI bundle of %s written to %s", name, out)
    return {"path": str(out), "model_name": name, "spatial_dims": setup["spatial_dims"], "files": written,
            "differences": diffs}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
