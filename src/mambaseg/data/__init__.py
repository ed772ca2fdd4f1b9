"""Reading and preparing images: the data floor, organised by idea (issue 22).

Floors inside ``data`` (a module imports only from its own room or from rooms on lower floors; nothing imports up):

    6: cases
    5: layouts
    4: plans
    3: load3d
    2: records
    1: io, sampling
    0: errors, case_store, splits, transforms, synthetic

``io`` reads and writes files (one suffix registry, raster and volume readers, header checks); ``records`` says what a
case is (``Case2D``, ``Case3D``); ``load3d`` reads one volume case; ``plans`` fits a plan on a fingerprint and applies
it forward and inverse (normalisation, geometry, its cache); ``layouts`` list the cases of each dataset layout (and
read one 2D case); ``cases`` is the single entry point. ``synthetic`` makes 2D and 3D test data. This file imports
nothing.
"""
