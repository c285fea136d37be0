"""The weights' hash on an accelerator, in one pass (CUDA, Triton); torch ops elsewhere.

The bytes are read as 32-bit words w_i.  Each word is mixed with its position by murmur3's
32-bit finaliser (xor-shifts and multiplies): x_i = fmix32(w_i ^ key(i)), and the hash is two
sums modulo 2^32, of x_i and of a second non-linear function of x_i, side by side in 64 bits.
Because every word passes through a non-linear mix before the sums, no fixed pattern of changes
cancels (a sum of bits times position constants, which this replaced, kept its value under
+t, -2t, +t at three positions two apart); two words swapped change it too.  Integer
arithmetic modulo 2^32 is exact in any order, so the Triton kernel and the torch fallback give
the same number.  Working on 32-bit words (two bf16 weights at a time) keeps the kernel at the
memory's speed: 64-bit integer multiplies are several instructions on a GPU.  The same pass
counts the zero elements (a float's sign ignored: -0.0 is zero), so a model's size facts cost
no second read of its weights.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

M32 = 0xFFFFFFFF
POSITION = 0x9E3779B1   # golden-ratio odd constant: the low 32 bits of a word's index, spread
HIGH = 0x7FEB352D       # the index's high 32 bits (tensors beyond 16 GB), folded into the key
SEED = 0x5851F42D
FMIX1, FMIX2 = 0x85EBCA6B, 0xC2B2AE35  # murmur3's fmix32
SECOND = 0x27D4EB2F                     # the second lane: (x ^ x >> 15) * SECOND
CHUNK = 1 << 24
BLOCK = 8192
_KERNEL: Any = None
_WARMING: threading.Thread | None = None


@dataclass(frozen=True)
class Zeros:
    """How to count zero elements in a word: ``per_word`` elements of ``mask`` (the bits that are
    not a float's sign); ``per_word`` 0: not counted (8-byte elements)."""

    per_word: int = 0
    mask: int = 0


def zeros_of(dtype: Any) -> Zeros:
    size = dtype.itemsize
    if size not in (1, 2, 4):
        return Zeros()
    bits = 8 * size
    value = (1 << bits) - 1
    return Zeros(4 // size, value >> 1 if dtype.is_floating_point else value)


def bits_hash(words: Any, zeros: Zeros = Zeros()) -> tuple[int, int]:
    """(64-bit hash, zero elements) of a 1-D int32 tensor (a tensor's bytes as words)."""
    return bits_hashes([(words, zeros)])[0]


def bits_hashes(batch: list[tuple[Any, Zeros]]) -> list[tuple[int, int]]:
    """``bits_hash`` of many tensors, computed where each lives: by the Triton kernel on CUDA,
    every launch queued before one wait for the results (a model's few hundred tensors would
    otherwise wait for the device a few hundred times); elsewhere by the torch fallback, which
    gives the same numbers.  The kernel waits for ``prewarm`` if it is still compiling."""
    out: list[tuple[int, int] | None] = [None] * len(batch)
    queued: dict[Any, list[tuple[int, Any, int]]] = {}  # device -> (position, sums on the device, padding)
    for i, (words, zeros) in enumerate(batch):
        if words.is_cuda and words.numel() and _triton_available():
            if _WARMING is not None and _WARMING.is_alive():
                _WARMING.join()
            sums, padding = _triton_sums(words, zeros)
            queued.setdefault(words.device, []).append((i, sums, padding))
        else:  # the same numbers (an empty tensor: 0, 0)
            out[i] = _torch_hash(words, zeros)
    if queued:
        import torch

        for parts in queued.values():
            values = torch.stack([sums for _, sums, _ in parts]).tolist()  # the one wait per device
            for (i, _, padding), (first, second, zero) in zip(parts, values):
                out[i] = (_combine(first, second), int(zero) - padding)
    return [value if value is not None else (0, 0) for value in out]


def as_words(flat: Any) -> tuple[Any, bytes]:
    """A contiguous 1-D tensor's bytes as int32 words, and the 0-3 trailing bytes that do not
    fill a word (read on the host: at most three)."""
    import torch

    raw = flat.view(torch.uint8) if flat.dtype != torch.uint8 else flat
    whole = raw.numel() // 4 * 4
    body = raw[:whole]
    if whole and body.storage_offset() % 4:
        body = body.clone()
    tail = bytes(raw[whole:].cpu().tolist()) if whole != raw.numel() else b""
    return body.view(torch.int32), tail


def prewarm(device: str) -> None:
    """Compile the kernel in a background thread while the suite loads its model: Triton's
    first launch (importing it, hashing its own sources for its cache key, compiling or
    loading the kernel) costs about half a second, which the first fixture call would pay."""
    global _WARMING
    if _KERNEL is not None or _WARMING is not None or not _triton_available():
        return

    def warm() -> None:
        import torch

        try:  # the variants a model's weights use: buffers, 16-bit and 32-bit floats, 8-bit ints
            for dtype in (None, torch.bfloat16, torch.float32, torch.int8):
                _triton_hash(torch.zeros(1, dtype=torch.int32, device=device),
                             zeros_of(dtype) if dtype is not None else Zeros())
        except Exception:  # noqa: BLE001 - a failed warm-up only means the first call compiles
            pass

    _WARMING = threading.Thread(target=warm, name="llmppl-hash-prewarm", daemon=True)
    _WARMING.start()


def _combine(first: int, second: int) -> int:
    return ((first & M32) << 32) | (second & M32)


def _torch_hash(words: Any, zeros: Zeros = Zeros()) -> tuple[int, int]:
    """The same hash with torch ops, on any device: uint32 arithmetic held in int64 (the low 32
    bits of a product do not depend on the overflow above them)."""
    import torch

    first = torch.zeros((), dtype=torch.int64, device=words.device)
    second = torch.zeros((), dtype=torch.int64, device=words.device)
    zero = torch.zeros((), dtype=torch.int64, device=words.device)
    width = 32 // zeros.per_word if zeros.per_word else 0
    for start in range(0, words.numel(), CHUNK):
        w = words[start:start + CHUNK].to(torch.int64) & M32
        for k in range(zeros.per_word):
            zero += ((w >> (k * width)) & zeros.mask).eq(0).sum()
        idx = torch.arange(start, start + w.numel(), device=words.device, dtype=torch.int64)
        key = ((idx & M32) * POSITION + SEED + (idx >> 32) * HIGH) & M32
        x = w ^ key
        x = x ^ (x >> 16)
        x = (x * FMIX1) & M32
        x = x ^ (x >> 13)
        x = (x * FMIX2) & M32
        x = x ^ (x >> 16)
        first += x.sum()
        second += (((x ^ (x >> 15)) * SECOND) & M32).sum()
    return _combine(int(first.item()), int(second.item())), int(zero.item())


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _build() -> Any:
    import triton
    import triton.language as tl

    @triton.jit
    def kernel(words_ptr, out_ptr, n, POSITION: tl.constexpr, HIGH: tl.constexpr, SEED: tl.constexpr,
               FMIX1: tl.constexpr, FMIX2: tl.constexpr, SECOND: tl.constexpr, PER_WORD: tl.constexpr,
               MASK: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)
        start = pid * BLOCK
        idx = start + tl.arange(0, BLOCK).to(tl.int64)
        inside = idx < n
        w = tl.load(words_ptr + idx, mask=inside, other=0).to(tl.uint32, bitcast=True)
        # BLOCK divides 2^32, so a block's high index bits are one number
        high = (start >> 32).to(tl.uint32) * HIGH
        x = w ^ (idx.to(tl.uint32) * POSITION + SEED + high)
        x = x ^ (x >> 16)
        x = x * FMIX1
        x = x ^ (x >> 13)
        x = x * FMIX2
        x = x ^ (x >> 16)
        y = (x ^ (x >> 15)) * SECOND
        zero = tl.zeros_like(x)
        x = tl.where(inside, x, zero)
        y = tl.where(inside, y, zero)
        tl.store(out_ptr + 3 * pid, tl.sum(x, axis=0).to(tl.int64))
        tl.store(out_ptr + 3 * pid + 1, tl.sum(y, axis=0).to(tl.int64))
        if PER_WORD > 0:  # zero elements, in the same pass (the padding's zeros are taken off on the host)
            zeros = (w & MASK) == 0
            count = zeros.to(tl.int32)
            for k in tl.static_range(1, PER_WORD):
                count += ((w >> (k * (32 // PER_WORD))) & MASK) == 0
            tl.store(out_ptr + 3 * pid + 2, tl.sum(count, axis=0).to(tl.int64))
        else:
            tl.store(out_ptr + 3 * pid + 2, tl.zeros_like(pid))

    return kernel


def _triton_sums(words: Any, zeros: Zeros) -> tuple[Any, int]:
    """The kernel launched on a non-empty tensor: its three sums, still on the device (not
    waited for), and the padding elements the zero count must give back."""
    import torch

    global _KERNEL
    if _KERNEL is None:
        _KERNEL = _build()
    n = words.numel()
    blocks = (n + BLOCK - 1) // BLOCK
    partial = torch.empty(3 * blocks, dtype=torch.int64, device=words.device)
    _KERNEL[(blocks,)](words, partial, n, POSITION, HIGH, SEED, FMIX1, FMIX2, SECOND, zeros.per_word, zeros.mask,
                       BLOCK=BLOCK, num_warps=8)
    padding = (blocks * BLOCK - n) * zeros.per_word  # loaded as 0: every element of them counted
    return partial.view(blocks, 3).sum(dim=0), padding


def _triton_hash(words: Any, zeros: Zeros = Zeros()) -> tuple[int, int]:
    if words.numel() == 0:
        return 0, 0
    sums, padding = _triton_sums(words, zeros)
    first, second, zero = sums.tolist()
    return _combine(first, second), int(zero) - padding
