"""``tokens``: Torch-Pruning's windows, the exact token mean: ``sum CE`` over the ``seqlen - 1``
scored positions of each window."""

from __future__ import annotations

from .base import Protocol


class Tokens(Protocol):
    name = "tokens"


PROTOCOL = Tokens()
