"""Float32 cross-entropy straight from half-precision logits, in one pass (CUDA, Triton).

``ce[r] = logsumexp(logits[r, :]) - logits[r, target[r]]`` (and the logsumexp itself) with an online max/sum in
float32: the logits are read once and no float32 copy or log-prob tensor is written, so
the loss costs a read of the logits instead of an upcast plus a log-softmax.  Used by
the engine on CUDA when Triton is importable; everywhere else (and with
``PYTEST_LLMPPL_FUSED_CE=0``) the engine uses ``log_softmax(dtype=float32)``.
NaN or inf logits give a NaN loss, as the torch path does.
"""

from __future__ import annotations

import os

_KERNEL = None


def enabled(device) -> bool:
    """The fused kernel applies on CUDA with Triton, unless ``PYTEST_LLMPPL_FUSED_CE=0``."""
    if device.type != "cuda" or os.environ.get("PYTEST_LLMPPL_FUSED_CE", "1") == "0":
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def available(logits) -> bool:
    """Whether the fused kernel can take these logits (enabled, contiguous rows, a float dtype)."""
    import torch

    return (enabled(logits.device) and logits.stride(-1) == 1
            and logits.dtype in (torch.bfloat16, torch.float16, torch.float32))


def _build():
    import triton
    import triton.language as tl

    @triton.jit
    def kernel(logits_ptr, row_stride, target_ptr, out_ptr, lse_ptr, vocab, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        base = logits_ptr + row * row_stride
        m = tl.full([BLOCK], float("-inf"), tl.float32)
        s = tl.zeros([BLOCK], tl.float32)
        for start in range(0, vocab, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            x = tl.load(base + cols, mask=cols < vocab, other=float("-inf")).to(tl.float32)
            m_new = tl.maximum(m, x)
            alpha = tl.where(m == m_new, 1.0, tl.exp(m - m_new))
            beta = tl.where(x == float("-inf"), 0.0, tl.exp(x - m_new))
            s = s * alpha + beta
            m = m_new
        mx = tl.max(m, 0)
        total = tl.sum(tl.where(m == float("-inf"), 0.0, s * tl.exp(m - mx)), 0)
        target = tl.load(target_ptr + row)
        picked = tl.load(base + target).to(tl.float32)
        lse = mx + tl.log(total)
        tl.store(out_ptr + row, lse - picked)
        tl.store(lse_ptr + row, lse)

    return kernel


def cross_entropy(logits, targets, with_lse: bool = False):
    """Per-row float32 CE of a [rows, vocab] logits matrix (rows contiguous in the last dim); with
    ``with_lse`` also each row's float32 logsumexp (the log-prob of token i is then
    ``logits[r, i] - lse[r]``, which the KL divergence needs at a few ids)."""
    import torch

    global _KERNEL
    if _KERNEL is None:
        _KERNEL = _build()
    rows, vocab = logits.shape
    out = torch.empty(rows, dtype=torch.float32, device=logits.device)
    lse = torch.empty(rows, dtype=torch.float32, device=logits.device)
    if rows:
        _KERNEL[(rows,)](logits, logits.stride(0), targets.contiguous(), out, lse, vocab, BLOCK=4096, num_warps=8)
    return (out, lse) if with_lse else out
