"""Plans: what is done to an image before the network and undone after it, for 2D and 3D (issue 22).

One idea, one module per step:

- :mod:`~mambaseg.data.plans.fingerprint`: the dataset fingerprint (spacings, shapes, intensity statistics);
- :mod:`~mambaseg.data.plans.normalize`: intensity normalisation (per-channel schemes, the 2D z-score);
- :mod:`~mambaseg.data.plans.fundus`: fundus-photograph normalisation and field-of-view estimation;
- :mod:`~mambaseg.data.plans.geometry`: reorientation to RAS, crop to non-zero, resampling;
- :mod:`~mambaseg.data.plans.preprocess`: the nnU-Net-style 3D plan (fingerprint -> plan), applied forward
  (:func:`~mambaseg.data.plans.preprocess.preprocess_case`) and inverted
  (:func:`~mambaseg.data.plans.preprocess.invert_prediction`);
- :mod:`~mambaseg.data.plans.plan`: ``Plan2D`` / ``Plan3D`` (``fit`` -> ``forward`` -> ``inverse``, stored in and
  rebuilt from a checkpoint);
- :mod:`~mambaseg.data.plans.cache`: the preprocessing cache (each case preprocessed once per plan).

Plans read cases through :mod:`mambaseg.data.load3d` and :mod:`mambaseg.data.io`, never through a layout. This file
imports nothing.
"""
