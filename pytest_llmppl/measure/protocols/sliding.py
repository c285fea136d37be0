"""``sliding``: the Hugging Face perplexity guide's method.  Windows of ``seqlen`` start every
``stride`` tokens (default: ``seqlen``); each scores only the tokens the previous one did not."""

from __future__ import annotations

from ...errors import SettingsError
from .base import Protocol, Window, too_short


class Sliding(Protocol):
    name = "sliding"

    def windows(self, n_tokens: int, seqlen: int, stride: int | None = None,
                doc_lengths: list[int] | None = None) -> list[Window]:
        stride = seqlen if stride is None else stride
        if not 1 <= stride <= seqlen:
            raise ValueError(f"stride must be between 1 and seqlen ({seqlen}), got {stride}")
        out: list[Window] = []
        prev_end = 0
        for begin in range(0, n_tokens, stride):
            end = min(begin + seqlen, n_tokens)
            if end - begin < 2:
                break
            target = end - prev_end
            out.append(Window(begin, end, max(1, (end - begin) - target)))
            prev_end = end
            if end == n_tokens:
                break
        return out

    def check(self, n_tokens: int, seqlen: int, windows: list[Window]) -> None:
        if not windows:  # a corpus shorter than seqlen is one shorter window
            raise too_short(n_tokens, seqlen)

    def stride(self, stride: int | None, seqlen: int) -> int | None:
        """A stride equal to the seqlen is the default (None): both share one identity."""
        if stride is not None and stride > seqlen:
            raise SettingsError(f"stride {stride} is longer than seqlen {seqlen}: use a stride <= seqlen")
        return None if stride == seqlen else stride


PROTOCOL = Sliding()
