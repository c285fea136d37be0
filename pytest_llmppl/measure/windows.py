"""Which token spans a measurement scores: the protocol's windows (``protocols/``), checked, and the
evenly spread subset of them that ``max_windows`` evaluates (plain integers, no torch)."""

from __future__ import annotations

from .protocols import Protocol, Window, get
from .protocols.lm_eval import rolling_windows as plan_rolling_windows

__all__ = ["Window", "plan_evaluation", "plan_rolling_windows", "plan_windows", "rules_of",
           "spread_subset", "window_weight"]


def rules_of(protocol: str | Protocol) -> Protocol:
    """The protocol itself, given it or its name."""
    return protocol if isinstance(protocol, Protocol) else get(protocol)


def plan_windows(n_tokens: int, seqlen: int, protocol: str | Protocol = "torch-pruning",
                 stride: int | None = None, cap: int | None = None,
                 doc_lengths: list[int] | None = None) -> list[Window]:
    """All windows of a token stream of length ``n_tokens`` (the first ``cap``, if given; before
    any subset), unchecked; ``lm-eval`` needs the stream's ``doc_lengths``."""
    return rules_of(protocol).plan(n_tokens, seqlen, stride, cap, doc_lengths, check=False)


def spread_subset(n_total: int, k: int | None) -> list[int]:
    """``k`` evenly spread, deterministic window indices out of ``n_total`` (all if k is None or >= n)."""
    if k is None or k >= n_total:
        return list(range(n_total))
    if k < 1:
        raise ValueError(f"max_windows must be at least 1, got {k}")
    return [((2 * i + 1) * n_total) // (2 * k) for i in range(k)]


def window_weight(window: Window, protocol: str | Protocol) -> int:
    """The denominator share of a window: seqlen (torch-pruning) or its scored tokens."""
    return rules_of(protocol).weight(window)


def plan_evaluation(n_tokens: int, seqlen: int, protocol: str | Protocol, stride: int | None,
                    first_windows: int | None, doc_lengths: list[int] | None, max_windows: int | None,
                    windows: list[Window] | None = None) -> tuple[Protocol, list[Window], list[int]]:
    """The protocol, every window (``Protocol.plan``: checked; unless the caller planned them already) and
    the ones to evaluate (``spread_subset``): what the engine asks, in one visit."""
    rules = rules_of(protocol)
    if windows is None:
        windows = rules.plan(n_tokens, seqlen, stride, first_windows, doc_lengths)
    return rules, windows, spread_subset(len(windows), max_windows)
