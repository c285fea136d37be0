"""Identities of corpora, tokenizers and model weights, as hex digests.

Content, not names: two tokenizers with one name but other merges, or a model
with one weight changed, get other fingerprints; the same content in another
process gets the same one.
"""

from __future__ import annotations

import hashlib
import json

_MIX = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed 64-bit integer (golden-ratio odd constant)
_CHUNK = 1 << 24


def digest(*parts) -> str:
    """SHA-256 over a canonical JSON of the parts."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def text_fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """The serialized pipeline (vocab, merges, normalizer, pre/post-processor) + special tokens.

    Fast tokenizers serialize their whole pipeline with ``backend_tokenizer.to_str()``;
    slow ones contribute their vocabulary and, for SentencePiece, the model proto.
    """
    parts: dict = {"class": type(tokenizer).__name__}
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
    parts["added"] = sorted(str(t) for t in getattr(tokenizer, "get_added_vocab", dict)().items())
    return digest(parts)


def tensor_hash(tensor) -> int:
    """A 64-bit hash of a tensor's bits, computed where the tensor lives.

    h = sum_i bits_i * k_i (mod 2^64) with odd k_i, so changing any single element
    changes h; integer arithmetic, so it is exact and identical on CPU and GPU.
    """
    import torch

    flat = tensor.detach().reshape(-1)
    if not flat.is_contiguous():
        flat = flat.contiguous()
    size = flat.element_size()
    if flat.dtype == torch.bool:
        bits = flat.to(torch.int64)
    elif size in (1, 2, 4, 8) and flat.dtype != torch.bool:
        view = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[size]
        bits = flat.view(view)
    else:  # complex or exotic dtypes: hash the bytes on the host
        return int.from_bytes(hashlib.sha256(flat.cpu().numpy().tobytes()).digest()[:8], "little", signed=True)
    total = torch.zeros((), dtype=torch.int64, device=flat.device)
    for start in range(0, bits.numel(), _CHUNK):
        chunk = bits[start:start + _CHUNK].to(torch.int64)
        idx = torch.arange(start, start + chunk.numel(), device=flat.device, dtype=torch.int64)
        k = (idx * _MIX + 0x5851F42D) | 1
        total += (chunk * k).sum()
    return int(total.item())


def model_fingerprint(model) -> str:
    """Weights (names, shapes, dtypes, bits) and architecture config of a model."""
    state = model.state_dict()
    items = []
    for name in sorted(state):
        t = state[name]
        if getattr(t, "is_meta", False):
            from .errors import ModelError

            raise ModelError(
                f"parameter {name} is on the meta device (no data): load the model with real "
                "weights (e.g. without device_map='meta' / init_empty_weights) before measuring it."
            )
        items.append((name, list(t.shape), str(t.dtype), tensor_hash(t)))
    config = getattr(model, "config", None)
    cfg = {}
    if config is not None and hasattr(config, "to_dict"):
        cfg = {k: v for k, v in config.to_dict().items()
               if k not in {"_name_or_path", "transformers_version", "use_cache", "dtype", "torch_dtype"}}
    return digest(type(model).__name__, cfg, items)
