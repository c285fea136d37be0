"""How many windows go into the next forward: a fixed number, or ``auto`` (sized from the free GPU
memory, or grown on the CPU while throughput improves, halved on an out-of-memory error)."""

from __future__ import annotations

from ..errors import SettingsError
from .model_facts import param_dtype

CUDA_TOKENS_PER_BATCH = 2048
CPU_START_TOKENS = 1024  # CPU auto starts near this many tokens per forward, then grows while faster


class BatchSizer:
    """Batch sizes for the next forward: fixed N, or ``auto``.

    auto on CUDA: about 2048 tokens per forward, fewer if the activations would not fit
    80% of free memory (estimated from the shapes), halved on an out-of-memory error.
    auto on CPU: starts near 1024 tokens per forward and doubles while measured tokens/s
    improves by 10% or more (up to 64 windows), then stays.
    """

    def __init__(self, batch_size, device, model, seqlen: int, head_bytes: int = 0):
        self.fixed = None if batch_size in (None, "auto") else int(batch_size)
        if self.fixed is not None and self.fixed < 1:
            raise SettingsError(f"batch_size must be >= 1 or 'auto', got {batch_size!r}")
        self.device = device
        cpu_start = max(1, min(16, CPU_START_TOKENS // seqlen))
        self.current = self.fixed or (self._cuda_estimate(model, seqlen, head_bytes) if device.type == "cuda"
                                      else cpu_start)
        self.largest = self.current
        self.rates: dict[int, float] = {}
        self.settled = self.fixed is not None or device.type == "cuda"

    @staticmethod
    def _cuda_estimate(model, seqlen: int, head_bytes: int) -> int:
        """About 2048 tokens per forward (a GPU is saturated by then; more only costs memory),
        fewer if the activations would not fit 80% of free memory."""
        import torch

        free, _ = torch.cuda.mem_get_info()
        cfg = model.config
        hidden = getattr(cfg, "hidden_size", 4096)
        inter = getattr(cfg, "intermediate_size", 4 * hidden)
        elem = torch.finfo(param_dtype(model)).bits // 8
        per_window = seqlen * elem * (8 * hidden + 3 * inter) + head_bytes
        fits = int(0.8 * free // per_window)
        return max(1, min(max(1, CUDA_TOKENS_PER_BATCH // seqlen), fits))

    def next_size(self) -> int:
        return self.current

    def record(self, n_windows: int, tokens: int, seconds: float) -> None:
        self.largest = max(self.largest, n_windows)
        if self.settled or n_windows != self.current:
            return
        rate = tokens / max(seconds, 1e-9)
        self.rates[n_windows] = rate
        prev = self.rates.get(n_windows // 2)
        if prev is not None and rate < 1.1 * prev:
            self.current = n_windows // 2
            self.settled = True
        elif n_windows < 64:
            self.current = n_windows * 2
        else:
            self.settled = True

    def shrink(self) -> bool:
        if self.current <= 1:
            return False
        self.current //= 2
        self.settled = True
        return True
