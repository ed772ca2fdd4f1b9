"""mambaseg: Mamba (selective state-space) medical image segmentation that runs anywhere.

Floors (a module imports only from its own package or from packages on lower floors; ``tests/test_architecture.py``
checks this list, and that no imports form a cycle):

    8: __main__
    7: cli
    6: apps
    5: engine
    4: models, data
    3: nn, losses
    2: ssm, metrics, config, resources
    1: utils
    0: mambaseg (this file: the version only)

``models`` and ``data`` share a floor, so neither imports the other: a network never reads files. ``data``,
``engine`` and ``apps`` declare the floors of their own rooms (modules and subpackages) in their ``__init__``
docstrings, checked the same way.

``apps`` holds the applications (ONNX export and MONAI bundles, benchmarks, the demo, the report) that only the
command line uses; ``engine`` trains, predicts and evaluates; ``models`` are the registered networks built from the
blocks in ``nn``; ``ssm`` is the selective scan; ``data`` reads and prepares images; ``metrics`` score arrays
(no files).
"""

__version__ = "0.1.0"
