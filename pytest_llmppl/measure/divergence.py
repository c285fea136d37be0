"""How far a candidate's next-token distributions are from the dense model's, token by token.

A baseline measurement keeps, at every scored position, what the dense model predicted
(``DenseTopK``; whole logits would be tens of GB for WikiText-2 at a 128k vocabulary):
its ``k`` most likely tokens with their log-probs, ``m`` tokens drawn from the rest of
its distribution (in proportion to their probability, with replacement) with theirs,
the mass of the rest, and the correct token's loss.  A candidate measured against it
gets, per token,

    KL(P_dense || Q) = sum_{i in top-k} p_i (ln p_i - ln q_i)
                       + p_rest * mean_{j = 1..m} (ln p_{s_j} - ln q_{s_j})
    dp = q(correct) - p(correct)

The first sum is exact; the second is an unbiased estimate of the rest's share
(importance sampling from the dense distribution itself), so the mean KL over a corpus
is unbiased, and a model against itself gives exactly 0.  Merging the rest into one
outcome instead would only give a lower bound, 20-35% low on SmolLM2
(``benchmarks/kl_topk_error.py`` measures both against the exact full-vocabulary KL; see
docs/divergence.md).  The draws come from noise seeded by the window's index, so a
window's reference is the same whatever the batch or device.

The statistics are llama.cpp's (``llama-perplexity --kl-divergence``): mean ± SE with its
formula, median, linearly interpolated percentiles, RMS Δp ± SE and "same top p".
Plain Python and numpy; what the engine's loop computes on the device is ``device_divergence``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

TOP_K = 16          # the dense model's most likely tokens kept exactly at each position
TAIL_SAMPLES = 16   # draws from the rest: chosen with benchmarks/kl_topk_error.py (docs/divergence.md)
KL_PERCENTILES = (0.999, 0.99, 0.95, 0.90)
DP_PERCENTILES = (0.999, 0.99, 0.95, 0.90, 0.75, 0.25, 0.10, 0.05, 0.01, 0.001)
WORST_WINDOWS = 3


@dataclass
class DenseTopK:
    """The dense model's prediction at every scored position of each window (numpy arrays,
    window -> array over its scored positions): top-k ids (int32 [n, k]) and log-probs
    (float32 [n, k]), m ids drawn from the rest (int32 [n, m]) and their log-probs
    (float32 [n, m]), the rest's mass (float32 [n]) and the correct token's loss (float32 [n])."""

    k: int
    m: int
    ids: dict[int, Any]
    logp: dict[int, Any]
    tail_ids: dict[int, Any]
    tail_logp: dict[int, Any]
    rest: dict[int, Any]
    ce: dict[int, Any]

    PARTS = ("ids", "logp", "tail_ids", "tail_logp", "rest", "ce")

    @property
    def windows(self) -> list[int]:
        return sorted(self.ce)

    def covers(self, windows: tuple[int, ...] | list[int]) -> bool:
        return all(i in self.ce for i in windows)

    def part(self, name: str) -> dict[int, Any]:
        return getattr(self, name)

    def pack(self) -> tuple[Any, dict[str, Any]]:
        """One structured array (for the store) and its metadata (k, m, windows, lengths)."""
        import numpy as np

        windows = self.windows
        lengths = [len(self.ce[i]) for i in windows]
        out = np.zeros(sum(lengths), dtype=_record_dtype(self.k, self.m))
        pos = 0
        for i, n in zip(windows, lengths):
            for name in self.PARTS:
                out[name][pos:pos + n] = self.part(name)[i]
            pos += n
        return out, {"k": self.k, "m": self.m, "windows": windows, "lengths": lengths}

    @classmethod
    def unpack(cls, meta: dict[str, Any], data: Any) -> DenseTopK | None:
        k, m, windows, lengths = meta.get("k"), meta.get("m"), meta.get("windows"), meta.get("lengths")
        if not isinstance(k, int) or not isinstance(m, int) or not isinstance(windows, list) \
                or not isinstance(lengths, list) or data.dtype != _record_dtype(k, m) or sum(lengths) != len(data):
            return None
        parts: dict[str, dict[int, Any]] = {name: {} for name in cls.PARTS}
        pos = 0
        for i, n in zip(windows, lengths):
            for name, part in parts.items():
                part[i] = data[name][pos:pos + n]
            pos += n
        return cls(k, m, **parts)

    def nbytes(self) -> int:
        return sum(a.nbytes for name in self.PARTS for a in self.part(name).values())


def bytes_per_token(k: int = TOP_K, m: int = TAIL_SAMPLES) -> int:
    return _record_dtype(k, m).itemsize


def _record_dtype(k: int, m: int) -> Any:
    import numpy as np

    return np.dtype([("ids", "<i4", (k,)), ("logp", "<f4", (k,)), ("tail_ids", "<i4", (m,)),
                     ("tail_logp", "<f4", (m,)), ("rest", "<f4"), ("ce", "<f4")])


@dataclass
class TokenDivergence:
    """Per token of each evaluated window, a candidate against one dense model's top-k:
    KL (float32), Δp (float32) and whether the argmax agreed (bool)."""

    against: str  # the dense measurement's key (MeasurementSpec.key)
    k: int
    kl: dict[int, Any] = field(default_factory=dict)
    dp: dict[int, Any] = field(default_factory=dict)
    same_top: dict[int, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class KLDivergence:
    """What a check reports about its divergence from the dense model (llama.cpp's statistics)."""

    k: int
    tokens: int
    windows: int
    mean: float
    se: float
    median: float
    percentiles: dict[str, float]  # "99.9", "99", "95", "90" -> KL at that percentile
    maximum: float
    minimum: float
    dp_mean: float
    dp_se: float
    dp_median: float
    dp_percentiles: dict[str, float]
    dp_maximum: float
    dp_minimum: float
    dp_rms: float
    dp_rms_se: float
    same_top: float
    same_top_se: float
    worst: tuple[tuple[int, float], ...] = ()  # (window, its mean KL), highest first

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name == "worst":
                value = [[i, _finite(v)] for i, v in value]
            elif isinstance(value, dict):
                value = {key: _finite(v) for key, v in value.items()}
            elif isinstance(value, float):
                value = _finite(value)
            out[name] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KLDivergence:
        values: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            value = data[name] if name != "worst" else data.get("worst", [])
            if name == "worst":
                value = tuple((int(i), _nan(v)) for i, v in value)
            elif isinstance(value, dict):
                value = {key: _nan(v) for key, v in value.items()}
            elif name not in ("k", "tokens", "windows"):
                value = _nan(value)
            values[name] = value
        return cls(**values)

    @classmethod
    def identical(cls, k: int, tokens: int, windows: int) -> KLDivergence:
        """A candidate whose weights are the dense model's: no divergence, by definition."""
        zeros = {_label(p): 0.0 for p in KL_PERCENTILES}
        return cls(k, tokens, windows, 0.0, 0.0, 0.0, zeros, 0.0, 0.0, 0.0, 0.0, 0.0,
                   {_label(p): 0.0 for p in DP_PERCENTILES}, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def summarize(div: TokenDivergence) -> KLDivergence | None:
    """llama.cpp's statistics over every token of every window (None without tokens)."""
    import numpy as np

    windows = sorted(div.kl)
    if not windows:
        return None
    kl = np.concatenate([div.kl[i] for i in windows]).astype(np.float64)
    dp = np.concatenate([div.dp[i] for i in windows]).astype(np.float64)
    same = np.concatenate([div.same_top[i] for i in windows])
    n = len(kl)
    if n == 0:
        return None
    kl_sorted, dp_sorted = np.sort(kl), np.sort(dp)
    mean, se = mean_and_se(float(kl.sum()), float((kl * kl).sum()), n)
    dp_mean, dp_se = mean_and_se(float(dp.sum()), float((dp * dp).sum()), n)
    mse, mse_se = mean_and_se(float((dp ** 2).sum()), float((dp ** 4).sum()), n)
    rms = math.sqrt(mse)
    share = float(same.sum()) / n
    per_window = sorted(((float(np.mean(div.kl[i])) if len(div.kl[i]) else 0.0, i) for i in windows),
                        reverse=True)[:WORST_WINDOWS]
    return KLDivergence(
        k=div.k, tokens=n, windows=len(windows), mean=mean, se=se, median=_median(kl_sorted),
        percentiles={_label(p): percentile(kl_sorted, p) for p in KL_PERCENTILES},
        maximum=float(kl_sorted[-1]), minimum=float(kl_sorted[0]),
        dp_mean=dp_mean, dp_se=dp_se, dp_median=_median(dp_sorted),
        dp_percentiles={_label(p): percentile(dp_sorted, p) for p in DP_PERCENTILES},
        dp_maximum=float(dp_sorted[-1]), dp_minimum=float(dp_sorted[0]),
        dp_rms=rms, dp_rms_se=0.5 / rms * mse_se if rms > 0 else 0.0,
        same_top=share, same_top_se=math.sqrt(share * (1 - share) / (n - 1)) if n > 1 else 0.0,
        worst=tuple((i, v) for v, i in per_window),
    )


def mean_and_se(total: float, total_sq: float, n: int) -> tuple[float, float]:
    """llama.cpp's ``mean_and_uncertainty``: the mean and sqrt(var / (n - 1)), 0 for n <= 10."""
    if n < 1:
        return 0.0, 0.0
    mean = total / n
    var = total_sq / n - mean * mean
    return mean, math.sqrt(var / (n - 1)) if var > 0 and n > 10 else 0.0


def percentile(sorted_values: Any, fraction: float) -> float:
    """llama.cpp's percentile: linear interpolation between the two nearest ranks."""
    n = len(sorted_values)
    if fraction <= 0:
        return float(sorted_values[0])
    if fraction >= 1:
        return float(sorted_values[-1])
    p = fraction * (n - 1)
    lo = int(p)
    p -= lo
    return float((1 - p) * sorted_values[lo] + p * sorted_values[min(lo + 1, n - 1)])


def _median(sorted_values: Any) -> float:
    n = len(sorted_values)
    return float(sorted_values[n // 2] if n % 2 else 0.5 * (sorted_values[n // 2] + sorted_values[n // 2 - 1]))


def _label(fraction: float) -> str:
    return f"{100 * fraction:g}"


def _finite(x: float) -> float | str:
    """A number as JSON keeps it: a non-finite one as ``"inf"``, ``"-inf"`` or ``"nan"`` (a value,
    never a gap: ``null`` read back as NaN compared false with every budget)."""
    return float(x) if math.isfinite(x) else str(float(x))


def _nan(x: Any) -> float:
    """A number written by ``_finite`` (``null`` from files of 0.3: NaN)."""
    return math.nan if x is None else float(x)
