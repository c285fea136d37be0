"""KL divergence from the dense model: the product's numbers against plain loops over both models'
whole distributions (float64), and llama.cpp's statistics recomputed here from their formulas."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from pytest_llmppl import evaluate
from pytest_llmppl.measure.divergence import DenseTopK, KLDivergence

from conftest import CORPUS_TXT

SEQLEN = 128
# The stated error of the mean KL (docs/divergence.md, from benchmarks/kl_topk_error.py).
MEAN_KL_REL_ERROR = 0.02


def sparsify(model, ratio: float):
    """A pruned copy: the ``ratio`` smallest weights of every decoder linear layer zeroed, per row."""
    pruned = copy.deepcopy(model)
    with torch.no_grad():
        for name, module in pruned.named_modules():
            if isinstance(module, torch.nn.Linear) and ".layers." in name:
                k = int(module.weight.shape[1] * ratio)
                idx = module.weight.abs().topk(k, dim=1, largest=False).indices
                module.weight.scatter_(1, idx, 0.0)
    return pruned


def exact_per_token(dense, pruned, ids, seqlen, windows):
    """Plain loop: per scored token of each window, KL(P || Q) over the whole vocabulary, Δp and
    whether the argmax agrees, from both models' float64 log-softmax."""
    kl, dp, same = [], [], []
    with torch.no_grad():
        for w in windows:
            x = torch.tensor(ids[w * seqlen:(w + 1) * seqlen])[None]
            lp = torch.log_softmax(dense(x).logits[0, :-1].double(), -1)
            lq = torch.log_softmax(pruned(x).logits[0, :-1].double(), -1)
            target = x[0, 1:]
            kl.append((lp.exp() * (lp - lq)).sum(-1))
            dp.append(lq[torch.arange(len(target)), target].exp() - lp[torch.arange(len(target)), target].exp())
            same.append(lp.argmax(-1) == lq.argmax(-1))
    return torch.cat(kl).numpy(), torch.cat(dp).numpy(), torch.cat(same).numpy()


def llama_cpp_mean_and_se(values):
    n = len(values)
    mean = values.sum() / n
    var = (values * values).sum() / n - mean * mean
    return mean, math.sqrt(var / (n - 1)) if var > 0 and n > 10 else 0.0


def llama_cpp_percentile(values, fraction):
    v = np.sort(values)
    p = fraction * (len(v) - 1)
    lo = int(p)
    return (1 - (p - lo)) * v[lo] + (p - lo) * v[min(lo + 1, len(v) - 1)]


@pytest.fixture(scope="module")
def dense_reference(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conftest import TINY

    tok = AutoTokenizer.from_pretrained(TINY)
    dense = AutoModelForCausalLM.from_pretrained(TINY, dtype="float32")
    cache = tmp_path_factory.mktemp("kl-cache")
    base = evaluate(dense, tok, str(CORPUS_TXT), SEQLEN, keep_topk=16, cache_dir=cache)
    return dense, tok, base, cache


def test_a_model_against_itself_diverges_by_exactly_zero(dense_reference):
    dense, tok, base, cache = dense_reference
    same = evaluate(dense, tok, str(CORPUS_TXT), SEQLEN, batch_size=3, reference=base, cache_dir=cache)
    kl = same.kl
    assert kl.tokens == base.n_windows * (SEQLEN - 1)
    assert kl.mean == 0.0 and kl.maximum == 0.0 and kl.minimum == 0.0
    assert kl.dp_mean == 0.0 and kl.dp_rms == 0.0
    assert kl.same_top == 1.0


def test_kl_equals_the_exact_full_vocabulary_kl_within_the_stated_error(dense_reference):
    dense, tok, base, cache = dense_reference
    pruned = sparsify(dense, 0.3)
    result = evaluate(pruned, tok, str(CORPUS_TXT), SEQLEN, reference=base, cache_dir=cache)
    ids = tok(CORPUS_TXT.read_text(encoding="utf-8"), verbose=False)["input_ids"]
    kl, dp, same = exact_per_token(dense, pruned, ids, SEQLEN, result.window_index)
    got = result.kl
    assert got.tokens == len(kl)
    mean, se = llama_cpp_mean_and_se(kl)
    assert got.mean == pytest.approx(mean, rel=MEAN_KL_REL_ERROR)
    assert got.se == pytest.approx(se, rel=0.1)
    assert got.median == pytest.approx(np.median(kl), rel=0.1)
    assert got.percentiles["99"] == pytest.approx(llama_cpp_percentile(kl, 0.99), rel=0.1)
    # Δp and the argmax need no estimate: llama.cpp's statistics of exact values (float32 losses: 1e-6).
    dp_mean, dp_se = llama_cpp_mean_and_se(dp)
    assert got.dp_mean == pytest.approx(dp_mean, rel=1e-4, abs=1e-6)
    assert got.dp_se == pytest.approx(dp_se, rel=1e-4)
    for label, fraction in (("99.9", 0.999), ("90", 0.90), ("25", 0.25), ("1", 0.01)):
        assert got.dp_percentiles[label] == pytest.approx(llama_cpp_percentile(dp, fraction), rel=1e-4, abs=1e-6)
    assert got.dp_median == pytest.approx(np.median(dp), rel=1e-4, abs=1e-6)
    assert got.dp_maximum == pytest.approx(dp.max(), rel=1e-5) and got.dp_minimum == pytest.approx(dp.min(), rel=1e-5)
    mse, mse_se = llama_cpp_mean_and_se(dp ** 2)
    assert got.dp_rms == pytest.approx(math.sqrt(mse), rel=1e-4)
    assert got.dp_rms_se == pytest.approx(0.5 / math.sqrt(mse) * mse_se, rel=1e-3)
    share = same.mean()
    assert got.same_top == pytest.approx(share, abs=2 / len(same))  # an exact tie may break either way
    assert got.same_top_se == pytest.approx(math.sqrt(share * (1 - share) / (len(same) - 1)), rel=0.05)
    per_window = kl.reshape(len(result.window_index), -1).mean(axis=1)
    assert got.worst[0][0] == result.window_index[int(per_window.argmax())]


def test_kl_on_sliding_windows_counts_each_scored_token_once(dense_reference):
    dense, tok, _, cache = dense_reference
    base = evaluate(dense, tok, str(CORPUS_TXT), SEQLEN, protocol="sliding", stride=48, keep_topk=16,
                    max_windows=6, cache_dir=cache)
    pruned = sparsify(dense, 0.5)
    result = evaluate(pruned, tok, str(CORPUS_TXT), SEQLEN, protocol="sliding", stride=48, reference=base,
                      max_windows=6, cache_dir=cache)
    assert result.kl.tokens == sum(result.window_weight)
    assert result.kl.mean > 0.01
    itself = evaluate(dense, tok, str(CORPUS_TXT), SEQLEN, protocol="sliding", stride=48, reference=base,
                      max_windows=6, cache_dir=cache)
    assert itself.kl.mean == 0.0


def test_the_reference_does_not_depend_on_the_batch(dense_reference):
    dense, tok, base, cache = dense_reference
    again = evaluate(dense, tok, str(CORPUS_TXT), SEQLEN, keep_topk=16, batch_size=5, cache_dir=cache)
    for w in base.window_index:
        assert np.array_equal(base.topk.tail_ids[w], again.topk.tail_ids[w])
        assert np.array_equal(base.topk.ids[w], again.topk.ids[w])


def test_reference_and_summary_round_trip(dense_reference):
    _, _, base, _ = dense_reference
    data, meta = base.topk.pack()
    back = DenseTopK.unpack(meta, data)
    assert back is not None and back.windows == base.topk.windows
    for name in DenseTopK.PARTS:
        w = base.window_index[1]
        assert np.array_equal(back.part(name)[w], base.topk.part(name)[w])
    assert DenseTopK.unpack({**meta, "k": 8}, data) is None  # a layout that does not match is no reference
    summary = KLDivergence.identical(16, 100, 2)
    assert KLDivergence.from_json(summary.to_json()) == summary


def test_reference_needs_a_kept_top_k(tiny_model, tiny_tokenizer, cache_dir):
    from pytest_llmppl.errors import SettingsError

    plain = evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), SEQLEN, max_windows=2, cache_dir=cache_dir)
    with pytest.raises(SettingsError, match="keep_topk"):
        evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), SEQLEN, reference=plain, cache_dir=cache_dir)
