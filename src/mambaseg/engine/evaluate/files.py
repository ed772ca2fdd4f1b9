"""Finding the files ``mambaseg evaluate`` scores, 2D and 3D: the prediction and reference files of a folder, and the
pairing of predictions with references (2D: by stem, then by case key; 3D: by case id, nnU-Net's convention)."""

from __future__ import annotations

import re
from pathlib import Path

from ...data.io import DataError, stem_of, suffix_of
from ...data.nifti import volume_suffix

__all__ = ["list_files", "match_cases", "match_files"]


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


def match_files(preds: list[Path], refs: list[Path], what: str = "ground truth") -> list[tuple[Path, Path]]:
    """Pair predictions with references by identical stem, else by the leading case key (text before the first '_',
    e.g. DRIVE's ``01_test`` <-> ``01_manual1``). Every prediction needs exactly one reference."""
    by_stem = {stem_of(r): r for r in refs}
    by_key: dict[str, list[Path]] = {}
    for r in refs:
        by_key.setdefault(stem_of(r).split("_")[0], []).append(r)
    by_dot: dict[str, list[Path]] = {}  # STARE: im0001.ppm <-> im0001.ah.ppm
    for r in refs:
        by_dot.setdefault(stem_of(r).split(".")[0], []).append(r)
    pairs = []
    for p in preds:
        s = stem_of(p)
        if s in by_stem:
            pairs.append((p, by_stem[s]))
            continue
        case = re.sub(r"_\d{4}$", "", s)  # nnU-Net: an image-named prediction CASE_0000 <-> label CASE
        if case != s and case in by_stem:
            pairs.append((p, by_stem[case]))
            continue
        cands = by_key.get(s.split("_")[0], [])
        if len(cands) != 1 and len(by_dot.get(s.split(".")[0], [])) == 1:
            cands = by_dot[s.split(".")[0]]
        if len(cands) != 1:
            raise DataError(f"{p}: no unique {what} file for it in {refs[0].parent} (looked for {s}.*, "
                            f"{s.split('_')[0]}_* or {s.split('.')[0]}.*).")
        pairs.append((p, cands[0]))
    return pairs


def _volumes(folder: Path) -> dict[str, Path]:
    out = {}
    for f in sorted(folder.iterdir()):
        s = volume_suffix(f)
        if s and f.is_file() and not f.name.startswith("."):
            out[f.name[: -len(s)]] = f
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


def match_cases(pred: Path, gt: Path) -> tuple[list[tuple[str, Path, Path]], list[Path]]:
    """``(case id, prediction, reference)`` of every volume in ``pred``, paired with the volume of the same case id
    (the name without its suffix) in ``gt`` - or, when ``gt`` holds case folders, with the label file of the case
    folder of that name - and the references. A prediction without reference is an error."""
    preds, refs = _volumes(pred), _volumes(gt)
    if not refs:
        refs = _case_folder_labels(gt)
    pairs = []
    for cid, p in preds.items():
        if cid not in refs:
            raise DataError(f"{p}: no reference {cid}.nii.gz (or case folder {cid}/ with a label) in {gt}.")
        pairs.append((cid, p, refs[cid]))
    return pairs, list(refs.values())
