"""Identities of corpora and tokenizers as hex digests, and ``digest``, the one hash every
identity ends in (a model's: ``model_identity``; its tensors': ``tensors``).  A part that many
places share (a class every layer refers to) is marked ``Hashed``: the digest takes it by its own
digest, computed once, so a model's description is hashed in one call, its classes with it.

Content, not names: two tokenizers with one name but other merges get other fingerprints; the
same content in another process gets the same one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any


@dataclass(eq=False, repr=False)
class Hashed:
    """Parts that a digest takes as ``digest(parts)``: hashed the first time, then 64 hex characters
    wherever they appear again (in a digest, or in the ``repr`` a description is sorted by)."""

    parts: Any
    _hex: str = ""

    def hexdigest(self) -> str:
        if not self._hex:
            self._hex = digest(self.parts)
        return self._hex

    def __repr__(self) -> str:
        return repr(self.hexdigest())


def digest(*parts: Any) -> str:
    """SHA-256 over a canonical JSON of the parts (a ``Hashed`` part by its digest)."""
    blob = json.dumps(parts, sort_keys=True, default=_canonical, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def _canonical(value: Any) -> str:
    return value.hexdigest() if isinstance(value, Hashed) else str(value)


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
