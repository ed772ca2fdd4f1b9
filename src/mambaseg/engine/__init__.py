"""Training, prediction and evaluation on the library floors below (issue 22 declares its rooms' floors here).

Floors inside ``engine`` (a module imports only from its own room or from rooms on lower floors; nothing imports up;
``tests/test_architecture.py`` checks it):

    4: train
    3: predict, validation, evaluate
    2: predict_provenance, onnx_runner, stream, data
    1: checkpoint, inference, threshold, outputs, eval_common, provenance, distributed, step_guard

``train`` is the training loop; ``predict`` and ``evaluate`` are the two other verbs (packages with a pipeline and
a 2D and a 3D piece each); ``validation`` scores the validation cases while training; ``data`` turns a config into
training and validation cases; ``stream`` makes batches; ``checkpoint`` reads, checks and writes checkpoints (and
opens a ``.pt`` or ``.onnx`` model file once); ``inference`` is the sliding window. This file imports nothing.
"""
