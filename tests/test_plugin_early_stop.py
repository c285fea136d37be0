"""--ppl-early-stop: an early pass, an early fail, and a run to the end near the threshold."""

from __future__ import annotations

import pytest

from plugin_support import project, rows

SUITE = """
from conftest import damage

def test_far_pass(model, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(model, tok)
    damage(model, 0.1)
    ppl_check(model, tok, baseline=base, budget="20%")

def test_far_fail(model, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(model, tok)
    damage(model, 0.5)
    ppl_check(model, tok, baseline=base, budget="5%")

def test_close(model, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(model, tok)
    damage(model, 0.2)
    ppl_check(model, tok, baseline=base, budget="1.8%")
"""


def test_early_pass_early_fail_and_run_to_the_end(pytester):
    project(pytester, SUITE)
    full = pytester.runpytest("--ppl-report=full.json", "--ppl-cache-dir=full")
    full.assert_outcomes(passed=2, failed=1)
    result = pytester.runpytest("--ppl-early-stop", "--ppl-report=report.json", "--ppl-cache-dir=early")
    result.assert_outcomes(passed=2, failed=1)  # the same verdicts as the full evaluation
    checks = {r["test"].split("::")[1]: r for r in rows(pytester, "check")}
    assert checks["test_far_pass"]["verdict"] == "pass" and checks["test_far_pass"]["early"]["decided_after"] < 70
    assert checks["test_far_fail"]["verdict"] == "fail" and checks["test_far_fail"]["early"]["decided_after"] < 70
    assert checks["test_close"]["early"] is None and checks["test_close"]["n_windows"] == 140
    full_close = next(r for r in rows(pytester, "check", "full.json") if r["test"].endswith("test_close"))
    assert checks["test_close"]["measured"] == full_close["measured"]  # exact when it runs to the end
    result.stdout.fnmatch_lines(["*early verdict after * windows at 99% confidence, PPL is an estimate*"])
    result.stdout.fnmatch_lines(["llmppl:*early_stop@0.99*"])
    # the Δ and its ± come from one estimate: the early rule's
    far = checks["test_far_fail"]
    assert far["delta"] == pytest.approx(far["early"]["estimate_ppl"] - far["baseline"])
    assert far["delta_se"] == pytest.approx(far["early"]["estimate_ppl"] * far["early"]["ln_ppl_se"])
    # an early-stopped run is an estimate: never stored as a result, so the next run measures again
    again = pytester.runpytest("--ppl-report=report.json", "--ppl-cache-dir=early")
    again.assert_outcomes(passed=2, failed=1)
    sources = {r["test"].split("::")[1]: r["measured_source"] for r in rows(pytester, "check")}
    assert sources == {"test_far_pass": "measured", "test_far_fail": "measured", "test_close": "cache"}


def test_confidence_option_validated(pytester):
    project(pytester, SUITE)
    result = pytester.runpytest("--ppl-early-stop", "--ppl-confidence=1.5")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--ppl-confidence*invalid confidence*"])
