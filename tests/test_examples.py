"""The README's example suites pass offline, with real PASS and FAIL rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT


def _run(tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # a user's run: every core
    env["LLMPPL_EXAMPLE_DEVICE"] = "cpu"  # the committed baselines are CPU float32 ones, also on a GPU machine
    p = subprocess.run([sys.executable, "-m", "pytest", *args, "-p", "no:cacheprovider", f"--ppl-cache-dir={tmp_path}",
                        f"--ppl-report={tmp_path / 'r.json'}"], cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout, json.loads((tmp_path / "r.json").read_text())["records"]


def test_example_suite(tmp_path):
    out, records = _run(tmp_path, "examples", "--ppl-budget=10")
    assert "3 passed, 1 xfailed" in out
    assert "PASS" in out and "FAIL" in out and "llmppl perplexity summary" in out
    assert "smollm2" not in out  # its own project: not collected by the main job
    sources = {r["baseline_source"] for r in records if r["kind"] == "baseline"}
    assert "file" in sources  # the committed baselines file serves the dense baseline


@pytest.mark.heavy
def test_smollm2_example_suite_under_the_missions_budget(tmp_path, smollm2_dir):
    """The real pretrained GQA model, `--ppl-budget=2.0` from its pytest.ini, strict committed baseline.
    (Its torch-pruning case, the third full evaluation, is left to the README command: test_smollm2.py
    prunes the real model with torch-pruning and shows the same collapse on one window.)"""
    out, records = _run(tmp_path, "examples/smollm2", "--ppl-strict", "-k", "not torch-pruning")
    assert "2 passed, 1 deselected, 1 xfailed" in out
    checks = {r["test"].split("[")[1].rstrip("]"): r for r in records if r["kind"] == "check"}
    assert checks["mlp-0.25%"]["verdict"] == "pass" and checks["mlp-1%"]["verdict"] == "fail"
    assert checks["mlp-0.25%"]["budget"] == "2"
    assert all(r["baseline_source"] == "file" for r in checks.values())
    assert 18 < checks["mlp-0.25%"]["baseline"] < 23  # SmolLM2-135M on the bundled corpus at seqlen 256
