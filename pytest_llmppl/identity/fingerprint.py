"""Identities of corpora and tokenizers as hex digests, and ``digest``, the one hash every
identity ends in (a model's: ``model_identity``; its tensors': ``tensors``).

Content, not names: two tokenizers with one name but other merges get other fingerprints; the
same content in another process gets the same one.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def digest(*parts: Any) -> str:
    """SHA-256 over a canonical JSON of the parts."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def text_fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """The serialized pipeline (vocab, merges, normalizer, pre/post-processor) + special tokens.

    Fast tokenizers serialize their whole pipeline with ``backend_tokenizer.to_str()``;
    slow ones contribute their vocabulary and, for SentencePiece, the model proto.
    """
    parts: dict[str, Any] = {"class": type(tokenizer).__name__}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        parts["pipeline"] = hashlib.sha256(backend.to_str().encode()).hexdigest()
    else:
        vocab = tokenizer.get_vocab()
        parts["vocab"] = hashlib.sha256(json.dumps(sorted(vocab.items())).encode()).hexdigest()
        sp = getattr(tokenizer, "sp_model", None)
        if sp is not None and hasattr(sp, "serialized_model_proto"):
            parts["sentencepiece"] = hashlib.sha256(sp.serialized_model_proto()).hexdigest()
    for attr in ("add_bos_token", "add_eos_token", "add_prefix_space", "legacy", "do_lower_case"):
        if hasattr(tokenizer, attr):
            parts[attr] = getattr(tokenizer, attr)
    parts["special"] = {k: str(v) for k, v in sorted(getattr(tokenizer, "special_tokens_map", {}).items())}
    added: dict[str, int] = getattr(tokenizer, "get_added_vocab", dict)()
    parts["added"] = sorted(str(item) for item in added.items())
    return digest(parts)
