"""Budgets: absolute and relative, at the boundary, marker > option > env > ini > default, bad values."""

from __future__ import annotations

import json

import pytest

from plugin_support import INI, project, rows

MEASURE = """
import json
from conftest import damage

def test_measure(model, tok, ppl_of):
    base = ppl_of(model, tok)
    damage(model, 0.3)
    json.dump({"base": base.ppl, "pruned": ppl_of(model, tok).ppl}, open("values.json", "w"))
"""

CHECK = """
from conftest import damage

def test_guard(model, tok, ppl_baseline, ppl_check, ppl_budget):
    base = ppl_baseline(model, tok)
    damage(model, 0.3)
    ppl_check(model, tok, baseline=base)
"""


@pytest.fixture()
def values(pytester):
    project(pytester, MEASURE)
    pytester.runpytest().assert_outcomes(passed=1)
    return json.loads((pytester.path / "values.json").read_text())


def test_absolute_budget_at_the_boundary(pytester, values):
    rise = values["pruned"] - values["base"]
    assert rise > 0
    project(pytester, CHECK)
    pytester.runpytest(f"--ppl-budget={rise * (1 + 1e-9)!r}").assert_outcomes(passed=1)
    failed = pytester.runpytest(f"--ppl-budget={rise * (1 - 1e-6)!r}", "--ppl-report=report.json")
    failed.assert_outcomes(failed=1)
    (row,) = rows(pytester, "check")
    assert row["verdict"] == "fail" and row["measured"] == pytest.approx(values["pruned"], rel=1e-12)
    text = failed.stdout.str()
    assert "exceeds the threshold" in text and f"{values['pruned']:.4f}" in text and f"{values['base']:.4f}" in text
    assert "seqlen 128" in text and "windows" in text and "budget" in text


def test_relative_budget(pytester, values):
    pct = 100 * (values["pruned"] / values["base"] - 1)
    project(pytester, CHECK)
    pytester.runpytest(f"--ppl-budget={pct * 1.0001}%").assert_outcomes(passed=1)
    pytester.runpytest(f"--ppl-budget={pct * 0.999}%").assert_outcomes(failed=1)


def test_marker_beats_option_beats_ini(pytester, values):
    rise = values["pruned"] - values["base"]
    big, small = rise * 2, rise / 2
    suite = CHECK + f"""
import pytest

@pytest.mark.ppl_budget({big!r})
def test_marked(model, tok, ppl_baseline, ppl_check, ppl_budget):
    assert ppl_budget.value == {big!r}
    test_guard(model, tok, ppl_baseline, ppl_check, ppl_budget)
"""
    project(pytester, suite, ini=INI + f"ppl_budget = {big!r}\n")
    pytester.runpytest().assert_outcomes(passed=2)                      # ini allows it
    # option beats ini, marker beats option
    pytester.runpytest(f"--ppl-budget={small!r}").assert_outcomes(passed=1, failed=1)
    project(pytester, suite, ini=INI + f"ppl_budget = {small!r}\n")
    pytester.runpytest().assert_outcomes(passed=1, failed=1)


def test_env_sits_between_option_and_ini(pytester, values, monkeypatch):
    rise = values["pruned"] - values["base"]
    project(pytester, CHECK, ini=INI + f"ppl_budget = {rise / 2!r}\n")
    monkeypatch.setenv("PYTEST_LLMPPL_BUDGET", repr(rise * 2))
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.runpytest(f"--ppl-budget={rise / 2!r}").assert_outcomes(failed=1)


def test_explicit_budget_argument_wins(pytester, values):
    suite = CHECK.replace("ppl_check(model, tok, baseline=base)",
                          "ppl_check(model, tok, baseline=base, budget='1000%')")
    project(pytester, suite)
    pytester.runpytest("--ppl-budget=0").assert_outcomes(passed=1)


@pytest.mark.parametrize("bad", ["-1", "nan", "two", "5%%", "inf"])
def test_invalid_budget_is_a_usage_error(pytester, bad):
    project(pytester, CHECK)
    result = pytester.runpytest(f"--ppl-budget={bad}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ppl-budget*invalid ppl budget*"])


def test_invalid_ini_and_marker(pytester):
    project(pytester, CHECK, ini=INI + "ppl_budget = lots\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini ppl_budget*invalid ppl budget 'lots'*"])
    project(pytester, "import pytest\n@pytest.mark.ppl_budget(-3)\ndef test_x():\n    pass\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ppl_budget*invalid ppl budget -3*"])


@pytest.mark.parametrize("option", ["--ppl-batch-size=zero", "--ppl-dtype=float8", "--ppl-protocol=chunks",
                                    "--ppl-seqlen=-4", "--ppl-max-windows=0"])
def test_unknown_option_values_are_usage_errors(pytester, option):
    project(pytester, CHECK)
    result = pytester.runpytest(option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{option.split('=')[0]}*invalid*"])


def test_nan_check_fails_with_its_own_message(pytester):
    suite = """
import torch

def test_nan(model, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(model, tok)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[0, 0] = float("nan")
    ppl_check(model, tok, baseline=base, budget="1000%")
"""
    project(pytester, suite)
    result = pytester.runpytest("--ppl-report=report.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*perplexity is nan (not finite)*", "*test_nan*NAN*"])
    assert rows(pytester, "check")[0]["verdict"] == "nan"
