"""What every protocol answers; the defaults are disjoint windows of ``seqlen`` tokens (the tail
dropped), every position after a window's first scored, a window's loss the sum of its CE."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ...errors import CorpusError


@dataclass(frozen=True)
class Window:
    """``[start, end)`` of the token stream; offsets ``score_from .. end-start-1`` are scored
    (offset j is predicted from offsets < j; offset 0 never is)."""

    start: int
    end: int
    score_from: int

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def n_scored(self) -> int:
        return self.length - self.score_from


class Protocol:
    name: ClassVar[str]
    documents: ClassVar[bool] = False        # reads a corpus of documents, each led by a prefix token
    drop_last_input: ClassVar[bool] = False  # a window's last token is a label only, never an input

    def stream(self, ids: Any, seqlen: int, tokenizer: Any) -> Any:
        """The token stream the windows are cut from (the corpus's ids, unless the protocol edits them)."""
        return ids

    def windows(self, n_tokens: int, seqlen: int, stride: int | None = None,
                doc_lengths: list[int] | None = None) -> list[Window]:
        """Every window of a stream of ``n_tokens`` (before any subset)."""
        return disjoint(n_tokens, seqlen, 1)

    def cut(self, ids: Any, seqlen: int, tokenizer: Any, stride: int | None = None, cap: int | None = None,
            doc_lengths: list[int] | None = None) -> tuple[Any, list[Window]]:
        """The corpus's ids as the protocol reads them (``stream``) and that stream's windows (``plan``)."""
        stream = self.stream(ids, seqlen, tokenizer)
        return stream, self.plan(len(stream), seqlen, stride, cap, doc_lengths)

    def plan(self, n_tokens: int, seqlen: int, stride: int | None = None, cap: int | None = None,
             doc_lengths: list[int] | None = None, check: bool = True) -> list[Window]:
        """Every window (the first ``cap``, if given); a seqlen below 2 is an error, and with
        ``check`` so is a corpus too short for the protocol."""
        if seqlen < 2:
            raise ValueError(f"seqlen must be at least 2, got {seqlen}")
        windows = self.windows(n_tokens, seqlen, stride, doc_lengths)
        windows = windows[:cap] if cap else windows
        if check:
            self.check(n_tokens, seqlen, windows)
        return windows

    def check(self, n_tokens: int, seqlen: int, windows: list[Window]) -> None:
        """A corpus too short for the protocol is an error that names the fix."""
        if not windows or n_tokens < seqlen:
            raise too_short(n_tokens, seqlen)

    def weight(self, window: Window) -> int:
        """A window's share of the denominator: its scored tokens."""
        return window.n_scored

    def window_nll(self, total: float, window: Window) -> float:
        """A window's loss from the sum of its scored CE."""
        return total

    def scored_tokens(self, weights: list[float]) -> int:
        """How many positions the windows of these weights score."""
        return int(sum(weights))

    def stride(self, stride: int | None, seqlen: int) -> int | None:
        """The stride as the identity spells it: none, outside a protocol that slides."""
        return None


def disjoint(n_tokens: int, seqlen: int, score_from: int) -> list[Window]:
    """``n_tokens // seqlen`` back-to-back windows of ``seqlen``, the tail dropped."""
    return [Window(i * seqlen, (i + 1) * seqlen, score_from) for i in range(n_tokens // seqlen)]


def too_short(n_tokens: int, seqlen: int) -> CorpusError:
    return CorpusError(f"the corpus has {n_tokens} tokens, shorter than one window of {seqlen}: "
                       "use a smaller seqlen (--ppl-seqlen) or a longer corpus.")
