"""The fused float32 CE kernel (CUDA only) equals log_softmax in float32; CPU never takes it."""

from __future__ import annotations

import pytest
import torch

from pytest_llmppl import fused_ce

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
