"""Sliding-window stitching on another device than the network's (#14, item 6): ``stitch_device`` and
``infer.stitch_device``.

No GPU is needed. The device separation is checked two ways: a spy on the buffer allocation records the device the
accumulators are created on, and the ``meta`` device stands in for a second device (a network on the CPU stitching on
``meta``, or a network on ``meta`` stitching there): any tensor of the wrong device in the accumulation raises
"Expected all tensors to be on the same device", so these runs pass only if tiles, outputs, weight map and buffers each
sit where they should.

Why ``cpu`` and ``same`` stitching are compared with ``torch.equal``: both perform the same float32 operations in the
same order (the tile batch, the mirror average and the division by the number of flips on the network's device; the
products with the weight map, the sums and the final division on the stitch device); moving a tensor between devices
copies it bit for bit. On the CPU the two runs are therefore bit-identical, and so is the default (the behaviour
before ``stitch_device`` existed).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mambaseg.engine.inference as inf
from mambaseg.config import ConfigError, config_from_dict, config_to_dict
from mambaseg.engine.inference import STITCH_CPU_BYTES, resolve_stitch_device, sliding_window

GIB = 1 << 30


def _net() -> torch.nn.Module:
    """A small non-linear 3D network (its output depends on the tile position through the zero padding)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv3d(4, 3, 3, padding=1)).eval()


def _image() -> torch.Tensor:
    return torch.randn(2, 21, 18, 15, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("tta", [(), (0, 2)])
def test_cpu_and_same_stitching_are_bit_identical(tta):
    net, image = _net(), _image()
    args = (net, image, (8, 8, 8), 0.5, "gaussian", 3, tta)
    same = sliding_window(*args, stitch_device="same")
    assert same.shape == (3, 21, 18, 15) and same.dtype == torch.float32
    for setting in ("cpu", "auto", torch.device("cpu")):
        assert torch.equal(sliding_window(*args, stitch_device=setting), same), setting
    assert torch.equal(sliding_window(*args), same)  # the default (auto, CPU network) = before stitch_device
    assert torch.equal(sliding_window(*args, device="cpu", stitch_device="cpu"), same)
    # not vacuous: the network is not linear, so the blend differs from applying it to the whole image
    assert not torch.allclose(same, net(image[None])[0], atol=1e-3)


def _reference_blend(predict, image, tile, overlap, flips):
    """The Gaussian blend written out tile by tile (one tile per call, the mirrored predictions averaged)."""
    import itertools

    from mambaseg.engine.inference import compute_steps, gaussian_weight

    weight = gaussian_weight(tuple(tile))
    out, norm = None, torch.zeros(image.shape[1:])
    for start in itertools.product(*compute_steps(image.shape[1:], tile, overlap)):
        sl = tuple(slice(s, s + t) for s, t in zip(start, tile))
        x = image[(slice(None),) + sl][None]
        logits = 0
        for f in flips:
            dims = [a + 2 for a in f]
            logits = logits + (predict(x.flip(dims)).flip(dims) if dims else predict(x))
        logits = logits / len(flips)
        out = torch.zeros((logits.shape[1],) + tuple(image.shape[1:])) if out is None else out
        out[(slice(None),) + sl] += logits[0] * weight
        norm[sl] += weight
    return out / norm


@pytest.mark.parametrize("stitch", ["cpu", "same"])
def test_blend_equals_the_tile_by_tile_reference(stitch):
    net, image = _net(), _image()
    flips = [(), (1,)]
    got = sliding_window(net, image, (8, 8, 8), 0.5, "gaussian", 1, (1,), stitch_device=stitch)
    assert torch.equal(got, _reference_blend(net, image, (8, 8, 8), 0.5, flips))


def test_buffers_are_allocated_on_the_stitch_device(monkeypatch):
    made = []
    real = inf._buffers

    def spy(channels, spatial, device):
        made.append((channels, spatial, torch.device(device)))
        return real(channels, spatial, device)

    monkeypatch.setattr(inf, "_buffers", spy)
    seen = []

    def predict(x):  # the network: records where its tiles are
        seen.append(x.device)
        return torch.stack([x[:, 0] * 2, x[:, 1] - 1], 1)

    image = torch.randn(2, 20, 14)
    out = sliding_window(predict, image, (8, 8), 0.5, stitch_device="cpu")
    assert made == [(2, (20, 14), torch.device("cpu"))]  # one allocation, once the output channels are known
    assert out.device.type == "cpu"
    # a second device: the network on the CPU, the buffers on ``meta``; a tile output not moved there, a weight map
    # or a buffer left on the CPU would raise a device mismatch
    made.clear()
    seen.clear()
    out = sliding_window(predict, image, (8, 8), 0.5, stitch_device=torch.device("meta"))
    assert made == [(2, (20, 14), torch.device("meta"))]
    assert out.device.type == "meta" and out.shape == (2, 20, 14)
    assert seen and all(d.type == "cpu" for d in seen)  # the tiles stayed on the network's device
    # the network on ``meta`` (image on the CPU): tiles are moved there, and ``same`` stitches there
    made.clear()
    seen.clear()
    out = sliding_window(predict, image, (8, 8), 0.5, device="meta", stitch_device="same")
    assert all(d.type == "meta" for d in seen) and made[0][2].type == "meta" and out.device.type == "meta"


def test_image_smaller_than_the_tile_padded_on_the_stitch_device():
    image = torch.randn(1, 5, 6, 7)
    out = sliding_window(lambda x: 2 * x, image, (8, 8, 8), 0.5, stitch_device="cpu")
    torch.testing.assert_close(out, 2 * image, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("net,channels,spatial,expected", [
    ("cuda", 3, (512, 512, 512), "cpu"),          # 4 * 4 * 512^3 = 2 GiB > 1 GiB
    ("cuda:1", 3, (256, 256, 256), "cuda:1"),     # 256 MiB: stays on the GPU
    ("cuda", 1, (512, 512, 512), "cuda"),         # 4 * 2 * 2^27 = exactly 1 GiB: not above the threshold
    ("cuda", 1, (512, 512, 513), "cpu"),          # just above
    ("cpu", 14, (1024, 1024, 1024), "cpu"),       # a CPU network: nothing to save, stitched where it runs
    ("mps", 2, (1024, 1024, 128), "cpu"),         # 1.5 GiB, any non-CPU device
])
def test_auto_rule(net, channels, spatial, expected):
    assert resolve_stitch_device("auto", net, channels, spatial) == torch.device(expected)
    assert resolve_stitch_device("auto", torch.device(net), channels, spatial) == torch.device(expected)


def test_explicit_settings_and_threshold():
    assert STITCH_CPU_BYTES == GIB
    assert resolve_stitch_device("same", "cuda:0", 3, (512,) * 3) == torch.device("cuda:0")
    assert resolve_stitch_device("cpu", "cuda:0", 1, (2, 2)) == torch.device("cpu")
    assert resolve_stitch_device(torch.device("cuda:1"), "cpu", 1, (2, 2)) == torch.device("cuda:1")
    assert resolve_stitch_device("auto", "cuda", 1, (64, 64), threshold=4 * 2 * 64 * 64 - 1) == torch.device("cpu")
    assert resolve_stitch_device("auto", "cuda", 1, (64, 64), threshold=4 * 2 * 64 * 64) == torch.device("cuda")
    with pytest.raises(ValueError, match="infer.stitch_device.*'gpu'"):
        resolve_stitch_device("gpu", "cuda", 1, (2, 2))


def test_bad_stitch_device_fails_before_the_first_tile():
    calls = []
    with pytest.raises(ValueError, match="infer.stitch_device"):
        sliding_window(lambda x: calls.append(1) or x, torch.zeros(1, 16, 16), (8, 8), stitch_device="host")
    assert not calls


def test_config_key_default_validation_and_saved_config():
    assert config_from_dict({}).infer.stitch_device == "auto"
    assert "stitch_device" not in config_to_dict(config_from_dict({}))["infer"]  # config.yaml unchanged at default
    for v in ("cpu", "same", "auto"):
        cfg = config_from_dict({"infer": {"stitch_device": v}})
        assert cfg.infer.stitch_device == v
        assert config_to_dict(cfg)["infer"].get("stitch_device", "auto") == v
    with pytest.raises(ConfigError, match=r"'infer\.stitch_device'.*auto, cpu or same.*'gpu'"):
        config_from_dict({"infer": {"stitch_device": "gpu"}})


def test_predict_2d_passes_the_network_device_and_the_setting(monkeypatch):
    import mambaseg.engine.predict as P
    import mambaseg.engine.predict.pipeline as pipeline

    calls = []
    real = pipeline.sliding_window

    def spy(*args, **kw):
        calls.append((args[9:], kw))
        return real(*args, **kw)

    monkeypatch.setattr(pipeline, "sliding_window", spy)
    ckpt = {"config": {"data": {"patch_size": [16, 16]}, "infer": {"stitch_device": "cpu"}},
            "data": {"spatial_dims": 2}, "model_kwargs": {"in_channels": 1}}
    pred = P.Predictor(lambda x: torch.cat([-x, x], 1), ckpt, None, torch.device("cpu"))
    raw = np.random.default_rng(0).random((1, 20, 24)).astype(np.float32)
    probs, labels = P.predict_image_2d(pred, raw, None, 0.5, False)
    assert calls and calls[0][0] == (torch.device("cpu"), "cpu")
    assert probs.shape == (2, 20, 24) and labels.shape == (20, 24) and isinstance(probs, np.ndarray)
