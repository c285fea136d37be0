"""Identities of corpora, tokenizers and tensors, as hex digests (a model's: ``model_identity``).

Content, not names: two tokenizers with one name but other merges, or a model with
one weight changed, get other fingerprints; the same content in another process gets
the same one.  Weights are hashed where they live: on the CPU with xxh3-64 over the
raw bytes (zero-copy through numpy, ~10 GB/s on one core), on an accelerator with a
non-linear integer hash computed there in one pass (``device_hash``; no copy to the host).
The two differ, which is fine: the device type is part of every measurement's identity anyway.
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


def tensor_hash(tensor: Any) -> str:
    """A 64-bit hash of a tensor's bits, as ``algorithm:hex``, computed where the tensor lives
    (a quantized tensor by its integers and its quantization parameters)."""
    return hash_and_zeros(tensor, count=False)[0]


def hash_and_zeros(tensor: Any, count: bool = True) -> tuple[str, int]:
    """``tensor_hash`` and, with ``count``, the number of zero elements (-0.0 included): on an
    accelerator in the same pass over the bytes, on the CPU in a second one."""
    return hashes_and_zeros([(tensor, count)])[0]


def hashes_and_zeros(tensors: list[tuple[Any, bool]]) -> list[tuple[str, int]]:
    """``hash_and_zeros`` of (tensor, count) pairs: those on an accelerator hashed by queued
    kernels with one wait for all (``device_hash.bits_hashes``), the others one by one."""
    import torch

    from .device_hash import Zeros, as_words, bits_hashes, zeros_of

    out: list[tuple[str, int]] = [("", 0)] * len(tensors)
    on_device: list[tuple[int, Any, bytes, Zeros]] = []
    for i, (tensor, count) in enumerate(tensors):
        if getattr(tensor, "is_quantized", False):
            ints = tensor.int_repr()
            out[i] = "q:" + digest(*_quantized_parts(tensor))[:16], ints.numel() - int(torch.count_nonzero(ints))
            continue
        flat = tensor.detach().reshape(-1)
        if not flat.is_contiguous():
            flat = flat.contiguous()
        if flat.device.type == "cpu" or flat.is_complex() or flat.element_size() not in (1, 2, 4, 8):
            zeros = flat.numel() - int(torch.count_nonzero(flat)) if count else 0
            out[i] = "xxh3:" + _host_hash(flat.cpu()), zeros
            continue
        words, tail = as_words(flat)
        per_word = zeros_of(flat.dtype) if count else Zeros()
        if count and (per_word.per_word == 0 or tail):  # 8-byte elements, or ending mid-word: counted apart
            out[i] = "", flat.numel() - int(torch.count_nonzero(flat))
            per_word = Zeros()
        on_device.append((i, words, tail, per_word))
    values = bits_hashes([(words, per_word) for _, words, _, per_word in on_device])
    for (i, _, tail, per_word), (value, zeros) in zip(on_device, values):
        counted = zeros if per_word.per_word else out[i][1]
        out[i] = "fmix:" + format(value, "016x") + (":" + tail.hex() if tail else ""), counted
    return out


def _quantized_parts(tensor: Any) -> list[Any]:
    """What a quantized tensor's values are made of: its integers, scheme and parameters."""
    import torch

    scheme = tensor.qscheme()
    parts: list[Any] = [str(tensor.dtype), str(scheme), tensor_hash(tensor.int_repr())]
    if scheme in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        parts += [repr(float(tensor.q_scale())), int(tensor.q_zero_point())]
    else:
        parts += [tensor.q_per_channel_axis(), tensor_hash(tensor.q_per_channel_scales()),
                  tensor_hash(tensor.q_per_channel_zero_points())]
    return parts


def _host_hash(flat: Any) -> str:
    """xxh3-64 of the tensor's bytes, read in place (no copy)."""
    import torch
    import xxhash

    return xxhash.xxh3_64_hexdigest(memoryview(flat.view(torch.uint8).numpy()))


def offloaded_weights(model: Any) -> _LazyOffload:
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
