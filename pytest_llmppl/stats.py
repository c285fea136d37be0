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

    def to_dict(self) -> dict:
        return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in self.__dict__.items()}


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
        return 0.0
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
