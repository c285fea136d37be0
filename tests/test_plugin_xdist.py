"""pytest-xdist: same verdicts, a shared result measured once, reports assembled on the controller."""

from __future__ import annotations

import warnings

from plugin_support import forwards, project, report

TESTS = "\n".join(f"""
def test_guard_{i}(model, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(model, tok)
    damage(model, {0.1 * (i % 3)})
    ppl_check(model, tok, baseline=base, budget="1%")
""" for i in range(6))
SUITE = "from conftest import damage\n" + TESTS


def _verdicts(data: dict) -> list:
    return sorted((r["test"], r["verdict"], r["measured"]) for r in data["records"] if r["kind"] == "check")


def test_xdist_matches_serial(pytester):
    project(pytester, SUITE)
    serial = pytester.runpytest("--ppl-report=serial.json", "--ppl-cache-dir=serial-cache", "--ppl-batch-size=4",
                                "--ppl-baselines=b.json", "--ppl-update-baselines")
    outcomes = serial.parseoutcomes()
    recorded = (pytester.path / "b.json").read_bytes()
    forwards(pytester)
    parallel = pytester.runpytest("-n2", "--ppl-report=parallel.json", "--ppl-cache-dir=parallel-cache",
                                  "--ppl-report-md=summary.md", "--ppl-batch-size=4")
    assert parallel.parseoutcomes() == outcomes
    s, p = report(pytester, "serial.json"), report(pytester, "parallel.json")
    assert _verdicts(s) == _verdicts(p) and len(_verdicts(p)) == 6
    # three distinct models (damage 0, 0.1, 0.2): each measured once across both workers
    assert forwards(pytester) == 3 * 35
    assert "llmppl perplexity summary" in parallel.stdout.str()
    assert (pytester.path / "summary.md").read_text().count("| `test_suite.py::test_guard_") == 6
    assert len(list((pytester.path / "parallel-cache" / "results").glob("*/*.entry"))) == 3
    # One pytest-split shard refreshed over two workers (which deselect in the workers): the other
    # shard's records are kept, not taken for tests gone from the file.
    shard = pytester.runpytest("-n2", "--splits=2", "--group=1", "--ppl-cache-dir=serial-cache", "--ppl-batch-size=4",
                               "--ppl-baselines=b.json", "--ppl-update-baselines")
    assert sum(shard.parseoutcomes().get(k, 0) for k in ("passed", "failed")) == 3  # its half of the six
    assert (pytester.path / "b.json").read_bytes() == recorded


def test_n4_run_over_a_shared_cache_with_a_corrupted_entry(pytester):
    """Stress: four workers share one cache in which an entry was corrupted: the serial run's verdicts,
    the corruption reported, and every entry left valid."""
    from pytest_llmppl.keep.store import Store

    project(pytester, SUITE)
    serial = pytester.runpytest("--ppl-report=serial.json", "--ppl-cache-dir=shared").parseoutcomes()
    want = [(t, v) for t, v, _ in _verdicts(report(pytester, "serial.json"))]
    entries = sorted((pytester.path / "shared").glob("results/*/*.entry"))
    assert len(entries) == 3
    entries[0].write_bytes(entries[0].read_bytes()[:-40])  # torn: it must be dropped and rebuilt
    run = pytester.runpytest("-n4", "--ppl-cache-dir=shared", "--ppl-report=run.json")
    outcomes = run.parseoutcomes()
    assert (outcomes["passed"], outcomes["failed"]) == (serial["passed"], serial["failed"])
    assert outcomes.get("warnings", 0) >= 1  # the corrupted entry was reported
    assert [(t, v) for t, v, _ in _verdicts(report(pytester, "run.json"))] == want
    sources = [r["baseline_source"] if r["kind"] == "baseline" else r["measured_source"]
               for r in report(pytester, "run.json")["records"] if r["kind"] in ("baseline", "check")]
    assert "cache" in sources and "measured" in sources  # the good entries served, the torn one re-measured
    store = Store(pytester.path / "shared")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for ns in ("results", "top1", "tokens"):
            for entry in (pytester.path / "shared" / ns).glob("*/*.entry"):
                assert store.get_bytes(ns, entry.stem) is not None
