"""Guarding a refactor: every check is recorded in the committed file and compared with its record.

Each run has an empty local store (--ppl-no-cache), as on a fresh CI runner: what is served
comes from the committed file alone.  ``damage`` stands in for the pruning code: 0.2 is what
was recorded; 0.25 is a refactor that made it worse, still inside the dense budget; 0.1 better.
"""

from __future__ import annotations

import json
import math

import pytest

from plugin_support import failures, forwards, project, rows

SUITE = """
import os
import pytest
from conftest import damage

def test_pruned(model, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(model, tok)
    damage(model, float(os.environ.get("DAMAGE", "0.2")))
    ppl_check(model, tok, baseline=base, budget="10%")

def test_dense_is_sane(model, tok, ppl_of):
    assert ppl_of(model, tok) < 2
"""

FRESH = ("--ppl-no-cache", "--ppl-report=report.json")


def _record(pytester, *extra):
    path = pytester.path / "ppl-baselines.json"
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines", *FRESH, *extra).assert_outcomes(passed=2)
    forwards(pytester)  # reset the count
    return path


def _window_ppl(entry: dict) -> float:
    """PPL from a committed entry's per-window NLLs, by the protocol's formula."""
    return math.exp(math.fsum(entry["window_nll"]) / math.fsum(entry["window_weight"]))


def test_recording_run_writes_each_check_with_its_identity(pytester):
    project(pytester, SUITE)
    path = _record(pytester)
    data = json.loads(path.read_text())
    assert data["format"] == "pytest-llmppl baselines v3"
    (entry,) = data["checks"]["test_suite.py::test_pruned"]
    (check,) = rows(pytester, "check")
    assert entry["ppl"] == pytest.approx(check["measured"], rel=1e-12)
    assert entry["model_fingerprint"] != next(iter(data["baselines"].values()))["model_fingerprint"]
    for name in ("tokenizer_fingerprint", "corpus_sha256", "seqlen", "protocol", "stride", "max_windows", "device",
                 "dtype", "torch", "transformers", "window_nll"):
        assert name in entry
    assert not entry["corpus"].startswith("/")
    assert check["against_record"] == "recorded"


@pytest.mark.heavy
def test_unchanged_candidate_is_served_from_the_file_with_zero_forwards(pytester, plugin_args):
    project(pytester, SUITE)
    path = _record(pytester)
    result = pytester.runpytest(*plugin_args, f"--ppl-baselines={path}", "--ppl-strict", *FRESH)
    result.assert_outcomes(passed=2)
    assert forwards(pytester) == 0
    (check,) = rows(pytester, "check")
    (measure,) = rows(pytester, "measure")
    entry = json.loads(path.read_text())["checks"]["test_suite.py::test_pruned"][0]
    assert check["measured_source"] == "file" and check["baseline_source"] == "file"
    assert measure["measured_source"] == "file"  # the dense model's identity is in the file: served too
    assert check["against_record"] == "unchanged" and check["verdict"] == "pass"
    assert check["recorded"] == pytest.approx(_window_ppl(entry), rel=1e-12)
    assert check["measured"] == pytest.approx(check["recorded"], rel=1e-12)
    assert check["decided_by"] == "" and check["delta_recorded"] == 0.0  # a pass names no failed comparison
    result.stdout.fnmatch_lines(["*test_pruned*file/file*"])


@pytest.mark.heavy
def test_worse_variant_inside_the_budget_fails_against_its_record(pytester, monkeypatch, plugin_args):
    project(pytester, SUITE)
    path = _record(pytester)
    monkeypatch.setenv("DAMAGE", "0.25")
    result = pytester.runpytest(*plugin_args, f"--ppl-baselines={path}", "--ppl-strict", *FRESH)
    result.assert_outcomes(passed=1, failed=1)
    (check,) = rows(pytester, "check")
    entry = json.loads(path.read_text())["checks"]["test_suite.py::test_pruned"][0]
    assert check["measured"] <= check["threshold"]  # inside the dense budget: only the record catches it
    assert check["verdict"] == "fail" and check["decided_by"] == "regression" and check["against_record"] == "worse"
    recorded = _window_ppl(entry)
    assert check["recorded"] == pytest.approx(recorded, rel=1e-12)
    assert check["regression_threshold"] == pytest.approx(recorded * 1.01, rel=1e-12)
    assert check["delta_recorded"] == pytest.approx(check["measured"] - recorded, rel=1e-9)
    out = failures(result)
    assert out.count("ppl_check: regression: PPL") == 1 and "exceeds the threshold" not in out
    result.stdout.fnmatch_lines([
        f"*regression: PPL {check['measured']:.4f} is worse than this check's recorded PPL {recorded:.4f}*"
        "tolerance 1%*paired dPPL*± *(SE) against the recorded windows*",
        "*worst windows vs recorded: window *",
        "*accept it on purpose: run with --ppl-update-baselines*",
    ])


def test_better_variant_passes_and_says_so(pytester, monkeypatch):
    project(pytester, SUITE)
    path = _record(pytester)
    monkeypatch.setenv("DAMAGE", "0.1")
    result = pytester.runpytest(f"--ppl-baselines={path}", "--ppl-strict", *FRESH)
    result.assert_outcomes(passed=2)
    (check,) = rows(pytester, "check")
    assert check["against_record"] == "better" and check["delta_recorded"] < -0.01 * check["recorded"]
    result.stdout.fnmatch_lines(["*test_pruned*better*"])


def test_strict_without_a_record_fails_and_says_how_to_record(pytester):
    project(pytester, SUITE)
    path = _record(pytester)
    data = json.loads(path.read_text())
    data["checks"] = {}
    path.write_text(json.dumps(data))
    result = pytester.runpytest(f"--ppl-baselines={path}", "--ppl-strict", *FRESH)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*check 1 of test_suite.py::test_pruned has no recorded result in*--ppl-strict*"
                                 "--ppl-update-baselines*"])
    assert forwards(pytester) == 0  # decided before any forward
    # not strict: measured, judged against the budget, and the table says there was no record
    pytester.runpytest(f"--ppl-baselines={path}", *FRESH).assert_outcomes(passed=2)
    assert rows(pytester, "check")[0]["against_record"] == "no record"


def test_record_with_other_settings_warns_and_fails_under_strict(pytester):
    project(pytester, SUITE)
    path = _record(pytester)
    data = json.loads(path.read_text())
    data["checks"]["test_suite.py::test_pruned"][0]["seqlen"] = 64
    path.write_text(json.dumps(data))
    result = pytester.runpytest(f"--ppl-baselines={path}", "-W", "always", *FRESH)
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(["*RecordMismatchWarning: check 1 of test_suite.py::test_pruned*seqlen differs*"
                                 "recorded: *seqlen 64*this run: *seqlen 128*not compared*"])
    assert rows(pytester, "check")[0]["against_record"] == "not compared"
    strict = pytester.runpytest(f"--ppl-baselines={path}", "--ppl-strict", *FRESH)
    strict.assert_outcomes(passed=1, failed=1)
    strict.stdout.fnmatch_lines(["*seqlen differs*--ppl-strict*--ppl-update-baselines*"])


def test_tolerance_from_marker_option_and_call(pytester, monkeypatch):
    tests = SUITE.replace("def test_pruned", "@pytest.mark.ppl_regression_tolerance('off')\ndef test_pruned")
    project(pytester, tests)
    path = _record(pytester)
    monkeypatch.setenv("DAMAGE", "0.25")
    pytester.runpytest(f"--ppl-baselines={path}", *FRESH).assert_outcomes(passed=2)  # the marker turned it off
    assert rows(pytester, "check")[0]["against_record"] == "off"
    project(pytester, SUITE)
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-regression-tolerance=20%", *FRESH).assert_outcomes(passed=2)
    assert rows(pytester, "check")[0]["against_record"] == "within"
    per_call = SUITE.replace('budget="10%")', 'budget="10%", regression_tolerance="off")')
    project(pytester, per_call)
    pytester.runpytest(f"--ppl-baselines={path}", *FRESH).assert_outcomes(passed=2)


@pytest.mark.parametrize("value", ["abc", "-1%", "nan"])
def test_bad_tolerance_is_a_usage_error(pytester, value):
    project(pytester, SUITE)
    result = pytester.runpytest(f"--ppl-regression-tolerance={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ppl-regression-tolerance: invalid regression tolerance*or off*"])


def test_early_stop_decides_both_comparisons(pytester, monkeypatch):
    project(pytester, SUITE)
    path = _record(pytester)
    monkeypatch.setenv("DAMAGE", "0.25")
    result = pytester.runpytest(f"--ppl-baselines={path}", "--ppl-early-stop", *FRESH)
    result.assert_outcomes(passed=1, failed=1)
    (check,) = rows(pytester, "check")
    assert check["against_record"] == "worse" and check["decided_by"] == "regression"


def test_a_0_2_file_is_read_as_baselines_only(pytester):
    """A file written by 0.2 (format v2: no checks, keyed without device and dtype) keeps working."""
    from pytest_llmppl.identity.spec import entry_keys

    project(pytester, SUITE)
    path = _record(pytester)
    data = json.loads(path.read_text())
    old = {}
    for entry in data["baselines"].values():
        key = entry_keys(entry)[1]
        old[key] = {k: v for k, v in entry.items() if k not in ("model_fingerprint", "tokenizer_fingerprint")}
    path.write_text(json.dumps({"format": "pytest-llmppl baselines v2", "baselines": old}))
    pytester.runpytest(f"--ppl-baselines={path}", *FRESH).assert_outcomes(passed=2)
    assert rows(pytester, "check")[0]["baseline_source"] == "file"
    strict = pytester.runpytest(f"--ppl-baselines={path}", "--ppl-strict", *FRESH)
    strict.assert_outcomes(passed=1, failed=1)
    strict.stdout.fnmatch_lines(["*has no recorded result*(ppl-baselines.json is a 0.2 file, which records "
                                 "baselines only)*--ppl-update-baselines*"])
    _record(pytester)  # rewritten as v3, checks recorded
    assert json.loads(path.read_text())["format"] == "pytest-llmppl baselines v3"


def test_update_keeps_records_of_tests_it_did_not_run_and_drops_gone_ones(pytester):
    project(pytester, SUITE)
    path = _record(pytester)
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines", "-k", "dense", *FRESH)
    assert "test_suite.py::test_pruned" in json.loads(path.read_text())["checks"]
    project(pytester, SUITE.split("def test_pruned")[0] + "def test_dense_is_sane" + SUITE.split(
        "def test_dense_is_sane")[1])
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines", *FRESH).assert_outcomes(passed=1)
    assert json.loads(path.read_text())["checks"] == {}


def test_a_bad_tolerance_marker_is_a_usage_error(pytester):
    marked = SUITE.replace("def test_pruned", "@pytest.mark.ppl_regression_tolerance('lots')\ndef test_pruned")
    project(pytester, marked)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_pruned: @pytest.mark.ppl_regression_tolerance: invalid regression tolerance*"])
