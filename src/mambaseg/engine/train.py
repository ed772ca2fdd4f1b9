"""One training engine for 2D and 3D: a plain loop of ``train_one_epoch`` and ``validate``.

Run directory: ``config.yaml`` (resolved), ``train.log``, ``metrics.jsonl``, ``progress.png``,
``checkpoint_last.pt`` (every epoch, atomic, with optimiser/scheduler/RNG/sampler state for ``--resume``) and
``checkpoint_best.pt`` (best validation Dice).

Every file is written crash-safe: ``config.yaml``, ``provenance.json``, ``summary.json``, ``progress.png`` and the
checkpoints through a temporary name and a rename (:mod:`mambaseg.utils.atomic`); ``metrics.jsonl`` is append-only,
one unbuffered write per line, and ``--resume`` rewrites it from the checkpoint's history (a line torn by a kill is
dropped).

Non-finite training: a step whose loss, gradients or updated weights/buffers are not finite is undone (weights,
buffers and optimiser state restored from a snapshot taken before it) and counted; ``train.max_bad_steps`` such steps
in a row stop the run with the last good checkpoint. A validation Dice that is NaN never makes a checkpoint the best.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from ..config import LAYOUTS_2D, Config, ConfigError, check_device, config_to_dict
from ..data.errors import DataError
from ..losses import SegLoss
from ..models import build_model
from ..models.registry import model_entry
from ..utils.atomic import append_line, atomic_path, atomic_write_text, clean_stale_temp, truncate_partial_line
from ..utils.optional import MissingDependency, require
from ..utils.progress import StatusLine, TrainProgress
from ..utils.runlock import RunLock
from ..utils.seed import seed_everything
from .checkpoint import load_checkpoint, save_checkpoint
from .data import load_dataset
from .distributed import DistContext, init_distributed
from .provenance import provenance
from .step_guard import StepGuard, all_finite
from .stream import make_batches
from .validation import validate

__all__ = ["TrainingError", "build_optimizer", "build_scheduler", "check_model_config", "train"]

logger = logging.getLogger("mambaseg.train")


class TrainingError(RuntimeError):
    """Training cannot continue (one-line message)."""


def build_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD; parameters tagged ``_no_weight_decay`` (A_log, D) are not decayed."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if getattr(p, "_no_weight_decay", False) else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    name = cfg.name.lower()
    if name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    raise ValueError(f"optim.name must be 'adam', 'adamw' or 'sgd', got {cfg.name!r}.")


def build_scheduler(opt: torch.optim.Optimizer, cfg, total_iters: int,
                    budget_fraction=None) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration schedule: linear warm-up, then poly (1 - t)^0.9, cosine or constant.

    ``t`` is the fraction of iterations done, or — under a time budget — ``max(iterations, budget_fraction())`` so
    the schedule anneals within the budget."""
    if cfg.schedule not in ("poly", "cosine", "constant"):
        raise ValueError(f"optim.schedule must be 'poly', 'cosine' or 'constant', got {cfg.schedule!r}.")
    warm = cfg.warmup_iters

    def factor(it: int) -> float:
        if it < warm:
            return (it + 1) / warm
        t = min(1.0, (it - warm) / max(1, total_iters - warm))
        if budget_fraction is not None:
            t = min(1.0, max(t, budget_fraction()))
        if cfg.schedule == "poly":
            return (1 - t) ** 0.9
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _plot_progress(history: list[dict], path: Path) -> None:
    try:
        matplotlib = require("matplotlib", purpose=f"writing {path.name}")
        matplotlib.use("Agg")
        plt = require("matplotlib.pyplot", purpose=f"writing {path.name}")
    except MissingDependency as e:
        if not getattr(_plot_progress, "warned", False):
            logger.warning("%s It is skipped.", e)
            _plot_progress.warned = True  # type: ignore[attr-defined]
        return
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(ep, [h["train_loss"] for h in history], label="train loss", color="tab:blue")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    val = [(h["epoch"], h["val_dice"]) for h in history if h.get("val_dice") is not None]
    if val:
        ax2.plot(*zip(*val), "o-", label="val Dice", color="tab:orange")
    ax2.set_ylabel("validation Dice")
    ax2.set_ylim(0, 1)
    fig.legend(loc="upper center", ncol=2)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:  # a kill mid-write leaves the previous complete figure
            fig.savefig(tmp, dpi=80, format="png")
    finally:
        plt.close(fig)


def _setup_logging(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("mambaseg")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _trial_build(name: str, kwargs: dict) -> torch.nn.Module:
    """Build the model without allocating its weights (meta device); a real CPU build when a constructor needs
    values (``.item()``), which the meta device cannot give. The registered variant is called directly (as
    :func:`build_model` does), so nothing that wraps the training's own model building runs twice."""
    fn, _ = model_entry(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        with torch.device("meta"):
            return fn(**kwargs)
    except (RuntimeError, NotImplementedError) as e:
        if "meta" not in str(e).lower():
            raise
    return fn(**kwargs)


def check_model_config(cfg: Config) -> None:
    """Check ``model.name``, ``model.kwargs`` and the patch sizes before any data is read: the model is built once
    (on the meta device) with the configured kwargs, and ``data.patch_size`` / ``infer.patch_size`` must have one
    positive entry per spatial dim of the model (and equal the input size of a fixed-size model such as UNETR).

    Raises:
        ConfigError: one line naming the key, what was given and what the model expects.
    """
    if cfg.data.layout == "case_folders":
        from ..data.layouts.case_folders import case_folder_spec

        try:
            case_folder_spec(cfg.data.preset, cfg.data.channels, cfg.data.label, cfg.data.label_map)
        except DataError as err:
            raise ConfigError(str(err)) from None
    name = cfg.model.name
    try:
        _, sdims = model_entry(name)
    except ValueError as e:
        raise ConfigError(f"config key 'model.name': {e}") from None
    # nnunet datasets are 2D or 3D by their dataset.json: checked once the data is read
    layout_dims = 2 if cfg.data.layout in LAYOUTS_2D else None if cfg.data.layout == "nnunet" else 3
    if layout_dims is not None and sdims != layout_dims:
        raise ConfigError(f"config key 'model.name' is {name!r}, a {sdims}D model, but data.layout "
                          f"{cfg.data.layout!r} is {layout_dims}D; choose a {layout_dims}D model (mambaseg models).")
    kwargs = dict(cfg.model.kwargs)
    kwargs.setdefault("in_channels", 1)  # the data's channel count is checked against the model once it is read
    kwargs.setdefault("out_channels", 1 if cfg.data.num_classes == 2 else cfg.data.num_classes)
    try:
        net = _trial_build(name, kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config key 'model.kwargs' {dict(cfg.model.kwargs)!r} does not build model {name!r}: "
                          f"{' '.join(str(e).split())[:200]}") from None
    axes = "(H, W)" if sdims == 2 else "(D, H, W)"
    fixed = getattr(net, "img_size", None)
    for key, size in (("data.patch_size", cfg.data.patch_size), ("infer.patch_size", cfg.infer.patch_size)):
        if not size:
            continue  # (): the default (the plan's patch for 3D, data.patch_size for inference)
        if len(size) != sdims or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in size):
            raise ConfigError(f"config key '{key}' is {list(size)} but model {name!r} is {sdims}D: give {sdims} "
                              f"positive ints {axes}.")
        if fixed is not None and tuple(size) != tuple(fixed):
            raise ConfigError(f"config key '{key}' is {list(size)} but model {name!r} accepts only its img_size "
                              f"{list(fixed)}; set {key} to {list(fixed)} or model.kwargs.img_size.")


def train(cfg: Config, run_dir: Path, resume: bool = False, progress: bool = True) -> dict:
    """Train a model as configured; returns a summary dict (best/last metrics, paths, time)."""
    check_device(cfg.train.device)  # before anything is written
    check_model_config(cfg)  # before any data is read
    run_dir = Path(run_dir)
    from .outputs import check_apart

    roots = [Path(r) for r in (cfg.data.root, getattr(cfg.data, "val_root", ""))
             if r and cfg.data.layout != "synthetic_drive" and Path(r).is_dir()]
    check_apart([run_dir], in_dirs=roots, option="--out")  # the run folder never inside the training data
    run_dir.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 logs
        logging.getLogger("mambaseg").setLevel(logging.WARNING)
        return _train(cfg, run_dir, resume, False)
    # one training per run folder: a second one refuses here, before it writes anything (released at exit)
    with RunLock(run_dir):
        handler = _setup_logging(run_dir)
        try:
            for p in clean_stale_temp(run_dir):  # .checkpoint_*.tmp etc. of a killed training in this folder
                logger.info("removed %s, left by an interrupted run", p.name)
            return _train(cfg, run_dir, resume, progress)
        finally:
            logging.getLogger("mambaseg").removeHandler(handler)
            handler.close()


def _train(cfg: Config, run_dir: Path, resume: bool, progress: bool) -> dict:
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    seed_everything(cfg.seed, cfg.train.deterministic)
    ctx, device = init_distributed(_device(cfg.train.device))
    # progress on stderr (rank 0): redrawn in place on a terminal, one line per 30 s in a log
    line = StatusLine(enabled=progress and ctx.main)
    try:
        return _Trainer(cfg, run_dir, resume, line, ctx, device).run()
    finally:
        line.close()  # a terminal's status line is cleared before anything else is printed
        ctx.close()


class _Trainer:
    """One training run, as small named steps: :meth:`_prepare` (run folder, data, model, optimisation, resume,
    provenance), then per epoch :meth:`_run_epoch` (each step by :meth:`_step`, a non-finite one undone by
    :meth:`_skip_step`), :meth:`_validate`, :meth:`_save_epoch`, and :meth:`_finish`. The order in which things are
    built and random numbers drawn is the one a resumed run relies on."""

    _BAD_WORDS = {"loss": "losses", "gradients": "gradients", "weights": "weight updates"}

    def __init__(self, cfg: Config, run_dir: Path, resume: bool, line: StatusLine, ctx: DistContext,
                 device: torch.device) -> None:
        self.cfg, self.run_dir, self.line, self.ctx, self.device = cfg, run_dir, line, ctx, device
        self.last_path, self.best_path = run_dir / "checkpoint_last.pt", run_dir / "checkpoint_best.pt"
        # the budget's clock: elapsed time, or this process's CPU time (train.budget_clock cpu)
        self.now = time.process_time if cfg.train.budget_clock == "cpu" else time.time
        self.limit_s = 60 * cfg.train.time_limit_min
        self._prepare(resume)

    # ------------------------------------------------------------------------------------------------ preparation
    def _prepare(self, resume: bool) -> None:
        self._check_run_folder(resume)
        self._load_data()
        if self.ctx.main:  # after the data are read: bad data leave no config.yaml that looks like a run
            atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(config_to_dict(self.cfg), sort_keys=False))
        self._build_model()
        self._build_optimisation()
        self.start_epoch, self.best, self.history, self.elapsed0 = 0, -1.0, [], 0.0
        if resume:
            self._resume()
        self._record_provenance()

    def _check_run_folder(self, resume: bool) -> None:
        cfg, ctx = self.cfg, self.ctx
        if not resume and self.last_path.exists():
            raise TrainingError(f"{self.run_dir}: already holds a training run (checkpoint_last.pt); use --resume to "
                                f"continue it or choose another --out.")
        if cfg.train.batch_size % ctx.world:
            raise TrainingError(f"train.batch_size={cfg.train.batch_size} must be divisible by the number of "
                                f"processes ({ctx.world}); it is the global batch.")
        ctx.barrier()

    def _load_data(self) -> None:
        self.train_cases, self.val_cases, self.data_info = load_dataset(self.cfg.data, self.cfg.seed, self.run_dir)

    def _build_model(self) -> None:
        cfg = self.cfg
        in_ch = self.train_cases[0]["image"].shape[0]
        kwargs = dict(cfg.model.kwargs)
        kwargs.setdefault("in_channels", in_ch)
        kwargs.setdefault("out_channels", 1 if cfg.data.num_classes == 2 else cfg.data.num_classes)
        if kwargs["in_channels"] != in_ch:
            raise TrainingError(f"model.kwargs.in_channels={kwargs['in_channels']} but the images have {in_ch} "
                                f"channels ({self.train_cases[0]['id']}).")
        self.kwargs = kwargs
        self.net = build_model(cfg.model.name, **kwargs).to(self.device)
        self.model = torch.nn.parallel.DistributedDataParallel(self.net) if self.ctx.enabled else self.net
        self.n_params = sum(p.numel() for p in self.model.parameters())

    def _build_optimisation(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        self.opt = build_optimizer(self.model, cfg.optim)
        total_iters = cfg.train.epochs * cfg.train.iters_per_epoch
        self.clock = {"start": self.now(), "offset": 0.0}
        self.sched = build_scheduler(self.opt, cfg.optim, total_iters, self._budget_fraction if self.limit_s else None)
        self.loss_fn = SegLoss(self.kwargs["out_channels"], cfg.loss.name, cfg.loss.dice_weight, cfg.loss.ce_weight,
                               cfg.loss.cldice_weight, cfg.loss.cldice_iters)
        # one process, num_workers 0: the in-process PatchSampler; else per-sample streams, this rank's share only
        # (DataLoader workers, or in process under DDP with num_workers 0)
        self.sampler = make_batches(self.train_cases, cfg.data.patch_size, cfg.train.batch_size, cfg.data.fg_prob,
                                    cfg.data.augment, cfg.seed, cfg.train.num_workers, ctx.world, ctx.rank)
        self.amp_dtype = torch.bfloat16 if self.device.type == "cpu" else torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=cfg.train.amp and self.amp_dtype == torch.float16)

    def _budget_fraction(self) -> float:
        return (self.now() - self.clock["start"] + self.clock["offset"]) / self.limit_s

    def _resume(self) -> None:
        if not self.last_path.exists():
            raise TrainingError(f"{self.run_dir}: --resume given but there is no checkpoint_last.pt to resume from.")
        ck = load_checkpoint(self.last_path)
        self.net.load_state_dict(ck["state_dict"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        if ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        torch.set_rng_state(ck["rng"]["torch"])
        self.sampler.set_state(ck["rng"]["sampler"])
        self.start_epoch, self.best = ck["epoch"] + 1, ck.get("best_val_dice", -1.0)
        self.history = list(ck.get("history", []))
        self.elapsed0 = ck.get("train_seconds", 0.0)
        if "threshold" in (ck.get("data") or {}):  # infer.threshold auto: the last validated one
            self.data_info["threshold"] = ck["data"]["threshold"]
        self.clock["offset"] = self.elapsed0
        # the checkpoint's history is the record: lines of an epoch interrupted after its line was written, or a line
        # torn by a kill mid-write, are dropped (atomically); without a history, only a torn last line is cut
        metrics_file = self.run_dir / "metrics.jsonl"
        if self.ctx.main:
            if "history" in ck:
                atomic_write_text(metrics_file, "".join(json.dumps(h) + "\n" for h in self.history))
            elif truncate_partial_line(metrics_file):
                logger.warning("%s: removed a partial last line left by an interrupted run", metrics_file)
        logger.info("resumed from %s at epoch %d", self.last_path, self.start_epoch)

    def _record_provenance(self) -> None:
        self.prov = dict(provenance(self.cfg.seed, self.device.type), world_size=self.ctx.world)
        if self.ctx.main:
            atomic_write_text(self.run_dir / "provenance.json", json.dumps(self.prov, indent=2))
        logger.info("model %s (%d parameters) on %s; %d training / %d validation cases; %s", self.cfg.model.name,
                    self.n_params, self.device, len(self.train_cases), len(self.val_cases),
                    json.dumps(self.prov["versions"]))

    def _checkpoint(self, epoch: int, metrics: dict, elapsed: float) -> dict:
        return {
            "model_name": self.cfg.model.name, "model_kwargs": self.kwargs, "state_dict": self.net.state_dict(),
            "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(), "epoch": epoch, "config": config_to_dict(self.cfg),
            "metrics": metrics, "best_val_dice": self.best, "history": self.history,
            "rng": {"torch": torch.get_rng_state(), "sampler": self.sampler.state()},
            "data": self.data_info, "provenance": self.prov, "train_seconds": elapsed,
        }

    # ------------------------------------------------------------------------------------------------- the loop
    def run(self) -> dict:
        cfg = self.cfg
        self.t_start = self.now() - self.elapsed0
        self.wall_start = time.time()
        self.clock["start"] = self.now()
        self.bad_streak, metrics = 0, {}
        self.guard = StepGuard(self.net, self.opt)
        self.check_grads = not self.scaler.is_enabled()  # fp16 GradScaler skips non-finite gradients itself
        epoch = self.start_epoch - 1
        # time budget (train.time_limit_min) or epochs, the step within the epoch, validation cases and tiles
        self.status = TrainProgress(self.line, cfg.train.epochs, cfg.train.iters_per_epoch, self.limit_s,
                                    self.t_start, self.start_epoch, self.now)
        for epoch in range(self.start_epoch, cfg.train.epochs):
            losses, skipped = self._run_epoch(epoch)
            elapsed = self.now() - self.t_start
            out_of_time = self.ctx.broadcast(bool(cfg.train.time_limit_min and elapsed > self.limit_s))
            last_epoch = epoch == cfg.train.epochs - 1 or out_of_time
            metrics = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                       "skipped_steps": skipped, "lr": self.opt.param_groups[0]["lr"], "seconds": round(elapsed, 1)}
            if self.ctx.main and self.val_cases and ((epoch + 1) % cfg.train.val_every == 0 or last_epoch):
                self._validate(epoch, metrics)
            self.history.append(metrics)
            if self.ctx.main:
                self._save_epoch(epoch, metrics, elapsed, last_epoch)
            self.ctx.barrier()
            if out_of_time:
                logger.info("time limit of %.1f min reached after epoch %d", cfg.train.time_limit_min, epoch + 1)
                break
        return self._finish(epoch, metrics)

    def _run_epoch(self, epoch: int) -> tuple[list[float], int]:
        """The steps of one epoch; returns the losses of the good steps and how many were skipped."""
        self.model.train()
        losses, skipped = [], 0
        for step_no in range(1, self.cfg.train.iters_per_epoch + 1):
            loss, bad = self._step()
            if bad is not None:
                self._skip_step(epoch, loss, bad)
                skipped += 1
                self.sched.step()
                self.status.step(epoch, step_no)
                continue
            self.bad_streak = 0
            self.sched.step()
            losses.append(self.ctx.mean(loss.item()))
            self.status.step(epoch, step_no, float(np.mean(losses)))
        return losses, skipped

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        ctx = self.ctx
        x, y, m = self.sampler.next_batch()  # this rank's share of the global batch
        if ctx.enabled and not getattr(self.sampler, "per_rank", False):  # a DDP run resumed from an older
            # version's checkpoint continues its global-batch generator: each rank keeps its slice
            part = slice(ctx.rank * len(x) // ctx.world, (ctx.rank + 1) * len(x) // ctx.world)
            x, y, m = x[part], y[part], (None if m is None else m[part])
        x, y = x.to(self.device), y.to(self.device)
        m = m.to(self.device) if (m is not None and self.cfg.data.fov) else None
        return x, y, m

    def _step(self) -> tuple[torch.Tensor, str | None]:
        """One optimiser step; returns the loss and what was non-finite (``loss``, ``gradients``, ``weights``) or
        None. A non-finite step leaves the update to :meth:`_skip_step` to undo."""
        ctx, opt, scaler = self.ctx, self.opt, self.scaler
        x, y, m = self._next_batch()
        self.guard.save()  # weights, buffers and optimiser state before this step
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.cfg.train.amp):
            logits = self.model(x)
        loss = self.loss_fn(logits, y, m)
        if ctx.any(not torch.isfinite(loss).item()):
            return loss, "loss"
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if self.check_grads and ctx.any(not all_finite([p.grad for p in self.net.parameters()
                                                          if p.grad is not None])):
            return loss, "gradients"
        if self.cfg.train.grad_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        scaler.step(opt)
        scaler.update()
        if ctx.any(not self.guard.model_finite()):
            return loss, "weights"
        return loss, None

    def _skip_step(self, epoch: int, loss: torch.Tensor, bad: str) -> None:
        """Undo a non-finite step (weights, buffers and optimiser state as before it); stop after
        ``train.max_bad_steps`` in a row."""
        self.guard.restore()
        self.opt.zero_grad(set_to_none=True)
        self.bad_streak += 1
        what = f"non-finite loss ({loss.item()})" if bad == "loss" else (
            "non-finite gradients" if bad == "gradients" else "non-finite weights after the update")
        logger.warning("epoch %d: %s, step skipped (%d in a row)", epoch + 1, what, self.bad_streak)
        if self.bad_streak >= self.cfg.train.max_bad_steps:
            raise TrainingError(f"{self.bad_streak} non-finite {self._BAD_WORDS[bad]} in a row at epoch {epoch + 1} "
                                f"(train.max_bad_steps={self.cfg.train.max_bad_steps}); stopped. The last good "
                                f"checkpoint is {self.last_path}.")

    def _validate(self, epoch: int, metrics: dict) -> None:
        """Validation metrics into ``metrics``; marks the epoch ``best`` when its finite Dice beats the best so far."""
        metrics.update(validate(self.net, self.val_cases, self.cfg, self.device,
                                self.status.validating if self.line.enabled else None))
        if "threshold" in metrics:  # infer.threshold auto: stored in the checkpoints, used by predict
            self.data_info["threshold"] = metrics["threshold"]
            logger.info("epoch %d: validation threshold %.2f (Dice %.4f; at 0.5: %.4f)", epoch + 1,
                        metrics["threshold"], metrics["val_dice"], metrics["val_dice_at_0_5"])
        score = metrics["val_dice"]
        if math.isnan(score):  # e.g. a diverged model: never the best checkpoint
            logger.warning("epoch %d: validation Dice is NaN; this epoch cannot become the best checkpoint", epoch + 1)
            score = -math.inf
        elif not self.guard.model_finite():
            logger.warning("epoch %d: the model has non-finite weights; it cannot become the best checkpoint",
                           epoch + 1)
            score = -math.inf
        if score > self.best:
            self.best = score
            metrics["best"] = True

    def _save_epoch(self, epoch: int, metrics: dict, elapsed: float, last_epoch: bool) -> None:
        logger.info("epoch %d: %s", epoch + 1, json.dumps(metrics))
        ck = self._checkpoint(epoch, metrics, elapsed)
        if metrics.get("best") or (not self.val_cases and last_epoch):
            save_checkpoint(ck, self.best_path)
        save_checkpoint(ck, self.last_path)
        append_line(self.run_dir / "metrics.jsonl", json.dumps(metrics))  # one write: a kill tears at most this line
        _plot_progress(self.history, self.run_dir / "progress.png")

    def _finish(self, epoch: int, metrics: dict) -> dict:
        if self.ctx.main and not self.best_path.exists() and self.last_path.exists():
            last_ck = load_checkpoint(self.last_path)
            if all_finite([v for v in last_ck["state_dict"].values() if v.is_floating_point()]):
                logger.warning("no epoch had a finite validation Dice; checkpoint_best.pt is the last epoch's model")
                save_checkpoint(last_ck, self.best_path)
        summary = {"run_dir": str(self.run_dir), "epochs_done": epoch + 1, "best_val_dice": self.best,
                   "last": metrics, "train_seconds": round(self.now() - self.t_start, 1),
                   "budget_clock": self.cfg.train.budget_clock,
                   "wall_seconds_this_process": round(time.time() - self.wall_start, 1),
                   "parameters": self.n_params, "checkpoint_best": str(self.best_path),
                   "checkpoint_last": str(self.last_path)}
        if self.ctx.main:
            atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2))
        return summary
