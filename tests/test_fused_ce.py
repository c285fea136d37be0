"""The fused float32 CE kernel (CUDA only) equals log_softmax in float32; CPU never takes it."""

from __future__ import annotations

import pytest
import torch

from pytest_llmppl.measure import fused_ce

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="the fused kernel runs on CUDA GPUs")


def test_cpu_takes_the_torch_path(monkeypatch):
    assert not fused_ce.enabled(torch.device("cpu"))
    assert not fused_ce.available(torch.zeros(2, 3))
    monkeypatch.setenv("PYTEST_LLMPPL_FUSED_CE", "0")
    assert not fused_ce.enabled(torch.device("cuda"))


@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("vocab", [1000, 4096, 32000, 128256])
def test_fused_matches_float32_log_softmax(dtype, vocab):
    g = torch.Generator(device="cuda").manual_seed(vocab)
    logits = (torch.randn(333, vocab, device="cuda", generator=g) * 4).to(dtype)
    targets = torch.randint(0, vocab, (333,), device="cuda", generator=g)
    want = -torch.log_softmax(logits.float(), -1).gather(-1, targets[:, None]).squeeze(-1)
    got = fused_ce.cross_entropy(logits, targets)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@cuda
def test_fused_propagates_nan_and_inf():
    logits = torch.zeros(3, 5000, device="cuda", dtype=torch.float16)
    logits[0, 7] = float("nan")
    logits[1, 9] = float("inf")
    out = fused_ce.cross_entropy(logits, torch.tensor([1, 2, 3], device="cuda"))
    assert torch.isnan(out[0]) and not torch.isfinite(out[1]) and torch.isfinite(out[2])


@cuda
def test_fused_logsumexp_and_kl_equal_the_torch_path():
    """The fused path's logsumexp, and the KL divergence built on it, equal the log_softmax path's."""
    import copy

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_llmppl import evaluate

    from conftest import CORPUS_TXT, TINY

    g = torch.Generator(device="cuda").manual_seed(0)
    logits = (torch.randn(64, 32000, device="cuda", generator=g) * 4).to(torch.bfloat16)
    _, lse = fused_ce.cross_entropy(logits, torch.zeros(64, dtype=torch.long, device="cuda"), with_lse=True)
    torch.testing.assert_close(lse, torch.logsumexp(logits.float(), -1), rtol=1e-6, atol=1e-5)
    tok = AutoTokenizer.from_pretrained(TINY)
    dense = AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32)
    pruned = copy.deepcopy(dense)
    with torch.no_grad():
        for p in pruned.model.layers[0].mlp.parameters():
            p.mul_(0.5)
    kls = []
    for device in ("cuda", "cpu"):
        base = evaluate(dense, tok, str(CORPUS_TXT), 128, keep_topk=16, device=device, use_cache=False)
        assert evaluate(dense, tok, str(CORPUS_TXT), 128, reference=base, device=device, use_cache=False).kl.mean == 0
        kls.append(evaluate(pruned, tok, str(CORPUS_TXT), 128, reference=base, device=device, use_cache=False).kl)
    assert kls[0].mean == pytest.approx(kls[1].mean, rel=1e-3)
    assert kls[0].dp_rms == pytest.approx(kls[1].dp_rms, rel=1e-3)
