"""``--ppl-protocol=lm-eval``: lm-evaluation-harness's ``wikitext`` task, exactly.

The corpus is a list of documents (WikiText-2's articles: ``EleutherAI/wikitext_document_level``).
Each document is detokenized (the task's ``wikitext_detokenizer`` rules, restated here as a
table), encoded alone as lm-eval's ``HFLM.tok_encode`` does (the tokenizer's default special
tokens, none when the text already starts with the prefix token), and scored with rolling
windows at the model's max length ``L``: the prefix token (BOS, else EOS) then the first ``L``
tokens; then every further ``L`` tokens predicted from the ``L`` tokens before them, the last
window keeping a full ``L`` of context and scoring only what is left.  Each document's
log-likelihood is the sum over its windows.  The metrics (``weighted_perplexity`` /
``bits_per_byte`` over all documents) count words and bytes of the *original* documents:

    word_perplexity = exp(sum NLL / sum words)    words = len(re.split(r"\\s+", page))
    byte_perplexity = exp(sum NLL / sum bytes)    bytes = len(page.encode("utf-8"))
    bits_per_byte   = sum NLL / (sum bytes * ln 2)

and the token perplexity ``exp(sum NLL / scored tokens)`` stands beside them.  Verified against
lm-eval's own task and model classes in ``tests/test_lm_eval_protocol.py``.  The windows are
planned with the other protocols' (``protocols/lm_eval.py``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

# lm-eval's wikitext_detokenizer, in its order: (pattern, replacement, is_regex).
_DETOKENIZE: tuple[tuple[str, str, bool], ...] = (
    ("s '", "s'", False),
    (r"/' [0-9]/", r"/'[0-9]/", True),
    (" @-@ ", "-", False), (" @,@ ", ",", False), (" @.@ ", ".", False),
    (" : ", ": ", False), (" ; ", "; ", False), (" . ", ". ", False), (" ! ", "! ", False), (" ? ", "? ", False),
    (" , ", ", ", False),
    (r"\(\s*([^\)]*?)\s*\)", r"(\1)", True), (r"\[\s*([^\]]*?)\s*\]", r"[\1]", True),
    (r"{\s*([^}]*?)\s*}", r"{\1}", True), (r"\"\s*([^\"]*?)\s*\"", r'"\1"', True),
    (r"'\s*([^']*?)\s*'", r"'\1'", True),
    ("= = = =", "====", False), ("= = =", "===", False), ("= =", "==", False),
    (" \N{DEGREE SIGN} ", "\N{DEGREE SIGN}", False),
    (" \n", "\n", False), ("\n ", "\n", False), (" N ", " 1 ", False), (" 's", "'s", False),
)
_WHITESPACE = re.compile(r"\s+")


def detokenize(page: str) -> str:
    """A WikiText document as lm-eval's wikitext task feeds it to the model."""
    for pattern, replacement, regex in _DETOKENIZE:
        page = re.sub(pattern, replacement, page) if regex else page.replace(pattern, replacement)
    return page


@dataclass(frozen=True)
class DocumentStats:
    """What lm-eval divides a corpus's log-likelihood by: words and UTF-8 bytes of the original
    documents (before detokenization)."""

    words: int
    bytes: int

    @classmethod
    def of(cls, documents: tuple[str, ...]) -> DocumentStats:
        return cls(sum(len(_WHITESPACE.split(d)) for d in documents), sum(len(d.encode("utf-8")) for d in documents))


@dataclass(frozen=True)
class LMEvalMetrics:
    """lm-eval's three wikitext metrics, next to the token perplexity."""

    word_perplexity: float
    byte_perplexity: float
    bits_per_byte: float
    words: int
    bytes: int

    @classmethod
    def of(cls, total_nll: float, stats: DocumentStats) -> LMEvalMetrics:
        def exp(x: float) -> float:
            try:
                return math.exp(x)
            except OverflowError:
                return math.inf

        return cls(exp(total_nll / stats.words), exp(total_nll / stats.bytes), total_nll / (stats.bytes * math.log(2)),
                   stats.words, stats.bytes)

    def to_json(self) -> dict[str, Any]:
        return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LMEvalMetrics:
        """The inverse of ``to_json`` (an overflowed perplexity, null there, is inf again)."""
        values: dict[str, Any] = {k: math.inf if data[k] is None else data[k] for k in cls.__dataclass_fields__}
        return cls(**values)


def prefix_token(tokenizer: Any) -> int:
    """lm-eval's ``prefix_token_id``: BOS, else EOS."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        from ..errors import TokenizerError

        raise TokenizerError("the lm-eval protocol starts each document with the tokenizer's BOS (or EOS) token, and "
                             "this tokenizer has neither: use another protocol.")
    return int(token)


def encode_documents(documents: tuple[str, ...], tokenizer: Any) -> tuple[Any, list[int]]:
    """The token stream the windows index: for each document, the prefix token then its tokens
    (detokenized, encoded as lm-eval encodes it); and each document's length in that stream."""
    import numpy as np

    prefix = prefix_token(tokenizer)
    prefix_text = tokenizer.decode(prefix)
    parts, lengths = [], []
    for page in documents:
        text = detokenize(page)
        kwargs = {"add_special_tokens": False} if prefix_text and text.startswith(prefix_text) else {}
        ids = tokenizer.encode(text, **kwargs) if text else []
        parts.append(np.asarray([prefix, *ids], dtype=np.int64))
        lengths.append(len(ids) + 1)
    return (np.concatenate(parts) if parts else np.zeros(0, np.int64)), lengths


def split_pages(text: str) -> tuple[str, ...]:
    """WikiText raw text (rows as in the line-level dataset) cut into articles at each top-level
    heading (`` = Title = ``), the way the document-level dataset's pages are cut."""
    heading = re.compile(r"^ = [^=].* = $", re.MULTILINE)
    starts = [m.start() for m in heading.finditer(text)]
    if not starts or starts[0] != 0:
        starts = [0, *starts]
    return tuple(text[a:b] for a, b in zip(starts, [*starts[1:], len(text)]) if text[a:b].strip())
