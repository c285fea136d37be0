"""PerplexityResult: what one evaluation measured (plain Python, no torch)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class PerplexityResult:
    """One evaluation.  ``ppl = exp(sum(window_nll) / sum(window_weight))``.

    ``window_nll``/``window_weight`` are per evaluated window, in corpus order; the
    protocol decides what they hold (Torch-Pruning: mean CE x seqlen and seqlen;
    ``tokens``/``sliding``: summed CE and the number of scored tokens).
    ``window_index`` says which windows of ``n_windows_total`` were evaluated: all of
    them unless ``max_windows`` chose a spread-out subset (``subset`` is then true
    and ``ppl`` is an estimate of the full-corpus number).
    """

    ppl: float
    corpus: str
    protocol: str
    seqlen: int
    stride: int | None
    n_tokens: int
    n_windows: int
    n_windows_total: int
    window_index: tuple[int, ...]
    window_nll: tuple[float, ...]
    window_weight: tuple[float, ...]
    seconds: float = 0.0
    tokens_per_second: float = 0.0
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 1
    head_path: str = "full"        # which forward ran: "chunked" (decoder, then the head in chunks) or "full"
    tokens_source: str = ""        # memory | cache | tokenized
    # lm-eval's word perplexity, byte perplexity and bits per byte (``lmeval.LMEvalMetrics``): the
    # lm-eval protocol, every window evaluated.
    lm_eval: Any = field(default=None, compare=False)
    # The dense model's argmax at each scored position (window -> int32 array), when kept.
    top1: dict[int, Any] | None = field(default=None, compare=False, repr=False)
    # The dense model's top-k at each scored position (``divergence.DenseTopK``), when kept (a baseline).
    topk: Any = field(default=None, compare=False, repr=False)
    # Per token, this model against a dense model's top-k (``divergence.TokenDivergence``), when asked.
    divergence: Any = field(default=None, compare=False, repr=False)
    # The measurement's identity, when the plugin measured it (``identity.MeasurementSpec``).
    identity: Any = field(default=None, compare=False, repr=False)
    # What the model keeps (``size_facts.SizeFacts``: parameters, non-zeros, linear MACs, shapes).
    size: Any = field(default=None, compare=False, repr=False)

    @property
    def params(self) -> int | None:
        """The model's parameter count (None when unknown)."""
        return self.size.params if self.size is not None else None

    def __float__(self) -> float:
        return float(self.ppl)

    # Comparisons with numbers use the PPL; NaN compares False with everything, so
    # ``assert result < 100`` fails for a non-finite perplexity.
    def __lt__(self, other) -> bool:
        return self.ppl < float(other)

    def __le__(self, other) -> bool:
        return self.ppl <= float(other)

    def __gt__(self, other) -> bool:
        return self.ppl > float(other)

    def __ge__(self, other) -> bool:
        return self.ppl >= float(other)

    @property
    def subset(self) -> bool:
        """True when only a subset of the corpus windows was evaluated."""
        return self.n_windows < self.n_windows_total

    @property
    def finite(self) -> bool:
        """False for NaN or inf: such a number is reported, never compared."""
        return math.isfinite(self.ppl)

    @property
    def carries_reference(self) -> bool:
        """It kept the model's top-k over every window it evaluated: a KL divergence from this
        model can be measured against it."""
        return self.topk is not None and self.topk.covers(self.window_index)

    @property
    def kl(self) -> Any:
        """The KL divergence from the dense model this was measured against (``divergence.KLDivergence``,
        llama.cpp's statistics), or None when it was not measured against one."""
        if self.divergence is None:
            return None
        from .divergence import summarize

        return summarize(self.divergence)

    @property
    def mean_nll(self) -> float:
        """ln(ppl): the weighted mean NLL per scored position."""
        return sum(self.window_nll) / sum(self.window_weight)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (``json.dumps(..., allow_nan=False)`` accepts it): a non-finite ppl or
        window NLL becomes null, with ``finite: false``; top-1 arrays are left out."""
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)
                                if f.name not in ("top1", "topk", "divergence", "identity", "size")}
        data["window_index"] = list(self.window_index)
        data["window_nll"] = [_json_float(x) for x in self.window_nll]
        data["window_weight"] = list(self.window_weight)
        data["ppl"] = _json_float(self.ppl)
        data["seconds"] = _json_float(self.seconds)
        data["tokens_per_second"] = _json_float(self.tokens_per_second)
        data["lm_eval"] = self.lm_eval.to_json() if self.lm_eval is not None else None
        data["finite"] = self.finite
        data["subset"] = self.subset
        if self.identity is not None:
            data["identity"] = self.identity.to_json()
        data["size"] = self.size.to_json() if self.size is not None else None
        return data

    def __str__(self) -> str:
        est = " (estimate from a subset)" if self.subset else ""
        text = (f"PPL {self.ppl:.4f}{est} on {self.corpus}, seqlen {self.seqlen}, "
                f"{self.n_windows}/{self.n_windows_total} windows, protocol {self.protocol}")
        if self.lm_eval is not None:
            m = self.lm_eval
            text += (f"; word perplexity {m.word_perplexity:.4f}, byte perplexity {m.byte_perplexity:.4f}, "
                     f"bits per byte {m.bits_per_byte:.4f}")
        return text


def _json_float(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def ppl_from(nll: Sequence[float], weight: Sequence[float]) -> float:
    """exp(sum NLL / sum weight), NaN/inf kept as such."""
    total_w = math.fsum(weight)
    total = math.fsum(nll)
    if not math.isfinite(total):
        return float("nan") if math.isnan(total) else float("inf")
    try:
        return math.exp(total / total_w)
    except OverflowError:
        return float("inf")
