"""What every source answers, and the one reason every stored source refuses a call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..judge.records import Source

if TYPE_CHECKING:
    from ..measure.call import Call
    from ..measure.perplexity_result import PerplexityResult


@dataclass(frozen=True)
class Served:
    """A complete result for a call, where it came from, and what the source noted about it."""

    result: PerplexityResult
    source: Source
    notes: tuple[str, ...] = ()


class ResultSource(Protocol):
    """One source of the chain: a result for this call, or None (``refuses`` says when it never has one)."""

    def refuses(self, call: Call) -> str | None: ...

    def serve(self, call: Call) -> Served | None: ...


def unpinned(call: Call) -> str | None:
    """A model whose identity could not be pinned down is served by no source: it is always measured."""
    return f"unpinned ({call.identity.unpinned})" if call.identity.unpinned else None
