"""Finding the files ``mambaseg evaluate`` scores, 2D and 3D: the prediction and reference files of a folder, and the
pairing of predictions with references (2D: by case id, the stem, then - unambiguously - by case key; 3D: by case
id, nnU-Net's convention); duplicate case ids and extra predictions are errors."""

from __future__ import annotations

import re
from pathlib import Path

from ...data.errors import DataError
from ...data.io.suffixes import stem_of, suffix_of, volume_suffix

__all__ = ["list_files", "match_cases", "match_files", "pair_files"]


def list_files(folder: Path, suffixes, what: str) -> list[Path]:
    """The files of ``folder`` with one of ``suffixes`` (sorted, hidden ones left out); an error naming the folder
    (``what``: its role) when it is missing or holds none."""
    if not folder.is_dir():
        raise DataError(f"{folder}: {what} folder not found.")
    files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")
                   and suffix_of(f) in suffixes)
    if not files:
        raise DataError(f"{folder}: {what} folder has no files ({', '.join(suffixes)}).")
    return files


def _unique_stems(files: list[Path], what: str) -> dict[str, Path]:
    """stem -> file; two files with one stem (``a.png`` and ``a.tif``) are an error naming both."""
    out: dict[str, Path] = {}
    for f in files:
        s = stem_of(f)
        if s in out:
            raise DataError(f"{f}: {what} case id {s!r} also names {out[s].name} in the same folder; one file per case "
                            f"(remove or rename one of them).")
        out[s] = f
    return out


def pair_files(preds: list[Path], refs: list[Path], what: str = "ground truth", exclusive: bool = True,
               ignore_extra: bool = False) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """``(pairs, extra predictions)``: each prediction paired with the reference of the same case id (the stem, the
    name ``mambaseg predict`` writes: ``<stem>.png`` for ``<stem>.<ext>``; nnU-Net's image-named ``CASE_0000`` is
    case ``CASE``), else - only when that is unambiguous - with the one reference sharing its leading case key
    (text before the first '_', DRIVE's ``01_test`` <-> ``01_manual1``; before the first '.', STARE's ``im0001`` <->
    ``im0001.ah``).

    ``exclusive`` (references): a reference takes one prediction; a second one (``case00_old`` next to ``case00``)
    is an extra prediction. Extra predictions (also those without any reference) are an error naming the file
    unless ``ignore_extra``; two files with one case id are always an error.
    """
    _unique_stems(preds, "prediction")
    by_stem = _unique_stems(refs, what)
    by_key: dict[str, list[Path]] = {}
    for r in refs:
        by_key.setdefault(stem_of(r).split("_")[0], []).append(r)
    by_dot: dict[str, list[Path]] = {}  # STARE: im0001.ppm <-> im0001.ah.ppm
    for r in refs:
        by_dot.setdefault(stem_of(r).split(".")[0], []).append(r)
    found: dict[Path, Path] = {}
    claimed: dict[Path, Path] = {}
    extras: list[Path] = []

    def take(p: Path, r: Path) -> None:
        if exclusive and r in claimed:
            if not ignore_extra:
                raise DataError(f"{p}: extra prediction - its {what} file {r.name} is already paired with "
                                f"{claimed[r].name} (one prediction per case; remove it or pass --ignore-extra).")
            extras.append(p)
            return
        claimed[r] = p
        found[p] = r

    later = []
    for p in preds:  # exact case ids first, so a fallback never takes a reference that has its own prediction
        s = stem_of(p)
        case = re.sub(r"_\d{4}$", "", s)  # nnU-Net: an image-named prediction CASE_0000 <-> label CASE
        if s in by_stem or (case != s and case in by_stem and case not in {stem_of(q) for q in preds}):
            take(p, by_stem[s] if s in by_stem else by_stem[case])
        else:
            later.append(p)
    for p in later:
        s = stem_of(p)
        cands = by_key.get(s.split("_")[0], [])
        if len(cands) != 1 and len(by_dot.get(s.split(".")[0], [])) == 1:
            cands = by_dot[s.split(".")[0]]
        if len(cands) != 1:
            if not ignore_extra:
                where = refs[0].parent if refs else "?"
                raise DataError(f"{p}: no unique {what} file for it in {where} (looked for {s}.*, "
                                f"{s.split('_')[0]}_* or {s.split('.')[0]}.*); remove it or pass --ignore-extra.")
            extras.append(p)
            continue
        take(p, cands[0])
    return [(p, found[p]) for p in preds if p in found], extras


def match_files(preds: list[Path], refs: list[Path], what: str = "ground truth",
                exclusive: bool = True) -> list[tuple[Path, Path]]:
    """Pair predictions with references (:func:`pair_files`); every prediction needs exactly one reference and,
    when ``exclusive``, a reference takes one prediction."""
    return pair_files(preds, refs, what, exclusive)[0]


def _volumes(folder: Path, what: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        s = volume_suffix(f)
        if s and f.is_file() and not f.name.startswith("."):
            cid = f.name[: -len(s)]
            if cid in out:
                raise DataError(f"{f}: {what} case id {cid!r} also names {out[cid].name} in the same folder; one file "
                                f"per case (remove or rename one of them).")
            out[cid] = f
    return out


def _case_folder_labels(gt: Path) -> dict[str, Path]:
    """Case folder name -> its label file (the BraTS presets' label patterns,
    :func:`~mambaseg.data.layouts.case_folders.reference_label`), for a reference folder of case folders."""
    from ...data.layouts.case_folders import reference_label

    out = {}
    for d in sorted(gt.iterdir()):
        if d.is_dir() and not d.name.startswith("."):
            lab = reference_label(d)
            if lab is not None:
                out[d.name] = lab
    return out


def match_cases(pred: Path, gt: Path, ignore_extra: bool = False) -> tuple[list[tuple[str, Path, Path]], list[Path]]:
    """``(case id, prediction, reference)`` of every volume in ``pred``, paired with the volume of the same case id
    (the name without its suffix) in ``gt`` - or, when ``gt`` holds case folders, with the label file of the case
    folder of that name - and the references. A prediction without reference is an error unless ``ignore_extra``
    (then it is left out); two files with one case id in a folder are an error."""
    preds, refs = _volumes(pred, "prediction"), _volumes(gt, "reference")
    if not refs:
        refs = _case_folder_labels(gt)
    pairs = []
    for cid, p in preds.items():
        if cid not in refs:
            if ignore_extra:
                continue
            raise DataError(f"{p}: no reference {cid}.nii.gz (or case folder {cid}/ with a label) in {gt} (an extra "
                            f"prediction? remove it or pass --ignore-extra).")
        pairs.append((cid, p, refs[cid]))
    return pairs, list(refs.values())
