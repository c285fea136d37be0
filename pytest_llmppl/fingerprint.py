"""Identities of corpora, tokenizers and model weights, as hex digests.

Content, not names: two tokenizers with one name but other merges, or a model with
one weight changed, get other fingerprints; the same content in another process gets
the same one.  Weights are hashed where they live: on the CPU with xxh3-64 over the
raw bytes (zero-copy through numpy, ~10 GB/s on one core), on an accelerator with an
exact integer hash computed there in one pass (``device_hash``; no copy to the host).  The two differ, which is
fine: the device type is part of every measurement's identity anyway.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from .errors import ModelError

# Config keys that say how a model was loaded or run, not what it computes.
_CONFIG_NOISE = frozenset({"_name_or_path", "transformers_version", "use_cache", "dtype", "torch_dtype",
                           "_attn_implementation_autoset", "_commit_hash"})


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


def tensor_hash(tensor: Any) -> str:
    """A 64-bit hash of a tensor's bits, as ``algorithm:hex``, computed where the tensor lives."""
    import torch

    flat = tensor.detach().reshape(-1)
    if not flat.is_contiguous():
        flat = flat.contiguous()
    if flat.device.type == "cpu":
        return "xxh3:" + _host_hash(flat)
    if flat.dtype == torch.bool:
        bits = flat.to(torch.uint8)
    elif flat.element_size() in (1, 2, 4, 8) and not flat.is_complex():
        bits = flat.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[flat.element_size()])
    else:  # complex or exotic dtypes: hash the bytes on the host
        return "xxh3:" + _host_hash(flat.cpu())
    from .device_hash import bits_hash

    return "mix:" + format(bits_hash(bits) & (2**64 - 1), "016x")


def _host_hash(flat: Any) -> str:
    """xxh3-64 of the tensor's bytes, read in place (no copy)."""
    import torch
    import xxhash

    return xxhash.xxh3_64_hexdigest(memoryview(flat.view(torch.uint8).numpy()))


def model_fingerprint(model: Any) -> str:
    """Weights (names, shapes, dtypes, bits) and architecture config of a model."""
    items = [(name, list(t.shape), str(t.dtype), tensor_hash(t)) for name, t in model_tensors(model)]
    config = getattr(model, "config", None)
    cfg: dict[str, Any] = {}
    if config is not None and hasattr(config, "to_dict"):
        cfg = {k: v for k, v in config.to_dict().items() if k not in _CONFIG_NOISE}
    return digest(type(model).__name__, cfg, items)


def model_tensors(model: Any) -> Iterator[tuple[str, Any]]:
    """Every tensor of the state dict with its data; a disk-offloaded one (accelerate, on
    ``meta``) is read from the offload through its module's hook."""
    offloaded = _offloaded_weights(model)
    state = model.state_dict()
    for name in sorted(state):
        t = state[name]
        if getattr(t, "is_meta", False):
            t = offloaded.get(name)
            if t is None:
                raise ModelError(
                    f"parameter {name} is on the meta device (no weights loaded) and no offloaded copy was found: "
                    "load the model with real weights (no init_empty_weights / device_map='meta'), or dispatch it "
                    "with accelerate's device_map and offload_folder so its weights can be read."
                )
        yield name, t


def _offloaded_weights(model: Any) -> _LazyOffload:
    """Lazy name -> tensor view of accelerate's offload (``module._hf_hook.weights_map``)."""
    out = _LazyOffload()
    if not getattr(model, "hf_device_map", None):
        return out
    for prefix, module in model.named_modules():
        hook = getattr(module, "_hf_hook", None)
        for h in getattr(hook, "hooks", None) or [hook]:  # SequentialHook holds several
            weights = getattr(h, "weights_map", None)
            if weights is not None and getattr(h, "offload", False):
                for local in list(dict(module.named_parameters(recurse=False))) + list(
                        dict(module.named_buffers(recurse=False))):
                    out.sources[f"{prefix}.{local}" if prefix else local] = (weights, local)
    return out


class _LazyOffload:
    """Reads an offloaded tensor only when asked for (one at a time: no full copy in memory)."""

    def __init__(self) -> None:
        self.sources: dict[str, tuple[Any, str]] = {}

    def get(self, name: str, default: Any = None) -> Any:
        if name not in self.sources:
            return default
        weights, local = self.sources[name]
        try:
            return weights[local]
        except (KeyError, OSError):
            return default
