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
    serial = pytester.runpytest("--ppl-report=serial.json", "--ppl-cache-dir=serial-cache", "--ppl-batch-size=4")
    outcomes = serial.parseoutcomes()
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


def test_repeated_n4_runs_keep_a_valid_cache(pytester):
    """Stress: -n 4 runs sharing one cache, an entry corrupted between them: serial verdicts, valid entries."""
    from pytest_llmppl.cache import Store

    project(pytester, SUITE)
    serial = pytester.runpytest("--ppl-report=serial.json", "--ppl-no-cache").parseoutcomes()
    want = [(t, v) for t, v, _ in _verdicts(report(pytester, "serial.json"))]
    for i in range(2):
        if i == 1:  # corrupt a shared entry between runs: it is rebuilt, verdicts unchanged
            entry = sorted((pytester.path / "shared").glob("results/*/*.entry"))[0]
            entry.write_bytes(entry.read_bytes()[:-40])
        run = pytester.runpytest("-n4", "--ppl-cache-dir=shared", f"--ppl-report=run{i}.json")
        outcomes = run.parseoutcomes()
        assert (outcomes["passed"], outcomes["failed"]) == (serial["passed"], serial["failed"])
        if i == 1:
            assert outcomes.get("warnings", 0) >= 1  # the corrupted entry was reported
        assert [(t, v) for t, v, _ in _verdicts(report(pytester, f"run{i}.json"))] == want
    store = Store(pytester.path / "shared")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for ns in ("results", "top1", "tokens"):
            for entry in (pytester.path / "shared" / ns).glob("*/*.entry"):
                assert store.get_bytes(ns, entry.stem) is not None
