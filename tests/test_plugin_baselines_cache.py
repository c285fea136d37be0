"""ppl_baseline: measured once, served from the cache afterwards, keyed by the weights' content."""

from __future__ import annotations

from plugin_support import project, rows

SUITE = """
from conftest import damage

def test_guard(model, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(model, tok)
    damage(model, 0.2)
    ppl_check(model, tok, baseline=base, budget="1000%")
"""


def test_first_run_measures_second_run_serves_from_cache(pytester):
    project(pytester, SUITE)
    first = pytester.runpytest("--ppl-report=report.json")
    first.assert_outcomes(passed=1)
    (b1,) = rows(pytester, "baseline")
    assert b1["baseline_source"] == "measured"
    first.stdout.fnmatch_lines(["*llmppl perplexity summary*", "*test_guard*PASS*measured*"])

    second = pytester.runpytest("--ppl-report=report.json")
    second.assert_outcomes(passed=1)
    (b2,) = rows(pytester, "baseline")
    assert b2["baseline_source"] == "cache" and b2["baseline"] == b1["baseline"]
    second.stdout.fnmatch_lines(["*test_guard*PASS*cache*"])
    assert list((pytester.path / ".pytest_cache" / "d" / "llmppl" / "baselines").glob("*/*.entry"))


def test_changed_weight_invalidates_the_baseline(pytester, monkeypatch):
    project(pytester, SUITE.replace("base = ppl_baseline(model, tok)",
                                    "import os, torch\n    if os.environ.get('TWEAK'):\n"
                                    "        with torch.no_grad(): model.lm_head.weight[7, 3] += 1e-6\n"
                                    "    base = ppl_baseline(model, tok)"))
    pytester.runpytest("--ppl-report=report.json").assert_outcomes(passed=1)
    pytester.runpytest("--ppl-report=report.json").assert_outcomes(passed=1)
    assert rows(pytester, "baseline")[0]["baseline_source"] == "cache"
    monkeypatch.setenv("TWEAK", "1")
    pytester.runpytest("--ppl-report=report.json").assert_outcomes(passed=1)
    assert rows(pytester, "baseline")[0]["baseline_source"] == "measured"


def test_other_settings_other_baseline(pytester):
    project(pytester, SUITE)
    pytester.runpytest("--ppl-report=report.json").assert_outcomes(passed=1)
    pytester.runpytest("--ppl-report=report.json", "--ppl-seqlen=64").assert_outcomes(passed=1)
    (b,) = rows(pytester, "baseline")
    assert b["baseline_source"] == "measured" and b["seqlen"] == 64
    pytester.runpytest("--ppl-report=report.json", "--ppl-max-windows=5").assert_outcomes(passed=1)
    (b,) = rows(pytester, "baseline")
    assert b["baseline_source"] == "measured" and b["n_windows"] == 5


def test_no_cache_measures_every_time(pytester):
    project(pytester, SUITE)
    for _ in range(2):
        pytester.runpytest("--ppl-report=report.json", "--ppl-no-cache").assert_outcomes(passed=1)
        assert rows(pytester, "baseline")[0]["baseline_source"] == "measured"
    assert not (pytester.path / ".pytest_cache" / "d" / "llmppl").exists()


def test_shared_baseline_measured_once_per_session(pytester):
    project(pytester, SUITE + SUITE.replace("test_guard", "test_guard_again"))
    pytester.runpytest("--ppl-report=report.json").assert_outcomes(passed=2)
    sources = sorted(r["baseline_source"] for r in rows(pytester, "baseline"))
    assert sources == ["measured", "memory"]


def test_cache_dir_option(pytester, tmp_path):
    project(pytester, SUITE)
    where = tmp_path / "elsewhere"
    pytester.runpytest(f"--ppl-cache-dir={where}").assert_outcomes(passed=1)
    assert list(where.glob("baselines/*/*.entry")) and list(where.glob("tokens/*/*.entry"))
