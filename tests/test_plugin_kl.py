"""KL divergence from the dense model inside pytest: reported on every check with a baseline, judged
against --ppl-kl-budget with one message, served with the check's record from the committed file."""

from __future__ import annotations

import json

import pytest

from plugin_support import failures, forwards, project, rows

SUITE = """
import os
import pytest
from conftest import damage

def test_pruned(model, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(model, tok)
    damage(model, float(os.environ.get("DAMAGE", "0.3")))
    ppl_check(model, tok, baseline=base, budget="50%")

def test_unchanged(model, tok, ppl_baseline, ppl_check):
    ppl_check(model, tok, baseline=ppl_baseline(model, tok), budget="1%")
"""


def test_every_check_reports_its_divergence_and_one_over_the_kl_budget_fails_with_one_message(pytester, monkeypatch):
    project(pytester, SUITE)
    result = pytester.runpytest("--ppl-report=report.json", "--junitxml=junit.xml")
    result.assert_outcomes(passed=2)
    pruned, unchanged = sorted(rows(pytester, "check"), key=lambda r: r["test"])
    kl = pruned["kl"]
    assert 0 < kl["mean"] < kl["maximum"] and kl["se"] > 0 and kl["tokens"] == 127 * pruned["n_windows"]
    assert kl["median"] < kl["percentiles"]["99"] < kl["maximum"] and 0 < kl["same_top"] < 1
    assert kl["dp_rms"] > 0 and set(kl["dp_percentiles"]) >= {"99.9", "75", "25", "0.1"}
    assert unchanged["kl"]["mean"] == 0 and unchanged["kl"]["same_top"] == 1  # the dense model against itself
    table = result.stdout.str()
    assert " KL " in table and f"{kl['mean']:.4f} ± {kl['se']:.4f}" in table
    assert f'name="ppl_kl_mean" value="{kl["mean"]}"' in (pytester.path / "junit.xml").read_text()
    # Over the KL budget: one message, the windows of highest divergence; served, no forward.
    measured = kl["mean"]
    budget = round(measured / 2, 4)
    result = pytester.runpytest(f"--ppl-kl-budget={budget}", "--ppl-report=report.json", "-k", "pruned")
    result.assert_outcomes(failed=1)
    out = failures(result)
    assert out.count("ppl_check: mean KL divergence from the dense model") == 1
    assert f"exceeds the KL budget {budget:g} by {measured - budget:.4f}" in out
    assert out.count("windows where divergence is highest: window ") == 1
    (check,) = rows(pytester, "check")
    assert check["verdict"] == "fail" and check["decided_by"] == "kl" and check["kl_budget"] == budget
    assert check["measured_source"] == "cache"  # the PPL and its KL were served: no forward needed
    assert forwards(pytester) == 0
    pytester.runpytest(f"--ppl-kl-budget={2 * measured:.4f}", "-k", "pruned").assert_outcomes(passed=1)
    # Another candidate against the baseline served from the store: measured, with its KL (the dense
    # top-k read from the store with no KL budget asking for it).
    monkeypatch.setenv("DAMAGE", "0.2")
    pytester.runpytest("--ppl-report=report.json", "-k", "pruned").assert_outcomes(passed=1)
    (check,) = rows(pytester, "check")
    assert check["baseline_source"] == "cache" and check["measured_source"] == "measured"
    assert 0 < check["kl"]["mean"] < measured


def test_the_kl_marker_beats_the_option(pytester):
    project(pytester, SUITE.replace("def test_pruned", "@pytest.mark.ppl_kl_budget('off')\ndef test_pruned"))
    pytester.runpytest("--ppl-kl-budget=0.000001", "--ppl-report=report.json").assert_outcomes(passed=2)
    budgets = {r["test"].split("::")[1]: r["kl_budget"] for r in rows(pytester, "check")}
    assert budgets == {"test_pruned": None, "test_unchanged": 0.000001}  # KL 0 <= any budget


@pytest.mark.parametrize("args,where", [(("--ppl-kl-budget=lots",), "--ppl-kl-budget"),
                                        (("--ppl-kl-budget=-1",), "--ppl-kl-budget"),
                                        (("-o", "ppl_kl_budget=nan"), "ini ppl_kl_budget")])
def test_a_bad_kl_budget_is_a_start_up_error(pytester, args, where):
    project(pytester, SUITE)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"{where}: invalid KL budget" in result.stderr.str()
    assert forwards(pytester) == 0


def test_a_kl_budget_on_a_number_baseline_says_what_is_missing(pytester):
    project(pytester, """
def test_number(model, tok, ppl_check):
    ppl_check(model, tok, baseline=100.0, kl_budget=0.1)
""")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    assert failures(result).count("the KL budget 0.1 cannot be judged: the baseline was given as a number") == 1


def test_a_recorded_check_serves_its_kl_from_the_committed_file(pytester):
    project(pytester, SUITE)
    path = pytester.path / "ppl-baselines.json"
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines", "--ppl-no-cache",
                       "--ppl-kl-budget=5").assert_outcomes(passed=2)
    forwards(pytester)
    data = json.loads(path.read_text())
    (entry,) = data["checks"]["test_suite.py::test_pruned"]
    dense = next(iter(data["baselines"].values()))
    assert entry["kl"]["dense_model_fingerprint"] == dense["model_fingerprint"] and entry["kl"]["mean"] > 0
    assert "topk" not in json.dumps(dense)  # the dense distribution stays local: the file does not grow
    # A fresh runner: an empty store, the committed file alone; the unchanged candidate is judged without a forward.
    result = pytester.runpytest(f"--ppl-baselines={path}", "--ppl-no-cache", "--ppl-kl-budget=5",
                                "--ppl-report=report.json")
    result.assert_outcomes(passed=2)
    assert forwards(pytester) == 0
    pruned = next(r for r in rows(pytester, "check") if r["test"].endswith("test_pruned"))
    assert pruned["kl"]["mean"] == entry["kl"]["mean"] and pruned["measured_source"] == "file"


COPYING = """
import copy, os
from conftest import damage

def test_pruned(model, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(model, tok)
    pruned = copy.deepcopy(model)
    damage(pruned, float(os.environ.get("DAMAGE", "0.3")))
    ppl_check(pruned, tok, baseline=base, budget="50%")
"""


@pytest.mark.parametrize("suite", ["copy", "in place"])
def test_a_changed_candidate_on_a_fresh_runner_measures_the_dense_top_k_when_it_can(pytester, monkeypatch, suite):
    project(pytester, COPYING if suite == "copy" else SUITE)
    path = pytester.path / "ppl-baselines.json"
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines", "--ppl-no-cache", "-k", "pruned",
                       "--ppl-kl-budget=5").assert_outcomes(passed=1)
    monkeypatch.setenv("DAMAGE", "0.35")  # the pruning code changed: the candidate is new, the file has no KL for it
    result = pytester.runpytest(f"--ppl-baselines={path}", "--ppl-no-cache", "--ppl-kl-budget=5", "-k", "pruned",
                                "--ppl-regression-tolerance=off", "--ppl-report=report.json")
    if suite == "copy":
        result.assert_outcomes(passed=1)
        (check,) = rows(pytester, "check")
        assert check["baseline_source"] == "file" and check["kl"]["mean"] > 0
    else:
        result.assert_outcomes(failed=1)
        assert failures(result).count("was changed after ppl_baseline (pruned in place?)") == 1


def test_a_refresh_adds_kl_to_a_record_made_without_it(pytester):
    """A record made before KL existed (or by another version) gains its KL statistics on a refresh
    of unchanged numbers, which otherwise keeps the committed entry as it was (no diff)."""
    project(pytester, SUITE)
    path = pytester.path / "ppl-baselines.json"
    record = ("--ppl-baselines=" + str(path), "--ppl-update-baselines", "--ppl-no-cache", "-k", "pruned")
    pytester.runpytest(*record).assert_outcomes(passed=1)
    data = json.loads(path.read_text())
    (entry,) = data["checks"]["test_suite.py::test_pruned"]
    del entry["kl"]
    path.write_text(json.dumps(data))
    pytester.runpytest(*record).assert_outcomes(passed=1)
    (entry,) = json.loads(path.read_text())["checks"]["test_suite.py::test_pruned"]
    assert entry["kl"]["mean"] > 0


def test_a_served_baseline_does_not_keep_the_dense_model_alive(tmp_path):
    """The lazy dense top-k holds the model weakly: a test that frees the dense model (GPU memory)
    frees it, and a check that then needs the top-k says why it cannot have it."""
    import gc
    import weakref

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_llmppl.session import PPLFailure, PPLSession, load_file
    from pytest_llmppl.settings import Settings

    from conftest import CORPUS_TXT, TINY

    tok = AutoTokenizer.from_pretrained(TINY)
    path = tmp_path / "b.json"
    common = dict(corpus=str(CORPUS_TXT), seqlen=128, max_windows=4, no_cache=True, baselines=str(path))
    recording = Settings(**common, update_baselines=True)
    session = PPLSession(recording, file=load_file(recording))
    session.baseline(AutoModelForCausalLM.from_pretrained(TINY), tok, test="t")
    session.finish({}, "")
    fresh = Settings(**common)
    dense = AutoModelForCausalLM.from_pretrained(TINY)
    base = PPLSession(fresh, file=load_file(fresh)).baseline(dense, tok, test="t")
    assert base.source.value == "file" and base.reference_maker is not None
    held = weakref.ref(dense)
    del dense
    gc.collect()
    assert held() is None
    with pytest.raises(PPLFailure, match="was freed after ppl_baseline"):
        base.reference_maker()


INFINITE = """
import torch

def test_zero_probability(model, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(model, tok)
    text = open(tok.name_or_path + "/../corpus/test.txt", encoding="utf-8").read()
    used = torch.zeros(model.config.vocab_size, dtype=torch.bool)
    used[torch.tensor(tok(text)["input_ids"])] = True
    unused = ~used  # tokens the corpus never asks for: probability zero leaves the PPL finite
    model.lm_head.register_forward_hook(lambda m, args, out: out.masked_fill(unused, float("-inf")))
    ppl_check(model, tok, baseline=base, budget="1000%")
"""


@pytest.mark.heavy
def test_an_infinite_divergence_fails_its_budget_however_it_is_served(pytester):
    """Tokens the candidate gives probability zero make KL infinite: a value kept as "inf" in the store,
    the committed file and the report, failing the budget each time; never null read back as NaN."""
    project(pytester, INFINITE)
    path = pytester.path / "ppl-baselines.json"
    args = ("--ppl-kl-budget=0.5", "--ppl-report=report.json", f"--ppl-baselines={path}")
    for run in ("measured", "cache"):
        result = pytester.runpytest(*args)
        result.assert_outcomes(failed=1)
        (check,) = rows(pytester, "check")
        assert check["measured_source"] == run and check["kl"]["mean"] == "inf" and check["decided_by"] == "kl"
        result.stdout.fnmatch_lines(["*mean KL divergence from the dense model inf*exceeds the KL budget 0.5*",
                                     "*windows where divergence is highest: window *"])
        result.stdout.fnmatch_lines(["*test_zero_probability*inf ± n/a (≤ 0.5)*FAIL*"])
    pytester.runpytest(*args, "--ppl-update-baselines")
    (entry,) = json.loads(path.read_text())["checks"]["test_suite.py::test_zero_probability"]
    assert entry["kl"]["mean"] == "inf"
    result = pytester.runpytest(*args, "--ppl-strict", "--ppl-no-cache")
    result.assert_outcomes(failed=1)
    (check,) = rows(pytester, "check")
    assert check["measured_source"] == "file" and check["kl"]["mean"] == "inf"


NUMBER_THEN_MODEL = """
import copy, os
from conftest import damage

def test_pruned(model, tok, ppl_baseline, ppl_check):
    pruned = copy.deepcopy(model)
    damage(pruned, 0.3)
    base = 100.0 if os.environ.get("NUMBER") else ppl_baseline(model, tok)
    ppl_check(pruned, tok, baseline=base, budget="50%")
"""


def test_a_stored_result_without_its_kl_is_measured_again_for_a_kl_budget(pytester, monkeypatch):
    """The store holds the candidate's result but not its divergence (it was measured against a
    number): a KL budget measures it again, against the dense top-k, and judges the KL (the store's
    result, found again under the lock, never passes it unjudged)."""
    project(pytester, NUMBER_THEN_MODEL)
    monkeypatch.setenv("NUMBER", "1")
    pytester.runpytest().assert_outcomes(passed=1)
    monkeypatch.delenv("NUMBER")
    result = pytester.runpytest("--ppl-kl-budget=0.000001", "--ppl-report=report.json")
    result.assert_outcomes(failed=1)
    (check,) = rows(pytester, "check")
    assert check["measured_source"] == "measured" and check["kl"]["mean"] > 0 and check["decided_by"] == "kl"
