"""The engine equals independent reference loops on the fixture model (float32, 1e-6 relative)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pytest_llmppl import evaluate
from pytest_llmppl.measure.engine import evaluate_ids, token_ce
from pytest_llmppl.measure.model_facts import head_path
from pytest_llmppl.measure.windows import spread_subset

from conftest import CORPUS_TXT
from reference import sliding_ppl, tokens_ppl, tp_ppl, tp_window_nlls

REL = 1e-6
_REF_NLLS: dict = {}


@pytest.fixture()
def ids(tiny_tokenizer):
    return tiny_tokenizer(CORPUS_TXT.read_text(encoding="utf-8"), verbose=False)["input_ids"]


def _ref_nlls(model, ids, seqlen):
    """Reference per-window NLLs of the (unmodified) fixture model, computed once per seqlen."""
    if seqlen not in _REF_NLLS:
        _REF_NLLS[seqlen] = tp_window_nlls(model, ids, seqlen)
    return _REF_NLLS[seqlen]


@pytest.mark.parametrize("seqlen,batch_size", [(100, 1), (100, "auto"), (256, 1), (256, 3), (256, "auto"),
                                               (512, 2)])
def test_torch_pruning_protocol_matches_reference(tiny_model, tiny_tokenizer, ids, cache_dir, seqlen, batch_size):
    result = evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), seqlen, batch_size=batch_size, cache_dir=cache_dir)
    nlls = _ref_nlls(tiny_model, ids, seqlen)
    assert result.ppl == pytest.approx(math.exp(sum(nlls) / (len(nlls) * seqlen)), rel=REL)
    assert result.n_windows == len(ids) // seqlen == result.n_windows_total
    assert result.n_tokens == len(ids)
    assert list(result.window_nll) == pytest.approx(nlls, rel=REL)
    assert result.window_weight == (seqlen,) * result.n_windows


@pytest.mark.parametrize("seqlen", [128, 256])
def test_tokens_protocol_matches_reference(tiny_model, tiny_tokenizer, ids, cache_dir, seqlen):
    result = evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), seqlen, protocol="tokens", cache_dir=cache_dir)
    assert result.ppl == pytest.approx(tokens_ppl(tiny_model, ids, seqlen), rel=REL)
    assert result.window_weight == (seqlen - 1,) * result.n_windows


@pytest.mark.parametrize("seqlen,stride", [(128, 64), (256, 100), (128, 128)])
def test_sliding_protocol_matches_hf_guide_loop(tiny_model, tiny_tokenizer, ids, cache_dir, seqlen, stride):
    result = evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), seqlen, protocol="sliding", stride=stride,
                      batch_size=4, cache_dir=cache_dir)
    assert result.ppl == pytest.approx(sliding_ppl(tiny_model, ids, seqlen, stride), rel=REL)
    assert result.stride == (None if stride == seqlen else stride)  # seqlen is sliding's default stride
    if stride < seqlen:  # overlapping windows: every token but the very first is scored exactly once
        assert sum(result.window_weight) == len(ids) - 1
    else:  # stride == seqlen: disjoint windows, each window's first token has no context
        assert sum(result.window_weight) == len(ids) - result.n_windows


@pytest.mark.parametrize("protocol", ["torch-pruning", "tokens"])
@pytest.mark.parametrize("k", [1, 7])
def test_max_windows_evaluates_an_even_deterministic_subset(tiny_model, tiny_tokenizer, ids, cache_dir, protocol, k):
    seqlen = 128
    result = evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), seqlen, protocol=protocol, max_windows=k,
                      cache_dir=cache_dir)
    n = len(ids) // seqlen
    picked = spread_subset(n, k)
    assert list(result.window_index) == picked and result.subset and result.n_windows == k
    assert len(set(picked)) == k and picked[0] < n // k and picked[-1] >= n - n // k - 1
    ref = tp_ppl(tiny_model, ids, seqlen, picked) if protocol == "torch-pruning" else tokens_ppl(
        tiny_model, ids, seqlen, picked)
    assert result.ppl == pytest.approx(ref, rel=REL)
    again = evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), seqlen, protocol=protocol, max_windows=k,
                     cache_dir=cache_dir)
    assert again.window_index == result.window_index and again.ppl == result.ppl
    assert "estimate" in str(result)


def test_chunked_head_equals_full_logits(tiny_model, ids):
    assert head_path(tiny_model) == "chunked"
    batch = torch.as_tensor(ids[:512]).view(2, 256)
    with torch.inference_mode():
        a = token_ce(tiny_model, batch, "chunked").ce
        b = token_ce(tiny_model, batch, "full").ce
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_chunked_head_with_tiny_chunks(tiny_model, ids, monkeypatch):
    from pytest_llmppl.measure import token_loss

    monkeypatch.setattr(token_loss, "LOGITS_CHUNK_BYTES", 4 * 1024 * 7)  # ~7 positions per chunk
    out = evaluate_ids(tiny_model, ids, seqlen=128, max_windows=5)
    assert math.exp(sum(out.window_nll) / sum(out.window_weight)) == pytest.approx(
        tp_ppl(tiny_model, ids, 128, spread_subset(len(ids) // 128, 5)), rel=REL)


def _tiny_config_model(kind):
    from transformers import AutoConfig, AutoModelForCausalLM

    common = dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512)
    if kind == "gpt2":
        config = AutoConfig.for_model("gpt2", vocab_size=1024, n_embd=64, n_layer=2, n_head=4, n_positions=512)
    elif kind == "gemma2":  # logit soft-capping: the head is more than a linear layer
        config = AutoConfig.for_model("gemma2", head_dim=16, final_logit_softcapping=30.0, **common)
    else:
        config = AutoConfig.for_model(kind, **common)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("kind,path", [("qwen2", "chunked"), ("mistral", "chunked"), ("gpt2", "chunked"),
                                       ("gemma2", "full")])
def test_head_path_per_architecture_matches_reference(kind, path, ids):
    model = _tiny_config_model(kind)
    assert head_path(model) == path
    out = evaluate_ids(model, ids, seqlen=128, max_windows=6)
    picked = spread_subset(len(ids) // 128, 6)
    assert math.exp(sum(out.window_nll) / sum(out.window_weight)) == pytest.approx(
        tp_ppl(model, ids, 128, picked), rel=REL)


def test_half_precision_model_computes_loss_in_float32(tiny_model, ids):
    model = tiny_model.to(torch.bfloat16)
    out = evaluate_ids(model, ids, seqlen=128, max_windows=4, batch_size=2)
    picked = spread_subset(len(ids) // 128, 4)
    ref = tp_ppl(model, ids, 128, picked)  # reference upcasts bf16 logits to float32 before CE
    assert out.dtype == "bfloat16"
    assert math.exp(sum(out.window_nll) / sum(out.window_weight)) == pytest.approx(ref, rel=1e-3)


def test_model_mode_and_config_are_restored(tiny_model, tiny_tokenizer, cache_dir):
    tiny_model.train()
    tiny_model.config.use_cache = True
    evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), 128, max_windows=2, cache_dir=cache_dir)
    assert tiny_model.training is True and tiny_model.config.use_cache is True


def test_mode_restored_after_interrupt(tiny_model, tiny_tokenizer, cache_dir):
    tiny_model.train()

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), 128, cache_dir=cache_dir, progress=interrupt)
    assert tiny_model.training is True


def test_result_fields(tiny_model, tiny_tokenizer, cache_dir):
    r = evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), 256, cache_dir=cache_dir)
    assert float(r) == r.ppl and r.seqlen == 256 and r.protocol == "torch-pruning"
    assert r.seconds > 0 and r.tokens_per_second > 0 and len(r.window_nll) == r.n_windows
    assert r.to_dict()["finite"] is True
    # far below the unigram perplexity of the corpus (~135): the fixture model really learned it
    assert r.ppl < 5


def test_top1_predictions_match_reference_argmax(tiny_model, ids):
    out = evaluate_ids(tiny_model, ids, seqlen=128, max_windows=3, want_argmax=True)
    x = torch.as_tensor(ids)
    for i in out.window_index:
        with torch.no_grad():
            logits = tiny_model(x[i * 128:(i + 1) * 128][None]).logits[0, :-1]
        assert out.top1[i].dtype == np.int32 and len(out.top1[i]) == 127
        assert (torch.from_numpy(out.top1[i]).long() == logits.argmax(-1)).float().mean() > 0.999
