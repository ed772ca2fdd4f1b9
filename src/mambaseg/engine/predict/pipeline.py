"""The one ``mambaseg predict`` loop, 2D and 3D: gather the inputs and check them all, then, one case at a time,
read -> ``plan.forward`` -> sliding window -> ``plan.inverse`` -> write.

What differs by dimension - which inputs are gathered and checked, where the plan's inverse applies, which files are
written - is in a small per-dimension piece, :class:`.images.Images` (2D) or :class:`.volumes.Volumes` (3D), picked
by the model's ``spatial_dims`` in :func:`piece_for` and nowhere else.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ...data.errors import DataError
from ...utils.atomic import clean_stale_temp
from ...utils.progress import ItemProgress, StatusLine
from ...utils.runlock import RunLock
from ..inference import sliding_window
from ..outputs import check_apart, check_existing, check_output_dir
from ..predict_provenance import PROVENANCE_NAME, ProvenanceWriter
from .images import Images
from .job import Job
from .predictor import Predictor, load_predictor
from .volumes import Volumes

__all__ = ["piece_for", "predict", "predict_image_2d", "predict_with", "segment"]

logger = logging.getLogger("mambaseg.engine.predict")


def piece_for(pred, probs: bool = False, overlay: bool = False, mask: str | Path | None = None) -> Images | Volumes:
    """The per-dimension piece of the predictor ``pred``: the one place where 2D and 3D part."""
    return (Volumes if pred.spatial_dims == 3 else Images)(pred, probs=probs, overlay=overlay, mask=mask)


def segment(pred, image: np.ndarray, tile, overlap: float, tta: bool, progress: bool = False,
            callback=None) -> torch.Tensor:
    """Logits (K, *S) of one preprocessed image (C, *S) on its grid: the sliding window with the model's inference
    settings, mirrored along every spatial axis when ``tta``; ``callback(tiles_done, tiles)`` as in
    :func:`~mambaseg.engine.inference.sliding_window`."""
    infer = pred.cfg.infer
    axes = tuple(range(image.ndim - 1)) if tta else ()
    return sliding_window(pred.run, torch.from_numpy(image), tile, overlap, infer.mode, infer.batch_size, axes,
                          progress, callback, getattr(pred, "device", None), infer.stitch_device).cpu()


def predict_image_2d(pred: Predictor, raw: np.ndarray, mask: np.ndarray | None, overlap: float, tta: bool,
                     progress: bool = False, callback=None) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (K, H, W) and labels (H, W) of one raw image (C, H, W) (un-normalised): the plan's forward,
    the sliding window, the plan's inverse; ``callback(tiles_done, tiles)`` as in
    :func:`~mambaseg.engine.inference.sliding_window`."""
    piece = Images(pred)
    image, props = pred.plan.forward({"image": raw, "mask": mask})
    logits = segment(pred, image, piece.tile, overlap, tta, progress, callback)
    labels, probs = piece.inverse(logits, props, pred.threshold)
    return probs, labels


def predict(model: str | Path, inp: str | Path, out: str | Path, overlay: bool = False, probs: bool = False,
            mask: str | Path | None = None, tta: bool = False, overlap: float | None = None,
            overwrite: bool = False, progress: bool = True, device: str = "auto",
            skip_existing: bool = False, command: list[str] | None = None) -> list[Path]:
    """Segment every input in ``inp`` (2D images or 3D cases, as the model was trained) and write the results to
    ``out`` (never into the input folder): :func:`predict_with` of the loaded model.

    ``tta``: mirroring test-time augmentation, also on when the model's config sets ``infer.tta``.

    Returns:
        The written label files (skipped ones are not listed).
    """
    check_existing([], overwrite, skip_existing)  # conflicting options: before the model is loaded
    if mask and not Path(mask).exists():
        raise DataError(f"{mask}: --mask folder not found.")
    pred = load_predictor(model, device)
    tta = tta or pred.cfg.infer.tta  # mirroring TTA: asked for here, or set by the model's config (infer.tta)
    return predict_with(pred, inp, out, tta=tta, overlap=overlap, overwrite=overwrite, progress=progress,
                        skip_existing=skip_existing, probs=probs, overlay=overlay, mask=mask, command=command)


def predict_with(pred, inp: str | Path, out: str | Path, tta: bool = False, overlap: float | None = None,
                 overwrite: bool = False, progress: bool = True, skip_existing: bool = False, probs: bool = False,
                 overlay: bool = False, mask: str | Path | None = None,
                 command: list[str] | None = None) -> list[Path]:
    """Segment every input in ``inp`` with the loaded predictor ``pred`` and write ``out/<name>.<ext>`` (and the
    probabilities / overlays asked for); ``skip_existing`` (``--continue``) skips the inputs whose outputs all exist.

    Every input is checked (2D: read; 3D: headers, modality count, resampled size) before anything is written; then
    the inputs are read, predicted and written one at a time, so memory holds one case whatever their number. Every
    output is written to a temporary name in its folder and renamed, the label map last, so a killed run leaves no
    partial file under a final name and ``--continue`` goes on from there. ``out/predict_provenance.json`` records
    what made the predictions (``command``: the command line to record, default ``sys.argv``); see
    :mod:`mambaseg.engine.predict_provenance`.

    Raises:
        DataError: bad inputs (one line naming the file), ``mask`` with a 3D model, two inputs with one output name,
            a file ``predict_provenance.json`` in ``out`` that is not ours or describes other predictions.

    Returns:
        The written label files (skipped ones are not listed).
    """
    piece = piece_for(pred, probs, overlay, mask)
    inp, out = Path(inp), Path(out)
    gathered = piece.gather(inp)
    check_output_dir(out, inp)
    out_dirs = [out / f for f in piece.used_folders()]
    in_dirs = [inp if inp.is_dir() else inp.parent, getattr(piece, "mask_dir", None)]
    check_apart(out_dirs, in_dirs=in_dirs)  # probs/, overlays/ too, links resolved: before anything is read
    names = [name for name, _, _ in gathered]
    dup = {s for s in names if names.count(s) > 1}
    if dup:
        raise DataError(f"{inp}: several inputs share the name {min(dup)!r}; outputs would overwrite each other.")
    jobs = [Job(name, label, files, *piece.outputs(out, name)) for name, label, files in gathered]
    keep = {j.target.name for j in jobs} | {p.name for j in jobs for p in j.extras}  # this run's output names
    if PROVENANCE_NAME in keep:
        raise DataError(f"{inp}: a case named {PROVENANCE_NAME[:-5]!r} would write its probabilities' JSON over "
                        f"{out / PROVENANCE_NAME}; rename that input.")
    keep.add(PROVENANCE_NAME)
    done = check_existing([j.target for j in jobs], overwrite, skip_existing, {j.target: j.extras for j in jobs})
    if done:
        logger.warning("--continue: %d of %d %s(s) already have their outputs in %s; skipped", len(done), len(jobs),
                       piece.unit, out)
    todo = [j for j in jobs if j.target not in done]
    for job in todo:  # everything checked before anything is written
        piece.check(job)
    check_apart(out_files=[p for j in jobs for p in (j.target, *j.extras)] + [out / PROVENANCE_NAME],
                in_files=[f for j in jobs for f in (*j.files, j.mask)] + [Path(pred.source)])
    infer = pred.cfg.infer
    ov = infer.overlap if overlap is None else overlap
    settings = {"tile": [int(t) for t in piece.tile], "overlap": float(ov), "mode": infer.mode,
                "batch_size": infer.batch_size, "tta": bool(tta), **piece.settings(), "probs": bool(probs),
                "overlay": bool(overlay), "device": str(getattr(pred, "device", "unknown")),
                "input": str(inp.resolve())}
    # the provenance of the loaded model, computed once: a foreign file of that name, or other predictions'
    # description, is refused here, before anything is written
    provenance = ProvenanceWriter(out, pred, piece.preprocessing(), settings, overwrite, skip_existing, command)
    # one writer per output folder: a second predict (or a training) into it is refused; under the lock the
    # outputs and the provenance are checked again (another run may have finished writing them since)
    with RunLock(out, what="mambaseg run", option="-o", remove=True):
        if check_existing([j.target for j in todo], overwrite, skip_existing, {j.target: j.extras for j in todo}):
            raise DataError(f"{out}: another run wrote outputs there meanwhile; run again with --continue.")
        provenance.start([j.target.name for j in jobs], [t.name for t in done])
        for folder in piece.folders:
            clean_stale_temp(out / folder, keep)  # leftovers of a killed run
        written = []
        # one status line on stderr: items and tiles done; redrawn on a terminal, a line per 30 s in a log
        status = ItemProgress(StatusLine(enabled=progress), len(todo), piece.unit)
        try:
            for i, job in enumerate(todo):
                case = piece.read(job)  # one case in memory at a time: read, predict, write, free
                status.item(i, job.label)  # after the read: an unreadable input is its one-line error only
                written.append(_predict_case(pred, piece, job, case, ov, tta, status.tiles, provenance.before_write))
                del case
        finally:
            status.close()
        provenance.finish(written)
    return written


def _predict_case(pred, piece: Images | Volumes, job: Job, case: dict, overlap: float, tta: bool, callback,
                  before_write) -> Path:
    """One read input: plan.forward -> sliding window -> plan.inverse -> ``before_write()`` -> write. Returns the
    label map written."""
    image, props = pred.plan.forward(case)
    logits = segment(pred, image, piece.tile, overlap, tta, callback=callback)
    del image
    labels, probs = piece.inverse(logits, props, pred.threshold)
    before_write()
    return piece.write(job, case, labels, probs)
