"""Case folders with user-named channels (``layout: case_folders``): one folder per case, each input channel and the
label found by a file-name pattern inside it, as nnU-Net's ``channel_names`` names channels.

A :class:`CaseFolderSpec` says which file is which: ``channels`` (name -> ``fnmatch`` pattern, matched
case-sensitively against the names of the files directly inside a case folder, in the order given = the network's
input channels), ``label`` (pattern or empty: no labels) and ``label_map`` (raw value -> training value). Presets
(:data:`PRESETS`) name the BraTS releases:

- ``brats2023``: ``<case>-t2w/-t2f/-t1n/-t1c.nii.gz`` + ``-seg``, labels 0/1/2/3 (NCR, ED, ET);
- ``brats2021``: BraTS 2019-2021 (and BraTS 2018's own files) ``_t2/_flair/_t1/_t1ce`` + ``_seg``, label 4 (ET)
  relabelled to 3;
- ``brats2018_wt``: the BraTS 2018 export of ``shared/data/BraTS2018_WT``: ``FLAIR.nii.gz``, ``T1.nii.gz`` and the
  whole-tumour label ``GT_W.nii.gz`` (float 0/1, read as integers).

Every preset uses the channel names ``T2``, ``FLAIR``, ``T1``, ``T1c``, so a model trained on one release finds its
channels in another's folders (:func:`predict_spec`). A preset plus a subset of its channels is a spec too
(``channels: [FLAIR]`` in the config). A case missing a channel, a pattern matching two files, two channels matching
one file, or a missing label where one is required is a one-line :class:`DataError` naming the case
and the file or pattern; channels on different grids are refused when the case is read
(:func:`~mambaseg.data.load3d.load_case3d`) or, in ``predict``, from the headers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from mambaseg.data.errors import DataError
from mambaseg.data.records import Case3D, is_visible

__all__ = ["PRESETS", "CaseFolderSpec", "case_folder_cases", "case_folder_spec", "find_case_files",
           "is_case_folder", "predict_spec", "reference_label"]

_BRATS_LABELS = {"background": 0, "NCR": 1, "ED": 2, "ET": 3}

#: preset name -> channels (name -> pattern, in input order), label pattern, label map, declared labels, regions
PRESETS: dict[str, dict[str, Any]] = {
    "brats2023": dict(channels={"T2": "*-t2w.nii*", "FLAIR": "*-t2f.nii*", "T1": "*-t1n.nii*", "T1c": "*-t1c.nii*"},
                      label="*-seg.nii*", label_map={}, labels=_BRATS_LABELS, regions="brats"),
    "brats2021": dict(channels={"T2": "*_t2.nii*", "FLAIR": "*_flair.nii*", "T1": "*_t1.nii*", "T1c": "*_t1ce.nii*"},
                      label="*_seg.nii*", label_map={4: 3}, labels=_BRATS_LABELS, regions="brats"),
    "brats2018_wt": dict(channels={"FLAIR": "FLAIR.nii*", "T1": "T1.nii*"}, label="GT_W.nii*", label_map={},
                         labels={"background": 0, "WT": 1}, regions="wt"),
}


@dataclass(frozen=True)
class CaseFolderSpec:
    """Which files of a case folder are the channels and the label.

    Attributes:
        channels: ``((name, pattern), ...)`` in input-channel order.
        label: label file pattern; ``""`` = the cases have no label.
        label_map: ``((raw, new), ...)`` applied to the label when read (BraTS 2019-2021: ``((4, 3),)``).
        labels: declared label values (name -> int; values outside are an error) or None (unchecked).
        preset: the preset it was built from (``""``: none).
        regions: ``brats`` (WT/TC/ET), ``wt`` (whole tumour only) or ``""``: what region evaluation the labels allow.
    """

    channels: tuple[tuple[str, str], ...]
    label: str = ""
    label_map: tuple[tuple[int, int], ...] = ()
    labels: dict[str, int] | None = field(default=None, compare=False)
    preset: str = ""
    regions: str = ""

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.channels)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (stored in checkpoints as ``data.case_folders``)."""
        return {"channels": {n: p for n, p in self.channels}, "label": self.label,
                "label_map": {str(k): int(v) for k, v in self.label_map}, "labels": self.labels,
                "preset": self.preset, "regions": self.regions}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "checkpoint key 'data.case_folders'") -> CaseFolderSpec:
        """Inverse of :meth:`to_dict`; a malformed entry is a one-line DataError naming ``where``."""
        try:
            chans = tuple((str(n), str(p)) for n, p in dict(d["channels"]).items())
            lmap = tuple((int(k), int(v)) for k, v in dict(d.get("label_map") or {}).items())
            labels = d.get("labels")
            labels = {str(k): int(v) for k, v in labels.items()} if labels else None
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(f"{where}: malformed case-folder description ({err}); expected channels, label, "
                            f"label_map") from None
        if not chans:
            raise DataError(f"{where}: no channels, expected at least one name -> pattern")
        return cls(chans, str(d.get("label") or ""), lmap, labels, str(d.get("preset") or ""),
                   str(d.get("regions") or ""))


def case_folder_spec(preset: str = "", channels: Mapping[str, str | None] | Sequence[str] | None = None,
                     label: str = "", label_map: Mapping[Any, Any] | None = None,
                     where: str = "data") -> CaseFolderSpec:
    """The spec of a config's ``data`` keys: ``preset`` (a :data:`PRESETS` name or ``""``), ``channels`` (name ->
    pattern; a name with an empty pattern, or a list of names, takes the preset's pattern: a channel subset),
    ``label`` and ``label_map`` (empty = the preset's). ``where`` prefixes the config keys in error messages.

    Raises:
        DataError: an unknown preset, a channel name the preset lacks, no channels, a pattern with a folder part.
    """
    base: dict[str, Any] = {}
    if preset:
        if preset not in PRESETS:
            raise DataError(f"config key '{where}.preset' must be one of {', '.join(PRESETS)}, got {preset!r}")
        base = PRESETS[preset]
    if channels is None or len(channels) == 0:
        if not base:
            raise DataError(f"config key '{where}.channels' is empty and no '{where}.preset' is set; expected name -> "
                            f"file pattern per input channel (e.g. {{FLAIR: '*FLAIR.nii.gz'}}) or a preset "
                            f"({', '.join(PRESETS)})")
        channels = dict(base["channels"])
    if not isinstance(channels, Mapping):
        channels = {str(n): "" for n in channels}
    chans = []
    for name, pattern in channels.items():
        pattern = "" if pattern is None else str(pattern)
        if not pattern:
            if str(name) not in base.get("channels", {}):
                known = ", ".join(base.get("channels", {})) or "none: no preset set"
                raise DataError(f"config key '{where}.channels.{name}' has no file pattern and the preset "
                                f"{preset or '(none)'} has no channel {name!r} (its channels: {known})")
            pattern = base["channels"][str(name)]
        _check_pattern(pattern, f"{where}.channels.{name}")
        chans.append((str(name), pattern))
    label = str(label or base.get("label", ""))
    if label:
        _check_pattern(label, f"{where}.label")
    lmap_src = label_map if label_map else base.get("label_map", {})
    try:
        lmap = tuple((int(k), int(v)) for k, v in dict(lmap_src).items())
    except (TypeError, ValueError):
        raise DataError(f"config key '{where}.label_map' must map integer label values to integers, "
                        f"got {label_map!r}") from None
    if any(k < 0 or v < 0 for k, v in lmap):
        raise DataError(f"config key '{where}.label_map' must hold values >= 0, got {dict(lmap)}")
    labels = dict(base["labels"]) if base and not label_map else None
    return CaseFolderSpec(tuple(chans), label, lmap, labels, preset, str(base.get("regions", "")) if base else "")


def _check_pattern(pattern: str, key: str) -> None:
    if "/" in pattern or "\\" in pattern:
        raise DataError(f"config key '{key}' must be a file name pattern inside a case folder (no folder part), "
                        f"got {pattern!r}")


def _matches(files: Sequence[Path], pattern: str) -> list[Path]:
    return [f for f in files if fnmatchcase(f.name, pattern)]


def _folder_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_visible(p))


def _unique(folder: Path, patterns: Sequence[str], what: str, files: Sequence[Path]) -> Path | None:
    """The one file of ``files`` matching the first of ``patterns`` that matches anything; None when none does."""
    for pattern in patterns:
        found = _matches(files, pattern)
        if len(found) > 1:
            raise DataError(f"case {folder.name!r}: {what} pattern {pattern!r} matches {len(found)} files "
                            f"({', '.join(f.name for f in found)}) in {folder}; expected exactly one")
        if found:
            return found[0]
    return None


def find_case_files(folder: Path, channels: Sequence[tuple[str, Sequence[str]]], label: str = "",
                    require_label: bool = False) -> tuple[list[Path], Path | None]:
    """The channel files (in ``channels`` order) and the label file (or None) of one case folder.

    Args:
        folder: the case folder.
        channels: ``(name, patterns)``: the first pattern that matches any file decides (several patterns: a
            model's stored pattern, then the other releases' patterns for that channel name).
        label: label pattern (``""``: none looked for).
        require_label: a case without label file is an error.

    Raises:
        DataError: a missing channel, a pattern matching two files, one file matched by two channels, a missing
            required label (one line naming the case and the file or pattern).
    """
    files = _folder_files(folder)
    lab = _unique(folder, [label], "label", files) if label else None
    if lab is None and require_label:
        raise DataError(f"case {folder.name!r}: no label file matching {label!r} in {folder}")
    images, used = [], {}
    for name, patterns in channels:
        pool = [f for f in files if f != lab]
        f = _unique(folder, patterns, f"channel {name}", pool)
        if f is None:
            raise DataError(f"case {folder.name!r}: missing channel {name} (no file matching "
                            f"{' or '.join(repr(p) for p in patterns)}) in {folder}")
        if f in used:
            raise DataError(f"case {folder.name!r}: {f} matches both channel {used[f]} and channel {name}; expected "
                            f"one file per channel")
        used[f] = name
        images.append(f)
    return images, lab


def is_case_folder(folder: Path, spec: CaseFolderSpec, single: bool = False) -> bool:
    """True when a file of ``folder`` matches one of the spec's channel patterns (or its label pattern); with
    ``single``, only when moreover no pattern matches two files (a folder of several cases' FLAIR files is not one
    case folder)."""
    if not folder.is_dir():
        return False
    files = _folder_files(folder)
    patterns = [p for _, p in spec.channels] + ([spec.label] if spec.label else [])
    counts = [len(_matches(files, p)) for p in patterns]
    return any(counts) and not (single and max(counts) > 1)


def _case(folder: Path, spec: CaseFolderSpec, channels, require_label: bool) -> Case3D:
    images, lab = find_case_files(folder, channels, spec.label, require_label)
    return Case3D(folder.name, tuple(images), lab, "case_folders", spec.channel_names, spec.labels,
                  dict(spec.label_map) or None, extra={"preset": spec.preset})


def case_folder_cases(root: str | os.PathLike, spec: CaseFolderSpec, require_label: bool = False,
                      alternatives: bool = False) -> list[Case3D]:
    """The case folders directly under ``root`` (folders none of whose files match a pattern are left out), or
    ``root`` itself when it is one case folder.

    Args:
        alternatives: also accept, per channel, the patterns of every preset naming that channel (predict: a model
            trained on one release reads another's folders; see :func:`predict_spec`).

    Raises:
        DataError: ``root`` missing, no case folder, or a case whose files do not fit (see :func:`find_case_files`).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: case-folder dataset not found")
    channels = predict_spec(spec) if alternatives else [(n, [p]) for n, p in spec.channels]
    probe = CaseFolderSpec(tuple((n, p) for n, ps in channels for p in ps), spec.label)
    if is_case_folder(root, probe, single=True) and not any(is_case_folder(d, probe) for d in root.iterdir()
                                                             if d.is_dir()):
        return [_case(root, spec, channels, require_label)]
    folders = sorted(d for d in root.iterdir() if d.is_dir() and is_visible(d) and is_case_folder(d, probe))
    if not folders:
        shown = ", ".join(f"{n}: {' or '.join(ps)}" for n, ps in channels)
        raise DataError(f"{root}: no case folders (sub-folders holding files matching {shown})")
    return [_case(d, spec, channels, require_label) for d in folders]


def predict_spec(spec: CaseFolderSpec) -> list[tuple[str, list[str]]]:
    """Per channel of ``spec``: its pattern, then the patterns every preset gives a channel of that name
    (case-insensitive), so a FLAIR model trained on the 2018 export finds FLAIR in BraTS 2019-2023 folders."""
    out = []
    for name, pattern in spec.channels:
        pats = [pattern]
        for preset in PRESETS.values():
            for other, p in preset["channels"].items():
                if other.casefold() == name.casefold() and p not in pats:
                    pats.append(p)
        out.append((name, pats))
    return out


def reference_label(folder: Path) -> Path | None:
    """The label file of a case folder by any preset's label pattern (evaluation references in case folders);
    None when none matches; a DataError when two files match."""
    files = _folder_files(folder)
    patterns = list(dict.fromkeys(p["label"] for p in PRESETS.values()))
    return _unique(folder, patterns, "label", files)
