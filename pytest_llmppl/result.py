"""PerplexityResult: what one evaluation measured (plain Python, no torch)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


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
    extra: dict = field(default_factory=dict, compare=False)

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
    def mean_nll(self) -> float:
        """ln(ppl): the weighted mean NLL per scored position."""
        return sum(self.window_nll) / sum(self.window_weight)

    def to_dict(self) -> dict:
        """JSON-safe dict; a non-finite ppl becomes null with ``finite: false``."""
        data = asdict(self)
        data["window_index"] = list(self.window_index)
        data["window_nll"] = [_json_float(x) for x in self.window_nll]
        data["window_weight"] = list(self.window_weight)
        data["ppl"] = _json_float(self.ppl)
        data["finite"] = self.finite
        data["subset"] = self.subset
        return data

    def __str__(self) -> str:
        est = " (estimate from a subset)" if self.subset else ""
        return (f"PPL {self.ppl:.4f}{est} on {self.corpus}, seqlen {self.seqlen}, "
                f"{self.n_windows}/{self.n_windows_total} windows, protocol {self.protocol}")


def _json_float(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
