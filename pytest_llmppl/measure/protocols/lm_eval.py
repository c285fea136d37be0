"""``lm-eval``: lm-evaluation-harness's rolling windows, document by document, over a stream of
documents each led by a prefix token (``lmeval.encode_documents``); ``sum CE`` over the scored
tokens, a window's last token a label only."""

from __future__ import annotations

from ...errors import CorpusError
from .base import Protocol, Window


class LmEval(Protocol):
    name = "lm-eval"
    documents = True
    drop_last_input = True

    def windows(self, n_tokens: int, seqlen: int, stride: int | None = None,
                doc_lengths: list[int] | None = None) -> list[Window]:
        if doc_lengths is None or sum(doc_lengths) != n_tokens:
            raise ValueError("the lm-eval protocol needs the length of every document in the token stream")
        return rolling_windows(doc_lengths, seqlen)

    def check(self, n_tokens: int, seqlen: int, windows: list[Window]) -> None:
        if not windows:
            raise CorpusError("the corpus has no document with a token to score: the lm-eval protocol needs "
                              "documents (wikitext2, a .jsonl/.parquet file with a 'page' column, or WikiText raw "
                              "text).")


def rolling_windows(doc_lengths: list[int], seqlen: int) -> list[Window]:
    """lm-eval's rolling windows (``get_rolling_token_windows`` with ``context_len=1``, made
    disjoint): windows of up to ``seqlen + 1`` stream tokens whose first ``seqlen`` are the
    model's input.  A document with no tokens has none."""
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


PROTOCOL = LmEval()
