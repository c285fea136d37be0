"""The GPU workflow is valid YAML with the jobs and steps the README promises."""

from __future__ import annotations

import shlex

import yaml

from pytest_llmppl.cli import build_parser

from conftest import ROOT


def test_gpu_workflow_structure():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "ppl-gpu.yml").read_text())
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare 'on' key as True
    assert {"push", "pull_request", "workflow_dispatch"} <= set(on)
    check, refresh = wf["jobs"]["perplexity"], wf["jobs"]["refresh-baselines"]
    assert "self-hosted" in check["runs-on"] and "self-hosted" in refresh["runs-on"]
    uses = [s.get("uses", "") for s in check["steps"]]
    assert sum(u.startswith("actions/cache@") for u in uses) == 2
    runs = " ".join(s.get("run", "") for s in check["steps"])
    assert "--ppl-strict" in runs and "--ppl-baselines=" in runs and "GITHUB_STEP_SUMMARY" in runs
    assert "--ppl-update-baselines" in " ".join(s.get("run", "") for s in refresh["steps"])
    # the cache actions/cache saves is pruned first, with a command our CLI accepts
    prune = [s["run"] for s in check["steps"] if "cache prune" in s.get("run", "")]
    assert len(prune) == 1 and prune[0].startswith("python -m pytest_llmppl ")
    args = build_parser().parse_args(shlex.split(prune[0])[3:])
    assert args.action == "prune" and args.unused_days == 30 and args.max_size == "5G"


def test_the_store_stays_out_of_the_checkout_and_forks_wait_for_a_label():
    """A store in the workspace could be committed and served to a fresh clone; a fork's pull request
    must not run on a persistent self-hosted runner without a maintainer's look."""
    text = (ROOT / ".github" / "workflows" / "ppl-gpu.yml").read_text()
    wf = yaml.safe_load(text)
    check = wf["jobs"]["perplexity"]
    assert check["env"]["PYTEST_LLMPPL_CACHE_DIR"].startswith("${{ runner.temp }}")
    cached = [s["with"]["path"] for s in check["steps"] if s.get("uses", "").startswith("actions/cache@")]
    assert "${{ runner.temp }}/llmppl-cache" in cached
    condition = check["if"]
    assert "head.repo.full_name == github.repository" in condition and "'gpu-ok'" in condition
    on = wf.get("on", wf.get(True))
    assert "labeled" in on["pull_request"]["types"]
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".llmppl-cache/" in ignored and ".pytest_cache/" in ignored


def test_the_matrix_workflow_splits_merges_and_shows_what_a_refresh_accepts():
    """Every shard runs its share with pytest-split and uploads its outputs; one job after them
    merges reports (and, on a refresh, the committed file) with commands our CLI and plugin accept."""
    from pytest_llmppl.settings import OPTIONS

    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "ppl-gpu-matrix.yml").read_text())
    shard, merge = wf["jobs"]["shard"], wf["jobs"]["merge"]
    groups = shard["strategy"]["matrix"]["group"]
    assert groups == list(range(1, int(wf["env"]["SHARDS"]) + 1)) and "self-hosted" in shard["runs-on"]
    assert merge["needs"] == "shard" and merge["if"] == "always()"
    env = {"$BASELINES": wf["env"]["BASELINES"], '"$BASELINES"': wf["env"]["BASELINES"], '"$SHARDS"': "3"}
    pytest_run = " ".join(s.get("run", "") for s in shard["steps"] if "-m pytest examples" in s.get("run", ""))
    for word in pytest_run.split():
        if word.startswith("--ppl-"):
            assert word[2:].split("=")[0].replace("-", "_")[4:] in OPTIONS, word
    assert "--splits=" in pytest_run and "--group=${{ matrix.group }}" in pytest_run
    assert "--ppl-file-changes=shard/changes.json" in pytest_run and "--ppl-strict" in pytest_run
    uploads = [s for s in shard["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
    assert uploads and uploads[0]["with"]["path"] == "shard/"
    commands = [line for s in merge["steps"] for line in s.get("run", "").replace("\n&&", " &&").splitlines()]
    cli = [c.split(" && ")[0].split(" >> ")[0] for c in " ".join(commands).split("python -m pytest_llmppl ")[1:]]
    verbs = set()
    for command in cli:
        words = [env.get(w, w) for w in shlex.split(command.replace('"$BASELINES"', wf["env"]["BASELINES"]))]
        verbs.add(build_parser().parse_args(words).command)
    assert verbs == {"merge", "diff", "durations"}
    assert any("GITHUB_STEP_SUMMARY" in s.get("run", "") and "diff" in s.get("run", "") for s in merge["steps"])


def test_the_refresh_job_shows_what_it_accepts():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "ppl-gpu.yml").read_text())
    runs = [s.get("run", "") for s in wf["jobs"]["refresh-baselines"]["steps"]]
    (shown,) = [r for r in runs if "pytest_llmppl diff" in r]
    line = next(line for line in shown.splitlines() if "pytest_llmppl diff" in line)
    words = shlex.split(line.split("|", 1)[1].split(">>")[0])[3:]
    args = build_parser().parse_args(words)
    assert args.old == "-" and args.new == "examples/ppl-baselines-gpu.json" and args.markdown
