"""Streaming data path (#14): preprocessed cases read on demand (memory maps), DataLoader workers with per-sample
seeds, per-rank shares under DDP, the old cache format converted."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from mambaseg.data.case_store import LazyCase, entry_files, foreground_indices, read_arrays, write_entry
from mambaseg.data.errors import DataError
from mambaseg.data.synthetic import make_phantom
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
    def size(folder):
        return sum(p.stat().st_size for p in folder.iterdir())

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
    def make(seed, workers):
        return LoaderBatches(lazy, PATCH, 4, 0.5, "default", seed, num_workers=workers)

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


# ------------------------------------------------------------------------------------------------ in-process sampler
def _legacy_batch(cases, rng, aug, batch_size, fg_prob):
    """The in-process sampler's loop as it was before the streaming path (sample_patch + transform per patch)."""
    from mambaseg.data.sampling import sample_patch

    xs, ys = [], []
    for _ in range(batch_size):
        case = cases[int(rng.integers(len(cases)))]
        patch = sample_patch({"image": case["image"], "label": case["label"]}, PATCH, rng, fg_prob=fg_prob)
        patch = aug(patch, rng)
        xs.append(np.ascontiguousarray(patch["image"], dtype=np.float32))
        ys.append(np.ascontiguousarray(patch["label"], dtype=np.int64))
    return np.stack(xs), np.stack(ys)


def test_in_process_sampler_draws_the_same_batches_from_lazy_cases(tmp_path):
    from mambaseg.engine.stream import PatchSampler

    cases = _cases(3)
    lazy = _lazy(tmp_path, cases)
    mem, lz = (PatchSampler(c, PATCH, 3, 0.6, "default", 11) for c in (cases, lazy))
    rng, aug = np.random.default_rng(11), default_augmentation(3)
    for _ in range(3):
        (xm, ym, _), (xl, yl, _) = mem.next_batch(), lz.next_batch()
        xr, yr = _legacy_batch(cases, rng, aug, 3, 0.6)
        assert torch.equal(xm, xl) and torch.equal(ym, yl)
        np.testing.assert_array_equal(xm.numpy(), xr)
        np.testing.assert_array_equal(ym.numpy(), yr)
    with pytest.raises(DataError, match="num_workers"):
        mem.set_state({"kind": "patch_stream", "step": 2})


def test_make_batches_chooses_by_num_workers(tmp_path):
    from mambaseg.engine.stream import PatchSampler, make_batches

    lazy = _lazy(tmp_path, _cases(2))
    assert isinstance(make_batches(lazy, PATCH, 2, 0.5, "none", 0, num_workers=0, world=1, rank=0), PatchSampler)
    ddp0 = make_batches(lazy, PATCH, 2, 0.5, "none", 0, num_workers=0, world=2, rank=1)  # in process, own share
    assert isinstance(ddp0, LoaderBatches) and ddp0.per_rank and ddp0.num_workers == 0 and ddp0.share == range(1, 2)
    src = make_batches(lazy, PATCH, 4, 0.5, "none", 0, num_workers=1, world=2, rank=1)
    assert isinstance(src, LoaderBatches) and src.per_rank and src.share == range(2, 4)
    assert src.next_batch()[0].shape[0] == 2
    src.close()


# ------------------------------------------------------------------------------------------------ cache and dataset
def _msd(tmp_path, n=4):
    from mambaseg.data.synthetic import write_phantom_msd

    return write_phantom_msd(tmp_path / "task", n_cases=n, shape=(20, 22, 18))


def _plan(cases):
    from mambaseg.data.plans.fingerprint import fingerprint
    from mambaseg.data.plans.preprocess import plan

    return plan(fingerprint(cases), "MR", patch_size=PATCH)


def test_cache_converts_the_first_format_without_preprocessing(tmp_path, monkeypatch):
    import json

    import mambaseg.data.plans.cache as pp
    from mambaseg.data.layouts.detect3d import list_cases3d

    cases = list_cases3d(_msd(tmp_path, 2), layout="msd")
    p = _plan(cases)
    cache = pp.PreprocessCache(tmp_path / "cache")
    ref = [cache.load(c, p) for c in cases]
    folder = cache.folder(p)
    # rewrite the entries in the first format: <case>.npz (uncompressed, image + int16 label), props without format
    for c, (img, lab, props) in zip(cases, ref):
        for f in folder.glob(f"{c.case_id}.*.npy"):
            f.unlink()
        np.savez(folder / f"{c.case_id}.npz", image=img, label=lab.astype(np.int16))
        old = {k: v for k, v in props.items() if k not in ("cache_format", "storage", "label_range", "shape",
                                                            "has_label")}
        (folder / f"{c.case_id}.json").write_text(json.dumps(old))
    calls = []
    monkeypatch.setattr(pp, "preprocess_case", lambda *a: calls.append(1))  # must not be needed
    again = pp.PreprocessCache(tmp_path / "cache")
    entries = [again.entry(c, p) for c in cases]
    assert calls == [] and again.hits == 2 and again.converted == 2 and again.misses == 0
    assert not list(folder.glob("*.npz"))  # the old files are gone, the new ones are there
    for e, (img, lab, _) in zip(entries, ref):
        assert isinstance(e["image"], np.memmap) and e.props["cache_format"] == 2
        np.testing.assert_array_equal(e["image"], img)
        np.testing.assert_array_equal(e["label"], lab)
    # switching the storage converts again (compressed), still without preprocessing
    packed = pp.PreprocessCache(tmp_path / "cache", compressed=True)
    e = packed.entry(cases[0], p)
    assert packed.converted == 1 and e.props["storage"] == "npz" and (folder / f"{cases[0].case_id}.v2.npz").is_file()
    assert not (folder / f"{cases[0].case_id}.image.npy").exists()
    np.testing.assert_array_equal(e["label"], ref[0][1])


def test_damaged_cache_entries_are_recomputed(tmp_path, caplog):
    import logging

    import mambaseg.data.plans.cache as pp
    from mambaseg.data.layouts.detect3d import list_cases3d

    cases = list_cases3d(_msd(tmp_path, 2), layout="msd")
    p = _plan(cases)
    cache = pp.PreprocessCache(tmp_path / "cache")
    ref = cache.load(cases[0], p)
    folder = cache.folder(p)
    cid = cases[0].case_id
    (folder / f"{cid}.image.npy").write_bytes(b"\x93NUMPY truncated")  # a killed copy, a full disk
    (folder / f"{cid}.npz").write_bytes(b"PK not a zip")  # a stray first-format file is ignored / removed
    again = pp.PreprocessCache(tmp_path / "cache")
    with caplog.at_level(logging.WARNING):
        e = again.entry(cases[0], p)
    assert again.misses == 1 and "unreadable" in caplog.text and not (folder / f"{cid}.npz").exists()
    np.testing.assert_array_equal(e["image"], ref[0])
    # a first-format entry whose .npz is damaged is recomputed too (no crash)
    import json

    props = {k: v for k, v in e.props.items() if k != "cache_format"}
    (folder / f"{cid}.json").write_text(json.dumps(props))
    (folder / f"{cid}.npz").write_bytes(b"PK not a zip")
    third = pp.PreprocessCache(tmp_path / "cache")
    np.testing.assert_array_equal(third.entry(cases[0], p)["label"], ref[1])
    assert third.misses == 1


def test_training_dataset_holds_no_arrays(tmp_path):
    """load_dataset returns (3D) lazy entries: the training set pickles to a few KB whatever the voxels' size, the
    arrays are memory maps; validation cases are read whole (writable) when used."""
    from mambaseg.config import DataCfg
    from mambaseg.engine.data import load_dataset

    cfg = DataCfg(layout="msd", root=str(_msd(tmp_path, 5)), num_classes=3, patch_size=PATCH, val_fraction=0.2,
                  cache_dir=str(tmp_path / "cache"))
    train, val, _ = load_dataset(cfg, 0, tmp_path / "run")
    assert len(train) == 4 and len(val) == 1 and all(isinstance(c, LazyCase) for c in train + val)
    voxels = sum(c["image"].nbytes + c["label"].nbytes for c in train)
    assert voxels > 100_000 and len(pickle.dumps(train)) < 0.05 * voxels
    assert isinstance(train[0]["image"], np.memmap) and isinstance(train[0]["label"], np.memmap)
    v = val[0]["image"]
    assert not isinstance(v, np.memmap) and v.flags.writeable
    # a cached dataset is rebuilt from the entries' props: no voxel is read for the label check
    bad = DataCfg(**{**cfg.__dict__, "num_classes": 2})
    with pytest.raises(DataError, match="outside 0..1"):
        load_dataset(bad, 0, tmp_path / "run")


def test_config_keys_default_to_the_old_behaviour():
    from mambaseg.config import ConfigError, config_from_dict, config_to_dict

    cfg = config_from_dict({})
    assert cfg.train.num_workers == 0 and cfg.data.cache_compression is False
    saved = config_to_dict(cfg)
    assert "num_workers" not in saved["train"] and "cache_compression" not in saved["data"]  # config.yaml unchanged
    on = config_from_dict({"train": {"num_workers": 2}, "data": {"cache_compression": True}})
    assert config_to_dict(on)["train"]["num_workers"] == 2 and config_to_dict(on)["data"]["cache_compression"]
    for bad in (-1, 1.5, "two"):
        with pytest.raises(ConfigError, match="train.num_workers"):
            config_from_dict({"train": {"num_workers": bad}})
    with pytest.raises(ConfigError, match="data.cache_compression"):
        config_from_dict({"data": {"cache_compression": "maybe"}})


TRAIN_3D = """
seed: 4
model: {name: unet3d_tiny}
data: {layout: msd, root: "%s", num_classes: 3, patch_size: [16, 16, 16], val_fraction: 0.0, augment: light}
optim: {name: adam, lr: 1.0e-3, schedule: constant}
train: {epochs: %d, iters_per_epoch: 2, batch_size: 2, val_every: 5, num_threads: 1, num_workers: %d}
infer: {overlap: 0.0, batch_size: 2}
"""


def test_training_with_workers_is_reproducible_and_resumes_exactly(tmp_path):
    from mambaseg.config import load_config
    from mambaseg.engine.checkpoint import load_checkpoint
    from mambaseg.engine.train import train

    data = _msd(tmp_path, 4)

    def run(name, epochs, workers, resume=False):
        cfg = tmp_path / f"{name}_{epochs}.yaml"
        cfg.write_text(TRAIN_3D % (data, epochs, workers))
        train(load_config(cfg), tmp_path / name, resume=resume, progress=False)
        return load_checkpoint(tmp_path / name / "checkpoint_last.pt")

    a, b = run("a", 2, 2), run("b", 2, 2)
    assert a["rng"]["sampler"] == {"kind": "patch_stream", "step": 4}
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    run("c", 1, 2)
    c = run("c", 2, 1, resume=True)  # resumed at step 2, with another number of workers: the same batches
    assert [h["train_loss"] for h in c["history"]] == [h["train_loss"] for h in a["history"]]
    assert all(torch.equal(a["state_dict"][k], c["state_dict"][k]) for k in a["state_dict"])
    with pytest.raises(DataError, match="num_workers"):
        run("c", 3, 0, resume=True)  # drawn by workers, resumed in process: refused with one line


# ------------------------------------------------------------------------------------------------ predict / evaluate
def test_predict_3d_reads_one_case_at_a_time(tmp_path, monkeypatch):
    """Cases are read, predicted and written in turn (never all read first); a modality count that does not match
    the model is refused from the headers before anything is written."""
    import nibabel as nib

    import mambaseg.engine.predict.volumes as v3
    from mambaseg.data.layouts.detect3d import list_cases3d
    from mambaseg.engine.predict import predict_with

    task = _msd(tmp_path, 3)
    p = _plan(list_cases3d(task, layout="msd"))
    events = []
    read, write = v3._read_channels, v3.Volumes.write
    monkeypatch.setattr(v3, "_read_channels", lambda cid, files: events.append(("read", cid)) or read(cid, files))
    monkeypatch.setattr(v3.Volumes, "write", lambda self, job, case, *a: events.append(("write", case["case_id"]))
                        or write(self, job, case, *a))
    fake = tmp_path / "fake.pt"  # the predictor's source file: hashed into predict_provenance.json
    fake.write_bytes(b"not read as a checkpoint here")
    from mambaseg.engine.predict import Predictor

    pred = Predictor(lambda x: torch.zeros((x.shape[0], 3, *x.shape[2:])),
                     {"data": {"plan": p, "spatial_dims": 3}, "config": {"infer": {"overlap": 0.0}}}, str(fake),
                     torch.device("cpu"))
    written = predict_with(pred, task / "imagesTr", tmp_path / "out", progress=False)
    ids = sorted(f.name[: -len(".nii.gz")] for f in (task / "imagesTr").glob("*.nii.gz"))
    assert events == [(kind, cid) for cid in ids for kind in ("read", "write")]
    assert [w.name for w in written] == [f"{c}.nii.gz" for c in ids]
    # a second channel in the last case: refused before the first case is read
    two = tmp_path / "two"
    two.mkdir()
    for f in sorted((task / "imagesTr").glob("*.nii.gz")):
        (two / f.name).write_bytes(f.read_bytes())
    img = nib.load(f)
    nib.save(nib.Nifti1Image(np.stack([img.get_fdata()] * 2, -1), img.affine), two / f.name)
    events.clear()
    with pytest.raises(DataError, match="2 channel"):
        predict_with(pred, two, tmp_path / "out2", progress=False)
    assert events == [] and not (tmp_path / "out2").exists()


def test_evaluate_3d_scores_pair_by_pair(tmp_path, monkeypatch):
    import nibabel as nib

    import mambaseg.engine.evaluate.volumes as e3
    from mambaseg.engine.evaluate import evaluate_pairs
    from mambaseg.metrics.volumetric import evaluate_cases

    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(4):
        ref = np.zeros((12, 10, 8), np.uint8)
        ref[2:7, 3:8, 2:6] = 1
        ref[7:10, 3:6, 2:5] = 2 if i != 1 else 0  # class 2 absent from one reference
        pred = np.where(rng.random(ref.shape) < 0.1, rng.integers(0, 4, ref.shape), ref).astype(np.uint8)
        affine = np.diag([1.0, 1.5, 2.0, 1.0])
        nib.save(nib.Nifti1Image(ref, affine), ref_dir / f"c{i}.nii.gz")
        nib.save(nib.Nifti1Image(pred, affine), pred_dir / f"c{i}.nii.gz")
        pairs.append((f"c{i}", pred_dir / f"c{i}.nii.gz", ref_dir / f"c{i}.nii.gz"))
    from mambaseg.data.io.volume import read_volume_label

    loaded = [(read_volume_label(p), read_volume_label(r)) for _, p, r in pairs]  # all in memory: the reference
    expected = evaluate_cases([pa for (pa, _), _ in loaded], [ra for _, (ra, _) in loaded], None,
                              spacing=[[float(x) for x in rm["spacing"]] for _, (_, rm) in loaded],
                              case_ids=[c for c, _, _ in pairs], prediction_files=[str(p) for _, p, _ in pairs],
                              reference_files=[str(r) for _, _, r in pairs])
    sizes = []

    def one_pair_only(preds, refs, *a, **k):
        sizes.append(len(preds))
        return evaluate_cases(preds, refs, *a, **k)

    monkeypatch.setattr(e3, "evaluate_cases", one_pair_only)
    got = evaluate_pairs(pairs, None)
    assert sizes == [1, 1, 1, 1]
    assert set(got["classes"]) == {"1", "2", "3"}  # the prediction's stray label 3 counts, as evaluate_cases does
    assert got["n_cases"] == 4
    np.testing.assert_equal(got["mean"], expected["mean"])
    np.testing.assert_equal(got["foreground_mean"], expected["foreground_mean"])
    np.testing.assert_equal(got["metric_per_case"], expected["metric_per_case"])
    assert {k: v for k, v in got.items() if k not in ("mean", "foreground_mean", "metric_per_case")} == \
        {k: v for k, v in expected.items() if k not in ("mean", "foreground_mean", "metric_per_case")}


def test_fingerprint_cached_until_a_source_changes(tmp_path, monkeypatch):
    import os

    import mambaseg.data.plans.fingerprint as pp
    from mambaseg.data.layouts.detect3d import list_cases3d
    from mambaseg.data.plans.preprocess import plan

    cases = list_cases3d(_msd(tmp_path, 3), layout="msd")
    first = pp.cached_fingerprint(cases, tmp_path / "cache")
    assert first == pp.fingerprint(cases)
    real, reads = pp.load_case3d, []
    monkeypatch.setattr(pp, "load_case3d", lambda c, **k: reads.append(c.case_id) or real(c, **k))
    assert pp.cached_fingerprint(cases, tmp_path / "cache") == first and reads == []  # no volume read
    assert plan(pp.cached_fingerprint(cases, tmp_path / "cache"), "MR") == plan(first, "MR")
    st = os.stat(cases[1].images[0])
    os.utime(cases[1].images[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a changed file: computed again
    pp.cached_fingerprint(cases, tmp_path / "cache")
    assert len(reads) == 3 and len(list((tmp_path / "cache").glob("fingerprint_*.json"))) == 2


DDP_STEP = """
seed: 3
model: {name: unet_tiny}
data: {layout: drive, root: "%s", val_fraction: 0.0, patch_size: [48, 48], fov: false, augment: light}
loss: {name: ce}
optim: {name: sgd, lr: 1.0, momentum: 0.0, weight_decay: 0.0, schedule: constant}
train: {epochs: 1, iters_per_epoch: 2, batch_size: 4, num_threads: 1, grad_clip: 0, num_workers: 1}
"""




def test_ddp_ranks_with_workers_train_on_their_share(tmp_path, f64_train_script):
    """torchrun with 2 processes, each drawing only its half of the global batch in a DataLoader worker: two float64
    SGD steps equal those of one process drawing the whole batch (a rank that sliced its half again, or drew the
    other rank's half, would train on other patches and miss the tolerance by far)."""
    import subprocess
    import sys

    from mambaseg.data.synthetic import write_synthetic_drive
    from mambaseg.engine.checkpoint import load_checkpoint

    data = write_synthetic_drive(tmp_path / "data", n_train=4, n_test=1, size=(64, 72), seed=4)
    cfg, script = tmp_path / "step.yaml", f64_train_script  # conftest: train() computing in float64
    cfg.write_text(DDP_STEP % data)
    out = {}
    for nproc in (1, 2):
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] \
            if nproc > 1 else [sys.executable]
        p = subprocess.run(launch + [str(script), str(cfg), str(tmp_path / f"p{nproc}")], capture_output=True,
                           text=True, timeout=900, check=False)
        assert p.returncode == 0, p.stderr[-3000:]
        out[nproc] = load_checkpoint(tmp_path / f"p{nproc}" / "checkpoint_last.pt")
    single, ddp = out[1], out[2]
    assert ddp["provenance"]["world_size"] == 2 and ddp["rng"]["sampler"] == {"kind": "patch_stream", "step": 2}
    for k, w in single["state_dict"].items():
        assert w.dtype == torch.float64
        assert torch.allclose(ddp["state_dict"][k], w, rtol=1e-7, atol=1e-8), k
    assert abs(ddp["history"][0]["train_loss"] - single["history"][0]["train_loss"]) <= \
        1e-5 * abs(single["history"][0]["train_loss"])
