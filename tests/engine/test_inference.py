"""Sliding-window inference: the 2x property (MONAI's best test), steps, shapes, mirroring and bad arguments."""

from __future__ import annotations

import pytest
import torch

from mambaseg.engine.inference import compute_steps, gaussian_weight, probs_to_labels, sliding_window


@pytest.mark.parametrize("shape,tile,overlap,mode", [
    ((1, 37, 45), (16, 16), 0.5, "gaussian"),
    ((2, 64, 64), (32, 32), 0.25, "constant"),
    ((1, 10, 12), (16, 16), 0.5, "gaussian"),  # smaller than the tile: padded and cropped back
    ((1, 13, 17, 11), (8, 8, 8), 0.5, "gaussian"),
    ((3, 9, 20, 31), (8, 16, 16), 0.0, "constant"),
])
def test_sliding_window_of_linear_predictor_is_exact(shape, tile, overlap, mode):
    image = torch.randn(shape)
    out = sliding_window(lambda x: 2.0 * x, image, tile, overlap, mode, batch_size=3)
    assert out.shape == image.shape
    torch.testing.assert_close(out, 2.0 * image, rtol=1e-5, atol=1e-5)


def test_mirror_tta_of_equivariant_predictor_is_exact():
    image = torch.randn(1, 20, 24)
    out = sliding_window(lambda x: x * 3, image, (16, 16), 0.5, mirror_axes=(0, 1))
    torch.testing.assert_close(out, 3 * image, rtol=1e-5, atol=1e-5)


def test_position_dependent_predictor_blends_tiles():
    """A predictor that sees tile positions (returns the row index inside the tile) is not the identity."""
    image = torch.zeros(1, 40, 8)

    def pred(x):
        rows = torch.arange(x.shape[2], dtype=torch.float32).view(1, 1, -1, 1)
        return rows.expand(x.shape[0], 1, x.shape[2], x.shape[3])

    out = sliding_window(pred, image, (16, 8), 0.5, "constant")
    assert not torch.allclose(out[0, :, 0], torch.arange(40.0))  # tiles restart at 0
    assert out[0, 0, 0] == 0 and out[0, -1, 0] == 15


def test_compute_steps_cover_the_image():
    for size, tile, overlap in [(100, 32, 0.5), (32, 32, 0.5), (33, 32, 0.9), (1000, 128, 0.25)]:
        (steps,) = compute_steps([size], [tile], overlap)
        assert steps[0] == 0 and steps[-1] == size - tile
        assert all(b - a <= tile * (1 - overlap) + 1 for a, b in zip(steps, steps[1:]))


@pytest.mark.parametrize("overlap", [-0.1, 1.0])
def test_bad_overlap(overlap):
    with pytest.raises(ValueError, match="overlap"):
        sliding_window(lambda x: x, torch.zeros(1, 8, 8), (4, 4), overlap)


def test_gaussian_weight_and_labels():
    w = gaussian_weight((9, 9))
    assert w.max() == 1 and w.min() > 0 and w[4, 4] == 1 and w[0, 0] < w[4, 4]
    assert probs_to_labels(torch.tensor([[[0.2, 0.7]]])).tolist() == [[0, 1]]
    assert probs_to_labels(torch.tensor([[[0.2]], [[0.5]], [[0.3]]])).tolist() == [[1]]
