"""Which token spans each protocol scores (plain integers, no torch).

A window is ``[start, end)`` of the token stream; its labels at offsets
``score_from .. end-start-1`` are scored (offset j is predicted from offsets < j;
offset 0 never is).  The protocols:

- ``torch-pruning``: ``n // seqlen`` non-overlapping windows, tail dropped; a window
  counts ``mean CE x seqlen`` over ``seqlen`` (Torch-Pruning / SparseGPT / Wanda).
- ``tokens``: the same windows; ``sum CE`` over ``seqlen - 1`` (the exact token mean).
- ``sliding``: windows of ``seqlen`` starting every ``stride`` tokens; each scores only
  the tokens the previous window did not (the Hugging Face perplexity guide).
- ``llama.cpp``: llama-perplexity's chunks: ``n // seqlen`` disjoint windows, each led by BOS
  (the stream is made so: ``tokens.llama_cpp_stream``), only the second half scored
  (offsets ``seqlen // 2 + 1`` on); ``sum CE`` over the scored tokens.
- ``lm-eval``: lm-evaluation-harness's rolling windows, document by document, over a
  stream of documents each led by a prefix token (``lmeval.plan_rolling_windows``);
  ``sum CE`` over the scored tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CorpusError

PROTOCOLS = ("torch-pruning", "tokens", "sliding", "lm-eval", "llama.cpp")


@dataclass(frozen=True)
class Window:
    start: int
    end: int
    score_from: int

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def n_scored(self) -> int:
        return self.length - self.score_from


def plan_windows(n_tokens: int, seqlen: int, protocol: str = "torch-pruning",
                 stride: int | None = None, cap: int | None = None,
                 doc_lengths: list[int] | None = None) -> list[Window]:
    """All windows of a token stream of length ``n_tokens`` (before any subset); ``lm-eval``
    needs the stream's ``doc_lengths``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if seqlen < 2:
        raise ValueError(f"seqlen must be at least 2, got {seqlen}")
    if protocol == "lm-eval":
        if doc_lengths is None or sum(doc_lengths) != n_tokens:
            raise ValueError("the lm-eval protocol needs the length of every document in the token stream")
        rolling = plan_rolling_windows(doc_lengths, seqlen)
        return rolling[:cap] if cap else rolling
    if protocol == "sliding":
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
        return out[:cap] if cap else out
    n = n_tokens // seqlen
    if cap:
        n = min(n, cap)
    score_from = seqlen // 2 + 1 if protocol == "llama.cpp" else 1
    return [Window(i * seqlen, (i + 1) * seqlen, score_from) for i in range(n)]


def plan_rolling_windows(doc_lengths: list[int], seqlen: int) -> list[Window]:
    """lm-eval's rolling windows (``get_rolling_token_windows`` with ``context_len=1``, made
    disjoint) over the stream ``lmeval.encode_documents`` builds: windows of up to ``seqlen + 1`` stream
    tokens whose first ``seqlen`` are the model's input.  A document with no tokens has none."""
    out: list[Window] = []
    offset = 0
    for length in doc_lengths:
        n = length - 1  # the document's own tokens, after its prefix token
        if n > 0:
            first = min(seqlen, n)
            out.append(Window(offset, offset + first + 1, 1))
            done = first
            while done < n:
                scored = min(seqlen, n - done)
                end = offset + done + scored + 1
                out.append(Window(end - seqlen - 1, end, seqlen + 1 - scored))
                done += scored
        offset += length
    return out


def spread_subset(n_total: int, k: int | None) -> list[int]:
    """``k`` evenly spread, deterministic window indices out of ``n_total`` (all if k is None or >= n)."""
    if k is None or k >= n_total:
        return list(range(n_total))
    if k < 1:
        raise ValueError(f"max_windows must be at least 1, got {k}")
    return [((2 * i + 1) * n_total) // (2 * k) for i in range(k)]


def window_weight(window: Window, protocol: str) -> int:
    """The denominator share of a window: seqlen (torch-pruning) or its scored tokens."""
    return window.length if protocol == "torch-pruning" else window.n_scored


def plan_checked(n_tokens: int, seqlen: int, protocol: str, stride: int | None,
                 first_windows: int | None = None, doc_lengths: list[int] | None = None) -> list[Window]:
    """The protocol's windows; a corpus shorter than one window is an error naming the fix."""
    windows = plan_windows(n_tokens, seqlen, protocol, stride, first_windows, doc_lengths)
    if protocol == "llama.cpp" and n_tokens < 2 * seqlen:
        raise CorpusError(f"the corpus has {n_tokens} tokens: llama-perplexity needs at least 2 x n_ctx = {2 * seqlen} "
                          "tokens; use a smaller seqlen (--ppl-seqlen) or a longer corpus.")
    if protocol == "lm-eval" and not windows:
        raise CorpusError("the corpus has no document with a token to score: the lm-eval protocol needs documents "
                          "(wikitext2, a .jsonl/.parquet file with a 'page' column, or WikiText raw text).")
    if not windows or (protocol not in ("sliding", "lm-eval") and n_tokens < seqlen):
        raise CorpusError(
            f"the corpus has {n_tokens} tokens, shorter than one window of {seqlen}: "
            "use a smaller seqlen (--ppl-seqlen) or a longer corpus."
        )
    return windows


def plan_evaluation(n_tokens: int, seqlen: int, protocol: str, stride: int | None, first_windows: int | None,
                    doc_lengths: list[int] | None, max_windows: int | None) -> tuple[list[Window], list[int]]:
    """Every window (``plan_checked``) and the ones to evaluate (``spread_subset``), in one visit."""
    windows = plan_checked(n_tokens, seqlen, protocol, stride, first_windows, doc_lengths)
    return windows, spread_subset(len(windows), max_windows)
