"""The command line: eval --json, cache info/clear, errors as messages with exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import CORPUS_TXT, ROOT, TINY
from reference import tp_ppl


def run(*args, cache_dir):
    env = {**os.environ, "PYTEST_LLMPPL_CACHE_DIR": str(cache_dir)}
    return subprocess.run([sys.executable, "-m", "pytest_llmppl", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


def test_eval_json(cache_dir, tiny_model, tiny_tokenizer):
    p = run("eval", "--model", str(TINY), "--corpus", str(CORPUS_TXT), "--seqlen", "256", "--device", "cpu",
            "--json", cache_dir=cache_dir)
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    for key in ("ppl", "n_tokens", "n_windows", "seqlen", "corpus", "protocol", "seconds", "tokens_per_second"):
        assert key in data
    ids = tiny_tokenizer(CORPUS_TXT.read_text(encoding="utf-8"), verbose=False)["input_ids"]
    assert data["ppl"] == pytest.approx(tp_ppl(tiny_model, ids, 256), rel=1e-6)
    assert data["seqlen"] == 256 and data["protocol"] == "torch-pruning" and data["tokens_source"] == "tokenized"
    again = json.loads(run("eval", "--model", str(TINY), "--corpus", str(CORPUS_TXT), "--seqlen", "256", "--device",
                           "cpu", "--json", cache_dir=cache_dir).stdout)
    assert again["tokens_source"] == "cache" and again["ppl"] == data["ppl"]

    info = run("cache", "info", cache_dir=cache_dir)
    assert "tokens" in info.stdout and "1 entries" in info.stdout
    cleared = run("cache", "clear", cache_dir=cache_dir)
    assert "removed 1 entries" in cleared.stdout
    assert "(empty)" in run("cache", "info", cache_dir=cache_dir).stdout


def test_eval_errors_are_messages(cache_dir):
    p = run("eval", "--model", str(TINY), "--corpus", "nonsense", "--json", cache_dir=cache_dir)
    assert p.returncode == 2 and "error: unknown corpus 'nonsense'" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("args,message", [
    (["--model", str(TINY), "--corpus", str(CORPUS_TXT), "--seqlen", "4096"], "max_position_embeddings"),
    (["--model", "/no/such/model"], "could not load model"),
    (["--model", str(TINY), "--dtype", "float64x"], "invalid dtype 'float64x': choose one of"),
])
def test_eval_errors_in_process(args, message, cache_dir, capsys, monkeypatch):
    from pytest_llmppl.cli import main

    monkeypatch.setenv("PYTEST_LLMPPL_CACHE_DIR", str(cache_dir))
    assert main(["eval", *args, "--device", "cpu"]) == 2
    assert message in capsys.readouterr().err


def test_cache_info_and_clear_see_pytests_own_store(tmp_path, cache_dir):
    store = tmp_path / "project" / ".pytest_cache" / "d" / "llmppl"
    from pytest_llmppl.keep.store import Store

    Store(store).put_json("results", "ab" * 32, {"x": 1})
    info = run("cache", "info", "--rootdir", str(tmp_path / "project"), cache_dir=cache_dir)
    assert f"cache: {store}" in info.stdout and "results" in info.stdout
    cleared = run("cache", "clear", "--rootdir", str(tmp_path / "project"), cache_dir=cache_dir)
    assert f"removed 1 entries from {store}" in cleared.stdout


@pytest.mark.parametrize("command", [["--help"], ["eval", "--help"], ["cache", "--help"]])
def test_help_prints(command, capsys):
    """Every help text renders (a percent sign in a setting's help once broke argparse's formatting),
    and eval offers only what applies to one evaluation."""
    from pytest_llmppl.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(command)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: python -m pytest_llmppl" in out
    if command[0] == "eval":
        assert "--protocol" in out and "lm-eval" in out and "llama.cpp" in out
        assert "--regression-tolerance" not in out and "--kl-budget" not in out  # checks' settings, not eval's
