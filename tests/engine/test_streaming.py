"""Streaming data path (#14): preprocessed cases read on demand (memory maps), DataLoader workers with per-sample
seeds, per-rank shares under DDP, the old cache format converted."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from mambaseg.data.case_store import LazyCase, entry_files, foreground_indices, read_arrays, write_entry
from mambaseg.data.io import DataError
from mambaseg.data.phantom3d import make_phantom
from mambaseg.data.transforms import default_augmentation
from mambaseg.engine.stream import LoaderBatches, PatchStream, ShareSampler, draw_patch, rank_share

PATCH = (16, 16, 16)


def _cases(n: int = 4, shape=(24, 20, 18)) -> list[dict]:
    """In-memory cases as the training set held them before (image float32, label int64)."""
    out = []
    for i in range(n):
        img, lab = make_phantom(shape, rng=i)
        img = (img - img.mean()) / img.std()
        out.append({"id": f"c{i}", "image": img[None].astype(np.float32), "label": lab.astype(np.int64),
                    "mask": None, "meta": {}})
    return out


def _lazy(tmp_path, cases, compressed=False) -> list[LazyCase]:
    folder = tmp_path / ("npz" if compressed else "npy")
    folder.mkdir(exist_ok=True)
    out = []
    for c in cases:
        props = write_entry(folder, c["id"], c["image"], c["label"], {"case_id": c["id"]}, compressed)
        out.append(LazyCase(folder, c["id"], props))
    return out


# ------------------------------------------------------------------------------------------------ on-disk entries
def test_lazy_case_holds_paths_and_reads_memory_maps(tmp_path):
    cases = _cases(3)
    lazy = _lazy(tmp_path, cases)
    # nothing but paths and small props: a pickled case (what a DataLoader worker receives) is tiny next to its voxels
    assert all(len(pickle.dumps(c)) < 1000 for c in lazy)
    assert cases[0]["image"].nbytes > 20_000
    assert not any(isinstance(v, np.ndarray) for c in lazy for v in (c.props.values()))
    img, lab = lazy[0]["image"], lazy[0]["label"]
    assert isinstance(img, np.memmap) and isinstance(lab, np.memmap) and not img.flags.writeable
    np.testing.assert_array_equal(img, cases[0]["image"])
    np.testing.assert_array_equal(lab, cases[0]["label"])
    assert lab.dtype == np.int16 and lazy[0].props["label_range"] == [0, 2]
    np.testing.assert_array_equal(lazy[0]["fg"], np.flatnonzero(cases[0]["label"] > 0))
    assert lazy[0]["mask"] is None and lazy[0].get("mask") is None and lazy[0]["id"] == "c0"
    assert lazy[0].shape == cases[0]["image"].shape


def test_compressed_entry_reads_the_same_arrays(tmp_path):
    cases = _cases(2)
    plain, packed = _lazy(tmp_path, cases), _lazy(tmp_path, cases, compressed=True)
    assert entry_files(tmp_path / "npz", "c0", True)["npz"].is_file()
    assert not (tmp_path / "npz" / "c0.image.npy").exists()
    for a, b in zip(plain, packed):
        assert not isinstance(b["image"], np.memmap)  # decompressed on each read
        for key in ("image", "label", "fg"):
            np.testing.assert_array_equal(a[key], b[key])
    size = lambda folder: sum(p.stat().st_size for p in folder.iterdir())
    assert size(tmp_path / "npz") < size(tmp_path / "npy")


def test_entry_without_label(tmp_path):
    props = write_entry(tmp_path, "u", np.ones((1, 4, 4, 4), np.float32), None, {}, False)
    assert props["has_label"] is False and "label_range" not in props
    arrays = read_arrays(tmp_path, "u", props)
    assert arrays["label"] is None and arrays["image"].shape == (1, 4, 4, 4)


def test_large_label_values_stored_int32(tmp_path):
    lab = np.zeros((4, 4, 4), np.int64)
    lab[0, 0, 0] = 40000
    props = write_entry(tmp_path, "big", np.zeros((1, 4, 4, 4), np.float32), lab, {}, False)
    assert read_arrays(tmp_path, "big", props)["label"].dtype == np.int32 and props["label_range"] == [0, 40000]
    assert foreground_indices(lab).tolist() == [0]


# ------------------------------------------------------------------------------------------------ patch drawing
def test_lazy_patches_equal_in_memory_patches(tmp_path):
    """The same generator draws the same augmented patch from a memory-mapped case as from the in-RAM arrays (the
    stored foreground indices replace the label scan; int16 labels become int64 before augmenting)."""
    cases = _cases(2)
    lazy = _lazy(tmp_path, cases)
    aug = default_augmentation(3)
    for seed in range(6):
        for mem, lz in zip(cases, lazy):
            a = draw_patch(mem, PATCH, 0.7, aug, np.random.default_rng(seed))
            b = draw_patch(lz, PATCH, 0.7, aug, np.random.default_rng(seed))
            assert b["label"].dtype == np.int64 and b["image"].dtype == np.float32
            np.testing.assert_array_equal(a["image"], b["image"])
            np.testing.assert_array_equal(a["label"], b["label"])


def test_patch_larger_than_case_pads(tmp_path):
    lazy = _lazy(tmp_path, _cases(1, shape=(12, 20, 18)))
    patch = draw_patch(lazy[0], PATCH, 1.0, None, np.random.default_rng(0))
    assert patch["image"].shape == (1, *PATCH) and patch["label"].max() > 0


# ------------------------------------------------------------------------------------------------ shares and loader
def test_rank_share_splits_the_global_batch():
    assert rank_share(8, 1, 0) == range(8)
    assert [rank_share(8, 2, r) for r in range(2)] == [range(4), range(4, 8)]
    shares = [rank_share(12, 3, r) for r in range(3)]
    assert sorted(i for s in shares for i in s) == list(range(12))  # disjoint, complete
    assert all(len(s) == 4 for s in shares)
    with pytest.raises(ValueError, match="divisible"):
        rank_share(6, 4, 0)
    with pytest.raises(ValueError, match="rank"):
        rank_share(8, 2, 2)


def test_share_sampler_yields_this_ranks_indices():
    it = iter(ShareSampler(4, world=2, rank=1, start_step=3))
    assert [next(it) for _ in range(6)] == [14, 15, 18, 19, 22, 23]


def _batches(src, n):
    out = [src.next_batch() for _ in range(n)]
    if hasattr(src, "close"):
        src.close()
    return out


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for (xa, ya, _), (xb, yb, _) in zip(a, b) for x, y in ((xa, xb), (ya, yb)))


def test_workers_give_the_same_batches_for_a_seed(tmp_path):
    lazy = _lazy(tmp_path, _cases(4))
    make = lambda seed, workers: LoaderBatches(lazy, PATCH, 4, 0.5, "default", seed, num_workers=workers)
    first, again = _batches(make(7, 2), 3), _batches(make(7, 2), 3)
    assert _same(first, again)
    assert first[0][0].shape == (4, 1, *PATCH) and first[0][1].dtype == torch.int64 and first[0][2] is None
    # the per-sample seeds make the batches independent of the process that draws them
    assert _same(first, _batches(make(7, 0), 3)) and _same(first, _batches(make(7, 1), 3))
    assert not _same(first, _batches(make(8, 2), 3))
    assert not torch.equal(first[0][0], first[1][0])  # successive batches differ


def test_ranks_build_only_their_share_of_the_global_batch(tmp_path):
    """Each of 2 ranks draws half the patches; together they are the global batch of one process."""
    lazy = _lazy(tmp_path, _cases(3))
    drawn = []

    class Counting(PatchStream):
        def __getitem__(self, index):
            drawn.append(index)
            return super().__getitem__(index)

    def source(world, rank):
        src = LoaderBatches(lazy, PATCH, 4, 0.5, "light", 5, num_workers=0, world=world, rank=rank)
        src.dataset.__class__ = Counting
        return src

    whole = _batches(source(1, 0), 2)
    drawn.clear()
    parts = [_batches(source(2, r), 2) for r in range(2)]
    assert sorted(drawn) == list(range(8)) and len(drawn) == 8  # 2 steps x 4 patches, each drawn once in all
    for step in range(2):
        x = torch.cat([parts[0][step][0], parts[1][step][0]])
        y = torch.cat([parts[0][step][1], parts[1][step][1]])
        assert parts[0][step][0].shape[0] == 2
        assert torch.equal(x, whole[step][0]) and torch.equal(y, whole[step][1])


def test_resume_continues_the_stream(tmp_path):
    lazy = _lazy(tmp_path, _cases(3))
    full = _batches(LoaderBatches(lazy, PATCH, 2, 0.5, "default", 3, num_workers=2), 5)
    src = LoaderBatches(lazy, PATCH, 2, 0.5, "default", 3, num_workers=2)
    _batches(src, 3)
    state = pickle.loads(pickle.dumps(src.state()))
    assert state == {"kind": "patch_stream", "step": 3}
    resumed = LoaderBatches(lazy, PATCH, 2, 0.5, "default", 3, num_workers=1)
    resumed.set_state(state)
    assert _same(_batches(resumed, 2), full[3:])
    with pytest.raises(DataError, match="num_workers: 0"):
        resumed.set_state(np.random.default_rng(0).bit_generator.state)


def test_masks_collated_when_every_case_has_one():
    cases = _cases(2)
    for c in cases:
        c["mask"] = c["label"] >= 0
    _x, y, m = LoaderBatches(cases, PATCH, 2, 0.5, "none", 0).next_batch()
    assert m is not None and m.dtype == torch.bool and m.shape == y.shape and bool(m.all())
