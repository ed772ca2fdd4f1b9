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

from ..config import Config, check_device, config_to_dict
from ..losses import SegLoss
from ..models import build_model
from ..utils.atomic import append_line, atomic_path, atomic_write_text, clean_stale_temp, truncate_partial_line
from ..utils.optional import MissingDependency, require
from ..utils.progress import StatusLine, TrainProgress
from ..utils.runlock import RunLock
from ..utils.seed import seed_everything
from .checkpoint import load_checkpoint, save_checkpoint
from .data import load_dataset
from .distributed import DistContext, init_distributed
from .inference import logits_to_probs, probs_to_labels, sliding_window
from .provenance import provenance
from .stream import make_batches
from .threshold import choose_threshold, dice_curve

__all__ = ["TrainingError", "build_optimizer", "build_scheduler", "case_dice", "train", "validate"]

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


def case_dice(pred: np.ndarray, label: np.ndarray, mask: np.ndarray | None, num_classes: int) -> float:
    """Mean foreground Dice over classes present in prediction or label (inside ``mask``); NaN if none."""
    if mask is not None:
        pred, label = pred[mask], label[mask]
    scores = []
    for c in range(1, max(num_classes, 2)):
        p, g = pred == c, label == c
        denom = p.sum() + g.sum()
        if denom:
            scores.append(2 * np.logical_and(p, g).sum() / denom)
    return float(np.mean(scores)) if scores else float("nan")


@torch.no_grad()
def predict_logits(model: torch.nn.Module, image: np.ndarray, tile, overlap: float, device, tta: bool = False,
                   batch_size: int = 4, progress: bool = False, mode: str = "gaussian",
                   callback=None, stitch_device: str = "auto") -> torch.Tensor:
    """Sliding-window logits (K, *S) of one image (C, *S) on ``stitch_device`` (``infer.stitch_device``: tiles run on
    ``device``); ``callback(tiles_done, tiles)`` as in :func:`~mambaseg.engine.inference.sliding_window`."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    axes = tuple(range(x.dim() - 1)) if tta else ()
    return sliding_window(lambda b: model(b).float(), x, tile, overlap, mode, batch_size, axes, progress, callback,
                          device=device, stitch_device=stitch_device)


def validate(model, cases: list[dict], cfg: Config, device, progress=None) -> dict:
    """Full-image sliding-window validation: mean foreground Dice over cases (inside the mask when present).

    ``progress``, if given, is called as ``progress(cases_done, cases, tiles_done, tiles)`` during the tile loop.

    With ``infer.threshold: auto`` (binary) the threshold of :data:`~mambaseg.engine.threshold.THRESHOLD_GRID` with
    the best mean Dice is chosen: ``val_dice`` is the Dice at it, ``threshold`` the threshold and
    ``val_dice_at_0_5`` the Dice at 0.5."""
    model.eval()
    tile = cfg.infer.patch_size or cfg.data.patch_size
    auto = cfg.infer.threshold == "auto"
    threshold = 0.5 if auto else cfg.infer.threshold
    dices, curves = [], []
    for i, case in enumerate(cases):
        tiles_cb = None if progress is None else (lambda d, t, i=i: progress(i, len(cases), d, t))
        probs = logits_to_probs(predict_logits(model, case["image"], tile, cfg.infer.overlap, device,
                                               batch_size=cfg.infer.batch_size, callback=tiles_cb,
                                               stitch_device=cfg.infer.stitch_device))
        if auto and probs.shape[0] == 1:
            curves.append(dice_curve(probs[0].cpu().numpy(), case["label"], case.get("mask")))
        pred = probs_to_labels(probs, threshold).cpu().numpy()
        d = case_dice(pred, case["label"], case.get("mask"), cfg.data.num_classes)
        if not math.isnan(d):
            dices.append(d)
    out = {"val_dice": float(np.mean(dices)) if dices else float("nan"), "val_cases": len(cases)}
    if curves:
        t, d = choose_threshold(curves)
        if not math.isnan(d):
            out.update(val_dice=d, val_dice_at_0_5=out["val_dice"], threshold=t)
    return out


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


def _all_finite(tensors) -> bool:
    """True when every tensor is free of NaN/Inf (one host sync for the lot)."""
    flags = [torch.isfinite(t).all() for t in tensors]
    return bool(torch.stack(flags).all()) if flags else True


class StepGuard:
    """Undo a training step that went non-finite.

    :meth:`save` copies the weights, buffers (e.g. normalisation running statistics, which a forward pass
    updates) and the optimiser's tensor state into buffers allocated once; :meth:`restore` puts them back and drops
    optimiser state created by the failed step, so a skipped step leaves the model and optimiser exactly as before.
    """

    def __init__(self, module: torch.nn.Module, opt: torch.optim.Optimizer):
        self.module, self.opt = module, opt
        self._saved: list[torch.Tensor] | None = None
        self._layout: list = []
        self._extra: dict = {}

    def _live(self) -> tuple[list[torch.Tensor], list]:
        live = list(self.module.parameters()) + list(self.module.buffers())  # incl. BN num_batches_tracked
        layout = [("module", i) for i in range(len(live))]
        for p, st in self.opt.state.items():
            for k, v in st.items():
                if isinstance(v, torch.Tensor):
                    live.append(v)
                    layout.append((p, k))
        return live, layout

    def save(self) -> None:
        live, layout = self._live()
        same = (self._saved is not None and len(layout) == len(self._layout)
                and all(a[0] is b[0] and a[1] == b[1] for a, b in zip(layout, self._layout))
                and all(s.shape == t.shape and s.dtype == t.dtype for s, t in zip(self._saved, live)))
        with torch.no_grad():
            if same:
                torch._foreach_copy_(self._saved, [t.detach() for t in live])
            else:
                self._saved = [t.detach().clone() for t in live]
        self._layout = layout
        # non-tensor optimiser state (rare) by value; which parameters had state at all
        self._extra = {p: {k: v for k, v in st.items() if not isinstance(v, torch.Tensor)}
                       for p, st in self.opt.state.items()}

    def restore(self) -> None:
        if self._saved is None:
            return
        had_state = {id(p) for p in self._extra}
        for p in [p for p in self.opt.state if id(p) not in had_state]:
            del self.opt.state[p]  # state the failed step created
        live = list(self.module.parameters()) + list(self.module.buffers())
        with torch.no_grad():
            for (where, key), buf in zip(self._layout, self._saved):
                if where == "module":
                    live[key].copy_(buf)
                else:
                    cur = self.opt.state[where].get(key)
                    if isinstance(cur, torch.Tensor) and cur.shape == buf.shape and cur.dtype == buf.dtype:
                        cur.copy_(buf)
                    else:
                        self.opt.state[where][key] = buf.clone()
        for p, extra in self._extra.items():
            self.opt.state[p].update(extra)

    def model_finite(self) -> bool:
        """Weights and floating buffers all finite."""
        return _all_finite([t.detach() for t in self.module.parameters()]
                           + [b for b in self.module.buffers() if b.is_floating_point()])


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


def train(cfg: Config, run_dir: Path, resume: bool = False, progress: bool = True) -> dict:
    """Train a model as configured; returns a summary dict (best/last metrics, paths, time)."""
    check_device(cfg.train.device)  # before anything is written
    run_dir = Path(run_dir)
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
        return _train_loop(cfg, run_dir, resume, line, ctx, device)
    finally:
        line.close()  # a terminal's status line is cleared before anything else is printed
        ctx.close()


def _train_loop(cfg: Config, run_dir: Path, resume: bool, line: StatusLine, ctx: DistContext,
                device: torch.device) -> dict:
    last_path, best_path = run_dir / "checkpoint_last.pt", run_dir / "checkpoint_best.pt"
    if not resume and last_path.exists():
        raise TrainingError(f"{run_dir}: already holds a training run (checkpoint_last.pt); use --resume to continue "
                            f"it or choose another --out.")
    if cfg.train.batch_size % ctx.world:
        raise TrainingError(f"train.batch_size={cfg.train.batch_size} must be divisible by the number of processes "
                            f"({ctx.world}); it is the global batch.")
    ctx.barrier()
    if ctx.main:
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))

    train_cases, val_cases, data_info = load_dataset(cfg.data, cfg.seed, run_dir)
    in_ch = train_cases[0]["image"].shape[0]
    kwargs = dict(cfg.model.kwargs)
    kwargs.setdefault("in_channels", in_ch)
    kwargs.setdefault("out_channels", 1 if cfg.data.num_classes == 2 else cfg.data.num_classes)
    if kwargs["in_channels"] != in_ch:
        raise TrainingError(f"model.kwargs.in_channels={kwargs['in_channels']} but the images have {in_ch} "
                            f"channels ({train_cases[0]['id']}).")
    net = build_model(cfg.model.name, **kwargs).to(device)
    model = torch.nn.parallel.DistributedDataParallel(net) if ctx.enabled else net
    n_params = sum(p.numel() for p in model.parameters())
    opt = build_optimizer(model, cfg.optim)
    total_iters = cfg.train.epochs * cfg.train.iters_per_epoch
    # the budget's clock: elapsed time, or this process's CPU time (train.budget_clock cpu)
    now = time.process_time if cfg.train.budget_clock == "cpu" else time.time
    clock = {"start": now(), "offset": 0.0}
    limit_s = 60 * cfg.train.time_limit_min

    def budget_fraction() -> float:
        return (now() - clock["start"] + clock["offset"]) / limit_s

    sched = build_scheduler(opt, cfg.optim, total_iters, budget_fraction if limit_s else None)
    loss_fn = SegLoss(kwargs["out_channels"], cfg.loss.name, cfg.loss.dice_weight, cfg.loss.ce_weight,
                      cfg.loss.cldice_weight, cfg.loss.cldice_iters)
    # one process, num_workers 0: the in-process PatchSampler; else per-sample streams, this rank's share only
    # (DataLoader workers, or in process under DDP with num_workers 0)
    sampler = make_batches(train_cases, cfg.data.patch_size, cfg.train.batch_size, cfg.data.fg_prob,
                           cfg.data.augment, cfg.seed, cfg.train.num_workers, ctx.world, ctx.rank)
    amp_dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp and amp_dtype == torch.float16)

    start_epoch, best, history, elapsed0 = 0, -1.0, [], 0.0
    if resume:
        if not last_path.exists():
            raise TrainingError(f"{run_dir}: --resume given but there is no checkpoint_last.pt to resume from.")
        ck = load_checkpoint(last_path)
        net.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        if ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        torch.set_rng_state(ck["rng"]["torch"])
        sampler.set_state(ck["rng"]["sampler"])
        start_epoch, best, history = ck["epoch"] + 1, ck.get("best_val_dice", -1.0), list(ck.get("history", []))
        elapsed0 = ck.get("train_seconds", 0.0)
        if "threshold" in (ck.get("data") or {}):  # infer.threshold auto: the last validated one
            data_info["threshold"] = ck["data"]["threshold"]
        clock["offset"] = elapsed0
        # the checkpoint's history is the record: lines of an epoch interrupted after its line was written, or a line
        # torn by a kill mid-write, are dropped (atomically); without a history, only a torn last line is cut
        if ctx.main:
            if "history" in ck:
                atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
            elif truncate_partial_line(run_dir / "metrics.jsonl"):
                logger.warning("%s: removed a partial last line left by an interrupted run", run_dir / "metrics.jsonl")
        logger.info("resumed from %s at epoch %d", last_path, start_epoch)
    prov = dict(provenance(cfg.seed, device.type), world_size=ctx.world)
    if ctx.main:
        atomic_write_text(run_dir / "provenance.json", json.dumps(prov, indent=2))
    logger.info("model %s (%d parameters) on %s; %d training / %d validation cases; %s", cfg.model.name, n_params,
                device, len(train_cases), len(val_cases), json.dumps(prov["versions"]))

    def checkpoint(epoch: int, metrics: dict, elapsed: float) -> dict:
        return {
            "model_name": cfg.model.name, "model_kwargs": kwargs, "state_dict": net.state_dict(),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
            "epoch": epoch, "config": config_to_dict(cfg), "metrics": metrics, "best_val_dice": best,
            "history": history, "rng": {"torch": torch.get_rng_state(), "sampler": sampler.state()},
            "data": data_info, "provenance": prov, "train_seconds": elapsed,
        }

    t_start = now() - elapsed0
    wall_start = time.time()
    clock["start"] = now()
    bad_streak, metrics = 0, {}
    guard = StepGuard(net, opt)
    check_grads = not scaler.is_enabled()  # fp16 GradScaler skips steps with non-finite gradients itself
    bad_words = {"loss": "losses", "gradients": "gradients", "weights": "weight updates"}
    epoch = start_epoch - 1
    # time budget (train.time_limit_min) or epochs, the step within the epoch, validation cases and tiles
    status = TrainProgress(line, cfg.train.epochs, cfg.train.iters_per_epoch, limit_s, t_start, start_epoch, now)
    for epoch in range(start_epoch, cfg.train.epochs):
        model.train()
        losses, skipped = [], 0
        for step_no in range(1, cfg.train.iters_per_epoch + 1):
            x, y, m = sampler.next_batch()  # this rank's share of the global batch
            if ctx.enabled and not getattr(sampler, "per_rank", False):  # a DDP run resumed from an older version's
                # checkpoint continues its global-batch generator: each rank keeps its slice
                part = slice(ctx.rank * len(x) // ctx.world, (ctx.rank + 1) * len(x) // ctx.world)
                x, y, m = x[part], y[part], (None if m is None else m[part])
            x, y = x.to(device), y.to(device)
            m = m.to(device) if (m is not None and cfg.data.fov) else None
            guard.save()  # weights, buffers and optimiser state before this step
            with torch.autocast(device.type, dtype=amp_dtype, enabled=cfg.train.amp):
                logits = model(x)
            loss = loss_fn(logits, y, m)
            bad = "loss" if ctx.any(not torch.isfinite(loss).item()) else None
            if bad is None:
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if check_grads and ctx.any(not _all_finite([p.grad for p in net.parameters() if p.grad is not None])):
                    bad = "gradients"
            if bad is None:
                if cfg.train.grad_clip:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                scaler.step(opt)
                scaler.update()
                if ctx.any(not guard.model_finite()):
                    bad = "weights"
            if bad is not None:  # the step is undone: weights, buffers and optimiser state as before it
                guard.restore()
                opt.zero_grad(set_to_none=True)
                skipped += 1
                bad_streak += 1
                what = f"non-finite loss ({loss.item()})" if bad == "loss" else (
                    "non-finite gradients" if bad == "gradients" else "non-finite weights after the update")
                logger.warning("epoch %d: %s, step skipped (%d in a row)", epoch + 1, what, bad_streak)
                if bad_streak >= cfg.train.max_bad_steps:
                    raise TrainingError(f"{bad_streak} non-finite {bad_words[bad]} in a row at epoch {epoch + 1} "
                                        f"(train.max_bad_steps={cfg.train.max_bad_steps}); stopped. The last good "
                                        f"checkpoint is {last_path}.")
                sched.step()
                status.step(epoch, step_no)
                continue
            bad_streak = 0
            sched.step()
            losses.append(ctx.mean(loss.item()))
            status.step(epoch, step_no, float(np.mean(losses)))
        elapsed = now() - t_start
        out_of_time = ctx.broadcast(bool(cfg.train.time_limit_min and elapsed > 60 * cfg.train.time_limit_min))
        last_epoch = epoch == cfg.train.epochs - 1 or out_of_time
        metrics = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                   "skipped_steps": skipped, "lr": opt.param_groups[0]["lr"], "seconds": round(elapsed, 1)}
        if ctx.main and val_cases and ((epoch + 1) % cfg.train.val_every == 0 or last_epoch):
            metrics.update(validate(net, val_cases, cfg, device, status.validating if line.enabled else None))
            if "threshold" in metrics:  # infer.threshold auto: stored in the checkpoints, used by predict
                data_info["threshold"] = metrics["threshold"]
                logger.info("epoch %d: validation threshold %.2f (Dice %.4f; at 0.5: %.4f)", epoch + 1,
                            metrics["threshold"], metrics["val_dice"], metrics["val_dice_at_0_5"])
            score = metrics["val_dice"]
            if math.isnan(score):  # e.g. a diverged model: never the best checkpoint
                logger.warning("epoch %d: validation Dice is NaN; this epoch cannot become the best checkpoint",
                               epoch + 1)
                score = -math.inf
            elif not guard.model_finite():
                logger.warning("epoch %d: the model has non-finite weights; it cannot become the best checkpoint",
                               epoch + 1)
                score = -math.inf
            if score > best:
                best = score
                metrics["best"] = True
        history.append(metrics)
        if ctx.main:
            logger.info("epoch %d: %s", epoch + 1, json.dumps(metrics))
            ck = checkpoint(epoch, metrics, elapsed)
            if metrics.get("best") or (not val_cases and last_epoch):
                save_checkpoint(ck, best_path)
            save_checkpoint(ck, last_path)
            append_line(run_dir / "metrics.jsonl", json.dumps(metrics))  # one write: a kill tears at most this line
            _plot_progress(history, run_dir / "progress.png")
        ctx.barrier()
        if out_of_time:
            logger.info("time limit of %.1f min reached after epoch %d", cfg.train.time_limit_min, epoch + 1)
            break
    if ctx.main and not best_path.exists() and last_path.exists():
        last_ck = load_checkpoint(last_path)
        if _all_finite([v for v in last_ck["state_dict"].values() if v.is_floating_point()]):
            logger.warning("no epoch had a finite validation Dice; checkpoint_best.pt is the last epoch's model")
            save_checkpoint(last_ck, best_path)
    summary = {"run_dir": str(run_dir), "epochs_done": epoch + 1, "best_val_dice": best, "last": metrics,
               "train_seconds": round(now() - t_start, 1), "budget_clock": cfg.train.budget_clock,
               "wall_seconds_this_process": round(time.time() - wall_start, 1), "parameters": n_params,
               "checkpoint_best": str(best_path), "checkpoint_last": str(last_path)}
    if ctx.main:
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    return summary
