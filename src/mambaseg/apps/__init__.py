"""Applications built on the library floors: ONNX export and MONAI bundles, benchmarks, the demo and the report.

Imported only by the command line (:mod:`mambaseg.cli`); nothing below this floor imports them.

Floors inside ``apps`` (a module imports only from its own room or from rooms on lower floors; checked by
``tests/test_architecture.py``):

    2: benchmark, demo, bundle
    1: report, demo_real, bundle_components, export, speed

``benchmark`` (package: plan, run, records, evaluation, statistics, Markdown, HTML) draws its pages with the
``report`` package's HTML pieces; ``speed`` (package: scan, models, precision) is ``mambaseg bench`` (timings, not
the benchmark); ``bundle`` (package: config, metadata, write) is ``mambaseg export --bundle``, whose 2D bundles run
``bundle_components`` (a module of its own: exported bundles name it). This file imports nothing.
"""
