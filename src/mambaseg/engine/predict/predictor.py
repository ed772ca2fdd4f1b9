"""The model behind ``mambaseg predict``: a PyTorch checkpoint or an exported ONNX file, loaded once
(:func:`load_predictor`) into one object that carries everything predict reads from the file - the forward, the
configuration and preprocessing plan it was trained with, its decision threshold."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import torch

from ...data.plans.plan import Plan2D, Plan3D, plan_from_checkpoint
from ..checkpoint import open_model_file, stored_config
from ..onnx_runner import onnx_run
from ..threshold import resolve_threshold

__all__ = ["Predictor", "load_predictor"]


class Predictor:
    """A model (PyTorch or ONNX) plus the configuration it was trained with.

    Args:
        run: callable ``(n, C, *S)`` tensor -> ``(n, K, *S)`` logits.
        ckpt: the checkpoint dict (or an ONNX export's metadata in that shape).
        source: the model file.
        device: where ``run`` computes.
        cfg: the stored config when already read (:func:`~mambaseg.engine.checkpoint.stored_config`).
    """

    def __init__(self, run, ckpt: dict, source: Path, device: torch.device, cfg=None):
        self.run = run
        # fields checked by checkpoint.check_fields (types) when the file was read; absent/None sections are {}
        ckpt = dict(ckpt, config=ckpt.get("config") or {}, data=ckpt.get("data") or {},
                    model_kwargs=ckpt.get("model_kwargs") or {})
        self.ckpt = ckpt
        self.source = source
        self.device = device
        self.config = ckpt["config"]  # the stored dict, as recorded (provenance)
        # the same through the dataclasses: every default stated once there
        self.cfg = stored_config(ckpt, source) if cfg is None else cfg
        self.data = ckpt["data"]  # what training recorded about its data (plan, labels, threshold, ...)
        self.in_channels = int(ckpt["model_kwargs"].get("in_channels", 1))
        self.spatial_dims = int(self.data.get("spatial_dims", 2))

    @cached_property
    def plan(self) -> Plan2D | Plan3D:
        """The preprocessing plan the model was trained with (:func:`mambaseg.data.plans.plan_from_checkpoint`)."""
        return plan_from_checkpoint(self.cfg, self.data, str(self.source))

    @cached_property
    def threshold(self) -> float:
        """The binary decision threshold predict cuts at (:func:`~mambaseg.engine.threshold.resolve_threshold`)."""
        return resolve_threshold(self.config, self.data)


def load_predictor(model: str | Path, device: str = "auto") -> Predictor:
    """Load a run folder / checkpoint (PyTorch) or an exported ``.onnx`` file (onnxruntime), once: the file is opened
    and checked by :func:`~mambaseg.engine.checkpoint.open_model_file`, an ONNX file then gets its onnxruntime
    session (:func:`~mambaseg.engine.onnx_runner.onnx_run`); the plan and the threshold are computed here too (a 3D
    checkpoint without a plan is refused before any input is looked at).

    Raises:
        CheckpointError / DataError / ValueError: one line naming the file (and the key).
    """
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    opened = open_model_file(model)
    if opened.meta is not None:  # an ONNX export
        pred = Predictor(onnx_run(opened.path, opened.meta), opened.ckpt, opened.path, torch.device("cpu"),
                         opened.cfg)
    else:
        net = opened.net.to(dev)

        def run(x: torch.Tensor) -> torch.Tensor:
            return net(x.to(dev)).float()

        pred = Predictor(run, opened.ckpt, opened.path, dev, opened.cfg)
    pred.plan, pred.threshold  # noqa: B018 - computed here, once: predict and its provenance read the values
    return pred
