"""Tokenize a corpus once, as one sequence with the tokenizer's default special
tokens (so one BOS at the very start for Llama-style tokenizers), and keep the
ids on disk keyed by the corpus text and the tokenizer's content (their two digests side by
side: no third hash), with the software that split it (another transformers or tokenizers may
split the same text otherwise: their entry is a miss).  A document corpus (the lm-eval protocol)
is encoded document by document, as lm-eval does, and kept with each document's length."""

from __future__ import annotations

from typing import Any

from ..identity.fingerprint import tokenizer_fingerprint
from ..identity.spec import tokenizing_software
from ..keep.store import Store
from .corpus import Corpus

NAMESPACE = "tokens"
DOCUMENTS = "documents"
FORMAT = 2  # bump when the way ids are produced changes (an entry of another format is a miss)
_MEMO: dict[tuple[str, str], object] = {}


def token_key(corpus: Corpus, tokenizer_fp: str) -> str:
    """The corpus text's digest and the tokenizer's, side by side."""
    return corpus.fingerprint + tokenizer_fp


def _current(hit: Any) -> Any:
    """A stored entry of this format, split by this software, else None."""
    meta = hit[0] if hit is not None else {}
    return hit if meta.get("format") == FORMAT and meta.get("software") == tokenizing_software() else None


def tokenize(corpus: Corpus, tokenizer: Any, store: Store | None = None,
             tokenizer_fp: str | None = None) -> tuple[Any, str]:
    """The corpus as a 1-D int64 numpy array of token ids, and where it came from
    (``memory`` | ``cache`` | ``tokenized``).  ``tokenizer_fp``: the tokenizer's fingerprint,
    when the caller has it already (it serializes the whole pipeline: not free)."""
    import numpy as np

    key = token_key(corpus, tokenizer_fp or tokenizer_fingerprint(tokenizer))
    source = "memory"
    ids = _MEMO.get((NAMESPACE, key))
    if ids is None and store is not None:
        hit = _current(store.get_array(NAMESPACE, key))
        if hit is not None:
            ids, source = hit[1].astype(np.int64, copy=False), "cache"
    if ids is None:
        ids, source = _encode(corpus.text, tokenizer), "tokenized"
        if store is not None:
            dtype = np.int32 if ids.size == 0 or ids.max() < 2**31 else np.int64
            store.put_array(NAMESPACE, key, ids.astype(dtype),
                            {"corpus": corpus.name, "n_tokens": int(ids.size), "format": FORMAT,
                             "software": tokenizing_software()})
    _MEMO[(NAMESPACE, key)] = ids
    return ids, source


def tokenize_documents(corpus: Corpus, tokenizer: Any, store: Store | None = None,
                       tokenizer_fp: str | None = None) -> tuple[Any, list[int], str]:
    """A document corpus as lm-eval feeds it (``lmeval.encode_documents``): the token stream, each
    document's length in it, and where it came from (``memory`` | ``cache`` | ``tokenized``)."""
    import numpy as np

    from .lmeval import encode_documents

    key = token_key(corpus, tokenizer_fp or tokenizer_fingerprint(tokenizer))
    hit = _MEMO.get((DOCUMENTS, key))
    if isinstance(hit, tuple):
        return hit[0], hit[1], "memory"
    found = _current(store.get_array(DOCUMENTS, key)) if store is not None else None
    lengths = found[0].get("doc_lengths") if found is not None else None
    if found is not None and isinstance(lengths, list) and sum(lengths) == len(found[1]):
        ids, source = found[1].astype(np.int64, copy=False), "cache"
    else:
        ids, lengths = encode_documents(corpus.documents, tokenizer)
        source = "tokenized"
        if store is not None:
            store.put_array(DOCUMENTS, key, ids.astype(np.int64), {"corpus": corpus.name, "n_tokens": int(ids.size),
                                                                   "doc_lengths": lengths, "format": FORMAT,
                                                                   "software": tokenizing_software()})
    _MEMO[(DOCUMENTS, key)] = (ids, lengths)
    return ids, lengths, source


def _encode(text: str, tokenizer: Any) -> Any:
    import numpy as np

    enc = tokenizer(text, verbose=False)  # verbose=False: no "longer than model_max_length" warning
    ids = enc["input_ids"]
    if ids and isinstance(ids[0], list):  # some tokenizers batch a single string
        ids = ids[0]
    return np.asarray(ids, dtype=np.int64)
