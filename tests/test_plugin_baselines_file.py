"""Committed baselines: create -> pass -> fail -> update, strict mode, malformed files, mismatches."""

from __future__ import annotations

import json

import pytest

from plugin_support import project, rows

SUITE = """
import os
from conftest import damage

def test_guard(model, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(model, tok)
    damage(model, float(os.environ.get("DAMAGE", "0")))
    ppl_check(model, tok, baseline=base, budget="2%")
"""


def _entries(path):
    return json.loads(path.read_text())["baselines"]


def test_create_pass_fail_update_cycle(pytester, monkeypatch):
    project(pytester, SUITE)
    path = pytester.path / "ppl-baselines.json"
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines", "--ppl-no-cache").assert_outcomes(passed=1)
    (entry,) = _entries(path).values()
    assert entry["device"] == "cpu" and entry["dtype"] == "float32" and entry["test"].endswith("test_guard")
    assert len(entry["window_nll"]) == entry["n_windows_total"] and entry["seqlen"] == 128
    assert path.read_text().startswith('{\n "format": "pytest-llmppl baselines v1"')  # human-readable

    passed = pytester.runpytest(f"--ppl-baselines={path}", "--ppl-strict", "--ppl-no-cache", "--ppl-report=report.json")
    passed.assert_outcomes(passed=1)
    assert rows(pytester, "check")[0]["baseline_source"] == "file"

    monkeypatch.setenv("DAMAGE", "0.3")
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-strict", "--ppl-no-cache").assert_outcomes(failed=1)

    # refreshing the baselines re-measures the (unchanged) dense model: same number, rewritten file
    before = path.read_text()
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines", "--ppl-no-cache",
                       "--ppl-report=report.json")
    assert rows(pytester, "baseline")[0]["baseline_source"] == "measured"
    assert _entries(path).keys() == json.loads(before)["baselines"].keys()


def test_strict_fails_on_a_missing_baseline(pytester):
    project(pytester, SUITE)
    path = pytester.path / "ppl-baselines.json"
    path.write_text('{"format": "pytest-llmppl baselines v1", "baselines": {}}')
    result = pytester.runpytest(f"--ppl-baselines={path}", "--ppl-strict")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*is missing from*--ppl-strict*--ppl-update-baselines*"])
    # not strict: measured instead
    pytester.runpytest(f"--ppl-baselines={path}").assert_outcomes(passed=1)


def test_strict_with_no_file_is_a_usage_error(pytester):
    project(pytester, SUITE)
    result = pytester.runpytest("--ppl-baselines=nope.json", "--ppl-strict")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*nope.json does not exist*--ppl-update-baselines*"])


@pytest.mark.parametrize("content,message", [
    ("{not json", "*is not valid JSON*"),
    ('{"baselines": []}', "*is not a pytest-llmppl baselines file*"),
    ('{"format": "pytest-llmppl baselines v1", "baselines": {"abc": {"ppl": "low"}}}', "*field 'ppl' should be int or float*"),
])
def test_malformed_file_is_a_usage_error(pytester, content, message):
    project(pytester, SUITE)
    (pytester.path / "b.json").write_text(content)
    result = pytester.runpytest("--ppl-baselines=b.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_hand_edited_wrong_type_names_the_field(pytester):
    project(pytester, SUITE)
    path = pytester.path / "b.json"
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines").assert_outcomes(passed=1)
    data = json.loads(path.read_text())
    (key,) = data["baselines"]
    data["baselines"][key]["seqlen"] = "128"
    path.write_text(json.dumps(data))
    result = pytester.runpytest(f"--ppl-baselines={path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*field 'seqlen' should be int*"])


def test_device_mismatch_is_reported(pytester):
    project(pytester, SUITE)
    path = pytester.path / "b.json"
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines").assert_outcomes(passed=1)
    data = json.loads(path.read_text())
    for entry in data["baselines"].values():
        entry["device"], entry["dtype"] = "cuda", "bfloat16"
    path.write_text(json.dumps(data))
    result = pytester.runpytest(f"--ppl-baselines={path}", "-W", "always")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*measured on cuda/bfloat16*this run evaluates on cpu*"])
    strict = pytester.runpytest(f"--ppl-baselines={path}", "--ppl-strict")
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(["*measured on cuda/bfloat16*--ppl-strict*"])


def test_update_needs_a_file(pytester):
    project(pytester, SUITE)
    result = pytester.runpytest("--ppl-update-baselines")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
