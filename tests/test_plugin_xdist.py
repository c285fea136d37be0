"""pytest-xdist: same verdicts, a shared baseline measured once, reports assembled on the controller."""

from __future__ import annotations

import pytest

from plugin_support import project, report

TESTS = "\n".join(f"""
def test_guard_{i}(model, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(model, tok)
    damage(model, {0.1 * (i % 3)})
    ppl_check(model, tok, baseline=base, budget="1%")
""" for i in range(6))
SUITE = "from conftest import damage\n" + TESTS


@pytest.mark.parametrize("workers", [2, 4])
def test_xdist_matches_serial(pytester, workers):
    project(pytester, SUITE)
    serial = pytester.runpytest("--ppl-report=serial.json", "--ppl-cache-dir=serial-cache")
    outcomes = serial.parseoutcomes()
    parallel = pytester.runpytest(f"-n{workers}", "--ppl-report=parallel.json", "--ppl-cache-dir=parallel-cache",
                                  "--ppl-report-md=summary.md")
    assert parallel.parseoutcomes() == outcomes
    s, p = report(pytester, "serial.json"), report(pytester, "parallel.json")
    verdicts = lambda d: sorted((r["test"], r["verdict"], r.get("measured")) for r in d["records"] if r["kind"] == "check")  # noqa: E731
    assert verdicts(s) == verdicts(p) and len(verdicts(p)) == 6
    sources = [r["baseline_source"] for r in p["records"] if r["kind"] == "baseline"]
    assert sources.count("measured") == 1, sources  # one measurement across all workers
    assert "llmppl perplexity summary" in parallel.stdout.str()
    assert (pytester.path / "summary.md").read_text().count("| test_suite.py::test_guard_") == 6
    entries = list((pytester.path / "parallel-cache" / "baselines").glob("*/*.entry"))
    assert len(entries) == 1


def test_xdist_update_baselines_written_by_controller(pytester):
    project(pytester, SUITE)
    path = pytester.path / "b.json"
    pytester.runpytest("-n2", f"--ppl-baselines={path}", "--ppl-update-baselines", "--ppl-no-cache")
    import json

    data = json.loads(path.read_text())
    assert len(data["baselines"]) == 1
    pytester.runpytest("-n2", f"--ppl-baselines={path}", "--ppl-strict").assert_outcomes(passed=4, failed=2)


def test_repeated_n4_runs_keep_a_valid_cache(pytester):
    """Stress: -n 4 runs sharing one cache, repeated; verdicts stay those of a serial run."""
    import warnings

    from pytest_llmppl.cache import Store

    project(pytester, SUITE)
    serial = pytester.runpytest("--ppl-report=serial.json", "--ppl-no-cache").parseoutcomes()
    want = sorted((r["test"], r["verdict"]) for r in report(pytester, "serial.json")["records"] if r["kind"] == "check")
    for i in range(3):
        if i == 1:  # corrupt the shared baseline between runs: it is rebuilt, verdicts unchanged
            (entry,) = (pytester.path / "shared").glob("baselines/*/*.entry")
            entry.write_bytes(entry.read_bytes()[:-40])
        run = pytester.runpytest("-n4", "--ppl-cache-dir=shared", f"--ppl-report=run{i}.json")
        outcomes = run.parseoutcomes()
        assert (outcomes["passed"], outcomes["failed"]) == (serial["passed"], serial["failed"])
        if i == 1:
            assert outcomes.get("warnings", 0) >= 1  # the corrupted entry was reported
        got = sorted((r["test"], r["verdict"]) for r in report(pytester, f"run{i}.json")["records"] if r["kind"] == "check")
        assert got == want
    store = Store(pytester.path / "shared")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for ns in ("baselines", "tokens"):
            for entry in (pytester.path / "shared" / ns).glob("*/*.entry"):
                assert store.get_bytes(ns, entry.stem) is not None
