"""Per-rank batch building with ``train.num_workers: 0`` under DDP (#14, item 6).

Design (b) of the brief: the ranks' streams are deterministic, distinct, and ``--resume`` exact, and they are not the
single generator's batches of one process (that would need rank ``r`` to draw every patch of the ranks before it to
find its generator's position: the consumption per patch depends on the data). Each rank draws the samples of its
share of the per-sample stream (:class:`~mambaseg.engine.stream.PatchStream`), so the union over ranks of one step is
the batch one process draws with ``train.num_workers >= 1``; the sampler state (batches consumed) is the same on every
rank, so the checkpoint that rank 0 writes resumes every rank. One process with ``num_workers: 0`` keeps the single
generator (:class:`~mambaseg.engine.stream.PatchSampler`), bit for bit. World-2 samplers for ranks 0 and 1 are built in
one process: no real DDP is needed.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import mambaseg.engine.stream as stream
from mambaseg.data.errors import DataError
from mambaseg.data.sampling import sample_patch
from mambaseg.data.synthetic import make_phantom
from mambaseg.data.transforms import default_augmentation
from mambaseg.engine.stream import LoaderBatches, PatchSampler, PatchStream, make_batches

PATCH = (12, 12, 12)
BATCH = 4


def _cases(n: int = 4, shape=(16, 18, 14)) -> list[dict]:
    out = []
    for i in range(n):
        img, lab = make_phantom(shape, rng=i)
        img = (img - img.mean()) / img.std()
        out.append({"id": f"c{i}", "image": img[None].astype(np.float32), "label": lab.astype(np.int64),
                    "mask": None, "meta": {}})
    return out


CASES = _cases()


def _ranks(seed: int = 5, augment: str = "default", world: int = 2) -> list:
    return [make_batches(CASES, PATCH, BATCH, 0.5, augment, seed, num_workers=0, world=world, rank=r)
            for r in range(world)]


def _take(src, n: int) -> list[tuple]:
    return [src.next_batch() for _ in range(n)]


def _equal(a: tuple, b: tuple) -> bool:
    return torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_one_process_keeps_the_single_generator_bit_for_bit():
    src = make_batches(CASES, PATCH, BATCH, 0.5, "default", 7, num_workers=0, world=1, rank=0)
    assert isinstance(src, PatchSampler) and not getattr(src, "per_rank", False)
    # the loop of earlier versions: one generator, patch after patch (case, position, augmentation)
    rng, aug = np.random.default_rng(7), default_augmentation(3)
    for _ in range(3):
        x, y, m = src.next_batch()
        xs, ys = [], []
        for _ in range(BATCH):
            case = CASES[int(rng.integers(len(CASES)))]
            patch = aug(sample_patch({"image": case["image"], "label": case["label"]}, PATCH, rng, fg_prob=0.5), rng)
            xs.append(np.ascontiguousarray(patch["image"], dtype=np.float32))
            ys.append(np.ascontiguousarray(patch["label"], dtype=np.int64))
        np.testing.assert_array_equal(x.numpy(), np.stack(xs))
        np.testing.assert_array_equal(y.numpy(), np.stack(ys))
        assert m is None


def test_each_rank_draws_only_its_share(monkeypatch):
    drawn = []
    real = PatchStream.__getitem__

    def counting(self, index):
        drawn.append(index)
        return real(self, index)

    monkeypatch.setattr(PatchStream, "__getitem__", counting)
    ranks = _ranks()
    for r, src in enumerate(ranks):
        assert isinstance(src, LoaderBatches) and src.per_rank and src.num_workers == 0  # the loop must not slice
        drawn.clear()
        batches = _take(src, 3)
        assert all(b[0].shape == (BATCH // 2, 1, *PATCH) and b[1].shape == (BATCH // 2, *PATCH) for b in batches)
        # 2 patches per step, only this rank's positions of the global batch: nothing drawn to be thrown away
        assert drawn == [s * BATCH + j for s in range(3) for j in ((0, 1) if r == 0 else (2, 3))]
        assert src._it is None  # no DataLoader, no worker process


def test_union_of_ranks_is_the_per_sample_batch_of_one_process():
    parts = [_take(src, 3) for src in _ranks()]
    one = _take(LoaderBatches(CASES, PATCH, BATCH, 0.5, "default", 5, num_workers=0), 3)
    stream_items = PatchStream(CASES, PATCH, BATCH, 0.5, "default", 5)
    for s in range(3):
        x = torch.cat([parts[0][s][0], parts[1][s][0]])
        y = torch.cat([parts[0][s][1], parts[1][s][1]])
        assert torch.equal(x, one[s][0]) and torch.equal(y, one[s][1])
        for j in range(BATCH):  # sample j of step s is the item drawn with default_rng([seed, s, j])
            item = stream_items[s * BATCH + j]
            assert np.array_equal(x[j].numpy(), item["image"]) and np.array_equal(y[j].numpy(), item["label"])
    # ... and what DataLoader workers draw (train.num_workers >= 1), so a run may switch between the two
    workers = LoaderBatches(CASES, PATCH, BATCH, 0.5, "default", 5, num_workers=1)
    try:
        got = workers.next_batch()
    finally:
        workers.close()
    assert torch.equal(got[0], one[0][0]) and torch.equal(got[1], one[0][1])
    # four ranks split it the same way
    quarters = [src.next_batch() for src in _ranks(world=4)]
    assert torch.equal(torch.cat([q[0] for q in quarters]), one[0][0])


def test_rank_streams_are_deterministic_and_distinct():
    a0, a1 = (_take(src, 3) for src in _ranks())
    b0, b1 = (_take(src, 3) for src in _ranks())
    assert all(_equal(p, q) for p, q in zip(a0 + a1, b0 + b1))  # same seed: same batches on every rank
    for s in range(3):
        assert not torch.equal(a0[s][0], a1[s][0])  # the ranks train on different patches
        assert not torch.equal(a0[s][0], a0[(s + 1) % 3][0])  # successive steps differ
    c0, _ = (_take(src, 1) for src in _ranks(seed=6))
    assert not torch.equal(c0[0][0], a0[0][0])  # another seed, another stream


def test_rank0_checkpoint_resumes_every_rank_exactly():
    full = [_take(src, 5) for src in _ranks()]
    first = _ranks()
    for src in first:
        _take(src, 2)
    assert first[0].state() == first[1].state() == {"kind": "patch_stream", "step": 2}
    saved = pickle.loads(pickle.dumps(first[0].state()))  # the checkpoint is written by rank 0 only
    for r, src in enumerate(_ranks()):
        src.set_state(saved)
        rest = _take(src, 3)
        assert all(_equal(p, q) for p, q in zip(rest, full[r][2:])), f"rank {r}"
        assert src.state() == {"kind": "patch_stream", "step": 5}


def test_checkpoint_of_an_earlier_ddp_run_continues_its_global_batch():
    """Earlier versions drew the global batch with one generator on every rank and sliced it; such a checkpoint
    continues exactly as it would have."""
    old = PatchSampler(CASES, PATCH, BATCH, 0.5, "default", 9)
    _take(old, 2)
    saved = pickle.loads(pickle.dumps(old.state()))
    expected = _take(old, 2)
    ranks = _ranks(seed=9)
    for r, src in enumerate(ranks):
        src.set_state(saved)
        got = _take(src, 2)
        part = slice(2 * r, 2 * r + 2)
        assert all(torch.equal(g[0], e[0][part]) and torch.equal(g[1], e[1][part]) for g, e in zip(got, expected))
    assert ranks[0].state() == old.state()  # and the next checkpoint continues it again


def test_mismatched_states_are_refused_with_a_named_setting():
    with pytest.raises(DataError, match=r"train\.num_workers >= 1 or under torchrun"):
        PatchSampler(CASES, PATCH, BATCH, 0.5, "none", 0).set_state({"kind": "patch_stream", "step": 2})
    workers = LoaderBatches(CASES, PATCH, BATCH, 0.5, "none", 0, num_workers=1, world=2, rank=0)
    with pytest.raises(DataError, match=r"train\.num_workers: 0"):
        workers.set_state(np.random.default_rng(0).bit_generator.state)


def test_global_batch_must_split_evenly():
    with pytest.raises(ValueError, match="divisible"):
        make_batches(CASES, PATCH, 3, 0.5, "none", 0, num_workers=0, world=2, rank=0)
    assert stream.rank_share(6, 3, 2) == range(4, 6)
