"""One forward's outputs per position: the float32 cross-entropy of each next-token prediction,
and on request the top-1 ids, the dense model's top-k reference, or the divergence from it.

For models whose head is a plain linear layer the head and the loss run in position chunks on
the decoder's hidden states, so full-length float32 logits never exist; other models take the
full-logits path (logits chunked only for the float32 upcast).  Both give the same per-token CE
up to float rounding.  On CUDA the fused kernel (``fused_ce``) reads half-precision logits directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ModelError

LOGITS_CHUNK_BYTES = 128 * 2**20  # float32 log-probs per chunk: bounds the head's memory
FUSED_CHUNK_BYTES = 256 * 2**20  # half-precision logits per chunk on the fused CUDA path


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
            for part, value in zip(result.topk, dense_topk(logp.all(), lg, keep_topk, noise[:, s:e].to(lg.device))):
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
