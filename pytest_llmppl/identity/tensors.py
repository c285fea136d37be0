"""Every tensor a model holds, by content and by count: the state dict and the non-persistent
buffers, each hashed where it lives, its zero elements counted in the same pass, and what the
model keeps (``size_facts``: parameters, non-zeros, linear MACs, shapes) from them.

On the CPU xxh3-64 over the raw bytes (zero-copy through numpy, ~10 GB/s on one core); on an
accelerator a non-linear integer hash computed there in one pass (``device_hash``; no copy to
the host), every tensor's kernels queued before one wait.  The two differ, which is fine: the
device type is part of every measurement's identity anyway.  A quantized tensor is hashed by
its integers and quantization parameters; a disk-offloaded weight (accelerate) is read from
the offload, one at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import ModelError
from .fingerprint import digest
from .size_facts import SizeFacts
from .value_description import Unpinned


@dataclass(frozen=True)
class Weights:
    """One pass over a model's tensors: each described by content (``items``), what the model
    keeps (``size``, its zeros counted in the same pass), and why a value among them could not be
    described (``unpinned``: the model is then measured every time, never served)."""

    items: list[Any]
    size: SizeFacts
    unpinned: str = ""


def weights(model: Any, describe: Callable[[Any], Any]) -> Weights:
    """``weights_description``, then ``size_facts`` from the zeros it counted (no second read of
    the weights' bytes)."""
    zeros: dict[str, int] = {}
    try:
        items = weights_description(model, describe, zeros)
    except Unpinned as exc:
        return Weights([], size_facts(model, zeros), str(exc))
    return Weights(items, size_facts(model, zeros))


def weights_description(model: Any, describe: Callable[[Any], Any], zeros: dict[str, int]) -> list[Any]:
    """Every tensor the modules register, by name: the state dict (whose values a quantized
    module packs into tuples, described by ``describe``) and the non-persistent buffers it leaves
    out.  ``zeros`` gets each parameter's zero elements, counted in the same pass."""
    params = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    items: list[Any] = []
    on_device: list[tuple[list[Any], Any]] = []  # hashed together after the walk: one wait for the device
    for name, value in model_tensors(model):
        if not (hasattr(value, "shape") and hasattr(value, "dtype")):
            items.append([name, describe(value)])
            continue
        item = [name, list(value.shape), str(value.dtype)]
        items.append(item)
        if getattr(value, "is_cuda", False):
            on_device.append((item, value))
        else:  # now, one at a time: a disk-offloaded weight is read, hashed and let go
            _hashed(item, hashes_and_zeros([(value, name in params)])[0], params, zeros)
    for (item, _), hashed in zip(on_device, hashes_and_zeros([(v, item[0] in params) for item, v in on_device])):
        _hashed(item, hashed, params, zeros)
    return items


def _hashed(item: list[Any], hashed: tuple[str, int], params: set[str], zeros: dict[str, int]) -> None:
    fingerprint, n_zeros = hashed
    if item[0] in params:
        zeros[item[0]] = n_zeros
    item.append(fingerprint)


def size_facts(model: Any, zeros: dict[str, int] | None = None) -> SizeFacts:
    """Count ``model``'s size.  ``zeros``: parameter name -> zero elements, from the identity's
    pass over the weights (counted here for any parameter it lacks)."""
    import torch

    zeros = zeros or {}
    params = dict(model.named_parameters())  # tied weights once
    outer: set[int] = set()
    for get in ("get_input_embeddings", "get_output_embeddings"):
        try:
            module = getattr(model, get)() if hasattr(model, get) else None
        except (AttributeError, NotImplementedError):
            module = None
        if isinstance(module, torch.nn.Module):
            outer.update(id(p) for p in module.parameters())
    total = sum(p.numel() for p in params.values())
    body = total - sum(p.numel() for p in params.values() if id(p) in outer)
    nonzero = 0
    for name, p in params.items():
        nonzero += p.numel() - _zeros(model, name, p, zeros)
    macs, shapes = 0, []
    for name, module in model.named_modules():
        weight = module._parameters.get("weight")
        if weight is None:
            weight = module._parameters.get("weight_orig")  # torch.nn.utils.prune re-parametrised
        if weight is not None:
            shapes.append((name, tuple(int(d) for d in weight.shape)))
        macs += _linear_macs(module, weight)
    return SizeFacts(total, body, nonzero, macs, tuple(sorted(shapes)))


def _zeros(model: Any, name: str, p: Any, zeros: dict[str, int]) -> int:
    """Zero elements of parameter ``name``; a pruning re-parametrisation's ``*_orig`` counts the
    weight its mask leaves."""
    import torch

    if name.endswith("_orig"):
        path, _, attr = name[:-len("_orig")].rpartition(".")
        module = model.get_submodule(path) if path else model
        masked = getattr(module, attr, None)
        if isinstance(masked, torch.Tensor) and f"{attr}_mask" in module._buffers and not masked.is_meta:
            return masked.numel() - int(torch.count_nonzero(masked.detach()))
    if name in zeros:
        return zeros[name]
    if p.is_meta:
        return 0  # offloaded and not read: its zeros are unknown, counted as kept
    return p.numel() - int(torch.count_nonzero(p.detach()))


def _linear_macs(module: Any, weight: Any) -> int:
    """in x out of a linear layer (``nn.Linear``, GPT-2's ``Conv1D``, a dynamic-quantized Linear)."""
    import torch

    if isinstance(module, torch.nn.Linear) and weight is not None:
        return int(weight.shape[0]) * int(weight.shape[1])
    name = type(module).__name__
    if name == "Conv1D" and weight is not None and weight.dim() == 2:
        return int(weight.numel())
    if name == "Linear" and isinstance(getattr(module, "in_features", None), int) and \
            isinstance(getattr(module, "out_features", None), int):
        return module.in_features * module.out_features
    return 0


def model_tensors(model: Any) -> Iterator[tuple[str, Any]]:
    """The state dict's entries, then the non-persistent buffers (but caches), with their data; a
    disk-offloaded one (accelerate, on ``meta``) is read from the offload through its
    module's hook."""
    offloaded = offloaded_weights(model)
    state = model.state_dict(keep_vars=False)
    extra = {n: b for n, b in model.named_buffers() if n not in state and "cache" not in n.rsplit(".", 1)[-1].lower()}
    for name in sorted(state) + sorted(extra):
        t = state[name] if name in state else extra[name]
        if getattr(t, "is_meta", False):
            t = offloaded.get(name)
            if t is None:
                raise ModelError(
                    f"parameter {name} is on the meta device (no weights loaded) and no offloaded copy was found: "
                    "load the model with real weights (no init_empty_weights / device_map='meta'), or dispatch it "
                    "with accelerate's device_map and offload_folder so its weights can be read."
                )
        yield name, t


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
    values = bits_hashes([(words, per_word) for _, words, _, per_word in on_device]) if on_device else []
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
