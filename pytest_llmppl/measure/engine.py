"""Windows -> forward -> per-window NLL: the evaluation loop.  Pure: no files, no pytest, no caches.
What it asks of a model (context length, head path, devices, dtypes) is ``model_facts``; what one
forward gives per position (float32 CE, top-1, top-k, divergence) is ``token_loss``; how many
windows go into the next forward is the ``BatchSizer`` here.  Per-window sums are float64.
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from ..errors import ModelError, SettingsError
from .device_divergence import DeviceReference
from .model_facts import evaluation_plan, input_device, param_dtype
from .protocols import Protocol
from .token_loss import LOGITS_CHUNK_BYTES, token_ce
from .windows import Window, plan_evaluation

CUDA_TOKENS_PER_BATCH = 2048
CPU_START_TOKENS = 1024  # CPU auto starts near this many tokens per forward, then grows while faster


@dataclass(frozen=True)
class EngineOutput:
    """Per-window sums of one run, in corpus order."""

    window_index: list[int]
    window_nll: list[float]
    window_weight: list[int]
    n_windows_total: int
    seconds: float
    tokens_forwarded: int
    batch_size: int
    head_path: str
    device: str
    dtype: str
    top1: dict[int, Any] | None = None  # window -> int32 array of top-1 predictions at its scored positions
    topk: Any = None        # divergence.DenseTopK: this model's top-k at every scored position (keep_topk)
    divergence: Any = None  # divergence.TokenDivergence: per token, against ``reference``


def evaluate_ids(model, ids, *, seqlen: int, protocol: str | Protocol = "torch-pruning", stride: int | None = None,
                 max_windows: int | None = None, first_windows: int | None = None, batch_size="auto",
                 device=None, dtype=None, head: str = "auto", progress=None,
                 order: list[int] | None = None, stop=None, want_argmax: bool = False, keep_topk: int = 0,
                 reference: Any = None, reference_key: str = "",
                 doc_lengths: list[int] | None = None, windows: list[Window] | None = None) -> EngineOutput:
    """Per-window NLLs of ``model`` on the token stream ``ids`` (1-D int array).

    ``first_windows`` keeps only the corpus's first N windows (C4's 256); ``max_windows``
    then takes an evenly spread subset.  ``order`` evaluates the chosen windows in that
    order (results still returned in corpus order); ``stop(done_indices, nlls)`` may end
    the run early (returns True); ``want_argmax`` also returns each scored position's
    top-1 prediction (``top1``); ``keep_topk`` the model's top-k there (``topk``, a
    ``DenseTopK``: what a baseline keeps); ``reference`` (a dense model's ``DenseTopK``
    covering the chosen windows) the per-token divergence from it (``divergence``).  ``windows``:
    the stream's windows when the caller planned them already (``Prepared.windows``).
    """
    import numpy as np
    import torch

    ids = np.asarray(ids)
    plan = evaluation_plan(model, ids, head, dtype)
    rules, windows, chosen = plan_evaluation(len(ids), seqlen, protocol, stride, first_windows, doc_lengths,
                                             max_windows, windows)
    if order is not None:
        if sorted(order) != sorted(chosen):
            raise ValueError("order must be a permutation of the chosen windows")
        chosen = list(order)
    path, cast = plan.head_path, plan.cast
    t0 = time.perf_counter()
    with _evaluation_mode(model, None if device in (None, "auto") else torch.device(device)) as in_device:
        # The whole stream goes to the device once: a host-to-device copy per batch from
        # pageable memory would make the host wait for the GPU before every forward.
        stream = torch.as_tensor(ids, dtype=torch.long).to(in_device)
        run = _BatchRun(model, stream, windows, rules, path, cast, want_argmax,
                        BatchSizer(batch_size, in_device, model, seqlen, 2 * LOGITS_CHUNK_BYTES), keep_topk,
                        DeviceReference(reference, windows, chosen, in_device) if reference is not None else None,
                        dtype_asked=dtype is not None)
        run.over(chosen, progress, stop)
        _empty_cache(in_device)
    done = sorted(run.nll)
    return EngineOutput(
        window_index=done,
        window_nll=[run.nll[i] for i in done],
        window_weight=[rules.weight(windows[i]) for i in done],
        n_windows_total=len(windows),
        seconds=time.perf_counter() - t0,
        tokens_forwarded=run.forwarded,
        batch_size=run.sizer.largest,
        head_path=path,
        device=str(in_device),
        dtype=plan.dtype,
        top1={i: run.tops[i].cpu().numpy() for i in done} if want_argmax else None,
        topk=run.dense_topk(done) if keep_topk else None,
        divergence=run.token_divergence(done, reference_key) if reference is not None else None,
    )


class _BatchRun:
    """The batch loop: forwards groups of windows, keeps per-window sums (on the device until
    read), halves the batch on out-of-memory, and consults the stop rule."""

    def __init__(self, model, stream, windows: list[Window], protocol: Protocol, path: str, cast, want_argmax: bool,
                 sizer: BatchSizer, keep_topk: int = 0, reference: DeviceReference | None = None,
                 dtype_asked: bool = False):
        self.model, self.stream, self.windows, self.protocol = model, stream, windows, protocol
        self.path, self.cast, self.want_argmax, self.sizer = path, cast, want_argmax, sizer
        self.dtype_asked = dtype_asked  # a dtype was asked for: a caller's autocast does not reach the forward
        self.keep_topk, self.reference = keep_topk, reference
        self.nll: dict[int, float] = {}
        self.tops: dict[int, Any] = {}
        self.topks: dict[int, tuple[Any, ...]] = {}  # window -> (ids, logp, rest, ce) over its scored positions
        self.divs: dict[int, tuple[Any, ...]] = {}   # window -> (kl, dp, same top) over its scored positions
        self.pending: list = []
        self.forwarded = 0

    def over(self, chosen: list[int], progress, stop) -> None:
        pos = 0
        while pos < len(chosen):
            group = _same_length_prefix(self.windows, chosen[pos:pos + self.sizer.next_size()])
            if not self._forward(group):
                continue
            # Reading sums back to the host waits for the GPU; without a stop rule (or a CPU
            # batch sizer that needs timings) they stay on the device, so the queue stays full.
            if stop is not None or not self.sizer.settled:
                self._collect()
            pos += len(group)
            if progress is not None:
                progress(pos, len(chosen))
            if stop is not None and stop(list(chosen[:pos]), [self.nll[i] for i in chosen[:pos]]):
                break
        self._collect()

    def _forward(self, group: list[int]) -> bool:
        """One forward over ``group``; False when it ran out of memory and the batch shrank."""
        import torch

        windows = self.windows
        batch = torch.stack([self.stream[windows[i].start:windows[i].end] for i in group])
        tb = time.perf_counter()
        try:
            with _autocast(batch.device.type, self.cast, self.dtype_asked):
                outputs = token_ce(self.model, batch, self.path, argmax=self.want_argmax, keep_topk=self.keep_topk,
                                   drop_last_input=self.protocol.drop_last_input,
                                   noise=self._noise(group, batch) if self.keep_topk else None,
                                   reference=self.reference.batch(group) if self.reference is not None else None)
        except getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError) as exc:
            if not self.sizer.shrink():
                raise ModelError(
                    f"out of memory evaluating one window of {batch.shape[1]} tokens on {batch.device}: use a "
                    "smaller seqlen (--ppl-seqlen), a lower dtype (--ppl-dtype bfloat16), or free device memory."
                ) from exc
            _empty_cache(batch.device)
            return False
        ce = outputs.ce
        self.pending.append((group, _window_sums(ce, [windows[i].score_from for i in group])))
        for b, i in enumerate(group):
            scored = slice(windows[i].score_from - 1, None)
            if outputs.top is not None:
                self.tops[i] = outputs.top[b, scored]
            if outputs.topk is not None:
                self.topks[i] = (*(part[b, scored] for part in outputs.topk), ce[b, scored])
            if outputs.divergence is not None:
                self.divs[i] = tuple(part[b, scored] for part in outputs.divergence)
        self.forwarded += batch.numel()
        self.sizer.record(len(group), batch.numel(), time.perf_counter() - tb)
        return True

    def _noise(self, group: list[int], batch) -> Any:
        import torch

        from .device_divergence import window_noise

        return torch.stack([window_noise(i, batch.shape[1] - 1) for i in group]).to(batch.device)

    def dense_topk(self, done: list[int]) -> Any:
        from .divergence import TAIL_SAMPLES, DenseTopK

        parts = [{i: self.topks[i][j].cpu().numpy() for i in done} for j in range(len(DenseTopK.PARTS))]
        return DenseTopK(self.keep_topk, TAIL_SAMPLES, *parts)

    def token_divergence(self, done: list[int], against: str) -> Any:
        from .divergence import TokenDivergence

        assert self.reference is not None
        parts = [{i: self.divs[i][j].cpu().numpy() for i in done} for j in range(3)]
        return TokenDivergence(against, self.reference.k, *parts)

    def _collect(self) -> None:
        """Move pending per-window sums to the host as window NLLs."""
        for group, sums in self.pending:
            for i, total in zip(group, sums.tolist()):
                self.nll[i] = self.protocol.window_nll(total, self.windows[i])
        self.pending.clear()


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


def _autocast(device_type: str, cast: Any, dtype_asked: bool) -> Any:
    """The forward's autocast: ``cast``; where a dtype was asked for and needs none, a caller's own
    autocast is turned off (a fixture call always asks for its identity's dtype, which names a
    caller's autocast as the dtype when the settings ask for none); ``evaluate()`` without a
    dtype runs in whatever the caller set up."""
    import torch

    if cast is not None:
        return torch.autocast(device_type, dtype=cast)
    if not dtype_asked:
        return nullcontext()
    try:
        outer = torch.is_autocast_enabled(device_type)
    except (RuntimeError, TypeError):
        outer = False
    return torch.autocast(device_type, enabled=False) if outer else nullcontext()


def _window_sums(ce, score_from: list[int]):
    """Float64 sum of each window's scored CE, as a device tensor (no host sync)."""
    import torch

    ce64 = ce.double()
    if all(s == 1 for s in score_from):
        return ce64.sum(dim=1)
    return torch.stack([ce64[b, s - 1:].sum() for b, s in enumerate(score_from)])


def _same_length_prefix(windows: list[Window], idx: list[int]) -> list[int]:
    first = windows[idx[0]].length
    out = []
    for i in idx:
        if windows[i].length != first:
            break
        out.append(i)
    return out


@contextmanager
def _evaluation_mode(model, device):
    """eval(), inference_mode, use_cache off, moved to ``device``; everything restored afterwards
    (every module's training flag, the config, the device), even on Ctrl-C or an out-of-memory
    error part-way through the move."""
    import torch

    modes = [(m, m.training) for m in model.modules()]
    config = getattr(model, "config", None)
    had_cache = getattr(config, "use_cache", None)
    moved_from = None
    try:
        if device is not None and not getattr(model, "hf_device_map", None):
            current = input_device(model)
            if current != device and not (current.type == device.type and device.index is None):
                moved_from = current  # set before the move: a move that fails part-way is undone too
                model.to(device)
        model.eval()
        if config is not None and had_cache is not None:
            config.use_cache = False
        with torch.inference_mode():
            yield input_device(model)
    finally:
        if config is not None and had_cache is not None:
            config.use_cache = had_cache
        for module, training in modes:
            module.training = training
        if moved_from is not None:
            model.to(moved_from)


def _empty_cache(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
