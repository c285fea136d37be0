"""Paired statistics of a candidate against its baseline, window by window.

Notation: for window i, ``b_i = nll_i / w_i`` (baseline) and ``c_i`` (candidate) are the
mean NLL per scored position, ``d_i = c_i - b_i``; n windows were evaluated out of N.

- ln(PPL ratio) = sum w_i d_i / sum w_i (= mean d for equal windows), with
  SE = sd(d) / sqrt(n) (sampling noise of the corpus: what another corpus of the
  same kind would move it by).
- dPPL = exp(mean c) - exp(mean b); SE by the delta method on the pair
  (mean c, mean b): Var = e^{2c} Var(c) + e^{2b} Var(b) - 2 e^{c+b} Cov(c, b),
  Var(x) = s_x^2 / n.  Pairing removes most of the noise: Cov is large.
- For a subset (n < N) estimating the full-corpus value, the finite-population
  correction multiplies each variance by (1 - n/N): zero once every window is in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PairedDelta:
    n: int
    n_total: int
    delta_ppl: float
    delta_ppl_se: float
    ln_ratio: float
    ln_ratio_se: float
    delta_ppl_se_estimate: float
    ln_ratio_se_estimate: float

    def to_json(self) -> dict:
        return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, data: dict) -> PairedDelta:
        values: dict[str, Any] = {k: (math.nan if data[k] is None else data[k]) for k in cls.__dataclass_fields__}
        return cls(**values)


@dataclass(frozen=True)
class Top1Agreement:
    """Share of scored tokens where the candidate's argmax equals the baseline's, ± SE."""

    share: float
    se: float
    tokens: int
    windows: int

    def to_json(self) -> dict:
        return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, data: dict) -> Top1Agreement:
        se = math.nan if data["se"] is None else data["se"]
        return cls(share=data["share"], se=se, tokens=data["tokens"], windows=data["windows"])


def per_window_means(nll, weight) -> list[float]:
    return [x / w for x, w in zip(nll, weight)]


def fpc(n: int, n_total: int) -> float:
    """Finite-population correction factor for a variance: 1 - n/N (0 when n == N)."""
    return max(0.0, 1.0 - n / n_total) if n_total else 0.0


def _mean(xs) -> float:
    return math.fsum(xs) / len(xs)


def _cov(xs, ys) -> float:
    n = len(xs)
    if n < 2:
        return math.nan  # one window: its spread cannot be estimated (unknown, not zero)
    mx, my = _mean(xs), _mean(ys)
    return math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys)) / (n - 1)


def paired_delta(base_nll, base_weight, cand_nll, cand_weight, n_total: int | None = None) -> PairedDelta:
    """Paired dPPL and ln(PPL ratio) with standard errors (see module docstring)."""
    b = per_window_means(base_nll, base_weight)
    c = per_window_means(cand_nll, cand_weight)
    if len(b) != len(c) or not b:
        raise ValueError("paired statistics need the same, non-empty set of windows")
    n = len(b)
    n_total = n if n_total is None else n_total
    wsum = math.fsum(base_weight)
    mb = math.fsum(base_nll) / wsum
    mc = math.fsum(cand_nll) / math.fsum(cand_weight)
    d = [ci - bi for ci, bi in zip(c, b)]
    var_d = _cov(d, d) / n
    var_b, var_c, cov_bc = _cov(b, b) / n, _cov(c, c) / n, _cov(b, c) / n
    eb, ec = math.exp(mb), math.exp(mc) if mc < 700 else float("inf")
    var_ppl = ec * ec * var_c + eb * eb * var_b - 2 * ec * eb * cov_bc
    se_ppl = math.sqrt(max(var_ppl, 0.0))
    f = fpc(n, n_total)
    return PairedDelta(
        n=n, n_total=n_total, delta_ppl=ec - eb, delta_ppl_se=se_ppl,
        ln_ratio=mc - mb, ln_ratio_se=math.sqrt(var_d),
        delta_ppl_se_estimate=se_ppl * math.sqrt(f), ln_ratio_se_estimate=math.sqrt(var_d * f),
    )


def normal_quantile(p: float) -> float:
    """Inverse standard normal CDF (Acklam's rational approximation, |error| < 1.2e-9)."""
    if not 0.0 < p < 1.0:
        raise ValueError("p must be in (0, 1)")
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    lo = 0.02425
    if p < lo:
        q = math.sqrt(-2 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
               ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    if p > 1 - lo:
        return -normal_quantile(1 - p)
    q = p - 0.5
    r = q * q
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / \
           (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)


def t_quantile(p: float, df: int) -> float:
    """Inverse CDF of Student's t with ``df`` degrees of freedom: the Cornish-Fisher expansion
    around the normal quantile to the fourth order in 1/df (relative error < 1e-4 for df >= 20
    at the tail probabilities the early rule uses)."""
    z = normal_quantile(p)
    z2 = z * z
    terms = ((z2 + 1) * z / 4,
             ((5 * z2 + 16) * z2 + 3) * z / 96,
             (((3 * z2 + 19) * z2 + 17) * z2 - 15) * z / 384,
             ((((79 * z2 + 776) * z2 + 1482) * z2 - 1920) * z2 - 945) * z / 92160)
    return z + sum(t / df ** (k + 1) for k, t in enumerate(terms))


def look_points(n_total: int, min_windows: int, growth: float = 1.5) -> list[int]:
    """Window counts at which the early rule may decide: min_windows, then x1.5 each time, and N."""
    points, n = [], max(2, min(min_windows, n_total))
    while n < n_total:
        points.append(n)
        n = max(n + 1, math.ceil(n * growth))
    points.append(n_total)
    return points


class EarlyDecision:
    """Sequential test of "candidate PPL <= threshold" against an exactly known baseline.

    The full-corpus ln PPL of the candidate is ``M_b + D``, where ``M_b`` (the baseline's
    weighted mean NLL over all N windows) is known exactly from the cache and ``D`` is the
    weighted mean of the paired differences ``d_i`` over all N windows.  After n windows in
    a fixed pseudo-random order, ``D`` is estimated by the ratio estimator
    ``sum w_i d_i / sum w_i`` over the sample, with standard error
    ``sqrt((1 - n/N) * s^2 / n)`` (s: SD of ``w_i (d_i - D_hat) / mean w``; finite-population
    correction, so it is 0 at n = N).  At each look (``look_points``, from ``min_windows`` = 24)
    the rule stops with PASS if ``M_b + D_hat + q*SE < ln T`` and FAIL if ``M_b + D_hat - q*SE >
    ln T``, where ``q`` is Student's t quantile with n - 1 degrees of freedom at
    ``1 - alpha / (2K)`` for K looks (Bonferroni over the looks; alpha = 1 - confidence).  A look
    whose residuals are skewed (|sample skewness| > ``MAX_SKEW``) decides nothing: when a few
    windows carry most of the damage, a partial sample cannot bound the rest, so the rule waits
    (usually to the end).  At n = N it is exact.  ``benchmarks/sim_early_stop.py`` measures the
    error rate where it is hardest: thresholds within 1 SE of the truth, skewed damage.
    """

    MAX_SKEW = 0.5
    MIN_WINDOWS = 24

    def __init__(self, base_nll: dict[int, float], base_weight: dict[int, float], threshold: float,
                 confidence: float = 0.99, min_windows: int = MIN_WINDOWS):
        if not 0.5 < confidence < 1.0:
            raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
        self.base_mean = {i: base_nll[i] / base_weight[i] for i in base_nll}
        self.weight = dict(base_weight)
        self.n_total = len(base_nll)
        self.mb = math.fsum(base_nll.values()) / math.fsum(base_weight.values())
        self.ln_t = math.log(threshold) if threshold > 0 else -math.inf
        self.looks = look_points(self.n_total, max(min_windows, 2))
        self.p = 1 - (1 - confidence) / (2 * len(self.looks))
        self.z = normal_quantile(self.p)  # the quantile of the last look made (t from the first)
        self.confidence = confidence
        self.verdict: str | None = None
        self.decided_at: int | None = None
        self.estimate: tuple[float, float] | None = None
        self._next = 0

    def decided(self, indices, nlls) -> bool:
        """The engine's stop rule: feed what was evaluated, True once the verdict is certain."""
        return self.update(indices, nlls) is not None

    def update(self, indices, nlls) -> str | None:
        """Feed all windows evaluated so far; returns "pass"/"fail" once decided, else None."""
        n = len(indices)
        if self.verdict is not None:
            return self.verdict
        if n < self.n_total and (self._next >= len(self.looks) or n < self.looks[self._next]):
            return None
        while self._next < len(self.looks) and self.looks[self._next] <= n:
            self._next += 1  # batches may step over look points: each counts once
        w = [self.weight[i] for i in indices]
        d = [nll / wi - self.base_mean[i] for i, nll, wi in zip(indices, nlls, w)]
        wsum = math.fsum(w)
        d_hat = math.fsum(wi * di for wi, di in zip(w, d)) / wsum
        if not math.isfinite(d_hat):
            self.verdict, self.decided_at = "nan", n
            return self.verdict
        wbar = wsum / n
        resid = [wi * (di - d_hat) / wbar for wi, di in zip(w, d)]
        s2 = math.fsum(r * r for r in resid) / (n - 1) if n > 1 else math.inf
        se = math.sqrt(fpc(n, self.n_total) * s2 / n) if n < self.n_total else 0.0
        est = self.mb + d_hat
        self.estimate = (est, se)
        if n >= self.n_total:
            self.verdict = "pass" if est <= self.ln_t else "fail"
        elif _skewness(resid) <= self.MAX_SKEW:
            self.z = t_quantile(self.p, n - 1) if n > 1 else math.inf
            if est + self.z * se < self.ln_t:
                self.verdict = "pass"
            elif est - self.z * se > self.ln_t:
                self.verdict = "fail"
        if self.verdict is not None:
            self.decided_at = n
        return self.verdict


def _skewness(resid: list[float]) -> float:
    """|sample skewness| of residuals (mean 0): inf when it cannot be told (n < 3), 0 when they do
    not spread at all (every window changed alike)."""
    n = len(resid)
    if n < 3:
        return math.inf
    m2 = math.fsum(r * r for r in resid) / n
    if m2 <= 0:
        return 0.0
    return abs(math.fsum(r ** 3 for r in resid) / n) / m2 ** 1.5


def top1_agreement(base_top1: dict, cand_top1: dict) -> Top1Agreement:
    """Share of scored tokens where the candidate's argmax equals the baseline's.

    share = sum_i matches_i / sum_i tokens_i over the common windows; SE from the
    per-window shares a_i as a ratio estimator, sqrt(sum (t_i (a_i - share))^2 / (n (n-1))) / mean t
    (tokens inside a window are correlated, windows are the independent units).
    """
    common = sorted(set(base_top1) & set(cand_top1))
    if not common:
        raise ValueError("no common windows")
    match = [int((base_top1[i] == cand_top1[i]).sum()) for i in common]
    tokens = [len(base_top1[i]) for i in common]
    total = sum(tokens)
    share = sum(match) / total
    n = len(common)
    tbar = total / n
    if n > 1:
        var = math.fsum(((m - share * t) / tbar) ** 2 for m, t in zip(match, tokens)) / (n * (n - 1))
    else:
        var = math.nan  # one window: unknown
    return Top1Agreement(share=share, se=math.sqrt(var), tokens=total, windows=n)


@dataclass(frozen=True)
class Comparison:
    """A candidate against one reference result (the baseline, or the check's record): everything
    the judge asks of the windows both evaluated, computed in one visit."""

    deltas: dict[int, float]  # window -> rise of the mean NLL per scored position
    paired: PairedDelta | None  # None when the reference lacks a window the candidate evaluated
    top1: Top1Agreement | None  # None when either side kept no argmax

    @classmethod
    def of(cls, reference: Any, candidate: Any) -> Comparison:
        b = {i: (n, w) for i, n, w in zip(reference.window_index, reference.window_nll, reference.window_weight)}
        deltas = {i: n / w - b[i][0] / b[i][1]
                  for i, n, w in zip(candidate.window_index, candidate.window_nll, candidate.window_weight) if i in b}
        paired = None
        if all(i in b for i in candidate.window_index):
            pairs = [b[i] for i in candidate.window_index]
            paired = paired_delta([p[0] for p in pairs], [p[1] for p in pairs], candidate.window_nll,
                                  candidate.window_weight, candidate.n_windows_total)
        top1 = None
        if reference.top1 and candidate.top1:
            try:
                top1 = top1_agreement(reference.top1, candidate.top1)
            except ValueError:
                top1 = None
        return cls(deltas, paired, top1)
