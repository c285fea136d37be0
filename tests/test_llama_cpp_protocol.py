"""``--ppl-protocol=llama.cpp``: llama-perplexity's chunks, against a plain loop written from its
source (``tools/perplexity/perplexity.cpp``); llama.cpp's own binary is compared in
``benchmarks/llama_cpp_perplexity.py`` (it builds from source: not in CI)."""

from __future__ import annotations

import math

import pytest
import torch

from pytest_llmppl import evaluate
from pytest_llmppl.errors import CorpusError

from conftest import CORPUS_TXT


def llama_perplexity_loop(model, ids: list[int], n_ctx: int, bos: int) -> float:
    """Chunks of n_ctx tokens, the first replaced by BOS; logits from position n_ctx/2 on, each
    scoring the next token; PPL = exp(total NLL / count)."""
    first = n_ctx // 2
    nll, count = 0.0, 0
    with torch.no_grad():
        for i in range(len(ids) // n_ctx):
            chunk = list(ids[i * n_ctx:(i + 1) * n_ctx])
            chunk[0] = bos
            logp = torch.log_softmax(model(torch.tensor([chunk])).logits[0].double(), -1)
            for j in range(first, n_ctx - 1):
                nll -= float(logp[j, chunk[j + 1]])
                count += 1
    return math.exp(nll / count)


@pytest.mark.parametrize("n_ctx,batch_size", [(128, 1), (64, 5)])
def test_llama_cpp_protocol_equals_llama_perplexity_s_loop(tiny_model, tiny_tokenizer, n_ctx, batch_size):
    ids = tiny_tokenizer(CORPUS_TXT.read_text(encoding="utf-8"), verbose=False)["input_ids"]
    assert ids[0] == tiny_tokenizer.bos_token_id  # llama.cpp's add_bos: the chunks then start with BOS too
    ours = evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), n_ctx, protocol="llama.cpp", batch_size=batch_size,
                    use_cache=False)
    assert ours.ppl == pytest.approx(llama_perplexity_loop(tiny_model, ids, n_ctx, tiny_tokenizer.bos_token_id),
                                     rel=1e-6)
    assert ours.n_windows == len(ids) // n_ctx and sum(ours.window_weight) == ours.n_windows * (n_ctx - 1 - n_ctx // 2)


def test_llama_cpp_protocol_needs_two_chunks(tiny_model, tiny_tokenizer, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text(" ".join(["word"] * 100), encoding="utf-8")  # 201 tokens: one chunk of 128, not two
    with pytest.raises(CorpusError, match="llama-perplexity needs at least 2 x n_ctx = 256 tokens"):
        evaluate(tiny_model, tiny_tokenizer, str(short), 128, protocol="llama.cpp", use_cache=False)
