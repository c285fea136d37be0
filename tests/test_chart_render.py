"""The markdown report's chart as a person sees it: rendered by mermaid-cli in headless Chromium,
from a real report and at 10, 83, 166 and 1,000 windows, in one browser session."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from pytest_llmppl.judge.records import CheckRecord, Source, Subject, Verdict
from pytest_llmppl.report.charts import AXIS_LABELS, MAX_BARS
from pytest_llmppl.report.charts import chart as _chart

from plugin_support import project

MMDC = shutil.which("mmdc")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    not (MMDC and CHROMIUM),
    reason="rendering needs Chromium and mermaid-cli: apt-get install chromium && "
           "PUPPETEER_SKIP_DOWNLOAD=1 npm install -g @mermaid-js/mermaid-cli")
SVG = "{http://www.w3.org/2000/svg}"
FAILING = """
from conftest import damage

def test_pruned(model, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(model, tok)
    damage(model, 0.5)
    ppl_check(model, tok, baseline=base, budget="1%")
"""


def synthetic(n: int) -> str:
    """The chart of a failing check over ``n`` windows: noise, a local loss, some windows better."""
    rnd = random.Random(n)
    deltas = tuple(rnd.gauss(0.03, 0.06) + (0.5 if 0.4 < i / n < 0.45 else 0.0) for i in range(n))
    subject = Subject("test_x.py::test_y", "m", "id", "c", 128, "torch-pruning", None, n, n, "cpu", "float32")
    record = CheckRecord(subject, 1.0, Source.FILE, "b", 2.0, Source.FILE, "10", 1.1, Verdict.FAIL, 0.0,
                         window_index=tuple(range(n)), window_delta=deltas)
    return "\n".join(_chart(record, "baseline", deltas))


def render(tmp_path, blocks: list[str]) -> list[ET.Element]:
    """Every mermaid block of one markdown file rendered to SVG by mermaid-cli (one Chromium)."""
    (tmp_path / "puppeteer.json").write_text(json.dumps({"executablePath": CHROMIUM, "args": ["--no-sandbox"]}))
    (tmp_path / "charts.md").write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    done = subprocess.run([MMDC, "-i", "charts.md", "-o", "out.md", "-p", "puppeteer.json", "-w", "800"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [ET.parse(tmp_path / f"out-{i}.svg").getroot() for i in range(1, len(blocks) + 1)]


def bars(svg: ET.Element, series: int) -> list[ET.Element]:
    group = next(g for g in svg.iter(f"{SVG}g") if g.get("class") == f"bar-plot-{series}")
    return list(group.iter(f"{SVG}rect"))


def texts(svg: ET.Element, group_class: str) -> list[str]:
    group = next(g for g in svg.iter(f"{SVG}g") if g.get("class") == group_class)
    return [t.text or "" for t in group.iter(f"{SVG}text")]


def test_the_chart_reads_in_a_real_browser(pytester, tmp_path):
    project(pytester, FAILING)
    pytester.runpytest("--ppl-report-md=report.md").assert_outcomes(failed=1)
    real = re.search(r"```mermaid\n.*?```", (pytester.path / "report.md").read_text(encoding="utf-8"), re.S)
    assert real is not None
    counts = [140, 10, 83, 166, 1000]  # the fixture corpus has 140 windows of 128 tokens
    svgs = render(tmp_path, [real.group(0), *(synthetic(n) for n in counts[1:])])
    for n, svg in zip(counts, svgs):
        text = ET.tostring(svg, encoding="unicode")
        assert "Syntax error" not in text and "Parse error" not in text
        assert texts(svg, "chart-title") == ["ΔNLL per window vs baseline"]  # short: it fits
        per_bar = -(-n // MAX_BARS)
        shown, masks = bars(svg, 0), bars(svg, 1)
        assert len(shown) == len(masks) == -(-n // per_bar) and all(float(b.get("height")) >= 0 for b in shown)
        labels = [t for t in texts(svg, "bottom-axis") if t.strip("\u200b")]
        assert len(labels) <= AXIS_LABELS + 2 and labels[0] == "0"  # a few window numbers and the axis title
        assert labels[-1] == ("window" if per_bar == 1 else f"window (each bar: mean of {per_bar} windows)")
        # A window that got better is drawn below zero: its covering bar starts lower than the rest's
        # (the synthetic corpora have some; in the real report every window got worse).
        tops = {round(float(m.get("y")), 3) for m in masks}
        assert (len(tops) == 1) == (n == 140)


def test_the_trade_off_curve_reads_in_a_real_browser(tmp_path):
    """A ratio sweep of four candidates of one baseline: PPL against the share kept, this run's
    points and the recorded ones, the dense model at 100%."""
    from pytest_llmppl.report.charts import tradeoff_charts

    records = []
    for kept, ppl, rec in ((0.35, 54.1, 50.0), (0.63, 8.66, 8.7), (0.76, 3.31, 3.3), (0.88, 2.2, 2.1)):
        subject = Subject(f"test_x.py::test_y[{kept}]", "m", f"id{kept}", "c", 128, "torch-pruning", None, 10, 10,
                          "cpu", "float32", params=int(kept * 1000))
        records.append(CheckRecord(subject, 1.66, Source.FILE, "dense", ppl, Source.FILE, "10", 11.66, Verdict.PASS,
                                   0.0, recorded=rec, recorded_params=int(kept * 1000), baseline_params=1000))
    (chart,) = tradeoff_charts(records)
    block = "\n".join(chart[chart.index("```mermaid"):])
    (svg,) = render(tmp_path, [block])
    text = ET.tostring(svg, encoding="unicode")
    assert "Syntax error" not in text and "Parse error" not in text
    assert texts(svg, "chart-title") == ["PPL vs parameters kept"]
    lines = [g for g in svg.iter(f"{SVG}g") if (g.get("class") or "").startswith("line-plot-")]
    assert len(lines) == 2  # this run, and the recorded curve
    labels = " ".join(t.text or "" for t in svg.iter(f"{SVG}text"))
    assert all(label in labels for label in ("35%", "63%", "76%", "88%", "100% (dense)"))
