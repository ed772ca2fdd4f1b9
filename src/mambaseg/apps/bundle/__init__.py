"""MONAI bundle export: a trained model as a folder that MONAI's bundle tools can run for inference.

:func:`export_bundle` writes (see MONAI's *Bundle Specification*)::

    OUT/
      configs/metadata.json    versions, task, authors, license, network_data_format (inputs/outputs)
      configs/inference.json   network_def, preprocessing, SlidingWindowInferer, postprocessing, run
      configs/logging.conf     the logging set-up MONAI's runner reads by default
      configs/metadata_schema.json  the JSON schema of metadata.json (verify_metadata offline)
      configs/mambaseg.json    2D: the checkpoint's model name, kwargs, config and data (mambaseg's components)
      models/model.pt          the state_dict (plain tensors, loads with ``torch.load(weights_only=True)``)
      docs/README.md           how to run it: ``python -m monai.bundle run --config_file configs/inference.json``
      LICENSE                  mambaseg's license (Apache-2.0)

``network_def`` is ``{"_target_": "mambaseg.models.build_model", "name": ..., **model_kwargs}``, so mambaseg must be
installed where the bundle runs (the networks are mambaseg's). Inference uses only MONAI components (no
pytorch-ignite): a ``Dataset`` over the input folder, ``preprocessing``, the ``inferer`` and ``postprocessing`` per
case, in the config's ``run`` expressions.

How close the MONAI pipeline is to ``mambaseg predict``:

* 3D: ``Orientationd`` RAS, ``CropForegroundd`` on non-zero voxels, the plan's normalisation (MR: z-score of the
  non-zero voxels, ``NormalizeIntensityd(nonzero=True, channel_wise=True)``, identical; CT: clip to the
  foreground percentiles and z-score with the dataset statistics, ``ScaleIntensityRanged`` + ``NormalizeIntensityd``
  with fixed values, identical; CT window: ``ScaleIntensityRanged`` to [0, 1], identical), ``Spacingd`` to the
  plan's target spacing (``scale_extent``: voxel extents aligned, the same grid shape and first voxel centre as
  mambaseg's ``scipy.ndimage.zoom(grid_mode=True)``; MONAI's cubic spline values differ slightly when the spacing
  changes, not at all when it does not), the sliding window
  with the same tile, overlap, Gaussian blending (sigma 1/8 of the tile) and batch size, then softmax/sigmoid,
  ``Invertd`` (probabilities resampled back; mambaseg resamples the label map instead), argmax/threshold and
  ``SaveImaged`` (``<case>_seg.nii.gz``, uint8).
* 2D: the steps of ``mambaseg predict`` itself, named in the config by ``_target_`` (mambaseg's components,
  :mod:`mambaseg.apps.bundle_components`, configured by ``configs/mambaseg.json``: the checkpoint's model name,
  kwargs, config and data dict): the reader of every format predict reads (PNG, TIF, GIF, JPG, BMP, NIfTI; an empty
  folder is an error), the model's plan (field of view from ``mask_dir`` or estimated, FOV z-score, rescaling to the
  training FOV diameter, ``data.fundus_norm``), the same sliding window, the plan's inverse, threshold (``auto``
  included) and FOV masking, the same 0/255 or label-value PNG (``<image>_seg.png``): identical masks.

``configs/metadata.json`` has a ``schema`` (``configs/metadata_schema.json``, a copy of the package's
``bundle_meta_schema.json``) that ``python -m monai.bundle verify_metadata --filepath configs/metadata_schema.json``
checks without a network connection. ``python -m monai.bundle`` needs ``fire`` (``pip install 'mambaseg[bundle]'``,
which also brings ``jsonschema`` for ``verify_metadata``).
"""

from __future__ import annotations

from .config import bundle_inference_config, normalization_steps
from .metadata import REQUIRED_METADATA_KEYS, REQUIRED_TENSOR_KEYS, bundle_metadata, check_metadata
from .write import export_bundle

__all__ = ["REQUIRED_METADATA_KEYS", "REQUIRED_TENSOR_KEYS", "bundle_inference_config", "bundle_metadata",
           "check_metadata", "export_bundle", "normalization_steps"]
