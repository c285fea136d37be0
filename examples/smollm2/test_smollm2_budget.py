"""A real pretrained GQA model under `--ppl-budget=2.0`: what passes and what the budget catches.

SmolLM2-135M is small and heavily trained, so magnitude pruning without recovery hurts it
fast: removing 0.25% of the MLP channels of layers 2-27 stays within 2 PPL, 1% does not,
and torch-pruning's LLM recipe at 10% (hidden size, MLP and one query head per KV head)
destroys it.  The two failures are real FAIL rows, marked xfail(strict=True).

Run:  python fixtures/get_smollm2.py && pytest examples/smollm2
"""

from __future__ import annotations

import pytest

from pytest_llmppl.pruning import prune_mlp

MIDDLE_LAYERS = range(2, 28)  # the first two and last two layers are the sensitive ones

CASES = [
    pytest.param("mlp", 0.0025, id="mlp-0.25%"),
    pytest.param("mlp", 0.01, id="mlp-1%",
                 marks=pytest.mark.xfail(reason="1% of MLP channels costs more than 2 PPL", strict=True)),
    pytest.param("torch-pruning", 0.1, id="torch-pruning-10%",
                 marks=pytest.mark.xfail(reason="the 10% LLM recipe without recovery destroys a 135M model",
                                         strict=True)),
]


def test_dense_model_is_sane(dense_model, tokenizer, ppl_baseline):
    assert ppl_baseline(dense_model, tokenizer) < 30


@pytest.mark.parametrize(("recipe", "ratio"), CASES)
def test_pruned_smollm2_stays_within_budget(dense_model, tokenizer, ppl_baseline, ppl_pruned, ppl_check, recipe,
                                            ratio):
    baseline = ppl_baseline(dense_model, tokenizer)
    if recipe == "mlp":
        pruned = prune_mlp(dense_model, ratio, layers=MIDDLE_LAYERS, copy_model=True)
    else:
        pruned = ppl_pruned(dense_model, ratio)
    ppl_check(pruned, tokenizer, baseline=baseline)
