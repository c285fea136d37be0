"""Bad values: usage errors at start-up (before any model loads), one clear message per failing call."""

from __future__ import annotations

import pytest

from plugin_support import failures, project

SUITE = """
def test_x(model, tok, ppl_of):
    ppl_of(model, tok)
"""


@pytest.mark.parametrize("args,message", [
    (["--ppl-device=gpu"], "*--ppl-device: invalid device 'gpu': use auto, cpu, cuda, cuda:N or mps*"),
    (["--ppl-device=cuda"], "*--ppl-device=cuda: this torch (*) has a CPU-only build; use --ppl-device=auto*"),
    (["--ppl-protocol=sliding", "--ppl-stride=256", "--ppl-seqlen=128"],
     "*--ppl-stride: stride 256 is longer than seqlen 128*stride <= seqlen*"),
    (["--ppl-stride=64"], "*--ppl-stride: stride 64 applies only to protocol sliding*--ppl-protocol=sliding*"),
    (["--ppl-seqlen=1"], "*--ppl-seqlen: invalid seqlen '1': use an integer >= 2*"),
    (["--ppl-corpus=missing/test.txt"], "*--ppl-corpus: corpus file missing/test.txt does not exist*"),
    (["--ppl-corpus=wikitext3"], "*--ppl-corpus: unknown corpus 'wikitext3'*"),
    (["--ppl-strict"], "*--ppl-strict needs --ppl-baselines=FILE*"),
    (["--ppl-file-changes=shard.json"], "*--ppl-file-changes goes with --ppl-update-baselines*"),
])
def test_bad_values_are_usage_errors_at_start_up(pytester, args, message):
    if args == ["--ppl-device=cuda"]:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    project(pytester, SUITE)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


PER_CALL = """
def test_budget(model, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(model, tok, max_windows=3)
    ppl_check(model, tok, baseline=base, budget="-1", max_windows=3)

def test_ratio(model, ppl_pruned):
    ppl_pruned(model, 1.5)

def test_device(model, tok, ppl_of):
    ppl_of(model, tok, device="gpu")

def test_corpus(model, tok, ppl_of):
    ppl_of(model, tok, corpus="nonsense")

def test_positions(model, tok, ppl_of):
    ppl_of(model, tok, seqlen=4096)

def test_override(model, tok, ppl_of):
    ppl_of(model, tok, sequence_length=64)

def test_baseline_type(model, tok, ppl_check):
    ppl_check(model, tok, baseline="low")
"""


def test_bad_per_call_values_fail_with_one_message_at_the_users_line(pytester, plugin_args):
    project(pytester, PER_CALL)
    result = pytester.runpytest("--tb=short", *plugin_args)
    result.assert_outcomes(failed=7)
    out = failures(result)
    for expected in ("invalid ppl budget '-1'", "pruning ratio 1.5 is outside [0, 1)", "invalid device 'gpu'",
                     "unknown corpus 'nonsense'", "seqlen 4096 exceeds the model's max_position_embeddings (512)",
                     "unknown override(s) sequence_length", "baseline must be what ppl_baseline returned"):
        assert out.count(expected) == 1, expected  # once: nothing chained, no second copy
    assert "During handling of the above exception" not in out
    assert "pytest_llmppl/" not in out  # our frames are hidden: the traceback ends at the user's line
    result.stdout.fnmatch_lines(["*test_suite.py:3: in test_budget*",
                                 '*ppl_check(model, tok, baseline=base, budget="-1"*'])


def test_missing_baselines_file_without_strict_warns(pytester):
    project(pytester, SUITE.replace("ppl_of(model, tok)", "pass"))
    result = pytester.runpytest("--ppl-baselines=nope.json")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*--ppl-baselines file *nope.json does not exist: baselines will be measured*"])
