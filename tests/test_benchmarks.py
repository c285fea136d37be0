"""The benchmark script runs (small CPU case) and its engine matches its reference loop."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def test_bench_engine_quick_cpu(tmp_path):
    out = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, "benchmarks/bench_engine.py", "--cases", "cpu", "--quick", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = {r["run"]: r for r in json.loads(out.read_text())["rows"]}
    assert {"engine", "reference", "decoder"} <= set(rows)
    assert rows["engine"]["rel_diff_vs_reference"] < 1e-6
    assert "tokens_per_s" in p.stdout and "engine" in p.stdout
