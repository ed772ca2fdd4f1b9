"""Training batches from a ``torch.utils.data`` pipeline: worker processes, per-rank shares, per-sample seeds.

``train.num_workers: 0`` (default) in one process keeps the in-process :class:`PatchSampler`
(one numpy Generator draws every batch in order) - the batches of earlier versions, bit for bit. Every other case uses
:class:`LoaderBatches`: ``train.num_workers: N >= 1``, and ``train.num_workers: 0`` under DDP, where each rank builds
only its share in its own process, with no worker processes (earlier versions drew the whole global batch on every
rank and kept a slice):

- sample ``j`` of global batch ``s`` is drawn with its own generator ``default_rng([seed, s, j])`` (case choice,
  patch position, augmentation), so a batch does not depend on which process draws it: the same for any
  ``num_workers`` >= 1, for any number of DDP ranks (rank ``r`` draws only ``j`` in :func:`rank_share`), and after
  ``--resume`` (the checkpoint stores how many batches were consumed; the loader restarts there);
- a ``DataLoader`` with ``num_workers`` processes builds the batches (crop, augmentation) while the model trains;
  workers get ``torch.Generator``-derived seeds (``worker_init_fn`` seeds numpy/random from them and limits each
  worker to one thread), although no draw depends on them;
- cases may be :class:`~mambaseg.data.case_store.LazyCase` (3D, memory-mapped): workers receive paths, not voxels.

The two modes draw different (equally distributed) batches for the same seed. Per-rank shares cannot reproduce the
single generator's batches: the generator's position after a patch depends on the data (rejection sampling in
``integers``, data-dependent branches of the augmentation), so rank ``r`` could find its starting state only by
drawing the patches of the ranks before it - the cost this avoids. Instead every DDP rank draws the samples of the
per-sample stream above, so the union over ranks of one step is the batch that one process draws with
``train.num_workers >= 1``; the checkpoint's state (batches consumed) is the same on every rank, so the rank-0
checkpoint resumes every rank exactly. A checkpoint of a DDP run of an earlier version (one generator's state) is
continued as it was drawn: the global batch on every rank, each keeping its slice.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data.errors import DataError
from ..data.sampling import sample_patch
from ..data.transforms import default_augmentation

__all__ = ["LoaderBatches", "PatchSampler", "PatchStream", "ShareSampler", "collate_patches", "draw_patch",
           "make_batches", "rank_share", "worker_init"]

STATE_KIND = "patch_stream"


def rank_share(batch_size: int, world: int, rank: int) -> range:
    """Positions of the global batch that ``rank`` of ``world`` processes builds and trains on: contiguous,
    ``batch_size // world`` each (the same slice DDP training has always used)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} must be in [0, {world}) with world >= 1")
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} must be divisible by the number of processes {world}")
    return range(rank * batch_size // world, (rank + 1) * batch_size // world)


def draw_patch(case, patch_size: Sequence[int], fg_prob: float, transform, rng: np.random.Generator) -> dict:
    """One augmented, foreground-biased patch of ``case`` (an in-memory dict or a lazy case): float32 image, int64
    label, bool mask when the case has one. Lazy cases' memory maps are released when this returns."""
    sample = {"image": case["image"], "label": case["label"]}
    if case.get("mask") is not None:
        sample["mask"] = case["mask"]
    patch = sample_patch(sample, patch_size, rng, fg_prob=fg_prob, fg_indices=case.get("fg"))
    if patch.get("label") is not None and patch["label"].dtype != np.int64:
        patch["label"] = patch["label"].astype(np.int64)  # stored int16: the transforms see what they always saw
    if transform is not None:
        patch = transform(patch, rng)
    out = {"image": np.ascontiguousarray(patch["image"], dtype=np.float32),
           "label": np.ascontiguousarray(patch["label"], dtype=np.int64)}
    if "mask" in patch:
        out["mask"] = np.ascontiguousarray(patch["mask"], dtype=bool)
    return out


class PatchStream(Dataset):
    """Map-style dataset of patches: item ``s * batch_size + j`` is sample ``j`` of global batch ``s``, drawn with
    ``np.random.default_rng([seed, s, j])``.

    Args:
        cases: training cases (dicts with arrays, or lazy cases reading on demand).
        patch_size: spatial patch size.
        batch_size: the global batch size.
        fg_prob: probability of centring a patch on foreground.
        augment: ``default`` | ``light`` | ``none`` | ``strong_fundus``.
        seed: the run's seed.
    """

    def __init__(self, cases: Sequence, patch_size, batch_size: int, fg_prob: float, augment: str, seed: int):
        if not cases:
            raise DataError("no training cases to draw patches from.")
        self.cases = list(cases)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.batch_size = int(batch_size)
        self.fg_prob = float(fg_prob)
        self.seed = int(seed)
        dims = len(_shape(self.cases[0])) - 1
        if len(self.patch_size) != dims:
            raise DataError(f"data.patch_size {self.patch_size} has {len(self.patch_size)} axes but the images "
                            f"are {dims}D.")
        self.transform = None if augment == "none" else default_augmentation(dims, strength=augment)

    def __getitem__(self, index: int) -> dict:
        step, j = divmod(int(index), self.batch_size)
        rng = np.random.default_rng([self.seed, step, j])
        case = self.cases[int(rng.integers(len(self.cases)))]
        return draw_patch(case, self.patch_size, self.fg_prob, self.transform, rng)


def _shape(case) -> tuple[int, ...]:
    shape = getattr(case, "shape", None)  # lazy cases know it from their props
    return tuple(shape) if shape is not None else tuple(case["image"].shape)


class ShareSampler(Sampler[int]):
    """Endless indices of this rank's share of every global batch from ``start_step`` on:
    ``s * batch_size + j`` for ``s = start_step, start_step + 1, ...`` and ``j`` in :func:`rank_share`."""

    def __init__(self, batch_size: int, world: int = 1, rank: int = 0, start_step: int = 0):
        self.batch_size = int(batch_size)
        self.share = rank_share(self.batch_size, world, rank)
        self.start_step = int(start_step)

    def __iter__(self) -> Iterator[int]:
        step = self.start_step
        while True:
            for j in self.share:
                yield step * self.batch_size + j
            step += 1


def collate_patches(items: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(image (B, C, *P) float32, label (B, *P) int64, mask (B, *P) bool | None)``; the mask only when every
    patch has one (as :class:`PatchSampler` does)."""
    x = torch.from_numpy(np.stack([it["image"] for it in items]))
    y = torch.from_numpy(np.stack([it["label"] for it in items]))
    m = torch.from_numpy(np.stack([it["mask"] for it in items])) if all("mask" in it for it in items) else None
    return x, y, m


def worker_init(worker_id: int) -> None:
    """DataLoader worker set-up: one thread, and numpy/random seeded from the worker's torch seed (which the
    loader's generator fixes), for any code that uses the global generators."""
    torch.set_num_threads(1)
    info = torch.utils.data.get_worker_info()
    seed = (info.seed if info is not None else worker_id) % 2**32
    np.random.seed(seed)
    random.seed(seed)


class LoaderBatches:
    """Batches of this rank's share of :class:`PatchStream` (the interface of
    :class:`PatchSampler`: ``next_batch``, ``state``, ``set_state``; plus ``close``): from a
    ``DataLoader`` with ``num_workers`` worker processes, or, for ``num_workers`` 0, drawn in this process (the same
    batches).

    Args:
        cases, patch_size, batch_size, fg_prob, augment, seed: as :class:`PatchStream` (``batch_size`` global).
        num_workers: DataLoader worker processes (0: in this process, same batches).
        world, rank: DDP layout; this object yields the ``batch_size // world`` patches of ``rank``.
        prefetch: batches prepared ahead per worker.
    """

    per_rank = True  # next_batch returns this rank's part already (the training loop must not slice it)

    def __init__(self, cases: Sequence, patch_size, batch_size: int, fg_prob: float, augment: str, seed: int,
                 num_workers: int = 0, world: int = 1, rank: int = 0, prefetch: int = 2):
        self.dataset = PatchStream(cases, patch_size, batch_size, fg_prob, augment, seed)
        self.share = rank_share(batch_size, world, rank)
        self.world, self.rank = world, rank
        self.num_workers = int(num_workers)
        self.prefetch = int(prefetch)
        self.seed = int(seed)
        self.augment = augment
        self.step = 0  # global batches consumed
        self._it = None
        self._legacy = None  # a PatchSampler continuing an earlier version's DDP checkpoint (see set_state)

    def _loader(self) -> DataLoader:
        sampler = ShareSampler(self.dataset.batch_size, self.world, self.rank, self.step)
        gen = torch.Generator()
        gen.manual_seed(self.seed + 1_000_003 * self.rank + self.step)
        kw = {"prefetch_factor": self.prefetch, "worker_init_fn": worker_init, "persistent_workers": False} \
            if self.num_workers else {}
        return DataLoader(self.dataset, batch_size=len(self.share), sampler=sampler, num_workers=self.num_workers,
                          collate_fn=collate_patches, generator=gen, **kw)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if self._legacy is not None:
            x, y, m = self._legacy.next_batch()
            part = slice(self.share.start, self.share.stop)
            return x[part], y[part], None if m is None else m[part]
        if self.num_workers == 0:  # in this process: the DataLoader's batch without its machinery
            batch = collate_patches([self.dataset[self.step * self.dataset.batch_size + j] for j in self.share])
        else:
            if self._it is None:
                self._it = iter(self._loader())
            batch = next(self._it)
        self.step += 1
        return batch

    def state(self) -> dict:
        """``{'kind': 'patch_stream', 'step': global batches consumed}``: the same on every rank."""
        if self._legacy is not None:
            return self._legacy.state()
        return {"kind": STATE_KIND, "step": self.step}

    def set_state(self, state: dict) -> None:
        """Continue after ``state['step']`` consumed batches (a checkpoint's ``rng.sampler``). With ``num_workers``
        0, a one-generator state (a checkpoint of ``train.num_workers: 0`` in one process, or of a DDP run of an
        earlier version) is continued as it was drawn: the global batch, of which this rank keeps its share."""
        if isinstance(state, dict) and "bit_generator" in state and self.num_workers == 0:

            self._legacy = PatchSampler(self.dataset.cases, self.dataset.patch_size, self.dataset.batch_size,
                                        self.dataset.fg_prob, self.augment, self.seed)
            self._legacy.set_state(state)
            return
        if not isinstance(state, dict) or state.get("kind") != STATE_KIND:
            raise DataError("the checkpoint's batches were drawn in process (train.num_workers: 0); resume it with "
                            "train.num_workers: 0, or start a new run.")
        self.close()
        self._legacy = None
        self.step = int(state["step"])

    def close(self) -> None:
        """Stop the worker processes (a later ``next_batch`` starts new ones where this left off)."""
        it, self._it = self._it, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()


def make_batches(cases: Sequence, patch_size, batch_size: int, fg_prob: float, augment: str, seed: int,
                 num_workers: int = 0, world: int = 1, rank: int = 0):
    """The training loop's batch source: :class:`PatchSampler` for ``num_workers == 0`` in
    one process (``world == 1``; the batches of earlier versions), otherwise :class:`LoaderBatches`, which builds only
    this rank's share (``per_rank``): in ``num_workers`` worker processes, or in this process for ``num_workers`` 0
    under DDP."""
    if num_workers <= 0 and world == 1:

        return PatchSampler(list(cases), patch_size, batch_size, fg_prob, augment, seed)
    return LoaderBatches(cases, patch_size, batch_size, fg_prob, augment, seed, max(int(num_workers), 0), world, rank)


class PatchSampler:
    """Draws batches of augmented, foreground-biased patches; all randomness comes from one numpy Generator
    whose state is saved in checkpoints (so a resumed run draws the same patches). The in-process batch source of
    ``train.num_workers: 0`` in one process; cases may be in-memory dicts or lazy (memory-mapped) cache entries,
    which give the same patches. See :mod:`mambaseg.engine.stream` for the DataLoader path and DDP ranks' shares.

    Args:
        cases: training cases.
        patch_size: spatial patch size.
        batch_size: patches per batch.
        fg_prob: probability of centring a patch on foreground.
        augment: ``default`` | ``light`` | ``none`` | ``strong_fundus``.
        seed: seed of the generator.
    """

    def __init__(self, cases: list[dict], patch_size, batch_size: int, fg_prob: float, augment: str, seed: int):
        self.cases = cases
        self.patch_size = tuple(int(p) for p in patch_size)
        self.batch_size = batch_size
        self.fg_prob = fg_prob
        dims = cases[0]["image"].ndim - 1
        if len(self.patch_size) != dims:
            raise DataError(f"data.patch_size {self.patch_size} has {len(self.patch_size)} axes but the images "
                            f"are {dims}D.")
        self.transform = None if augment == "none" else default_augmentation(dims, strength=augment)
        self.rng = np.random.default_rng(seed)

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        if not isinstance(state, dict) or "bit_generator" not in state:
            raise DataError("the checkpoint's batches were drawn per sample (train.num_workers >= 1, or several DDP "
                            "processes); resume it with train.num_workers >= 1 or under torchrun, or start a new run.")
        self.rng.bit_generator.state = state

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        imgs, labels, masks = [], [], []
        for _ in range(self.batch_size):
            case = self.cases[int(self.rng.integers(len(self.cases)))]
            patch = draw_patch(case, self.patch_size, self.fg_prob, self.transform, self.rng)
            imgs.append(patch["image"])
            labels.append(patch["label"])
            if "mask" in patch:
                masks.append(patch["mask"])
        mask = torch.from_numpy(np.stack(masks)) if len(masks) == len(imgs) else None
        return torch.from_numpy(np.stack(imgs)), torch.from_numpy(np.stack(labels)), mask
