"""The model behind ``mambaseg predict``: a PyTorch checkpoint or an exported ONNX file, with the configuration and
the preprocessing plan it was trained with."""

from __future__ import annotations

from pathlib import Path

import torch

from ...data.plans.plan import Plan2D, Plan3D, plan_from_checkpoint
from ..checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint_path, stored_config

__all__ = ["Predictor", "load_predictor"]


class Predictor:
    """A model (PyTorch or ONNX) plus the configuration it was trained with."""

    def __init__(self, run, ckpt: dict, source: Path, device: torch.device):
        self.run = run  # callable (n, C, *S) tensor -> (n, K, *S) logits
        # fields checked by checkpoint.check_fields (types) when the file was read; absent/None sections are {}
        ckpt = dict(ckpt, config=ckpt.get("config") or {}, data=ckpt.get("data") or {},
                    model_kwargs=ckpt.get("model_kwargs") or {})
        self.ckpt = ckpt
        self.source = source
        self.device = device
        self.config = ckpt["config"]  # the stored dict, as recorded (provenance)
        self.cfg = stored_config(ckpt, source)  # the same through the dataclasses: every default stated once there
        self.in_channels = int(ckpt["model_kwargs"].get("in_channels", 1))
        self.spatial_dims = int(ckpt["data"].get("spatial_dims", 2))
        self._plan = None

    @property
    def plan(self) -> Plan2D | Plan3D:
        """The preprocessing plan the model was trained with (:func:`mambaseg.data.plans.plan_from_checkpoint`)."""
        if self._plan is None:
            self._plan = plan_from_checkpoint(self.cfg, self.ckpt["data"], str(self.source))
        return self._plan


def load_predictor(model: str | Path, device: str = "auto") -> Predictor:
    """Load a run folder / checkpoint (PyTorch) or an exported ``.onnx`` file (onnxruntime)."""
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    path = resolve_checkpoint_path(model)
    if path.suffix == ".onnx":
        from ..onnx_runner import onnx_predictor

        run, ckpt = onnx_predictor(path)
        return Predictor(run, ckpt, path, torch.device("cpu"))
    ckpt = load_checkpoint(path)  # field types checked (one line naming the file and key)
    net = model_from_checkpoint(ckpt, path).to(dev)  # weights with NaN/Inf refused

    def run(x: torch.Tensor) -> torch.Tensor:
        return net(x.to(dev)).float()

    return Predictor(run, ckpt, path, dev)
