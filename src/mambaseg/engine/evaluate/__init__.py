"""``mambaseg evaluate``: score a folder of predictions against ground truth, 2D or 3D.

One entry and one scoring loop for both (:mod:`.pipeline`); the metrics are chosen by the predictions' array
dimensionality, not by file suffix, and computed from arrays by :mod:`mambaseg.metrics` (no files there).

2D (PNG/TIF/GIF/..., :mod:`.images`): per-image foreground Dice, IoU, precision, recall, specificity, pixel
accuracy (inside the FOV mask when given) and ROC AUC when ``<pred>/probs/`` holds probability maps. A 2D prediction
with at most two values (0 and one other, e.g. 0/1, 0/7 or 0/255) is a label mask: foreground where non-zero. Any
other map is read as probabilities (float in [0, 1], 8-bit /255, 16-bit /65535) and cut at ``threshold``.

Every reference needs a prediction: missing ones are an error naming how many and one of them, unless
``allow_missing`` (then only the predicted cases are scored, with a warning, and the missing ones are listed in
``summary.json`` under ``missing_predictions``, as nnU-Net does with ``chill``). 3D (NIfTI, :mod:`.volumes`):
per-case and per-class Dice, IoU, HD95 in mm, see :mod:`mambaseg.metrics.volumetric`. Both write ``metrics.csv`` and
``summary.json`` with the definition of every metric next to the numbers.

Labels outside the class set are an error naming the file and the values: 2D references must be 0/1 or 0/255, a 2D
prediction with three or more integer values all below 16 (no 8-bit probability map reaches p = 0.06 there) is a
multi-label map, not a binary one; 3D label maps must hold only the labels of ``dataset.json`` (or of the BraTS
regions, ``--regions brats``).

``summary.json`` has nnU-Net v2's shape (``nnunetv2.evaluation.evaluate_predictions``) in 2D as in 3D, so nnU-Net's
``load_summary_json`` reads it: 2D rows of ``metric_per_case`` carry ``prediction_file`` / ``reference_file``
(absolute) and ``metrics`` keyed by the label value (``{"1": {Dice, IoU, FP, TP, FN, TN, n_pred, n_ref}}``), ``mean``
is keyed the same way, ``foreground_mean`` averages the foreground labels and ``class_names`` names them. The 2D
per-image metrics (``dice``, ``iou``, ``precision``, ...) stay in each row and their means are in ``mean_2d``.

Cases are scored one at a time, in this process (``workers=1``) or in a pool of ``workers`` spawned processes (one
case in memory per worker, one thread each); results are gathered in case order, so the outputs are byte-identical.
"""

from __future__ import annotations

from ..eval_common import check_workers, ordered_map
from .files import match_files
from .images import METRICS_2D, NNUNET_METRICS, read_prediction_2d, read_probabilities_2d
from .pipeline import evaluate, evaluate_2d, evaluate_3d, evaluate_pairs, format_table
from .volumes import check_label_set, label_key, nnunet_keyed

__all__ = ["METRICS_2D", "NNUNET_METRICS", "check_label_set", "check_workers", "evaluate", "evaluate_2d",
           "evaluate_3d", "evaluate_pairs", "format_table", "label_key", "match_files", "nnunet_keyed",
           "ordered_map", "read_prediction_2d", "read_probabilities_2d"]
