"""Checkpoints: atomic writes, safe loading (a pickled object is refused and never runs), clear errors."""

from __future__ import annotations

import os
import pickle
import shlex

import pytest
import torch

from mambaseg.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


class _Evil:
    """A pickle payload that creates ``marker`` (an absolute path) when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def test_the_payload_runs_when_unpickled(tmp_path):
    """The control: plain pickle runs the payload, so the checks below can fail."""
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(_Evil(marker)))
    assert marker.exists()


def _good(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint({"model_name": "x", "model_kwargs": {"a": 1}, "state_dict": {"w": torch.ones(2)}}, path)
    return path


def test_roundtrip_and_no_temp_files(tmp_path):
    path = _good(tmp_path)
    ck = load_checkpoint(path)
    assert ck["model_kwargs"] == {"a": 1} and torch.equal(ck["state_dict"]["w"], torch.ones(2))
    assert ck["checkpoint_version"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]


def test_pickled_object_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "PWNED_BY_CHECKPOINT"
    path = tmp_path / "evil.pt"
    torch.save({"model_name": "x", "state_dict": {}, "payload": _Evil(marker)}, path)
    with pytest.raises(CheckpointError, match="pickled object"):
        load_checkpoint(path)
    assert not marker.exists()


def test_raw_pickle_file_is_refused(tmp_path):
    marker = tmp_path / "PWNED_BY_CHECKPOINT"
    path = tmp_path / "raw.pt"
    path.write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(CheckpointError, match="not a torch zip"):
        load_checkpoint(path)
    assert not marker.exists()


def test_truncated_empty_missing(tmp_path):
    path = _good(tmp_path)
    data = path.read_bytes()
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc.pt"):
        load_checkpoint(trunc)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(empty)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_failed_write_keeps_previous_file(tmp_path):
    path = _good(tmp_path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="_Unsaveable is not a tensor"):
        save_checkpoint({"model_name": "x", "state_dict": {}, "bad": _Unsaveable()}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]


class _Unsaveable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle")


def test_slim_checkpoint_drops_training_state_and_refuses_overwrite(tmp_path):
    from mambaseg.engine.checkpoint import slim_checkpoint

    src = tmp_path / "full.pt"
    save_checkpoint({"model_name": "x", "model_kwargs": {}, "state_dict": {"w": torch.ones(3)},
                     "optimizer": {"state": {0: {"exp_avg": torch.ones(1000)}}}, "rng": {"torch": torch.ones(5)},
                     "config": {"seed": 1}}, src)
    dst = slim_checkpoint(src, tmp_path / "ship.pt", extra={"test_metrics": {"dice": 0.5}})
    ck = load_checkpoint(dst)
    assert "optimizer" not in ck and "rng" not in ck and ck["test_metrics"] == {"dice": 0.5}
    assert torch.equal(ck["state_dict"]["w"], torch.ones(3)) and ck["config"] == {"seed": 1}
    with pytest.raises(CheckpointError, match="already exists"):
        slim_checkpoint(src, dst)


def test_untrusted_model_kwargs_are_checked_on_meta_before_allocation(tmp_path):
    """A small checkpoint declaring huge widths is refused from shapes alone, naming the file (nothing of the
    declared size is allocated: widths of 10^6 would need terabytes)."""
    import resource

    from mambaseg.engine.checkpoint import model_from_checkpoint
    from mambaseg.models import build_model

    small = build_model("unet_tiny", in_channels=1, out_channels=2)
    ck = {"model_name": "unet_tiny", "model_kwargs": {"in_channels": 1, "out_channels": 2,
                                                       "widths": [10**6] * 5}, "state_dict": small.state_dict()}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match=r"bad\.pt.*do not match|bad\.pt.*cannot rebuild"):
        model_from_checkpoint(ck, tmp_path / "bad.pt")
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) < 512 * 1024  # KiB: < 0.5 GiB more
    for bad_kwargs, bad_state, what in ((["x"], small.state_dict(), "model_kwargs"), ({}, [1, 2], "state_dict")):
        with pytest.raises(CheckpointError, match=what):
            model_from_checkpoint({"model_name": "unet_tiny", "model_kwargs": bad_kwargs, "state_dict": bad_state},
                                  tmp_path / "bad.pt")
    good = model_from_checkpoint({"model_name": "unet_tiny", "model_kwargs": {"in_channels": 1, "out_channels": 2},
                                  "state_dict": small.state_dict()}, tmp_path / "good.pt")
    assert sum(p.numel() for p in good.parameters()) == sum(p.numel() for p in small.parameters())
