"""``mambaseg predict``: segment 2D images (PNG/TIF/GIF/JPG/BMP/NIfTI) or 3D volumes with a trained model.

One pipeline for both (:mod:`.pipeline`): gather the inputs and check them all, then per case read ->
``plan.forward`` -> sliding window -> ``plan.inverse`` -> write, with what differs by dimension in a small piece
picked by the model's ``spatial_dims``:

- 2D (:mod:`.images`): full-image inference by overlapping tiles; ``<stem>.png`` masks (0/255 for binary models,
  label values otherwise), optional ``probs/<stem>.png`` (16-bit probability of foreground) and
  ``overlays/<stem>.png``. For models trained with a field of view (fundus), the FOV is read from ``--mask`` or
  estimated from the image, and photos from other cameras are rescaled so their FOV diameter matches the training
  data before inference.
- 3D (:mod:`.volumes`): ``<case>.nii.gz`` label maps in each input's original geometry, optional ``<case>.npz`` /
  ``<case>.json`` probabilities and ``overlays/<case>.png`` (:mod:`.overlay`).

Both write ``predict_provenance.json`` next to the predictions (model, checkpoint SHA-256, training config,
preprocessing, inference settings, versions, command line): see :mod:`mambaseg.engine.predict_provenance`.
"""

from __future__ import annotations

from .images import collect_inputs
from .overlay import orthogonal_overlay
from .pipeline import predict, predict_image_2d, predict_with
from .predictor import Predictor, load_predictor
from .volumes import gather_volume_cases

__all__ = ["Predictor", "collect_inputs", "gather_volume_cases", "load_predictor", "orthogonal_overlay", "predict",
           "predict_image_2d", "predict_with"]
