"""The benchmark scripts run (small CPU cases): the engine matches its reference loop, pruning keeps
the head layout."""

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


def test_bench_prune_cpu(tmp_path):
    out = tmp_path / "prune.json"
    p = subprocess.run([sys.executable, "benchmarks/bench_prune.py", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = {r["shape"]: r for r in json.loads(out.read_text())["rows"]}
    gqa = rows["small-gqa-32k"]
    assert gqa["runs_ok"] and (gqa["before"]["heads"], gqa["before"]["kv_heads"]) == (8, 2)
    assert (gqa["after"]["heads"], gqa["after"]["kv_heads"]) == (6, 2)  # one query head per KV head removed
    assert gqa["after"]["params_M"] < gqa["before"]["params_M"] and "prune_causal_lm at ratio 0.2" in p.stdout
