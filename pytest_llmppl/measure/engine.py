"""Windows -> forward -> per-window NLL: the evaluation loop.  Pure: no files, no pytest, no caches.
What it asks of a model (context length, head path, devices, dtypes) is ``model_facts``.

The loss is cross-entropy in float32 (whatever the model dtype), per-window sums in
float64.  For models whose head is a plain linear layer the head and the loss run
in position chunks on the decoder's hidden states, so full-length float32 logits
never exist; other models take the full-logits path (logits chunked only for the
float32 upcast).  Both give the same per-token CE up to float rounding.
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from ..errors import ModelError
from .batch_sizer import BatchSizer
from .device_divergence import DeviceReference
from .model_facts import evaluation_plan, input_device
from .protocols import Protocol
from .windows import Window, plan_evaluation

LOGITS_CHUNK_BYTES = 128 * 2**20  # float32 log-probs per chunk: bounds the head's memory
FUSED_CHUNK_BYTES = 256 * 2**20  # half-precision logits per chunk on the fused CUDA path


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
                        DeviceReference(reference, windows, chosen, in_device) if reference is not None else None)
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
                 sizer: BatchSizer, keep_topk: int = 0, reference: DeviceReference | None = None):
        self.model, self.stream, self.windows, self.protocol = model, stream, windows, protocol
        self.path, self.cast, self.want_argmax, self.sizer = path, cast, want_argmax, sizer
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
            with (torch.autocast(batch.device.type, dtype=self.cast) if self.cast is not None else nullcontext()):
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


@dataclass
class TokenOutputs:
    """What one forward gives per position [B, L-1]: the float32 CE, and on request the top-1 ids
    (int32), the dense model's top-k (ids, log-probs, rest mass) or the divergence from a
    dense model's top-k (KL, Δp, same argmax)."""

    ce: Any
    top: Any = None
    topk: tuple[Any, ...] | None = None
    divergence: tuple[Any, Any, Any] | None = None


def token_ce(model, batch, path: str = "full", argmax: bool = False, keep_topk: int = 0, noise: Any = None,
             reference: tuple[Any, ...] | None = None, drop_last_input: bool = False) -> TokenOutputs:
    """Float32 CE of each next-token prediction [B, L-1]; with ``argmax`` the top-1 ids, with
    ``keep_topk`` the model's reference at each position (its top-k, and draws from the rest
    picked by ``noise`` [B, L-1, m]), with ``reference`` (a dense model's, at the same
    positions) the divergence from it.  ``drop_last_input``: the model sees the window without its
    last token (lm-eval's input: a window of L + 1 tokens is L positions), not the whole window
    with its last logits discarded (Torch-Pruning's)."""
    import torch
    import torch.nn.functional as F

    from .device_divergence import dense_topk, token_divergence

    labels = batch[:, 1:]
    n_pos = batch.shape[1] - 1
    inputs = batch[:, :-1] if drop_last_input else batch
    if path == "chunked":
        base = getattr(model, model.base_model_prefix)
        out = base(input_ids=inputs, use_cache=False)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        head = model.get_output_embeddings()
        vocab = head.out_features
        source = lambda s, e: head(hidden[:, s:e])  # noqa: E731
    else:
        out = model(input_ids=inputs, use_cache=False)
        logits = getattr(out, "logits", None)
        if logits is None and isinstance(out, torch.Tensor):
            logits = out
        if logits is None:
            raise ModelError(
                f"{type(model).__name__} returned {type(out).__name__} without .logits: "
                "perplexity needs a causal LM whose output has logits (AutoModelForCausalLM)."
            )
        if logits.dim() != 3 or logits.shape[:2] != inputs.shape:
            raise ModelError(
                f"logits of shape {tuple(logits.shape)} do not match the input {tuple(inputs.shape)}: "
                "the model does not return one next-token distribution per position."
            )
        vocab = logits.shape[-1]
        source = lambda s, e: logits[:, s:e]  # noqa: E731
    fused = _fused_ce().enabled(batch.device)
    if fused:  # no float32 intermediate: chunks sized by the model-dtype logits alone
        step = max(1, FUSED_CHUNK_BYTES // (2 * vocab * batch.shape[0]))
    else:
        step = max(1, LOGITS_CHUNK_BYTES // (4 * vocab * batch.shape[0]))
    dev = batch.device
    result = TokenOutputs(ce=torch.empty(batch.shape[0], n_pos, dtype=torch.float32, device=dev))
    ce = result.ce
    if argmax:
        result.top = torch.empty(batch.shape[0], n_pos, dtype=torch.int32, device=dev)
    if keep_topk:
        n_b, m = batch.shape[0], noise.shape[-1]
        result.topk = (torch.empty(n_b, n_pos, keep_topk, dtype=torch.int32, device=dev),
                       torch.empty(n_b, n_pos, keep_topk, dtype=torch.float32, device=dev),
                       torch.empty(n_b, n_pos, m, dtype=torch.int32, device=dev),
                       torch.empty(n_b, n_pos, m, dtype=torch.float32, device=dev),
                       torch.empty(n_b, n_pos, dtype=torch.float32, device=dev))
    if reference is not None:
        result.divergence = (torch.empty(batch.shape[0], n_pos, dtype=torch.float32, device=dev),
                             torch.empty(batch.shape[0], n_pos, dtype=torch.float32, device=dev),
                             torch.empty(batch.shape[0], n_pos, dtype=torch.bool, device=dev))
    for s in range(0, n_pos, step):
        e = min(n_pos, s + step)
        lg = source(s, e)
        tgt = labels[:, s:e].to(lg.device)
        if fused and _fused_ce().available(lg):
            rows, lse = _fused_ce().cross_entropy(lg.reshape(-1, vocab), tgt.reshape(-1), with_lse=True)
            ce[:, s:e] = rows.view(tgt.shape).to(ce.device)
            logp = _LogProbs(lg, lse=lse.view(tgt.shape))
        else:
            # log_softmax reads half-precision logits and writes float32 in one kernel
            # (no separate upcast copy); the NLL is then a gather.
            full = F.log_softmax(lg, dim=-1, dtype=torch.float32)
            ce[:, s:e] = -full.gather(-1, tgt.unsqueeze(-1)).squeeze(-1).to(ce.device)
            logp = _LogProbs(lg, full=full)
            del full
        if result.top is not None:
            result.top[:, s:e] = lg.argmax(dim=-1).to(torch.int32).to(dev)
        if result.topk is not None:
            for part, value in zip(result.topk, dense_topk(logp.at, logp.all, lg, keep_topk,
                                                           noise[:, s:e].to(lg.device))):
                part[:, s:e] = value.to(dev)
        if result.divergence is not None and reference is not None:
            ref = [r[:, s:e] for r in reference]
            q_at = logp.at(ref[0].long()), logp.at(ref[2].long())  # at the dense top-k and its draws
            for part, value in zip(result.divergence, token_divergence(*q_at, lg, ce[:, s:e], *ref)):
                part[:, s:e] = value.to(dev)
        del lg, logp
    return result


class _LogProbs:
    """The float32 log-probs of a logits chunk, as the loss saw them: the log_softmax it computed,
    or (fused path) the logits less their logsumexp, made only where asked."""

    def __init__(self, logits, lse=None, full=None):
        self.logits, self.lse, self.full = logits, lse, full

    def at(self, ids):
        if self.full is not None:
            return self.full.gather(-1, ids)
        return self.logits.gather(-1, ids).float() - self.lse.unsqueeze(-1)

    def all(self):
        return self.full if self.full is not None else self.logits.float() - self.lse.unsqueeze(-1)


def _fused_ce():
    from ..measure import fused_ce

    return fused_ce


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
