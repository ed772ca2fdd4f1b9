"""Run-folder lock: while one process holds ``--out``, a second ``train`` there exits 2 with one line naming the folder
and the holder's pid, before writing anything; the lock goes with its holder (normal exit, error or kill -9)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mambaseg.cli import main
from mambaseg.data.synthetic import write_synthetic_drive
from mambaseg.utils.runlock import LOCK_NAME, RunLock, RunLockedError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fcntl lock (POSIX)")

CFG2D = """
seed: 0
model: {name: unet_tiny}
data: {layout: drive, root: "%s", val_fraction: 0.25, patch_size: [32, 32], fov: true, augment: none}
train: {epochs: 1, iters_per_epoch: 1, batch_size: 2, val_every: 1}
infer: {patch_size: [48, 48]}
"""

HOLDER = """
import sys
from mambaseg.utils.runlock import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()  # hold until stdin closes (or the process is killed)
"""


def _holder(folder: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.fixture
def cfg(tmp_path):
    data = write_synthetic_drive(tmp_path / "drive", n_train=3, n_test=1, size=(48, 52), seed=2)
    path = tmp_path / "c.yaml"
    path.write_text(CFG2D % data)
    return path


def test_second_train_refused_while_folder_locked(tmp_path, cfg, capsys):
    run = tmp_path / "run"
    proc = _holder(run)
    try:
        before = sorted(p.name for p in run.iterdir())
        code = main(["train", str(cfg), "--out", str(run), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert str(run) in err and f"pid {proc.pid}" in err, err
        assert sorted(p.name for p in run.iterdir()) == before == [LOCK_NAME]  # nothing written (no train.log)
        code = main(["train", str(cfg), "--out", str(run), "--resume", "--no-progress"])
        assert code == 2 and f"pid {proc.pid}" in capsys.readouterr().err
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0  # released when the holder ended
    assert (run / "checkpoint_last.pt").is_file()
    assert (run / LOCK_NAME).read_text() == ""  # released: no pid left behind


def test_lock_released_by_kill_9(tmp_path, cfg):
    run = tmp_path / "run"
    proc = _holder(run)
    with pytest.raises(RunLockedError, match=f"pid {proc.pid}"):
        RunLock(run).acquire()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert (run / LOCK_NAME).read_text().split()[0] == str(proc.pid)  # stale file of the dead holder...
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0  # ...does not block


def test_lock_released_after_failed_training(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(CFG2D % (tmp_path / "nowhere"))
    run = tmp_path / "run"
    assert main(["train", str(bad), "--out", str(run), "--no-progress"]) == 2
    assert "nowhere" in capsys.readouterr().err
    with RunLock(run) as lock:  # free again
        assert lock.held and (run / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    assert not lock.held


#: ``python -c PAUSED_TRAIN ARGS...``: ``mambaseg ARGS...``, which, before its first training step (the run folder
#: locked), prints "training" and waits for a line on stdin
PAUSED_TRAIN = """
import sys

import mambaseg.engine.train as T
from mambaseg.cli import main

real_step, paused = T._Trainer._step, []


def step(trainer):
    if not paused:
        paused.append(True)
        print("training", flush=True)
        sys.stdin.readline()
    return real_step(trainer)


T._Trainer._step = step
sys.exit(main(sys.argv[1:]))
"""


def test_two_trainings_at_once(tmp_path, cfg):
    """Two real `mambaseg train` processes on one --out: exactly one runs, the other exits 2 naming the holder. The
    first is held at its first step until the second has ended, so the overlap does not depend on timing."""
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    log = (tmp_path / "first.err").open("w")  # a file, not a pipe: a full pipe would stall the first training
    first = subprocess.Popen([sys.executable, "-c", PAUSED_TRAIN, "train", str(cfg), "--out", str(run),
                              "--no-progress"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                             text=True)
    try:
        assert first.stdout.readline().strip() == "training", (tmp_path / "first.err").read_text()
        second = subprocess.run([sys.executable, "-m", "mambaseg", "train", str(cfg), "--out", str(run),
                                 "--no-progress"], check=False, env=env, capture_output=True, text=True,
                                timeout=120)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1, second.stderr
        assert str(run) in lines[0] and f"pid {first.pid}" in lines[0], lines[0]
    finally:
        first.communicate(timeout=180)  # closes its stdin: go on
        log.close()
    assert first.returncode == 0, (tmp_path / "first.err").read_text()
    # it ran to its end, undisturbed: its one epoch saved
    assert (run / "checkpoint_last.pt").is_file()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
