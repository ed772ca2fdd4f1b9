"""Undoing a training step that went non-finite (weights, buffers and optimiser state as before it)."""

from __future__ import annotations

import torch

__all__ = ["StepGuard", "all_finite"]


def all_finite(tensors) -> bool:
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
        return all_finite([t.detach() for t in self.module.parameters()]
                           + [b for b in self.module.buffers() if b.is_floating_point()])
