"""Summary table, JSON and markdown reports, junit properties, header line; no-fixture suites."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from plugin_support import project, report

SUITE = """
import pytest
from conftest import damage

def test_pass(model, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(model, tok)
    ppl_check(model, tok, baseline=base, budget=0.5)

def test_fail(model, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(model, tok)
    damage(model, 0.5)
    ppl_check(model, tok, baseline=base, budget="1%")

def test_plain(model, tok, ppl_of):
    assert ppl_of(model, tok, max_windows=4) < 100
"""


def test_summary_json_markdown_junit(pytester):
    project(pytester, SUITE)
    result = pytester.runpytest("--ppl-report=out/report.json", "--ppl-report-md=out/summary.md", "--junitxml=junit.xml")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "llmppl: budget=5% corpus=*seqlen=128 protocol=torch-pruning*",
        "*llmppl perplexity summary*",
        "test*corpus*seqlen*baseline*measured*budget*verdict*source*seconds",
        "*test_fail*FAIL*",
        "*test_pass*PASS*",
        "*test_plain*measured*",
    ])
    data = report(pytester, "out/report.json")
    assert data["summary"]["pass"] == 1 and data["summary"]["fail"] == 1
    assert data["settings"]["seqlen"] == "128"
    check = next(r for r in data["records"] if r["kind"] == "check" and r["test"].endswith("test_fail"))
    assert check["paired"]["delta_ppl"] > 0 and check["paired"]["delta_ppl_se"] >= 0
    assert 0.5 < check["top1"]["share"] < 1 and check["top1"]["se"] > 0  # damaged model disagrees sometimes
    passing = next(r for r in data["records"] if r["kind"] == "check" and r["test"].endswith("test_pass"))
    assert passing["top1"]["share"] == 1.0  # the same model agrees with itself everywhere
    md = (pytester.path / "out" / "summary.md").read_text()
    lines = md.splitlines()
    table = [l for l in lines if l.startswith("|")]
    assert len({l.count("|") - l.count("\\|") for l in table}) == 1  # same column count on every row
    assert table[1].startswith("|---") and "❌ FAIL" in md and "✅ PASS" in md
    cases = {c.get("name"): c for c in ET.parse(pytester.path / "junit.xml").getroot().iter("testcase")}
    props = {p.get("name"): p.get("value") for p in cases["test_fail"].iter("property")}
    assert props["ppl_verdict"] == "fail" and float(props["ppl_measured"]) > float(props["ppl_baseline"])


def test_suite_without_ppl_fixtures_is_untouched(pytester):
    pytester.makepyfile(test_plain="def test_x():\n    assert 1\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "llmppl perplexity summary" not in result.stdout.str()


def test_plugin_does_not_import_torch_for_plain_suites(pytester):
    pytester.makepyfile(test_plain="import sys\ndef test_x():\n"
                                   "    assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n")
    pytester.runpytest("-p", "no:xdist", "-p", "no:hypothesispytest").assert_outcomes(passed=1)
