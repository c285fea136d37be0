"""The size half of the pruning trade-off: what a model keeps, counted from its module tree.

Parameters (all, and without the input embeddings and the LM head), non-zero parameters (what
unstructured and 2:4 pruning remove: they keep shapes and zero weights; zeros are counted in the
identity's pass over the weights where it can), linear MACs per token (the sum of in x out over
linear layers: what a structurally pruned LLM saves) and the shape of every module's weight.
No forward: a result served from the committed file carries them too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

SHOWN_CHANGES = 3  # changed modules a message names before it counts the rest


@dataclass(frozen=True)
class SizeFacts:
    params: int
    body_params: int  # without input embeddings and the LM head
    nonzero: int
    linear_macs: int  # per token
    shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()  # module name -> weight shape, sorted by name

    @property
    def shapes_sha256(self) -> str:
        return hashlib.sha256(json.dumps([[n, list(s)] for n, s in self.shapes]).encode()).hexdigest()

    def share_of(self, dense: SizeFacts | None) -> float | None:
        """The share of the dense model's parameters this model keeps."""
        return self.params / dense.params if dense is not None and dense.params else None

    def changed_shapes(self, recorded: SizeFacts) -> list[tuple[str, tuple[int, ...] | None, tuple[int, ...] | None]]:
        """(module, recorded shape, this shape) for every module whose weight shape differs."""
        old, new = dict(recorded.shapes), dict(self.shapes)
        return [(n, old.get(n), new.get(n)) for n in sorted(old.keys() | new.keys()) if old.get(n) != new.get(n)]

    def to_json(self) -> dict[str, Any]:
        return {"params": self.params, "body_params": self.body_params, "nonzero": self.nonzero,
                "linear_macs": self.linear_macs, "shapes_sha256": self.shapes_sha256,
                "shapes": {n: list(s) for n, s in self.shapes}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SizeFacts:
        shapes = data.get("shapes") or {}
        return cls(int(data["params"]), int(data["body_params"]), int(data["nonzero"]), int(data["linear_macs"]),
                   tuple(sorted((str(n), tuple(int(d) for d in s)) for n, s in shapes.items())))

    def summary(self) -> dict[str, Any]:
        """The counts without the shape map (what a report row carries)."""
        out = self.to_json()
        del out["shapes"]
        return out


def validate_size(value: Any) -> SizeFacts:
    """A committed ``size`` field, or ValueError."""
    if not isinstance(value, dict):
        raise ValueError("not an object")
    for name in ("params", "body_params", "nonzero", "linear_macs"):
        if isinstance(value.get(name), bool) or not isinstance(value.get(name), int) or value[name] < 0:
            raise ValueError(f"{name} is not a count")
    shapes = value.get("shapes", {})
    if not isinstance(shapes, dict) or not all(
            isinstance(s, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in s)
            for s in shapes.values()):
        raise ValueError("shapes is not a map of module names to shapes")
    return SizeFacts.from_json(value)


def size_facts(model: Any, zeros: dict[str, int] | None = None) -> SizeFacts:
    """Count ``model``'s size.  ``zeros``: parameter name -> zero elements, from the identity's
    pass over the weights (counted here for any parameter it lacks)."""
    import torch

    zeros = zeros or {}
    params = dict(model.named_parameters())  # tied weights once
    outer: set[int] = set()
    for get in ("get_input_embeddings", "get_output_embeddings"):
        try:
            module = getattr(model, get)() if hasattr(model, get) else None
        except (AttributeError, NotImplementedError):
            module = None
        if isinstance(module, torch.nn.Module):
            outer.update(id(p) for p in module.parameters())
    total = sum(p.numel() for p in params.values())
    body = total - sum(p.numel() for p in params.values() if id(p) in outer)
    nonzero = 0
    for name, p in params.items():
        nonzero += p.numel() - _zeros(model, name, p, zeros)
    macs, shapes = 0, []
    for name, module in model.named_modules():
        weight = module._parameters.get("weight")
        if weight is None:
            weight = module._parameters.get("weight_orig")  # torch.nn.utils.prune re-parametrised
        if weight is not None:
            shapes.append((name, tuple(int(d) for d in weight.shape)))
        macs += _linear_macs(module, weight)
    return SizeFacts(total, body, nonzero, macs, tuple(sorted(shapes)))


def _zeros(model: Any, name: str, p: Any, zeros: dict[str, int]) -> int:
    """Zero elements of parameter ``name``; a pruning re-parametrisation's ``*_orig`` counts the
    weight its mask leaves."""
    import torch

    if name.endswith("_orig"):
        path, _, attr = name[:-len("_orig")].rpartition(".")
        module = model.get_submodule(path) if path else model
        masked = getattr(module, attr, None)
        if isinstance(masked, torch.Tensor) and f"{attr}_mask" in module._buffers and not masked.is_meta:
            return masked.numel() - int(torch.count_nonzero(masked.detach()))
    if name in zeros:
        return zeros[name]
    if p.is_meta:
        return 0  # offloaded and not read: its zeros are unknown, counted as kept
    return p.numel() - int(torch.count_nonzero(p.detach()))


def _linear_macs(module: Any, weight: Any) -> int:
    """in x out of a linear layer (``nn.Linear``, GPT-2's ``Conv1D``, a dynamic-quantized Linear)."""
    import torch

    if isinstance(module, torch.nn.Linear) and weight is not None:
        return int(weight.shape[0]) * int(weight.shape[1])
    name = type(module).__name__
    if name == "Conv1D" and weight is not None and weight.dim() == 2:
        return int(weight.numel())
    if name == "Linear" and isinstance(getattr(module, "in_features", None), int) and \
            isinstance(getattr(module, "out_features", None), int):
        return module.in_features * module.out_features
    return 0


def grew(now: SizeFacts, recorded: SizeFacts, tolerance: Any) -> list[tuple[str, int, int]]:
    """(what, recorded, now) for each count that grew beyond ``tolerance`` (a ``Budget``: a
    share or an absolute count; None: no guard)."""
    if tolerance is None:
        return []
    pairs = (("parameters", recorded.params, now.params), ("non-zero parameters", recorded.nonzero, now.nonzero),
             ("linear MACs per token", recorded.linear_macs, now.linear_macs))
    return [(what, old, new) for what, old, new in pairs if new > tolerance.threshold(float(old)) and new > old]
