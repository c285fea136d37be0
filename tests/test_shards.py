"""A suite split over several runners: shards refresh into files of their own, ``merge`` makes the
committed file one unsplit refresh would (bytes) and one report, ``diff`` says what a refresh
accepts, ``durations`` feeds pytest-split, and git merges two refreshed branches."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from pytest_llmppl.cli import main as cli
from pytest_llmppl.errors import BaselineError
from pytest_llmppl.keep.file_changes import FileChanges
from pytest_llmppl.keep.merge import merge_shards

from conftest import ROOT

GONE = "test_pruning_budget.py::test_removed_from_the_file"  # a record whose test no longer exists


def _project(path, committed):
    """The example suite at another pruning setting (a refactor), its committed file as in the repo
    plus the record of a test since deleted from the file."""
    shutil.copytree(ROOT / "examples", path / "examples", ignore=shutil.ignore_patterns("smollm2", "*-gpu.json"))
    (path / "fixtures").symlink_to(ROOT / "fixtures")
    test = path / "examples" / "test_pruning_budget.py"
    test.write_text(test.read_text().replace("ppl_pruned(dense_model, ratio)", "ppl_pruned(dense_model, ratio + 0.03)"))
    data = json.loads(committed.read_text())
    data["checks"][GONE] = next(iter(data["checks"].values()))
    from pytest_llmppl.keep.baselines import BaselinesFile

    file = BaselinesFile(path / "examples" / "ppl-baselines.json", entries=data["baselines"], checks=data["checks"])
    file.path.write_text(file.render())
    return file.path


def _start(cwd, store, *args):
    env = {**os.environ, "LLMPPL_EXAMPLE_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "pytest", "examples", "-p", "no:cacheprovider", "-p", "no:randomly",
                             f"--ppl-cache-dir={store}", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(process):
    out, _ = process.communicate(timeout=900)
    assert process.returncode in (0, 1) and "error" not in out.splitlines()[-1], out  # 1: the refactor fails a check
    return out


def _records(report, folder):
    """A report's records as one unsplit run would have them: timings aside, and where a result
    came from (each shard has its own store and memory); paths relative to the project."""
    drop = ("seconds", "forward_seconds", "baseline_source", "measured_source")
    rows = json.loads(report.read_text().replace(str(folder), "PROJECT"))["records"]
    return sorted(({k: v for k, v in r.items() if k not in drop} for r in rows), key=lambda r: (r["test"], r["kind"]))


@pytest.mark.heavy
def test_three_shards_refresh_merge_and_diff_as_one_unsplit_run(tmp_path, capsys):
    committed = ROOT / "examples" / "ppl-baselines.json"
    whole, split = tmp_path / "whole", tmp_path / "split"
    whole.mkdir(), split.mkdir()
    whole_file, split_file = _project(whole, committed), _project(split, committed)
    before = split_file.read_bytes()
    refresh = ("--ppl-update-baselines",)
    runs = [_start(whole, tmp_path / "store-whole", *refresh, f"--ppl-report={tmp_path / 'whole.json'}"),
            _start(split, tmp_path / "store-check", f"--ppl-report={tmp_path / 'check.json'}")]  # the refactor's CI
    for i in (1, 2, 3):
        shard = ("--splits=3", f"--group={i}", "--splitting-algorithm=least_duration")
        runs.append(_start(split, tmp_path / f"store-{i}", *shard, *refresh, f"--ppl-report={tmp_path}/report-{i}.json",
                           f"--ppl-file-changes={tmp_path}/changes-{i}.json"))
    outs = [_finish(p) for p in runs]
    assert "changes to ppl-baselines.json written to" in outs[2] and split_file.read_bytes() == before

    shards = [str(tmp_path / f"changes-{i}.json") for i in (1, 2, 3)]
    reports = [str(tmp_path / f"report-{i}.json") for i in (1, 2, 3)]
    merged = []
    for order in (shards, shards[::-1]):
        split_file.write_bytes(before)
        assert cli(["merge", "--baselines", str(split_file), *order, *reports[::-1],
                    "--report", str(tmp_path / "merged.json"), "--markdown", str(tmp_path / "merged.md")]) == 0
        merged.append(split_file.read_bytes())
    assert merged[0] == merged[1] == whole_file.read_bytes()  # byte-identical to the unsplit refresh
    assert GONE in before.decode() and GONE not in merged[0].decode()  # its file ran whole: the record is gone
    assert _records(tmp_path / "merged.json", split) == _records(tmp_path / "whole.json", whole)
    assert "### pytest-llmppl perplexity checks" in (tmp_path / "merged.md").read_text()

    # One shard of three, merged alone: the other groups' records (and the gone test's) are kept.
    split_file.write_bytes(before)
    capsys.readouterr()
    assert cli(["merge", "--baselines", str(split_file), shards[0]]) == 0
    assert "were run by none of these shards" in capsys.readouterr().err
    alone = json.loads(split_file.read_text())["checks"]
    assert set(alone) == set(json.loads(before)["checks"])
    ran = set(FileChanges.from_json(json.loads((tmp_path / "changes-1.json").read_text()), "1").checks)
    assert ran and all(alone[t] == json.loads(merged[0])["checks"][t] for t in ran)

    # What the refresh accepts, as a reviewer reads it: the paired SE is the one the check printed.
    capsys.readouterr()
    old = tmp_path / "before.json"
    old.write_bytes(before)
    assert cli(["diff", str(old), str(whole_file)]) == 0
    table = capsys.readouterr().out
    checks = [r for r in json.loads((tmp_path / "check.json").read_text())["records"] if r["kind"] == "check"]
    assert len(checks) == 3 and "3 changed, 0 added, 1 removed, 1 unchanged" in table
    for r in checks:
        (row,) = [line for line in table.splitlines() if line.startswith(r["test"] + " ")]
        assert f"{r['recorded']:.4f} → {r['measured']:.4f}" in row, (r, row)
        assert f" {r['delta_recorded']:+.4f} ± {r['delta_recorded_se']:.4f} " in row, (r, row)
    assert cli(["diff", str(old), str(whole_file), "--markdown"]) == 0
    assert "| `test_pruning_budget.py::test_pruned_model_stays_within_budget[0.25]` | check 1 | changed |" in \
        capsys.readouterr().out

    # pytest-split takes the durations the reports give (forward time per test).
    durations = tmp_path / ".test_durations"
    assert cli(["durations", str(tmp_path / "whole.json"), "--out", str(durations)]) == 0
    timed = json.loads(durations.read_text())
    assert len(timed) == 4 and all(v > 0 for v in timed.values())
    p = subprocess.run([sys.executable, "-m", "pytest", "examples", "--collect-only", "-q", "-p", "no:cacheprovider",
                        "--splits=2", "--group=1", f"--durations-path={durations}"], cwd=whole, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0 and "[pytest-split] Running group 1/2" in p.stdout, p.stdout + p.stderr


def test_shards_that_measured_differently_are_refused_naming_both(tmp_path):
    entry = json.loads((ROOT / "examples" / "ppl-baselines.json").read_text())
    key, base = next(iter(entry["baselines"].items()))
    committed = tmp_path / "ppl-baselines.json"

    def shard(scale):
        nll = [x * scale for x in base["window_nll"]]
        return FileChanges("", {key: {**base, "window_nll": nll}}, {}, (), (), (), (), None)

    with pytest.raises(BaselineError) as err:
        merge_shards(committed, {"gpu-a/changes.json": shard(1.0), "gpu-b/changes.json": shard(1.01)})
    message = str(err.value)
    assert "shards gpu-a/changes.json and gpu-b/changes.json recorded different numbers for baseline" in message
    assert base["test"] in message and "two GPU types" in message
    same = merge_shards(committed, {"b": shard(1.0), "a": shard(1.0 + 1e-7)}).text  # float noise: not a conflict
    assert same == merge_shards(committed, {"a": shard(1.0 + 1e-7), "b": shard(1.0)}).text


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_merges_two_refreshed_branches_without_a_hand_edit(tmp_path):
    """Each branch records a check of its own test in the shared file: git's merge driver combines them."""
    data = json.loads((ROOT / "examples" / "ppl-baselines.json").read_text())
    record = next(iter(data["checks"].values()))[0]

    def write(extra):
        from pytest_llmppl.keep.baselines import BaselinesFile

        checks = {**data["checks"], **extra}
        path = tmp_path / "ppl-baselines.json"
        path.write_text(BaselinesFile(path, entries=data["baselines"], checks=checks).render())

    def git(*args):
        p = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                           capture_output=True, text=True)
        return p

    git("init", "-q", "-b", "main")
    (tmp_path / ".gitattributes").write_text("ppl-baselines.json merge=llmppl\n")
    git("config", "merge.llmppl.driver", f"{sys.executable} -m pytest_llmppl merge --git %O %A %B %P")
    write({})
    git("add", "."), git("commit", "-qm", "base")
    git("checkout", "-qb", "one"), write({"test_x.py::test_one": [record]}), git("commit", "-qam", "one")
    git("checkout", "-q", "main"), write({"test_y.py::test_two": [record]}), git("commit", "-qam", "two")
    merged = git("merge", "-q", "one", "-m", "merge")
    assert merged.returncode == 0, merged.stdout + merged.stderr
    checks = json.loads((tmp_path / "ppl-baselines.json").read_text())["checks"]
    assert {"test_x.py::test_one", "test_y.py::test_two"} <= set(checks)
    # Both branches re-recorded one test with other numbers: a conflict, named, ours kept.
    from pytest_llmppl.measure.perplexity_result import ppl_from

    nll = [x * 1.1 for x in record["window_nll"]]
    other = {**record, "window_nll": nll, "ppl": ppl_from(nll, record["window_weight"])}
    git("checkout", "-qb", "three"), write({"test_x.py::test_one": [other]}), git("commit", "-qam", "three")
    reversed_nll = {**record, "window_nll": record["window_nll"][::-1]}  # the same PPL, other windows' numbers
    git("checkout", "-q", "main"), write({"test_x.py::test_one": [reversed_nll]})
    git("commit", "-qam", "four")
    clash = git("merge", "-q", "three", "-m", "merge")
    assert clash.returncode != 0 and "conflict in ppl-baselines.json: checks of test_x.py::test_one" in clash.stderr
    json.loads((tmp_path / "ppl-baselines.json").read_text())  # still a valid file


def test_diff_reads_the_old_file_from_stdin_and_says_when_nothing_changed(monkeypatch, capsys):
    """``git show main:FILE | python -m pytest_llmppl diff - FILE``; bad input is one message."""
    import io

    committed = ROOT / "examples" / "ppl-baselines.json"
    monkeypatch.setattr("sys.stdin", io.StringIO(committed.read_text()))
    assert cli(["diff", "-", str(committed)]) == 0
    assert capsys.readouterr().out.strip() == "0 changed, 0 added, 0 removed, 4 unchanged"
    assert cli(["diff", "-", "-"]) == 2 and "only one of OLD and NEW" in capsys.readouterr().err
    assert cli(["merge", str(committed)]) == 2
    assert "neither a --ppl-file-changes file" in capsys.readouterr().err
