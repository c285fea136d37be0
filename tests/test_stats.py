"""stats.py formulas against direct numpy computation on synthetic data."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
from scipy import stats as sps

from pytest_llmppl.judge.stats import EarlyDecision, fpc, look_points, normal_quantile, paired_delta


@pytest.fixture()
def pair():
    rng = np.random.default_rng(0)
    b = rng.normal(2.0, 0.3, 90)
    c = b + 0.05 + rng.normal(0, 0.02, 90)
    return b, c


def test_paired_delta_matches_numpy(pair):
    b, c = pair
    L = 128
    pd = paired_delta((b * L).tolist(), [L] * 90, (c * L).tolist(), [L] * 90)
    d = c - b
    assert pd.ln_ratio == pytest.approx(d.mean(), rel=1e-12)
    assert pd.ln_ratio_se == pytest.approx(d.std(ddof=1) / math.sqrt(90), rel=1e-12)
    assert pd.delta_ppl == pytest.approx(math.exp(c.mean()) - math.exp(b.mean()), rel=1e-12)
    cov = np.cov(np.vstack([c, b]), ddof=1) / 90
    grad = np.array([math.exp(c.mean()), -math.exp(b.mean())])
    assert pd.delta_ppl_se == pytest.approx(math.sqrt(grad @ cov @ grad), rel=1e-9)
    # pairing: far less noise than either PPL alone
    assert pd.delta_ppl_se < 0.2 * math.exp(c.mean()) * c.std(ddof=1) / math.sqrt(90)
    assert pd.delta_ppl_se_estimate == 0 and pd.ln_ratio_se_estimate == 0  # every window in: exact


def test_finite_population_correction(pair):
    b, c = pair
    pd = paired_delta(b[:30].tolist(), [1] * 30, c[:30].tolist(), [1] * 30, n_total=90)
    assert pd.ln_ratio_se_estimate == pytest.approx(pd.ln_ratio_se * math.sqrt(1 - 30 / 90), rel=1e-12)
    assert fpc(90, 90) == 0 and fpc(0, 90) == 1


@pytest.mark.parametrize("p", [1e-6, 0.001, 0.02, 0.3, 0.5, 0.9, 0.999, 1 - 1e-7])
def test_normal_quantile_matches_scipy(p):
    assert normal_quantile(p) == pytest.approx(sps.norm.ppf(p), abs=1e-8)


def test_look_points():
    pts = look_points(140, 8)
    assert pts[0] == 8 and pts[-1] == 140 and pts == sorted(set(pts))
    assert all(b <= math.ceil(a * 1.5) for a, b in itertools.pairwise(pts[:-1]))


def _rule(b, threshold, confidence=0.99):
    return EarlyDecision(dict(enumerate(b)), dict.fromkeys(range(len(b)), 1.0), threshold, confidence)


def test_early_rule_is_exact_at_the_end(pair):
    b, c = pair
    true = c.mean()
    for ln_t, want in ((true + 1e-9, "pass"), (true - 1e-9, "fail")):
        rule = _rule(b.tolist(), math.exp(ln_t))
        order = list(range(90))
        random.Random(3).shuffle(order)
        verdict = None
        for k in range(1, 91):
            verdict = rule.update(order[:k], [c[i] for i in order[:k]])
            if verdict:
                break
        assert verdict == want and rule.decided_at == 90 and rule.estimate[1] == 0


def test_early_rule_decides_early_far_from_threshold(pair):
    b, c = pair
    for ln_t, want in ((c.mean() + 0.2, "pass"), (c.mean() - 0.2, "fail")):
        rule = _rule(b.tolist(), math.exp(ln_t))
        order = list(range(90))
        verdict = None
        for k in range(1, 91):
            verdict = rule.update(order[:k], [c[i] for i in order[:k]])
            if verdict:
                break
        assert verdict == want and rule.decided_at == 24  # the first look


def test_early_rule_boundary_formula(pair):
    b, c = pair
    rule = _rule(b.tolist(), math.exp(c.mean() + 0.5))
    n = 24
    rule.update(list(range(n)), c[:n].tolist())
    d = c[:n] - b[:n]
    se = math.sqrt((1 - n / 90) * d.var(ddof=1) / n)
    assert rule.estimate[0] == pytest.approx(b.mean() + d.mean(), rel=1e-12)
    assert rule.estimate[1] == pytest.approx(se, rel=1e-12)
    assert rule.z == pytest.approx(sps.t.ppf(1 - 0.01 / (2 * len(rule.looks)), n - 1), rel=1e-4)


@pytest.mark.parametrize("df", [23, 35, 53, 80, 200])
@pytest.mark.parametrize("p", [0.975, 0.999, 0.9995, 0.99995])
def test_t_quantile_matches_scipy(df, p):
    from pytest_llmppl.judge.stats import t_quantile

    assert t_quantile(p, df) == pytest.approx(sps.t.ppf(p, df), rel=1e-4)


def test_a_skewed_sample_decides_nothing_before_the_end():
    """When a few windows carry most of the damage, a partial sample cannot bound the rest."""
    rng = np.random.default_rng(3)
    b = rng.normal(2.0, 0.3, 120)
    c = b + 0.01 * rng.lognormal(0, 1.5, 120)
    rule = _rule(b.tolist(), math.exp(c.mean() - 0.002))  # FAIL is right, close to the threshold
    order = list(rng.permutation(120))
    for k in range(1, 121):
        if rule.update(order[:k], [c[i] for i in order[:k]]) is not None:
            break
    assert rule.verdict == "fail" and rule.decided_at == 120


def test_top1_agreement_matches_numpy():
    from pytest_llmppl.judge.stats import top1_agreement

    rng = np.random.default_rng(1)
    base = {i: rng.integers(0, 50, 127).astype(np.int32) for i in range(30)}
    cand = {i: np.where(rng.random(127) < 0.9, base[i], rng.integers(0, 50, 127)).astype(np.int32) for i in range(30)}
    got = top1_agreement(base, cand)
    a = np.array([(base[i] == cand[i]).mean() for i in range(30)])
    assert got.share == pytest.approx(a.mean(), rel=1e-12)  # equal window lengths: mean of shares
    assert got.se == pytest.approx(a.std(ddof=1) / math.sqrt(30), rel=1e-9)
    assert got.tokens == 30 * 127 and got.windows == 30
