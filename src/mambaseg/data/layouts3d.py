"""Compatibility facade, kept for one release (issue 11): the volume layouts now live one module per layout in
:mod:`mambaseg.data.layouts` — MSD in :mod:`~mambaseg.data.layouts.msd`, nnU-Net raw in
:mod:`~mambaseg.data.layouts.nnunet`, BraTS in :mod:`~mambaseg.data.layouts.brats`, Synapse / BTCV in
:mod:`~mambaseg.data.layouts.synapse`; :class:`Case3D` in :mod:`~mambaseg.data.layouts.records`, ``dataset.json``
reading and the nnU-Net normalisation names in :mod:`~mambaseg.data.layouts.dataset_json`, :func:`load_case3d` and
:func:`remap_labels` in :mod:`~mambaseg.data.layouts.load3d`, :func:`detect_layout3d` and :func:`list_cases3d` in
:mod:`~mambaseg.data.layouts.detect3d`. This module only re-exports those names; import them from their new modules
(or list cases through :mod:`mambaseg.data.cases`).
"""

from __future__ import annotations

from mambaseg.data.layouts.brats import (
    BRATS_CHANNELS,
    BRATS_LABELS,
    BRATS_REGIONS,
    brats_cases,
    brats_region_masks,
)
from mambaseg.data.layouts.dataset_json import (
    channel_modalities,
    declared_label_values,
    nnunet_normalisation,
    read_dataset_json,
)
from mambaseg.data.layouts.detect3d import detect_layout3d, list_cases3d
from mambaseg.data.layouts.load3d import load_case3d, remap_labels
from mambaseg.data.layouts.msd import group_channels, msd_cases
from mambaseg.data.layouts.nnunet import nnunet_cases, nnunet_files, nnunet_is_2d
from mambaseg.data.layouts.records import Case3D
from mambaseg.data.layouts.synapse import (
    BTCV_TO_SYNAPSE8,
    SYNAPSE8_LABELS,
    SYNAPSE_TEST_CASES,
    SYNAPSE_TRAIN_CASES,
    synapse_cases,
)

__all__ = [
    "BRATS_CHANNELS",
    "BRATS_LABELS",
    "BRATS_REGIONS",
    "BTCV_TO_SYNAPSE8",
    "SYNAPSE8_LABELS",
    "SYNAPSE_TEST_CASES",
    "SYNAPSE_TRAIN_CASES",
    "Case3D",
    "brats_cases",
    "brats_region_masks",
    "channel_modalities",
    "declared_label_values",
    "detect_layout3d",
    "group_channels",
    "list_cases3d",
    "load_case3d",
    "msd_cases",
    "nnunet_cases",
    "nnunet_files",
    "nnunet_is_2d",
    "nnunet_normalisation",
    "read_dataset_json",
    "remap_labels",
    "synapse_cases",
]
