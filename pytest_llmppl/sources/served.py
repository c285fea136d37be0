"""What every source answers, and the one reason every stored source refuses a call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..judge.records import Source

if TYPE_CHECKING:
    from ..measure.call import Call
    from ..measure.divergence import KLDivergence
    from ..measure.perplexity_result import PerplexityResult


WAITED = "waited"


@dataclass(frozen=True)
class Served:
    """A complete result for a call, where it came from, and what the source noted about it;
    a measured candidate also brings its KL divergence from the dense model it was measured against."""

    result: PerplexityResult
    source: Source
    notes: tuple[str, ...] = ()
    kl: KLDivergence | None = None
    waited: float = 0.0  # seconds this process waited for another xdist worker measuring it

    @property
    def wait_notes(self) -> tuple[str, ...]:
        """A record's note when its seconds were mostly a wait for another xdist worker."""
        return (f"{WAITED} {self.waited:.1f} s for another xdist worker measuring it",) if self.waited else ()


class ResultSource(Protocol):
    """One source of the chain: a result for this call, or None (``refuses`` says when it never has one)."""

    def refuses(self, call: Call) -> str | None: ...

    def serve(self, call: Call) -> Served | None: ...


def unpinned(call: Call) -> str | None:
    """A model whose identity could not be pinned down is served by no source: it is always measured."""
    return f"unpinned ({call.identity.unpinned})" if call.identity.unpinned else None
