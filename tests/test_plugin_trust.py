"""Nothing forged, strict that stays strict: what the plugin trusts, and what it refuses at start-up."""

from __future__ import annotations

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
