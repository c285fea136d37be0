"""``torch-pruning`` (the default): Torch-Pruning's, SparseGPT's and Wanda's evaluation.
``n // seqlen`` disjoint windows, the tail dropped; a window counts ``mean CE x seqlen`` over
``seqlen`` tokens, so PPL = ``exp(sum(NLL) / (nsamples x seqlen))``."""

from __future__ import annotations

from .base import Protocol, Window


class TorchPruning(Protocol):
    name = "torch-pruning"

    def weight(self, window: Window) -> int:
        return window.length

    def window_nll(self, total: float, window: Window) -> float:
        return total / (window.length - 1) * window.length

    def scored_tokens(self, weights: list[float]) -> int:
        return int(sum(weights)) - len(weights)  # a window of seqlen scores seqlen - 1 positions


PROTOCOL = TorchPruning()
