"""What :mod:`mambaseg.apps.report` shows, gathered from a run folder (config, provenance, training summary, learning
curves, the evaluation in ``test_eval/`` or another sub-folder, the predictions in ``test_pred/``) or from an
evaluation folder (``summary.json`` with ``metric_per_case``); unreadable pieces are skipped with a warning."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ...config import ConfigError, safe_yaml

__all__ = ["collect_report"]

logger = logging.getLogger("mambaseg.apps.report")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        logger.warning("report: skipping unreadable %s (%s)", path, e)
        return None


def _is_eval(summary) -> bool:
    return isinstance(summary, dict) and isinstance(summary.get("metric_per_case"), list)


def _by_name(ev: dict) -> dict:
    """A 3D summary keyed by label value (nnU-Net v2 shape, names in ``class_names``) as the report shows it: keyed by
    class name. Summaries without ``class_names`` (older 2D and 3D ones keyed by name) are returned unchanged. A 2D
    summary in nnU-Net's shape is shown by its per-image metrics: their means (``mean_2d``) and the rows without the
    per-label ``metrics``."""
    if ev.get("kind") == "2d" and isinstance(ev.get("mean_2d"), dict):
        rows = [{k: v for k, v in c.items() if k != "metrics"} if isinstance(c, dict) else c
                for c in ev["metric_per_case"]]
        return dict(ev, mean=ev["mean_2d"], metric_per_case=rows)
    names = ev.get("class_names")
    if not isinstance(names, dict) or not names:
        return ev

    def rename(d):
        return {str(names.get(k, k)): v for k, v in d.items()} if isinstance(d, dict) else d

    return dict(ev, mean=rename(ev.get("mean")),
                metric_per_case=[dict(c, metrics=rename(c.get("metrics"))) if isinstance(c, dict) else c
                                 for c in ev["metric_per_case"]])


def collect_report(path: str | Path) -> dict:
    """Gather what the report shows from a run or evaluation folder (missing pieces are None / empty).

    Raises:
        ValueError: ``path`` does not exist, or is neither a run folder (config.yaml, metrics.jsonl or a
            checkpoint) nor an evaluation folder (summary.json with ``metric_per_case``).
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: report input not found (expected a run folder or an evaluation folder).")
    if path.is_file() and path.name == "summary.json":
        path = path.parent
    if not path.is_dir():
        raise ValueError(f"{path}: expected a run folder or an evaluation folder, got a file.")
    summary = _read_json(path / "summary.json") if (path / "summary.json").is_file() else None
    is_run = any((path / n).is_file() for n in ("config.yaml", "metrics.jsonl", "checkpoint_best.pt",
                                                 "checkpoint_last.pt"))
    if not is_run and not _is_eval(summary):
        raise ValueError(f"{path}: not a run folder (config.yaml, metrics.jsonl, checkpoint_*.pt) or an evaluation "
                         f"folder (summary.json with metric_per_case).")
    info: dict = {"path": str(path), "kind": "run" if is_run else "evaluation", "config": None, "provenance": None,
                  "train_summary": None, "history": [], "evaluation": None, "eval_dir": None, "pred_dir": None}
    if is_run:
        if (path / "config.yaml").is_file():
            try:  # within the YAML alias budget: a hostile run folder cannot make the report expand without bound
                info["config"] = safe_yaml((path / "config.yaml").read_text(), str(path / "config.yaml"))
            except (OSError, UnicodeDecodeError, ConfigError) as e:
                logger.warning("report: skipping unreadable %s (%s)", path / "config.yaml", e)
        if (path / "provenance.json").is_file():
            info["provenance"] = _read_json(path / "provenance.json")
        if isinstance(summary, dict) and not _is_eval(summary):
            info["train_summary"] = summary
        if (path / "metrics.jsonl").is_file():
            for line in (path / "metrics.jsonl").read_text().splitlines():
                try:
                    info["history"].append(json.loads(line))
                except ValueError:
                    logger.warning("report: skipping a bad line of %s", path / "metrics.jsonl")
        evals = [path / "test_eval"] + sorted(d for d in path.iterdir() if d.is_dir() and d.name != "test_eval")
        for d in evals:
            s = _read_json(d / "summary.json") if (d / "summary.json").is_file() else None
            if _is_eval(s):
                info["evaluation"], info["eval_dir"] = _by_name(s), str(d)
                break
        if (path / "test_pred").is_dir():
            info["pred_dir"] = str(path / "test_pred")
    else:
        info["evaluation"], info["eval_dir"] = _by_name(summary), str(path)
        info["provenance"] = _read_json(path / "provenance.json") if (path / "provenance.json").is_file() else None
    return info
