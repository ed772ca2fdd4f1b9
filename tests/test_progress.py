"""Progress output: a few lines in a log (non-terminal) with the time budget of a time-limited training, in-place
redraws on a terminal, steps within an epoch, validation and sliding-window tile progress with the right totals."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from mambaseg.engine.inference import compute_steps, sliding_window
from mambaseg.utils.progress import ItemProgress, StatusLine, TrainProgress, fmt_duration


class Clock:
    """A hand-driven clock."""

    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_fmt_duration():
    assert fmt_duration(0) == "0:00"
    assert fmt_duration(75.9) == "1:15"
    assert fmt_duration(3725) == "1:02:05"
    assert fmt_duration(-3) == fmt_duration(float("nan")) == "0:00"


def test_status_line_log_mode_is_throttled():
    clock, buf = Clock(), io.StringIO()
    line = StatusLine(stream=buf, clock=clock)  # StringIO is not a terminal: log mode, 30 s
    assert not line.tty
    written = []
    for step in range(600):  # 10 minutes of 1-second steps
        written.append(line.update(f"step {step}"))
        clock.t += 1.0
    lines = buf.getvalue().splitlines()
    assert "\r" not in buf.getvalue()
    assert lines[0] == "step 0"  # the first update is shown at once
    assert len(lines) == 20 and sum(written) == 20  # then one every 30 s
    assert lines[1] == "step 30"
    assert line.update("forced", force=True) and buf.getvalue().endswith("forced\n")


def test_status_line_tty_redraws_in_place_and_clears():
    clock, buf = Clock(), FakeTTY()
    line = StatusLine(stream=buf, clock=clock)
    assert line.tty
    line.update("a longer text")
    clock.t += 1
    line.update("short")
    out = buf.getvalue()
    assert "\n" not in out and out.count("\r") == 2
    assert out.endswith("\rshort" + " " * (len("a longer text") - len("short")))  # old text blanked out
    line.close()
    assert buf.getvalue().endswith("\r" + " " * len("short") + "\r")


def test_status_line_tty_log_records_start_on_a_clean_line():
    import logging

    buf = FakeTTY()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        line = StatusLine(stream=buf, clock=Clock())
        line.update("training 12%")
        logging.getLogger("mambaseg.test").warning("non-finite loss")
        assert buf.getvalue() == "\rtraining 12%" + "\r" + " " * 12 + "\r" + "WARNING non-finite loss\n"
        line.close()
        assert not handler.filters  # unhooked at close
    finally:
        root.removeHandler(handler)


def test_status_line_disabled_writes_nothing():
    buf = io.StringIO()
    line = StatusLine(enabled=False, stream=buf)
    assert not line.update("x", force=True) and not line.due()
    line.close("done")
    assert buf.getvalue() == ""


def test_train_progress_time_budget_text():
    clock, buf = Clock(), io.StringIO()
    line = StatusLine(stream=buf, clock=clock, interval=0)
    p = TrainProgress(line, epochs=1000, iters_per_epoch=10, limit_s=600, t_start=clock.t, clock=clock)
    clock.t += 12
    p.step(0, 3, loss=0.5)
    text = buf.getvalue().splitlines()[-1]
    assert "0:12 of 10:00 time budget (2%)" in text and "9:48 left" in text
    assert "epoch 1," in text and "/1000" not in text  # the epoch total means nothing under a time budget
    assert "step 3/10" in text and "loss 0.5000" in text
    p.validating(1, 4, 5, 8)
    assert buf.getvalue().splitlines()[-1].endswith("validating case 2/4, tiles 5/8")


def test_train_progress_epoch_total_when_epochs_bind():
    clock, buf = Clock(), io.StringIO()
    line = StatusLine(stream=buf, clock=clock, interval=0)
    # 2 epochs of 10 steps at 1 s/step take 20 s, far below the 10-minute budget: the epochs are the limit
    p = TrainProgress(line, epochs=2, iters_per_epoch=10, limit_s=600, t_start=clock.t, clock=clock)
    clock.t += 5
    p.step(0, 5)
    text = buf.getvalue().splitlines()[-1]
    assert "epoch 1/2, step 5/10" in text and "~0:15 left" in text


def test_train_progress_without_budget_and_resumed():
    clock, buf = Clock(), io.StringIO()
    line = StatusLine(stream=buf, clock=clock, interval=0)
    # resumed at epoch 3 (0-based) after 100 s: elapsed counts from the original start, pace from now
    p = TrainProgress(line, epochs=10, iters_per_epoch=4, limit_s=0, t_start=clock.t - 100, start_epoch=3,
                      clock=clock)
    clock.t += 2
    p.step(3, 2, loss=1.25)
    text = buf.getvalue().splitlines()[-1]
    assert "epoch 4/10, step 2/4 (35%)" in text  # (3*4+2)/40
    assert "1:42 elapsed" in text and "~0:26 left" in text  # 1 s/step, 26 steps left
    assert "loss 1.2500" in text


def test_item_progress_text():
    clock, buf = Clock(), io.StringIO()
    p = ItemProgress(StatusLine(stream=buf, clock=clock, interval=0), total=4, unit="case", clock=clock)
    p.item(0, "a")
    clock.t += 10
    p.item(1, "b")
    p.tiles(4, 8)
    last = buf.getvalue().splitlines()[-1]
    assert last.startswith("predict case 2/4 (b): tiles 4/8") and "0:10 elapsed" in last
    assert "~0:16 left" in last  # 1.5 of 4 cases in 10 s


@pytest.mark.parametrize("shape,tile,batch",
                         [((40, 33), (16, 16), 3), ((20, 20, 20), (8, 8, 8), 4), ((5, 5), (8, 8), 2)])
def test_sliding_window_callback_totals(shape, tile, batch):
    calls = []
    image = torch.rand((1,) + shape)
    out = sliding_window(lambda b: b[:, :1] * 2, image, tile, 0.5, batch_size=batch,
                         callback=lambda d, t: calls.append((d, t)))
    padded = [max(s, t) for s, t in zip(shape, tile)]
    n = int(np.prod([len(s) for s in compute_steps(padded, tile, 0.5)]))
    assert calls[0] == (0, n) and calls[-1] == (n, n)
    assert all(t == n for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert len(calls) == 1 + -(-n // batch)  # once before, then once per batch
    torch.testing.assert_close(out, image * 2)


# ------------------------------------------------------------------------------------------- wired into train
def _tiny_cfg(data, **train):
    from mambaseg.config import config_from_dict

    t = {"epochs": 1000, "iters_per_epoch": 2, "batch_size": 2, "val_every": 100000, "num_threads": 1}
    t.update(train)
    return config_from_dict({"seed": 0, "model": {"name": "unet_tiny"},
                             "data": {"layout": "drive", "root": str(data), "val_fraction": 0.34,
                                      "patch_size": [32, 32], "fov": True, "augment": "none"},
                             "train": t, "infer": {"patch_size": [32, 32], "overlap": 0.25}})


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    from mambaseg.data.synthetic import write_synthetic_drive

    return write_synthetic_drive(tmp_path_factory.mktemp("prog") / "data", n_train=3, n_test=1, size=(40, 44))


class StepClocks:
    """Fake clocks of a training: the wall clock and this process's CPU clock move only when a training step ends,
    by ``wall_per_step`` and ``cpu_per_step`` seconds, whatever the machine is doing meanwhile."""

    def __init__(self):
        self.wall, self.cpu = 1000.0, 50.0
        self.wall_per_step = self.cpu_per_step = 0.0

    def time(self) -> float:
        return self.wall

    def process_time(self) -> float:
        return self.cpu

    def step_done(self) -> None:
        self.wall += self.wall_per_step
        self.cpu += self.cpu_per_step


@pytest.fixture
def step_clocks(monkeypatch) -> StepClocks:
    """:class:`StepClocks` (standing still until the test sets their pace) as the clocks of ``engine.train`` (its
    ``time.time`` and ``time.process_time``: the time budget's and the progress texts' clock) and of its status
    line."""
    import functools

    import mambaseg.engine.train as engine_train

    clocks = StepClocks()
    monkeypatch.setattr(engine_train, "time", clocks)
    monkeypatch.setattr(engine_train, "StatusLine", functools.partial(StatusLine, clock=clocks.time))
    real_step = engine_train._Trainer._step

    def step(trainer):
        out = real_step(trainer)
        clocks.step_done()
        return out

    monkeypatch.setattr(engine_train._Trainer, "_step", step)
    return clocks


def test_time_limited_training_log_is_short_and_shows_the_budget(drive, tmp_path, capsys, step_clocks):
    from mambaseg.engine.train import train

    step_clocks.wall_per_step = 5.0  # 2 steps an epoch: 10 s an epoch
    summary = train(_tiny_cfg(drive, time_limit_min=1), tmp_path / "run")  # 60 s budget, progress on
    err = capsys.readouterr().err
    # the budget ends the run after the first epoch that ends past 60 s: epoch 7 (70 s), 14 steps
    assert summary["epochs_done"] == 7 and summary["train_seconds"] == 70.0
    lines = [x for x in err.splitlines() if x.startswith("train ")]
    assert "\r" not in err  # not a terminal: no carriage-return redraws
    # one line at once (after step 1, at 5 s), then one per 30 s: at 35 s and 65 s, not one per step or epoch
    assert len(lines) == 3, err
    assert [x.split(" time budget")[0] for x in lines] == ["train 0:05 of 1:00", "train 0:35 of 1:00",
                                                            "train 1:05 of 1:00"], err
    assert "left" in lines[0] and "epoch 1, step 1/2" in lines[0] and "epoch 7, step 1/2" in lines[2]
    assert "/1000" not in err


def test_training_progress_advances_within_the_epoch_and_validation(drive, tmp_path, capsys, monkeypatch):
    import functools

    import mambaseg.engine.train as engine_train

    # every update printed: shows what the line holds at each step
    monkeypatch.setattr(engine_train, "StatusLine", functools.partial(StatusLine, interval=0))
    engine_train.train(_tiny_cfg(drive, epochs=2, iters_per_epoch=3, val_every=1), tmp_path / "run")
    lines = capsys.readouterr().err.splitlines()
    steps = [x.split("step ")[1].split()[0].rstrip(",") for x in lines if "validating" not in x and "step " in x]
    assert steps == ["1/3", "2/3", "3/3"] * 2
    assert any("epoch 2/2, step 3/3" in x for x in lines)
    val = [x for x in lines if "validating case" in x]
    assert val and all("validating case 1/1, tiles " in x for x in val)  # 1 validation case
    assert any(x.endswith("tiles 0/4") for x in val) and any(x.endswith("tiles 4/4") for x in val)


def test_no_progress_prints_nothing(drive, tmp_path, capsys):
    from mambaseg.engine.train import train

    train(_tiny_cfg(drive, epochs=1, iters_per_epoch=2), tmp_path / "run", progress=False)
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------------------------ wired into predict (2D, 3D)
def _tiles_per_item(lines: list[str], unit: str) -> dict[str, list[tuple[int, int]]]:
    """item name -> (done, total) of every tiles line of that item."""
    out: dict[str, list[tuple[int, int]]] = {}
    for x in lines:
        if x.startswith(f"predict {unit} ") and ": tiles " in x:
            name = x.split("(", 1)[1].split(")", 1)[0]
            d, t = x.split(": tiles ", 1)[1].split()[0].split("/")
            out.setdefault(name, []).append((int(d), int(t)))
    return out


def test_predict_2d_progress_per_image_and_tiles(drive, tmp_path, capsys, monkeypatch):
    import functools

    import mambaseg.engine.predict as engine_predict
    import mambaseg.engine.predict.pipeline as predict_pipeline
    from mambaseg.config import apply_overrides
    from mambaseg.engine.train import train

    # no field-of-view rescaling: the tiles are those of the 40 x 44 image
    cfg = apply_overrides(_tiny_cfg(drive, epochs=1, iters_per_epoch=1), ["data.fov=false"])
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    inp = tmp_path / "in"
    inp.mkdir()
    for name in ("a.png", "b.png"):
        (inp / name).write_bytes(next((drive / "test" / "images").iterdir()).read_bytes())
    capsys.readouterr()
    # default interval (30 s) on clocks that stand still: a line at once only, at 0:00
    frozen = functools.partial(float, 0.0)
    monkeypatch.setattr(predict_pipeline, "StatusLine", functools.partial(StatusLine, clock=frozen))
    monkeypatch.setattr(predict_pipeline, "ItemProgress", functools.partial(ItemProgress, clock=frozen))
    engine_predict.predict(run, inp, tmp_path / "quiet", progress=True)
    quiet = [x for x in capsys.readouterr().err.splitlines() if x.startswith("predict ")]
    assert quiet == ["predict image 1/2 (a.png) | 0:00 elapsed"]
    monkeypatch.setattr(predict_pipeline, "StatusLine", functools.partial(StatusLine, interval=0))
    engine_predict.predict(run, inp, tmp_path / "out", progress=True)
    tiles = _tiles_per_item(capsys.readouterr().err.splitlines(), "image")
    n = len(compute_steps((40, 44), (32, 32), 0.25)[0]) * len(compute_steps((40, 44), (32, 32), 0.25)[1])
    assert n == 4 and tiles == {"a.png": [(0, n), (n, n)], "b.png": [(0, n), (n, n)]}  # batch_size 4: one batch


def test_predict_3d_progress_per_case_and_tiles(tmp_path, capsys, monkeypatch):
    import functools

    import mambaseg.engine.predict as engine_predict
    import mambaseg.engine.predict.pipeline as predict_pipeline
    from mambaseg.config import config_from_dict
    from mambaseg.data.synthetic import write_phantom_msd
    from mambaseg.engine.train import train
    from tests.conftest import tiny_3d

    data = write_phantom_msd(tmp_path / "task", n_cases=3, shape=(18, 20, 17))
    test = write_phantom_msd(tmp_path / "test", n_cases=2, shape=(19, 18, 17), seed=6)
    cfg = config_from_dict(tiny_3d(data, "model.name=unet3d_tiny", "data.patch_size=[8, 8, 8]",
                                   "data.val_fraction=0.34", "train.num_threads=1", "infer.batch_size=3"))
    train(cfg, tmp_path / "run", progress=False)
    monkeypatch.setattr(predict_pipeline, "StatusLine", functools.partial(StatusLine, interval=0))
    engine_predict.predict(tmp_path / "run", test / "imagesTr", tmp_path / "out", progress=True)
    tiles = _tiles_per_item(capsys.readouterr().err.splitlines(), "case")
    assert len(tiles) == 2  # "predict case k/2 (NAME): tiles d/T" for both cases
    for seq in tiles.values():
        total = seq[0][1]
        assert total > 3 and seq[0] == (0, total) and seq[-1] == (total, total)
        assert [d for d, _ in seq] == [min(k * 3, total) for k in range(len(seq))]  # every batch of 3 tiles


def test_cpu_budget_clock_counts_process_time_not_wall_time(drive, tmp_path, step_clocks):
    from mambaseg.engine.train import train

    # budget_clock cpu: a 30 s budget of CPU time at 10 s of CPU a step (20 s an epoch) ends the run after epoch 2
    # (40 s) while the wall clock stands still (a wall-clock budget would run all 5 epochs)
    step_clocks.wall_per_step, step_clocks.cpu_per_step = 0.0, 10.0
    summary = train(_tiny_cfg(drive, epochs=5, time_limit_min=0.5, budget_clock="cpu"), tmp_path / "cpu",
                    progress=False)
    assert summary["budget_clock"] == "cpu"
    assert summary["epochs_done"] == 2 and summary["train_seconds"] == 40.0
    # the default, budget_clock wall: 1 s of wall time a step, all 3 epochs within the 30 s budget (6 s), although
    # the CPU clock (10 s a step) would have ended the run after epoch 2
    step_clocks.wall_per_step = 1.0
    summary = train(_tiny_cfg(drive, epochs=3, time_limit_min=0.5), tmp_path / "wall", progress=False)
    assert summary["budget_clock"] == "wall" and summary["epochs_done"] == 3 and summary["train_seconds"] == 6.0
