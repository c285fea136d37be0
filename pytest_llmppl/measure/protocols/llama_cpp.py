"""``llama.cpp``: llama-perplexity's chunks.  ``n // seqlen`` disjoint windows, each led by BOS
(its first token replaced, not shifted, when the tokenizer adds BOS: llama.cpp's ``add_bos``),
only the second half scored (offsets ``seqlen // 2 + 1`` on); ``sum CE`` over the scored tokens."""

from __future__ import annotations

from typing import Any

from ...errors import CorpusError
from .base import Protocol, Window, disjoint


class LlamaCpp(Protocol):
    name = "llama.cpp"

    def stream(self, ids: Any, seqlen: int, tokenizer: Any) -> Any:
        bos = getattr(tokenizer, "bos_token_id", None)
        if bos is None or not len(ids) or ids[0] != bos:
            return ids
        out = ids.copy()
        out[: len(ids) // seqlen * seqlen: seqlen] = bos
        return out

    def windows(self, n_tokens: int, seqlen: int, stride: int | None = None,
                doc_lengths: list[int] | None = None) -> list[Window]:
        return disjoint(n_tokens, seqlen, seqlen // 2 + 1)

    def check(self, n_tokens: int, seqlen: int, windows: list[Window]) -> None:
        if n_tokens < 2 * seqlen:
            raise CorpusError(f"the corpus has {n_tokens} tokens: llama-perplexity needs at least 2 x n_ctx = "
                              f"{2 * seqlen} tokens; use a smaller seqlen (--ppl-seqlen) or a longer corpus.")
        super().check(n_tokens, seqlen, windows)


PROTOCOL = LlamaCpp()
