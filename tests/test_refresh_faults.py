"""Nothing lost on a refresh: a crashed xdist worker, a test that failed before its baseline,
two dtypes of one model, and SIGKILLs at random moments (benchmarks/fault_refresh.py runs many)."""

from __future__ import annotations

import json
import random

import pytest

from plugin_support import project

THREE = """
import os

def test_a(model, tok, ppl_baseline):
    ppl_baseline(model, tok, seqlen=64)

def test_b(model, tok, ppl_baseline):
    ppl_baseline(model, tok, seqlen=96)

def test_c(model, tok, ppl_baseline):
    if os.environ.get("CRASH"):
        os._exit(1)  # the worker dies (OOM-killed, a segfault)
    if os.environ.get("FAIL"):
        raise RuntimeError("the hub timed out while loading")  # fails before reaching ppl_baseline
    ppl_baseline(model, tok, seqlen=128)
"""


def _tests(path) -> list[str]:
    return sorted(e["test"] for e in json.loads(path.read_text())["baselines"].values())


def _record_three(pytester):
    project(pytester, THREE)
    path = pytester.path / "b.json"
    pytester.runpytest("-p", "no:randomly", f"--ppl-baselines={path}", "--ppl-update-baselines").assert_outcomes(
        passed=3)
    assert _tests(path) == ["test_suite.py::test_a", "test_suite.py::test_b", "test_suite.py::test_c"]
    return path


@pytest.mark.heavy
def test_a_crashed_worker_loses_no_entry(pytester, monkeypatch):
    path = _record_three(pytester)
    before = json.loads(path.read_text())
    monkeypatch.setenv("CRASH", "1")
    result = pytester.runpytest("-n", "1", "-p", "no:randomly", f"--ppl-baselines={path}", "--ppl-update-baselines")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*llmppl baselines written to*0 unused removed*"])
    assert json.loads(path.read_text()) == before  # the two that passed re-recorded (same numbers), c kept


def test_a_test_that_failed_before_its_baseline_keeps_its_entry(pytester, monkeypatch):
    path = _record_three(pytester)
    monkeypatch.setenv("FAIL", "1")
    result = pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines")
    result.assert_outcomes(passed=2, failed=1)
    assert _tests(path) == ["test_suite.py::test_a", "test_suite.py::test_b", "test_suite.py::test_c"]
    monkeypatch.delenv("FAIL")
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-strict").assert_outcomes(passed=3)


def test_two_dtypes_of_one_model_both_stay_in_the_file(pytester):
    project(pytester, """
def test_f32(model, tok, ppl_baseline):
    ppl_baseline(model, tok)

def test_bf16(model, tok, ppl_baseline):
    ppl_baseline(model, tok, dtype="bfloat16")
""")
    path = pytester.path / "b.json"
    result = pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*2 baselines and 0 checks recorded*"])
    dtypes = sorted(e["dtype"] for e in json.loads(path.read_text())["baselines"].values())
    assert dtypes == ["bfloat16", "float32"]
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-strict").assert_outcomes(passed=2)


@pytest.mark.heavy
def test_sigkill_at_random_moments_loses_nothing(pytester, tmp_path):
    """A refresh under -n 2 SIGKILLed (a worker or the controller) at a random moment: the file
    stays readable and keeps every entry (the benchmark script repeats it many times)."""
    import sys

    sys.path.insert(0, str(__import__("conftest").ROOT / "benchmarks"))
    from fault_refresh import refresh_under_kills

    project(pytester, THREE)
    outcome = refresh_under_kills(pytester.path, kills=1, rng=random.Random(0))
    assert outcome.kills == 1 and outcome.unreadable == 0 and outcome.lost == 0, outcome


STOPPABLE = """
import os

def test_a(model, tok, ppl_check):
    ppl_check(model, tok, baseline=100.0, seqlen=64)
    if os.environ.get("STOP") == "fail":
        assert False, "the first failure: -x stops the run here"
    if os.environ.get("STOP") == "interrupt":
        raise KeyboardInterrupt  # Ctrl-C

def test_b(model, tok, ppl_check):
    ppl_check(model, tok, baseline=100.0, seqlen=96)

def test_c(model, tok, ppl_baseline):
    ppl_baseline(model, tok, seqlen=128)
"""


@pytest.mark.heavy
def test_a_refresh_that_stops_early_removes_no_record_of_a_test_it_did_not_finish(pytester, monkeypatch):
    project(pytester, STOPPABLE)
    path = pytester.path / "b.json"
    refresh = ("-p", "no:randomly", f"--ppl-baselines={path}", "--ppl-update-baselines")
    pytester.runpytest(*refresh).assert_outcomes(passed=3)
    before = json.loads(path.read_text())
    assert sorted(before["checks"]) == ["test_suite.py::test_a", "test_suite.py::test_b"] and before["baselines"]
    for stop, args in (("fail", ("-x",)), ("fail", ("--maxfail=1",)), ("interrupt", ())):
        monkeypatch.setenv("STOP", stop)
        run = pytester.runpytest_subprocess if stop == "interrupt" else pytester.runpytest  # Ctrl-C: its own process
        result = run(*refresh, *args)
        assert result.ret in (pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.INTERRUPTED)
        after = json.loads(path.read_text())
        assert sorted(after["checks"]) == sorted(before["checks"])  # test_b's record stays
        assert [e["test"] for e in after["baselines"].values()] == [e["test"] for e in before["baselines"].values()]
        if stop == "fail":
            result.stdout.fnmatch_lines(["*llmppl kept 2 records of tests that did not run to their end*",
                                         "*0 unused removed*"])
