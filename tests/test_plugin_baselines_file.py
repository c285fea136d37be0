"""Committed baselines: create -> pass -> fail -> update, strict mode, malformed files, mismatches,
a clean deterministic file, unused entries removed, versions recorded."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from conftest import CORPUS_TXT
from plugin_support import project, rows


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

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
    assert entry["device"] == "cpu" and entry["dtype"] == "float32" and entry["test"] == "test_suite.py::test_guard"
    assert len(entry["window_nll"]) == entry["n_windows_total"] and entry["seqlen"] == 128
    assert entry["torch"] and entry["transformers"] and entry["attn_implementation"]
    assert path.read_text().startswith('{\n "format": "pytest-llmppl baselines v3"')  # human-readable
    # deterministic and portable: no timings or dates, paths relative to the file
    assert "seconds" not in entry and "measured_at" not in entry
    assert not entry["corpus"].startswith("/") and not entry["model"].startswith("/")
    assert (path.parent / entry["corpus"]).resolve() == CORPUS_TXT.resolve()

    passed = pytester.runpytest(f"--ppl-baselines={path}", "--ppl-strict", "--ppl-no-cache", "--ppl-report=report.json")
    passed.assert_outcomes(passed=1)
    assert rows(pytester, "check")[0]["baseline_source"] == "file"

    monkeypatch.setenv("DAMAGE", "0.3")
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-strict", "--ppl-no-cache").assert_outcomes(failed=1)
    # a refactor that changed the dense model: strict says what the file's entry was recorded for
    changed = pytester.runpytest(f"--ppl-baselines={path}", "--ppl-strict", "--ppl-seqlen=64")
    changed.assert_outcomes(failed=1)
    changed.stdout.fnmatch_lines(
        ["*is missing from*--ppl-strict*entry for this test was recorded with another seqlen*"])

    # refreshing the baselines re-measures the (unchanged) models: same numbers, no diff at all
    monkeypatch.delenv("DAMAGE")
    before = path.read_text()
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines", "--ppl-no-cache",
                       "--ppl-report=report.json")
    assert rows(pytester, "baseline")[0]["baseline_source"] == "measured"
    assert path.read_text() == before
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def test_strict_fails_on_a_missing_baseline(pytester):
    project(pytester, SUITE)
    path = pytester.path / "ppl-baselines.json"
    path.write_text('{"format": "pytest-llmppl baselines v3", "baselines": {}}')
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
    ('{"format": "pytest-llmppl baselines v1", "baselines": {}}',
     "*older format*regenerate it with --ppl-update-baselines*"),
])
def test_malformed_file_is_a_usage_error(pytester, content, message):
    project(pytester, SUITE)
    (pytester.path / "b.json").write_text(content)
    result = pytester.runpytest("--ppl-baselines=b.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_device_mismatch_is_reported(pytester):
    project(pytester, SUITE)
    path = pytester.path / "b.json"
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines").assert_outcomes(passed=1)
    data = json.loads(path.read_text())
    for entry in data["baselines"].values():
        entry["device"], entry["dtype"] = "cuda", "bfloat16"
    data["checks"] = {}  # the baseline alone (a recorded check of the same weights would serve it)
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


def _ppl(nll, weight):
    import math

    return math.exp(math.fsum(nll) / math.fsum(weight))


def _recorded(pytester, path):
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines").assert_outcomes(passed=1)
    return json.loads(path.read_text())


@pytest.mark.parametrize("edit,message", [
    (lambda e: e.update(ppl="low"), "*field 'ppl' should be int or float*"),
    (lambda e: e.update(seqlen="128"), "*field 'seqlen' should be int*"),
    (lambda e: e.update(ppl=e["ppl"] * 0.9), "*entry * (test_suite.py::test_guard): ppl * disagrees with its own"
                                             " window_nll*--ppl-update-baselines*"),
    # each of these was an INTERNALERROR (ZeroDivisionError, OverflowError) or a subset served as whole
    (lambda e: e.update(window_weight=[0] * len(e["window_weight"])),
     "*entry * (test_suite.py::test_guard): field 'window_weight' must hold positive numbers*"),
    (lambda e: e.update(window_nll=[1e300] * len(e["window_nll"])),
     "*entry * (test_suite.py::test_guard): field 'window_nll' gives a perplexity too large*"),
    (lambda e: e.update(window_index=e["window_index"][:3], window_nll=e["window_nll"][:3],
                        window_weight=e["window_weight"][:3], ppl=_ppl(e["window_nll"][:3], e["window_weight"][:3])),
     "*entry * (test_suite.py::test_guard): field 'window_index' holds 3 windows, but n_windows_total is 140*"),
    (lambda e: e.update(window_index=[*e["window_index"][:-1], e["n_windows_total"]]),
     "*entry * (test_suite.py::test_guard): field 'window_index' must be increasing window numbers in 0..139*"),
])
def test_hand_edited_entry_is_a_start_up_error_naming_it(pytester, edit, message):
    project(pytester, SUITE)
    path = pytester.path / "b.json"
    data = _recorded(pytester, path)
    (entry,) = data["baselines"].values()
    edit(entry)
    path.write_text(json.dumps(data))
    result = pytester.runpytest(f"--ppl-baselines={path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_other_versions_are_reported_not_failed(pytester):
    project(pytester, SUITE)
    path = pytester.path / "b.json"
    data = _recorded(pytester, path)
    for entry in data["baselines"].values():
        entry["torch"] = "2.0.0"
    path.write_text(json.dumps(data))
    result = pytester.runpytest(f"--ppl-baselines={path}", "--ppl-strict", "--ppl-report=report.json", "-W", "always")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["llmppl: baselines in b.json were recorded with torch 2.0.0*this run has torch 2.*",
                                 "*committed baseline recorded with torch 2.0.0, this run has*"])
    (base,) = rows(pytester, "baseline")
    assert base["baseline_source"] == "file"
    assert base["notes"][0].startswith("committed baseline recorded with torch 2.0.0, this run has ")


def test_update_removes_entries_no_test_uses(pytester, monkeypatch):
    two = SUITE + SUITE.replace("test_guard", "test_other").replace('"DAMAGE"', '"OTHER_DAMAGE"')
    project(pytester, two)
    path = pytester.path / "b.json"
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines").assert_outcomes(passed=2)
    assert len(_entries(path)) == 1  # one dense model, one entry
    # the dense model changes for test_other only: its old entry is replaced, not kept beside the new one
    header = "def test_other(model, tok, ppl_baseline, ppl_check):\n"
    project(pytester, two.replace(header + "    base = ppl_baseline(model, tok)",
                                  header + "    damage(model, 0.05)\n    base = ppl_baseline(model, tok)"))
    run = pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines")
    run.assert_outcomes(passed=2)
    tests = sorted(e["test"] for e in _entries(path).values())
    assert tests == ["test_suite.py::test_guard", "test_suite.py::test_other"]
    # a filtered run (-k) keeps what it did not run
    filtered = pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines", "-k", "test_other")
    filtered.assert_outcomes(passed=1)
    assert len(_entries(path)) == 2
    # a test that is gone from a file run whole: its entry goes
    project(pytester, SUITE)
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines").assert_outcomes(passed=1)
    assert [e["test"] for e in _entries(path).values()] == ["test_suite.py::test_guard"]


def test_nan_baseline_is_not_recorded(pytester):
    suite = """
import torch

def test_nan(model, tok, ppl_baseline):
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[0, 0] = float("nan")
    ppl_baseline(model, tok, max_windows=3)
"""
    project(pytester, suite)
    path = pytester.path / "b.json"
    result = pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines", "-W", "always")
    result.assert_outcomes(passed=1, warnings=1)
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["*baseline for * is nan (not finite): not recorded*"])


EARLY = """
from conftest import damage

def test_far_pass(model, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(model, tok)
    damage(model, 0.1)
    ppl_check(model, tok, baseline=base, budget="20%")
"""


def test_moved_file_still_allows_early_stop(pytester, tmp_path):
    """The corpus is compared by content: a file recorded in another checkout folder still matches."""
    from plugin_support import INI

    project(pytester, EARLY, ini=INI.replace(str(CORPUS_TXT), "corpus.txt"))
    shutil.copy(CORPUS_TXT, pytester.path / "corpus.txt")
    path = pytester.path / "b.json"
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines", "--ppl-no-cache").assert_outcomes(passed=1)
    elsewhere = tmp_path / "checkout-b"
    shutil.copytree(pytester.path, elsewhere, ignore=shutil.ignore_patterns(".pytest_cache", "b.json"))
    moved = elsewhere / "ci" / "baselines.json"
    moved.parent.mkdir()
    moved.write_text(path.read_text())
    result = pytester.runpytest(f"--rootdir={elsewhere}", f"--ppl-baselines={moved}", "--ppl-strict", "--ppl-no-cache",
                                "--ppl-early-stop", "--ppl-remeasure", "--ppl-report=report.json",
                                str(elsewhere / "test_suite.py"))
    result.assert_outcomes(passed=1)
    (check,) = rows(pytester, "check")
    assert check["baseline_source"] == "file" and check["early"]["decided_after"] < 140


def test_xdist_update_measures_a_shared_baseline_once(pytester):
    tests = "\n".join(f"""
def test_guard_{i}(model, tok, ppl_baseline):
    ppl_baseline(model, tok)
""" for i in range(4))
    project(pytester, tests)
    path = pytester.path / "b.json"
    pytester.runpytest("-n2", f"--ppl-baselines={path}", "--ppl-update-baselines", "--ppl-report=report.json",
                       "--ppl-batch-size=4").assert_outcomes(passed=4)
    sources = sorted(r["baseline_source"] for r in rows(pytester, "baseline"))
    assert sources.count("measured") == 1, sources
    from plugin_support import forwards

    assert forwards(pytester) == 35  # one evaluation of the 140 windows, in batches of 4
    assert len(_entries(path)) == 1


def test_a_committed_file_holds_no_path_outside_its_repository(tmp_path):
    from pytest_llmppl.keep.entries import relative_name

    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "data").mkdir()
    (repo / "data" / "wiki.txt").write_text("x")
    outside = tmp_path / "elsewhere" / "my-model"
    outside.mkdir(parents=True)
    hub = tmp_path / "hf" / "hub" / "models--HuggingFaceTB--SmolLM2-135M" / "snapshots" / "0123abc"
    hub.mkdir(parents=True)
    ci = repo / "ci"
    ci.mkdir()
    assert relative_name(str(repo / "data" / "wiki.txt"), ci) == "../data/wiki.txt"  # inside: relative
    assert relative_name(str(outside), ci) == "my-model"  # outside: the folder's name
    assert relative_name(str(hub), ci) == "HuggingFaceTB/SmolLM2-135M"  # the hub cache: the hub id
    assert relative_name("HuggingFaceTB/SmolLM2-135M", ci) == "HuggingFaceTB/SmolLM2-135M"
