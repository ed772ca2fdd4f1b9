"""``predict_provenance.json``: what made the predictions in a ``mambaseg predict`` output folder.

One JSON file next to the predictions (2D and 3D) holding the model (name, checkpoint path and its SHA-256), the
training config stored in the checkpoint, the preprocessing (3D plan, or the 2D normalisation), the inference
settings used, the package / torch / numpy versions and the command line, plus the outputs it vouches for.

Why one file of our own rather than nnU-Net-like ``plans.json`` + ``dataset.json``: nnU-Net's ``plans.json`` schema
describes nnU-Net's own networks, configurations and resampling functions by class name, which a mambaseg model
cannot fill truthfully, and a file named ``plans.json`` / ``dataset.json`` would invite nnU-Net's tools to read it
(and could be mistaken for, or collide with, a user's dataset description). A single file with a ``format`` marker
is unambiguous, lets predict recognise its own file (a user's file of that name is never overwritten: one-line error,
exit 2) and keeps everything a reader needs in one place; the 3D ``plan`` inside it is the exact preprocessing
record the checkpoint carries.

Life cycle: written (atomically, mode 0644 under the usual umask) just before the first prediction file with
``complete: false``, and again when the run ends with ``complete: true``, so an interrupted run's partial outputs
have their provenance too (a run stopped by a bad first input leaves the folder as empty as before).
``predict --continue`` (and a later run into the same folder without ``--overwrite``) checks that the model,
preprocessing and prediction-affecting settings are the same as the file's - predictions of two models never end up
in one folder under one description - then rewrites the file with the outputs of both runs and the new run appended
to ``runs``. ``--overwrite`` starts a new description.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import sys
from pathlib import Path
from typing import Any

from ..data.errors import DataError
from ..utils.atomic import atomic_write_text
from ..utils.jsonable import to_jsonable
from .provenance import versions

__all__ = ["FORMAT", "PROVENANCE_NAME", "ProvenanceWriter", "read_own_provenance"]

PROVENANCE_NAME = "predict_provenance.json"
FORMAT = "mambaseg-predict-provenance"
FORMAT_VERSION = 1
# inference settings that do not change the label maps: a --continue run may differ in these
_FREE_SETTINGS = ("batch_size", "device", "probs", "overlay", "progress", "input")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_own_provenance(path: Path) -> dict[str, Any] | None:
    """The parsed provenance at ``path``, None when there is none.

    Raises:
        DataError: ``path`` exists but is not a file this module wrote (another format, not JSON, a folder...).
    """
    if not path.exists() and not path.is_symlink():
        return None
    doc = None
    if path.is_file():
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            doc = None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DataError(f"{path}: exists and is not a mambaseg predict provenance file (no \"format\": \"{FORMAT}\"); "
                        f"it is left untouched - move it away or choose another -o.")
    return doc


def _model_section(pred) -> dict[str, Any]:
    from ..resources import sha256_file, shipped_name_of

    source = Path(pred.source)
    kwargs = pred.ckpt.get("model_kwargs") or {}
    return {
        "name": pred.ckpt.get("model_name"),
        "checkpoint": str(source.resolve()),
        "checkpoint_sha256": sha256_file(source),
        "shipped_model": shipped_name_of(source),  # the shipped model's name (its SHA-256 checked), or None
        "checkpoint_format": "onnx" if source.suffix == ".onnx" else "pytorch",
        "spatial_dims": pred.spatial_dims,
        "in_channels": pred.in_channels,
        "out_channels": kwargs.get("out_channels"),
        "model_kwargs": kwargs,
        "labels": pred.data.get("labels"),
    }


class ProvenanceWriter:
    """Writes ``out/predict_provenance.json`` for one predict run (see the module docstring).

    Args:
        out: the output folder.
        pred: the :class:`~mambaseg.engine.predict.Predictor` (the loaded model: everything recorded about it is read
            from it here, once).
        preprocessing: what the per-dimension piece of predict records about its preprocessing.
        inference: the settings used (tile, overlap, mode, batch size, threshold, tta, outputs asked for...).
        overwrite: ``--overwrite``: a new description replaces an earlier one of ours.
        skip_existing: ``--continue``.
        command: the command line (default ``sys.argv``).

    Building it runs :meth:`check` (before anything is written): a foreign file of that name, and unless ``overwrite``
    an earlier description whose model or settings differ, are refused; :meth:`start` checks again (under the
    output folder's lock) and records the outputs, :meth:`before_write` (called before each prediction file is
    written; writes once) and :meth:`finish` write it.
    """

    def __init__(self, out: Path, pred, preprocessing: dict, inference: dict, overwrite: bool = False,
                 skip_existing: bool = False, command: list[str] | None = None):
        self.path = Path(out) / PROVENANCE_NAME
        self.overwrite, self.skip_existing = bool(overwrite), bool(skip_existing)
        data = pred.data
        self.doc: dict[str, Any] = to_jsonable({
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "about": "what made the predictions in this folder: mambaseg.engine.predict_provenance",
            "created_utc": _now(), "updated_utc": None, "complete": False,
            "model": _model_section(pred),
            "training_config": pred.config,
            "training_data": {k: data.get(k) for k in ("train_ids", "val_ids", "layout", "threshold") if k in data},
            "preprocessing": preprocessing,
            "inference": dict(inference, threshold=pred.threshold),
            "versions": dict(versions(), platform=platform.platform()),
            "command": list(sys.argv if command is None else command),
            "runs": [], "outputs": [],
        })
        self.run = {"started_utc": self.doc["created_utc"], "finished_utc": None, "command": self.doc["command"],
                    "continue": self.skip_existing, "overwrite": self.overwrite, "inference": self.doc["inference"],
                    "versions": self.doc["versions"], "predicted": []}
        self.earlier: dict[str, Any] | None = None
        self._written = True  # nothing to write before start()
        self.check()

    @staticmethod
    def _key(doc: dict) -> dict:
        inf = {k: v for k, v in (doc.get("inference") or {}).items() if k not in _FREE_SETTINGS}
        return {"sha256": (doc.get("model") or {}).get("checkpoint_sha256"), "preprocessing": doc.get("preprocessing"),
                "inference": inf}

    def check(self) -> None:
        """Before anything is written: a foreign file of our name, or (without ``--overwrite``) an earlier
        description of other predictions, is a one-line DataError."""
        earlier = read_own_provenance(self.path)
        if earlier is None or self.overwrite:
            return
        old, new = self._key(earlier), self._key(self.doc)
        if old != new:
            what = [k for k in ("sha256", "preprocessing") if old.get(k) != new.get(k)]
            what += [f"inference.{k}" for k in sorted(set(old["inference"]) | set(new["inference"]))
                     if old["inference"].get(k) != new["inference"].get(k)]
            raise DataError(f"{self.path}: the predictions in this folder were made with another model or settings "
                            f"({', '.join(what)} differ: checkpoint {old['sha256']} vs {new['sha256']}); use "
                            f"--overwrite to replace them or choose another -o.")
        self.earlier = earlier

    def start(self, outputs: list[str], skipped: list[str] = ()) -> None:
        """:meth:`check` again (another run may have written the folder since), then record this run's outputs
        (written to the file by :meth:`before_write` or :meth:`finish`).

        Args:
            outputs: the label-map names of this run's inputs (those it writes and those ``--continue`` keeps).
            skipped: the names ``--continue`` keeps (written earlier: by the runs listed before this one when the
                file existed, of unknown origin otherwise).
        """
        self.check()
        if self.earlier is not None:  # same model and settings: one description of both runs
            self.doc["created_utc"] = self.earlier.get("created_utc", self.doc["created_utc"])
            self.doc["runs"] = list(self.earlier.get("runs") or [])
            self.doc["outputs"] = sorted(set(self.earlier.get("outputs") or []) | set(outputs))
        else:
            self.doc["outputs"] = sorted(set(outputs))
        self.run["skipped_existing"] = sorted(skipped)
        if skipped and self.earlier is None:
            self.run["skipped_existing_origin"] = "unknown: no provenance file described them"
        self.doc["runs"].append(self.run)
        self._written = False

    def before_write(self) -> None:
        """Write the file (``complete: false``) the first time a prediction file is about to be written."""
        if not self._written:
            self._write()

    def finish(self, written: list[Path]) -> None:
        """Rewrite the file once the run has written everything (``complete: true``)."""
        self.run["finished_utc"] = _now()
        self.run["predicted"] = sorted(Path(p).name for p in written)
        self.doc["complete"] = True
        self._write()

    def _write(self) -> None:
        self._written = True
        self.doc["updated_utc"] = _now()
        atomic_write_text(self.path, json.dumps(self.doc, indent=1) + "\n")
