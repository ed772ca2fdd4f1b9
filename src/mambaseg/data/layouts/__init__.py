"""Dataset layouts, one module per layout (issue 11).

- :mod:`~mambaseg.data.layouts.drive`: DRIVE; :mod:`~mambaseg.data.layouts.folder2d`: ``images/`` + ``labels/``;
- :mod:`~mambaseg.data.layouts.nnunet`: nnU-Net v2 raw, 3D and 2D;
- :mod:`~mambaseg.data.layouts.msd`: Medical Segmentation Decathlon;
- :mod:`~mambaseg.data.layouts.brats`: BraTS 2023 and 2020/21;
- :mod:`~mambaseg.data.layouts.case_folders`: case folders of any naming, channels and label named by file patterns
  (presets for BraTS 2023, 2019-2021 and the 2018 whole-tumour export);
- :mod:`~mambaseg.data.layouts.synapse`: Synapse (TransUNet npz/h5) and raw BTCV;

shared by them: :mod:`~mambaseg.data.layouts.dataset_json` (MSD / nnU-Net ``dataset.json``),
:mod:`~mambaseg.data.layouts.load2d` (reading one 2D case), :mod:`~mambaseg.data.layouts.detect3d` (which volume
layout a folder is, and its cases). The single entry points are in :mod:`mambaseg.data.cases`.

Layouts depend only downwards (issue 22): on :mod:`mambaseg.data.records` (``Case2D``, ``Case3D``, path helpers),
:mod:`mambaseg.data.load3d` (reading one 3D case), :mod:`mambaseg.data.plans` (normalisation) and
:mod:`mambaseg.data.io`; none of those imports a layout. This file imports nothing, so importing one layout module
loads only what that module needs.
"""
