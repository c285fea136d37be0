"""The README's main job: the example suite passes offline, with real PASS and FAIL rows."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_example_suite(tmp_path):
    p = subprocess.run([sys.executable, "-m", "pytest", "examples", "--ppl-budget=10", "-p", "no:cacheprovider",
                        f"--ppl-cache-dir={tmp_path}", f"--ppl-report={tmp_path / 'r.json'}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = p.stdout
    assert p.returncode == 0, out + p.stderr
    assert "3 passed, 1 xfailed" in out
    assert "PASS" in out and "FAIL" in out and "llmppl perplexity summary" in out
    import json

    records = json.loads((tmp_path / "r.json").read_text())["records"]
    sources = {r["baseline_source"] for r in records if r["kind"] == "baseline"}
    assert "file" in sources  # the committed baselines file serves the dense baseline
