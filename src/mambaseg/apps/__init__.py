"""Applications built on the library floors: ONNX export and MONAI bundles, benchmarks, the demo and the report.

Imported only by the command line (:mod:`mambaseg.cli`); nothing below this floor imports them.
"""
