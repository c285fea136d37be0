"""The size half of the trade-off: every result knows what the model keeps, a recorded check fails
when its model grew, and ``keep_at_most`` bounds it without a record.

Each pytester run after the recording one has an empty store (``--ppl-no-cache``), as on a fresh
CI runner.  ``RATIO`` is the pruning refactor: 0.25 is what was recorded; 0.125 prunes less, 0
prunes nothing, 0.375 prunes more.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY
from plugin_support import failures, forwards, project, rows

SUITE = """
import os
import pytest

@pytest.mark.ppl_budget("5000%")
def test_pruned(model, tok, ppl_baseline, ppl_check, ppl_pruned):
    base = ppl_baseline(model, tok)
    ppl_check(ppl_pruned(model, float(os.environ.get("RATIO", "0.25"))), tok, baseline=base)
"""
FRESH = ("--ppl-no-cache", "--ppl-report=report.json", "--ppl-report-md=report.md", "-p", "no:cacheprovider")


def _independent(model) -> dict:
    """The size facts by their definitions, written here from the module tree."""
    params = dict(model.named_parameters())
    outer = {id(p) for m in (model.get_input_embeddings(), model.get_output_embeddings()) for p in m.parameters()}
    weights = {}
    for name, module in model.named_modules():
        w = module._parameters.get("weight", module._parameters.get("weight_orig"))
        if w is not None:
            weights[name] = list(w.shape)
    nonzero = 0
    for name, p in params.items():
        if name.endswith("_orig"):  # torch.nn.utils.prune: the weight its mask leaves
            owner, attr = name[:-5].rsplit(".", 1)
            p = getattr(model.get_submodule(owner), attr)
        nonzero += int(torch.count_nonzero(p))
    return {"params": sum(p.numel() for p in params.values()),
            "body_params": sum(p.numel() for p in params.values() if id(p) not in outer),
            "nonzero": nonzero,
            "linear_macs": sum(m.in_features * m.out_features for m in model.modules()
                               if isinstance(m, torch.nn.Linear)),
            "shapes": weights}


def _facts(model) -> dict:
    from pytest_llmppl.identity.model_identity import model_identity

    size = model_identity(model).size.to_json()
    del size["shapes_sha256"]
    return size


def _magnitude(model, amount: float, reparametrize: bool) -> None:
    """Unstructured magnitude pruning of every decoder linear layer: Wanda/SparseGPT zero weights in
    place; torch.nn.utils.prune keeps a mask beside the original."""
    from torch.nn.utils import prune

    for layer in model.model.layers:
        for m in layer.modules():
            if isinstance(m, torch.nn.Linear):
                if reparametrize:
                    prune.l1_unstructured(m, "weight", amount=amount)
                else:
                    with torch.no_grad():
                        k = int(amount * m.weight.numel())
                        cut = m.weight.abs().flatten().kthvalue(k).values
                        m.weight[m.weight.abs() <= cut] = 0


@pytest.mark.parametrize("case", ["tiny", "smollm2", "gqa-pruned", "unstructured", "masked"])
def test_size_facts_equal_an_independent_count(request, tiny_model, case):
    from pytest_llmppl.pruning import prune_causal_lm

    model = tiny_model
    if case == "smollm2":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(request.getfixturevalue("smollm2_dir"))
    if case == "gqa-pruned":  # 8 heads / 2 KV heads: the pruned head counts stay grouped
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        model = prune_causal_lm(LlamaForCausalLM(LlamaConfig(
            vocab_size=1024, hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=8,
            num_key_value_heads=2, head_dim=16)), 0.25)
        assert model.model.layers[0].self_attn.q_proj.out_features < 128  # heads pruned, KV heads grouped
    if case in ("unstructured", "masked"):
        _magnitude(model, 0.5, reparametrize=case == "masked")
    facts, expected = _facts(model), _independent(model)
    assert facts == expected
    if case in ("unstructured", "masked"):
        assert facts["nonzero"] < 0.8 * facts["params"]


def test_evaluate_carries_the_size(tiny_model, tiny_tokenizer):
    from pytest_llmppl import evaluate

    from conftest import CORPUS_TXT

    result = evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), 128, max_windows=2)
    assert result.params == _independent(tiny_model)["params"]
    assert result.to_dict()["size"]["linear_macs"] == _independent(tiny_model)["linear_macs"]


def _record(pytester, monkeypatch, ratio="0.25"):
    project(pytester, SUITE)
    path = pytester.path / "ppl-baselines.json"
    monkeypatch.setenv("RATIO", ratio)
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines", *FRESH).assert_outcomes(passed=1)
    forwards(pytester)
    return path


@pytest.mark.heavy
def test_a_refactor_that_prunes_less_fails_its_record_and_the_same_ratio_passes_with_zero_forwards(
        pytester, monkeypatch):
    path = _record(pytester, monkeypatch)
    entry = json.loads(path.read_text())["checks"]["test_suite.py::test_pruned"][0]
    recorded = entry["size"]
    assert recorded["params"] < 0.9 * json.loads(path.read_text())["baselines"].popitem()[1]["size"]["params"]
    strict = (f"--ppl-baselines={path}", "--ppl-strict", *FRESH)

    monkeypatch.setenv("RATIO", "0.125")  # prunes less: better PPL, more parameters
    result = pytester.runpytest(*strict)
    result.assert_outcomes(failed=1)
    (check,) = rows(pytester, "check")
    assert check["against_record"] == "better" and check["decided_by"] == "size"
    assert check["params"] > recorded["params"] and check["recorded_params"] == recorded["params"]
    text = failures(result)
    assert f"parameters, {100 * (check['params'] - recorded['params']) / recorded['params']:.1f}% more than " \
           f"recorded ({recorded['params']:,})" in text
    assert "modules changed shape, lm_head [1024, 96] → [1024, 108]" in text
    assert "the pruning removes less than it did" in text
    assert "params" in (pytester.path / "report.md").read_text()

    monkeypatch.setenv("RATIO", "0")  # prunes nothing: the dense model itself
    result = pytester.runpytest(*strict)
    result.assert_outcomes(failed=1)
    (check,) = rows(pytester, "check")
    assert check["identical_to_baseline"] and "size" in check["decided_by"] and check["kept"] == 1.0

    monkeypatch.setenv("RATIO", "0.25")  # the recorded ratio: served from the file, nothing measured
    pytester.runpytest(*strict).assert_outcomes(passed=1)
    assert forwards(pytester) == 1  # torch-pruning's one trace of the model while pruning; no evaluation
    (check,) = rows(pytester, "check")
    assert check["measured_source"] == "file" and check["baseline_source"] == "file"
    assert check["size_against_record"] == "same"
    assert not any("size" in n or "smaller" in n for n in check["notes"])

    monkeypatch.setenv("RATIO", "0.375")  # prunes more, inside the PPL limits: passes, and says so
    pytester.runpytest(*strict, "--ppl-regression-tolerance=1000%").assert_outcomes(passed=1)
    (check,) = rows(pytester, "check")
    assert check["size_against_record"] == "smaller" and check["params"] < recorded["params"]
    assert any(n.startswith("smaller than recorded:") for n in check["notes"])

    monkeypatch.setenv("RATIO", "0.125")  # a size tolerance lets the model grow that much, and no more
    pytester.runpytest(*strict, "--ppl-size-tolerance=25%").assert_outcomes(passed=1)
    assert rows(pytester, "check")[0]["size_against_record"] == "grew within tolerance"
    pytester.runpytest(*strict, "--ppl-size-tolerance=off").assert_outcomes(passed=1)
    pytester.runpytest(*strict, "--ppl-size-tolerance=10%").assert_outcomes(failed=1)


def test_keep_at_most_fails_an_under_pruned_model_without_any_record(pytester, monkeypatch):
    project(pytester, """
import os

def test_pruned(model, tok, ppl_baseline, ppl_check, ppl_pruned):
    base = ppl_baseline(model, tok)
    ppl_check(ppl_pruned(model, float(os.environ["RATIO"])), tok, baseline=base, budget="5000%",
              keep_at_most="70%")
""")
    monkeypatch.setenv("RATIO", "0.125")
    result = pytester.runpytest(*FRESH)
    result.assert_outcomes(failed=1)
    (check,) = rows(pytester, "check")
    assert check["decided_by"] == "keep_at_most" and check["keep_at_most"] == "70%"
    assert check["keep_limit"] == pytest.approx(0.7 * check["baseline_params"])
    result.stdout.fnmatch_lines(["*keeps 499,068 parameters, 75.8% of the baseline's 658,048: more than "
                                 "keep_at_most 70% allows (460,634)*"])
    monkeypatch.setenv("RATIO", "0.375")
    pytester.runpytest(*FRESH).assert_outcomes(passed=1)


@pytest.mark.parametrize("value", ["0.8", "120%", "lots"])
def test_a_bad_keep_at_most_is_one_usage_error(pytester, value):
    project(pytester, "def test_x():\n    pass\n")
    result = pytester.runpytest(f"--ppl-keep-at-most={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ppl-keep-at-most*invalid keep_at_most*"])
    if value == "0.8":
        result.stderr.fnmatch_lines(["*for a share of the dense model's parameters write 80%*"])


UNSTRUCTURED = """
import os, torch

def test_sparse(model, tok, ppl_check):
    amount = float(os.environ.get("AMOUNT", "0.5"))
    with torch.no_grad():
        for layer in model.model.layers:
            for m in layer.modules():
                if isinstance(m, torch.nn.Linear):
                    cut = m.weight.abs().flatten().kthvalue(int(amount * m.weight.numel())).values
                    m.weight[m.weight.abs() <= cut] = 0
    ppl_check(model, tok, baseline=100.0)
"""


@pytest.mark.heavy
def test_an_unstructured_pruner_that_zeroes_fewer_weights_fails_its_record(pytester, monkeypatch):
    project(pytester, UNSTRUCTURED)
    path = pytester.path / "ppl-baselines.json"
    pytester.runpytest(f"--ppl-baselines={path}", "--ppl-update-baselines", *FRESH).assert_outcomes(passed=1)
    monkeypatch.setenv("AMOUNT", "0.4")
    result = pytester.runpytest(f"--ppl-baselines={path}", *FRESH)
    result.assert_outcomes(failed=1)
    (check,) = rows(pytester, "check")
    assert check["decided_by"] == "size" and check["nonzero"] > check["recorded_nonzero"]
    assert check["params"] == check["recorded_params"] and check["n_changed_shapes"] == 0
    result.stdout.fnmatch_lines(["*keeps * non-zero parameters, *% more than recorded*"])


def test_a_committed_file_from_before_size_facts_loads_and_says_size_not_recorded(pytester, monkeypatch):
    path = _record(pytester, monkeypatch)
    data = json.loads(path.read_text())
    for entries in [list(data["baselines"].values()), *data["checks"].values()]:
        for entry in entries:
            del entry["size"]
    path.write_text(json.dumps(data))
    monkeypatch.setenv("RATIO", "0.125")
    pytester.runpytest(f"--ppl-baselines={path}", *FRESH).assert_outcomes(passed=1)
    (check,) = rows(pytester, "check")
    assert check["size_against_record"] == "not recorded" and check["recorded_params"] is None
    assert any(n.startswith("size not recorded") for n in check["notes"])
    assert "size not recorded" in (pytester.path / "report.md").read_text()


def test_tiny_model_shape_is_what_the_tests_assume():
    config = json.loads((TINY / "config.json").read_text())
    assert (config["hidden_size"], config["vocab_size"]) == (128, 1024)
