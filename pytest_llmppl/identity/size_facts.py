"""The size half of the pruning trade-off: what a model keeps (counted in ``tensors``' pass over
its weights), as a record that travels with every result and committed entry.

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


def grew(now: SizeFacts, recorded: SizeFacts, tolerance: Any) -> list[tuple[str, int, int]]:
    """(what, recorded, now) for each count that grew beyond ``tolerance`` (a ``Budget``: a
    share or an absolute count; None: no guard)."""
    if tolerance is None:
        return []
    pairs = (("parameters", recorded.params, now.params), ("non-zero parameters", recorded.nonzero, now.nonzero),
             ("linear MACs per token", recorded.linear_macs, now.linear_macs))
    return [(what, old, new) for what, old, new in pairs if new > tolerance.threshold(float(old)) and new > old]
