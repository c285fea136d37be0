"""Summary table, JSON and markdown reports, junit properties, header line; no-fixture suites."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

import pytest

from plugin_support import failures, project, report

SUITE = """
import pytest, torch
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

def test_nan(model, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(model, tok)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[0, 0] = float("nan")
    ppl_check(model, tok, baseline=base, budget="1000%")

@pytest.mark.parametrize("a_long_parameter_name_that_makes_the_test_id_very_long", ["x" * 60])
def test_sliding(model, tok, ppl_of, a_long_parameter_name_that_makes_the_test_id_very_long):
    ppl_of(model, tok, protocol="sliding", stride=64, max_windows=3)
"""


def test_summary_json_markdown_junit(pytester):
    project(pytester, SUITE)
    result = pytester.runpytest("--ppl-report=out/report.json", "--ppl-report-md=out/summary.md",
                                "--junitxml=junit.xml")
    result.assert_outcomes(passed=3, failed=2)
    out = result.stdout.str()
    result.stdout.fnmatch_lines([
        "llmppl: budget=5% corpus=*seqlen=128 protocol=torch-pruning*torch=*transformers=*",
        "*llmppl perplexity summary*",
        "test*model*id*corpus*protocol*seqlen*baseline*measured*Δ*top-1*budget*verdict*source*seconds",
        "*test_pass*tiny-llama*torch-pruning*PASS*",   # run order, not sorted
        "*test_fail*+42.*%)*1%*FAIL*memory/measured*",  # Δ also in % with a relative budget
        "*test_plain*test.txt [[]4/140 windows]*measured*",
        "*test_nan*nan*NAN*",
        "test_suite.py::test…*x]*sliding/64*",  # long ids shortened in the middle
    ])
    table = out[out.index("llmppl perplexity summary"):].splitlines()[1:8]
    widths = {len(line) for line in table[2:]}
    assert len(table[0]) == max(widths)  # long ids shortened in the middle to what 160 columns leave (>= 40)
    assert any("…" in line and len(line.split("  ")[0]) == 40 for line in table)
    # one message per failure, pointing at the user's line, never a chained second copy
    assert "During handling of the above exception" not in out
    assert failures(result).count("exceeds the threshold") == 1 and "> " in out
    assert 'ppl_check(model, tok, baseline=base, budget="1%")' in out
    # where it got worse: the 3 windows with the largest rise, with their heading and text
    result.stdout.fnmatch_lines(['*worst windows: window * nats/token in "*": "*"; window *; window *'])

    data = report(pytester, "out/report.json")
    assert data["format"] == "pytest-llmppl report v1" and data["versions"]["torch"]
    assert data["settings"]["seqlen"] == 128 and data["settings"]["no_cache"] is False  # types kept
    assert data["summary"]["pass"] == 1 and data["summary"]["fail"] == 1 and data["summary"]["nan"] == 1
    assert data["outcomes"]["passed"] == 3 and data["outcomes"]["failed"] == 2
    assert [r["test"].split("::")[1][:9] for r in data["records"]] == [
        "test_pass", "test_pass", "test_fail", "test_fail", "test_plai", "test_nan", "test_nan", "test_slid"]
    fail = next(r for r in data["records"] if r["kind"] == "check" and r["test"].endswith("test_fail"))
    assert fail["paired"]["delta_ppl"] > 0 and fail["delta_se"] == fail["paired"]["delta_ppl_se"]
    assert 0.5 < fail["top1"]["share"] < 1 and fail["top1"]["se"] > 0  # damaged model disagrees sometimes
    assert len(fail["window_delta"]) == 140 and len(fail["worst"]) == 3
    assert fail["worst"][0]["delta_nll"] == pytest.approx(max(fail["window_delta"]))
    assert fail["model_id"] != fail["baseline_model_id"] and len(fail["model_id"]) == 8
    passing = next(r for r in data["records"] if r["kind"] == "check" and r["test"].endswith("test_pass"))
    assert passing["top1"]["share"] == 1.0 and passing["model_id"] == passing["baseline_model_id"]
    nan = next(r for r in data["records"] if r["kind"] == "check" and r["test"].endswith("test_nan"))
    assert nan["verdict"] == "nan" and nan["measured"] is None and nan["top1"] is None

    md = (pytester.path / "out" / "summary.md").read_text()
    table_md = [line for line in md.splitlines() if line.startswith("|")]
    assert len({line.count("|") - line.count("\\|") for line in table_md}) == 1  # same column count on every row
    assert table_md[1].startswith("|---") and "❌ FAIL" in md and "✅ PASS" in md and "⚠️ NaN" in md
    assert "| `test_suite.py::test_fail` |" in md
    assert "pytest: 3 passed, 2 failed." in md
    assert md.count("```mermaid") == 1 and "xychart-beta" in md and "bar [" in md
    for path in ("out/report.json", "out/summary.md"):
        mode = os.stat(pytester.path / path).st_mode & 0o777
        assert mode & 0o044 == 0o044, oct(mode)  # readable by others, as any file the user writes

    cases = {c.get("name"): c for c in ET.parse(pytester.path / "junit.xml").getroot().iter("testcase")}
    props = {p.get("name"): p.get("value") for p in cases["test_fail"].iter("property")}
    assert props["ppl_verdict"] == "fail" and float(props["ppl_measured"]) > float(props["ppl_baseline"])
    assert props["ppl_measured_source"] == "measured" and props["ppl_baseline_source"] == "memory"


def test_records_round_trip_through_json(pytester):
    """What travels from xdist workers: every record kind survives to_json -> from_json."""
    from pytest_llmppl.judge.records import from_json, to_json

    project(pytester, SUITE)
    pytester.runpytest("--ppl-report=report.json", "-k", "fail or plain")
    for raw in report(pytester)["records"]:
        again = to_json(from_json(raw))
        assert again == raw


def test_suite_without_ppl_fixtures_is_untouched(pytester):
    pytester.makepyfile(test_plain="def test_x():\n    assert 1\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "llmppl perplexity summary" not in result.stdout.str()


def test_plugin_does_not_import_torch_for_plain_suites(pytester, monkeypatch):
    pytester.makepyfile(test_plain="import sys\ndef test_x():\n"
                                   "    heavy = [m for m in ('torch', 'transformers', 'numpy', 'datasets')\n"
                                   "             if m in sys.modules]\n"
                                   "    assert not heavy, heavy\n")
    # ours alone: other installed plugins (pytest-benchmark, ...) may import numpy themselves
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = pytester.runpytest_subprocess("-p", "pytest_llmppl.plugin")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["llmppl: budget=*"])  # the plugin was loaded


def test_json_report_is_valid_with_nan(pytester):
    project(pytester, SUITE)
    pytester.runpytest("--ppl-report=report.json", "-k", "nan")
    text = (pytester.path / "report.json").read_text()
    assert "NaN" not in text and json.loads(text)["summary"]["nan"] == 1


def test_markdown_reads_in_a_step_summary(pytester):
    """Verdict first, shared settings above the table, thresholds, each failure's message with the
    unit of its worst windows, one chart per distinct failure, baseline/measure rows labelled,
    header lines as separate paragraphs."""
    project(pytester, """
from conftest import damage

def test_fail_a(model, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(model, tok)
    damage(model, 0.3)
    ppl_check(model, tok, baseline=base, budget="1%")

def test_fail_b(model, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(model, tok)
    damage(model, 0.3)
    ppl_check(model, tok, baseline=base, budget="1%")

def test_given(model, tok, ppl_check):
    ppl_check(model, tok, baseline=1.0, budget="1%")

def test_plain(model, tok, ppl_of):
    ppl_of(model, tok)
""")
    pytester.runpytest("--ppl-report-md=summary.md", "-p", "no:randomly").assert_outcomes(passed=1, failed=3)
    md = (pytester.path / "summary.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert table[0].startswith("| verdict | test | measured | threshold |")
    assert "seqlen **128**" in md and "| seqlen |" not in md  # shared by every row: said once
    assert any(line.startswith("| measured | `test_suite.py::test_plain`") for line in table)
    assert md.count("```mermaid") == 1  # test_fail_b's chart would repeat test_fail_a's
    assert "(the same model against the same baseline as a chart above)" in md
    assert md.count("<summary><code>") == 3  # the failure against a plain number has its details too
    assert md.count("ppl_check: PPL ") == 3 and "nats/token" in md.split("```mermaid")[0]
    paragraphs = md.split("\n\n")
    assert any(p.startswith("llmppl: budget=") and "\n" not in p for p in paragraphs)


def test_a_wait_for_another_worker_is_said():
    """A row whose seconds were a wait for another xdist worker's measurement says so."""
    from pytest_llmppl.judge.records import BaselineRecord, Source, Subject
    from pytest_llmppl.report.render import terminal_table

    subject = Subject(test="t.py::test_b", model="m", model_id="abcd1234", corpus="c.txt", seqlen=128,
                      protocol="torch-pruning", stride=None, n_windows=140, n_windows_total=140, device="cuda",
                      dtype="bfloat16")
    waited = BaselineRecord(subject, 1.75, Source.CACHE, 12.3, ("waited 12.3 s for another xdist worker measuring it",))
    plain = BaselineRecord(subject, 1.75, Source.CACHE, 0.01)
    table = terminal_table([waited]).splitlines()[-1]
    assert "cache (waited)" in table and "12.30" in table
    assert "waited" not in terminal_table([plain])
