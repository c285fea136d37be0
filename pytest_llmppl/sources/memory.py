"""This process's results by identity: what it measured, and what it was served earlier."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..judge.records import Source
from .served import Served, unpinned

if TYPE_CHECKING:
    from ..identity.spec import MeasurementSpec
    from ..measure.call import Call
    from ..measure.perplexity_result import PerplexityResult


class Memory:
    """``fresh_only`` (a refresh, or strict mode with a committed file): only what this process
    measured may serve, never a result it was served from an earlier run's store."""

    def __init__(self, fresh_only: bool = False):
        self.fresh_only = fresh_only
        self._held: dict[str, tuple[PerplexityResult, bool]] = {}  # key -> (result, measured here)

    refuses = staticmethod(unpinned)

    def serve(self, call: Call) -> Served | None:
        hit = self._held.get(call.identity.key)
        if hit is None or (self.fresh_only and not hit[1]):
            return None
        call.learn_windows(hit[0].n_windows_total)
        return Served(hit[0], Source.MEMORY)

    def get(self, key: str) -> PerplexityResult | None:
        """Whatever this process holds for this identity, fresh or not."""
        hit = self._held.get(key)
        return hit[0] if hit is not None else None

    def measured(self, spec: MeasurementSpec, result: PerplexityResult) -> None:
        """A complete result this process measured: it serves later calls, fresh or not."""
        if result.n_windows == spec.n_windows and not spec.unpinned:
            self._held[spec.key] = (result, True)

    def served(self, key: str, result: PerplexityResult) -> None:
        """A result served from elsewhere; kept unless this process measured one."""
        self._held.setdefault(key, (result, False))
