"""Nothing forged, strict that stays strict: what the plugin trusts, and what it refuses at start-up."""

from __future__ import annotations

import os

import pytest

from plugin_support import INI, project


@pytest.mark.parametrize("env,ini,args,named", [
    ({"PYTEST_LLMPPL_UPDATE_BASELINES": "1"}, "", ["--ppl-strict"],
     ["--ppl-strict", "PYTEST_LLMPPL_UPDATE_BASELINES"]),
    ({}, "ppl_strict = true\n", ["--ppl-update-baselines"], ["ini ppl_strict", "--ppl-update-baselines"]),
    ({}, "", ["--ppl-strict", "--ppl-update-baselines"], ["--ppl-strict", "--ppl-update-baselines"]),
])
def test_strict_and_a_refresh_together_are_one_usage_error_naming_both_sources(pytester, monkeypatch, env, ini,
                                                                               args, named):
    project(pytester, "def test_x():\n    pass\n", ini=INI + "ppl_baselines = b.json\n" + ini)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert all(name in err for name in named) and "both set" in err
    assert not (pytester.path / "b.json").exists()


def test_an_absolute_budget_below_one_ppl_says_its_unit_wherever_it_is_printed(pytester):
    project(pytester, """
from conftest import damage

def test_pruned(model, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(model, tok)
    damage(model, 0.5)
    ppl_check(model, tok, baseline=base)
""")
    result = pytester.runpytest("--ppl-budget=0.3")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    words = "0.3 PPL (absolute; 30% would be relative)"
    assert f"budget={words}" in out  # the header
    assert f"+ budget {words} =" in out  # the message
    (row,) = [line for line in out.split("llmppl perplexity summary")[1].splitlines()
              if line.startswith("test_suite.py::test_pruned ")]
    assert words in row  # the table
    assert "1% would be" not in pytester.runpytest("--ppl-budget=1").stdout.str()


FORGED = """
def test_pruned(model, tok, ppl_baseline, ppl_check):
    ppl_check(model, tok, baseline=1.0, budget="1%")  # the dense model against 1.0: fails unless forged
"""


@pytest.mark.parametrize("owner,mode", [("another user", 0o755), ("this user", 0o777)])
def test_a_fallback_store_someone_else_can_write_is_refused(pytester, monkeypatch, tmp_path, owner, mode):
    """The cache dir is unusable, so the store falls back to $TMPDIR/pytest-llmppl-<uid>; one pre-made by
    another user, or writable by others, could hold a planted entry: refused with a warning, then no
    store at all (measured: the failure stays a failure), as pytest's tmp_path refuses such a folder."""
    import tempfile

    if owner == "another user" and (not hasattr(os, "geteuid") or os.geteuid() != 0):
        pytest.skip("giving a folder to another user needs root")
    project(pytester, FORGED)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    planted = tmp_path / f"pytest-llmppl-{os.getuid()}"
    planted.mkdir(mode=0o700)
    planted.chmod(mode)
    if owner == "another user":
        os.chown(planted, 12345, 12345)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    result = pytester.runpytest(f"--ppl-cache-dir={blocked / 'cache'}", "-W", "always")
    result.assert_outcomes(failed=1, warnings=1)
    why = "belongs to another user (uid 12345)" if owner == "another user" else "is writable by others (mode 0777)"
    result.stdout.fnmatch_lines([f"*CacheWarning*fallback {planted} {why}: running without a local store*"])
    assert not any(planted.rglob("*.entry"))  # nothing written there either


def test_the_fallback_store_is_made_private(tmp_path):
    import stat

    from pytest_llmppl.keep.store import private_dir

    fresh = tmp_path / "fresh"
    assert private_dir(fresh) == "" and stat.S_IMODE(fresh.stat().st_mode) == 0o700


CHANGED = """
import os
from conftest import damage

def test_pruned(model, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(model, tok)
    damage(model, float(os.environ.get("DAMAGE", "0.2")))
    ppl_check(model, tok, baseline=base, budget="50%")
"""


def test_under_strict_a_changed_candidate_is_measured_not_served_from_the_store(pytester, monkeypatch):
    """A verdict under --ppl-strict comes from the committed file or a forward on this runner: a store
    entry of an earlier run (which someone could have planted) never decides it; the unchanged
    candidate stays free (served from the file)."""
    from plugin_support import forwards, rows

    project(pytester, CHANGED)
    path = pytester.path / "b.json"
    args = (f"--ppl-baselines={path}", "--ppl-report=report.json", "-p", "no:randomly")
    pytester.runpytest(*args, "--ppl-update-baselines").assert_outcomes(passed=1)
    monkeypatch.setenv("DAMAGE", "0.25")
    pytester.runpytest(*args)  # not strict: measured once, and now in the store
    assert rows(pytester, "check")[0]["measured_source"] == "measured"
    forwards(pytester)
    pytester.runpytest(*args)
    assert rows(pytester, "check")[0]["measured_source"] == "cache"  # what a plain run may do
    forwards(pytester)
    pytester.runpytest(*args, "--ppl-strict")
    (check,) = rows(pytester, "check")
    assert check["measured_source"] == "measured" and check["baseline_source"] == "file" and forwards(pytester) > 0
    monkeypatch.setenv("DAMAGE", "0.2")  # the recorded candidate: from the file, no forward
    pytester.runpytest(*args, "--ppl-strict").assert_outcomes(passed=1)
    assert rows(pytester, "check")[0]["measured_source"] == "file" and forwards(pytester) == 0


RENAMED = """
import pytest
from conftest import damage

@pytest.mark.parametrize("amount", [0.2], ids=[__import__("os").environ.get("ID", "old")])
def test_pruned(model, tok, ppl_check, amount):
    damage(model, amount)
    ppl_check(model, tok, baseline=100.0)
"""


def test_a_renamed_test_names_where_its_candidate_is_recorded_and_the_guard_off_is_counted(pytester, monkeypatch):
    project(pytester, RENAMED)
    path = pytester.path / "b.json"
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines").assert_outcomes(passed=1)
    monkeypatch.setenv("ID", "new")  # the parametrize id renamed: the record stays under the old one
    strict = pytester.runpytest(f"--ppl-baselines={path}", "--ppl-strict")
    strict.assert_outcomes(failed=1)
    out = strict.stdout.str()
    assert "check 1 of test_suite.py::test_pruned[new] has no recorded result" in out
    assert "This very candidate is recorded under test_suite.py::test_pruned[old]: a renamed test" in out
    plain = pytester.runpytest(f"--ppl-baselines={path}", "-W", "always")
    plain.assert_outcomes(passed=1, warnings=1)
    out = plain.stdout.str()
    assert ("RecordMismatchWarning: check 1 of test_suite.py::test_pruned[new] has no record, but this very "
            "candidate is recorded under test_suite.py::test_pruned[old]") in out
    assert "llmppl: 1 check ran without a record in b.json: the regression and size guards were off" in out
