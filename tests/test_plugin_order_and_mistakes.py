"""Verdicts that do not depend on which tests ran before, a shared model pruned in place caught,
and a user's mistakes answered with one message at the user's line."""

from __future__ import annotations

import json

import pytest

from plugin_support import failures, project, report, rows

STRICT_ORDER = """
def test_a(model, tok, ppl_of):
    ppl_of(model, tok, seqlen=64)

def test_b(model, tok, ppl_baseline):
    ppl_baseline(model, tok, seqlen=64)
"""

RECORD_OTHER = """
def test_b(model, tok, ppl_baseline):
    ppl_baseline(model, tok)
"""


@pytest.mark.parametrize("how", [[], ["-n", "2"], ["-k", "test_b"], ["-p", "no:cacheprovider"]],
                         ids=["serial", "xdist", "alone", "serial-no-store"])
def test_strict_baseline_comes_from_the_file_alone_in_any_order(pytester, how):
    project(pytester, RECORD_OTHER)
    path = pytester.path / "b.json"
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines").assert_outcomes(passed=1)
    project(pytester, STRICT_ORDER)
    pytester.runpytest().assert_outcomes(passed=2)  # the store now holds the seqlen-64 result
    result = pytester.runpytest(*how, f"--ppl-baselines={path}", "--ppl-strict")
    result.assert_outcomes(failed=1, passed=0 if how == ["-k", "test_b"] else 1)
    result.stdout.fnmatch_lines(["*PPLFailure: baseline for * is missing from *--ppl-strict is on*"])


SHARED = """
import pytest
from conftest import damage
from transformers import AutoModelForCausalLM
from conftest import TINY

@pytest.fixture(scope="session")
def dense():
    return AutoModelForCausalLM.from_pretrained(TINY)

def test_1_prunes(dense, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(dense, tok)
    damage(dense, 0.2)  # the refactor dropped the deepcopy: the shared model is pruned in place
    ppl_check(dense, tok, baseline=base, budget="10%")

def test_2_next(dense, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(dense, tok)
    ppl_check(dense, tok, baseline=base, budget="10%")
"""


def test_a_shared_model_pruned_in_place_is_caught(pytester):
    project(pytester, SHARED)
    result = pytester.runpytest("-W", "always", "--ppl-report=report.json")
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(["*test_suite.py:*PrunedInPlaceWarning: ppl_baseline: these weights (id *) are the "
                                 "pruned candidate that test_suite.py::test_1_prunes checked earlier*pruned in place*"])
    second = rows(pytester, "check")[1]
    assert second["identical_to_baseline"] is True  # and the check itself says pruning changed nothing
    for flag in ("--ppl-update-baselines", "--ppl-strict"):
        path = pytester.path / "b.json"
        args = [f"--ppl-baselines={path}", flag]
        if flag == "--ppl-strict":
            pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines", "-k", "test_1")
        refused = pytester.runpytest(*args)
        refused.assert_outcomes(passed=1, failed=1)
        refused.stdout.fnmatch_lines([f"*test_1_prunes checked earlier*({flag}: refused)*"])


def test_a_no_op_pruning_is_flagged(pytester):
    project(pytester, """
def test_noop(model, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(model, tok)
    ppl_check(model, tok, baseline=base, budget="10%")
""")
    result = pytester.runpytest("--ppl-report=report.json")
    result.assert_outcomes(passed=1)
    assert rows(pytester, "check")[0]["identical_to_baseline"] is True
    result.stdout.fnmatch_lines(["*test_noop*0 (identical weights)*PASS*"])


def test_top1_shows_with_a_file_from_another_transformers_version(pytester):
    project(pytester, """
from conftest import damage

def test_guard(model, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(model, tok)
    damage(model, 0.2)
    ppl_check(model, tok, baseline=base, budget="10%")
""")
    path = pytester.path / "b.json"
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines").assert_outcomes(passed=1)
    data = json.loads(path.read_text())
    for entry in [*data["baselines"].values(), *data["checks"]["test_suite.py::test_guard"]]:
        entry["transformers"] = "4.0.0"
    path.write_text(json.dumps(data))
    for extra in ([], ["--ppl-remeasure"]):
        pytester.runpytest(f"--ppl-baselines={path}", "--ppl-report=report.json", *extra).assert_outcomes(passed=1)
        (check,) = rows(pytester, "check")
        assert check["baseline_source"] == "file" and check["top1"] is not None, extra
        assert 0 < check["top1"]["share"] < 1


def test_a_kept_entry_is_named_after_a_test_that_used_it_this_run(pytester):
    two = """
def test_a(model, tok, ppl_baseline):
    ppl_baseline(model, tok)

def test_b(model, tok, ppl_baseline):
    ppl_baseline(model, tok)
"""
    project(pytester, two)
    path = pytester.path / "b.json"
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines").assert_outcomes(passed=2)
    (entry,) = json.loads(path.read_text())["baselines"].values()
    assert entry["test"] == "test_suite.py::test_a"
    before = path.read_bytes()  # a refresh of test_b alone: test_a did not run, still uses it, names it
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines", "--ppl-remeasure", "-k", "test_b")
    assert path.read_bytes() == before
    project(pytester, two.split("def test_b")[0].replace("test_a", "test_b"))  # test_a deleted
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines").assert_outcomes(passed=1)
    (entry,) = json.loads(path.read_text())["baselines"].values()
    assert entry["test"] == "test_suite.py::test_b"


@pytest.mark.parametrize("body,message", [
    ("ppl_check(model, tok)", "*pytest-llmppl: ppl_check needs baseline=: what ppl_baseline returned*"),
    ("ppl_check(model, tok, 2.0)", "*pytest-llmppl: ppl_check takes the baseline by name: ppl_check(model, tok, "
                                   "baseline=base) (got 1 more positional argument after the tokenizer)*"),
    ("ppl_baseline(tok, model)", "*ppl_baseline(model, tokenizer): the arguments are swapped (got a *Tokenizer* "
                                 "first and a LlamaForCausalLM second)*"),
    ("ppl_of('model', tok)", "*ppl_of(model, tokenizer): the first argument must be the model*got str*"),
])
def test_a_mistake_is_one_message_at_the_users_line(pytester, body, message):
    project(pytester, f"""
def test_mistake(model, tok, ppl_baseline, ppl_check, ppl_of):
    {body}
""")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f">*{body}", message])
    out = failures(result)
    assert "pytest_llmppl/" not in out and "Traceback" not in out
    assert out.count("PPLFailure: ") == 1  # one message, no chained second copy


def test_a_bad_ini_value_says_it_came_from_the_ini(pytester):
    from plugin_support import INI

    ini = "\n".join(line for line in INI.splitlines() if not line.startswith("ppl_corpus"))
    project(pytester, "def test_x():\n    pass\n", ini=ini + "\nppl_corpus = nonsense-corpus\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini ppl_corpus: unknown corpus 'nonsense-corpus'*"])


def test_missing_file_warning_points_at_the_configuration(pytester):
    project(pytester, "def test_x():\n    pass\n")
    result = pytester.runpytest("--ppl-baselines=nope.json")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*pytest.ini:0: PytestConfigWarning: pytest-llmppl: --ppl-baselines file *nope.json "
                                 "does not exist*"])
    assert "plugin.py" not in result.stdout.str()


def test_a_delta_that_rounds_to_zero_has_no_minus_sign(pytester):
    project(pytester, """
def test_given(model, tok, ppl_of, ppl_check):
    measured = ppl_of(model, tok).ppl
    ppl_check(model, tok, baseline=measured + 4e-6)
""")
    result = pytester.runpytest("--ppl-report=report.json")
    result.assert_outcomes(passed=1)
    assert report(pytester)["records"][-1]["delta"] < 0
    assert "-0.0000" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*test_given*+0.0000*PASS*"])


def test_a_model_checked_against_a_number_may_be_a_baseline_later(pytester):
    """No false "pruned in place": test_a checks the dense weights against a plain number (no dense
    baseline to have been pruned from); test_b then makes them its baseline, in every mode."""
    project(pytester, """
def test_a(model, tok, ppl_check):
    ppl_check(model, tok, baseline=2.0)

def test_b(model, tok, ppl_baseline):
    ppl_baseline(model, tok)
""")
    path = pytester.path / "b.json"
    for flags in (("--ppl-update-baselines",), ("--ppl-strict",), ()):
        result = pytester.runpytest("-p", "no:randomly", "-W", "error::UserWarning", f"--ppl-baselines={path}", *flags)
        result.assert_outcomes(passed=2)
        assert "pruned in place" not in result.stdout.str()
