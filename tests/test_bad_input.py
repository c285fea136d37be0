"""Bad input gets a clear error that names the fix; NaN is reported, never compared."""

from __future__ import annotations

import pytest
import torch

from pytest_llmppl import evaluate
from pytest_llmppl.errors import CorpusError, ModelError, SettingsError, TokenizerError

from conftest import CORPUS_TXT


def test_corpus_shorter_than_one_window(tiny_model, tiny_tokenizer, tmp_path, cache_dir):
    short = tmp_path / "short.txt"
    short.write_text("The town grew up around milling .", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"shorter than one window of 256.*smaller seqlen"):
        evaluate(tiny_model, tiny_tokenizer, str(short), 256, cache_dir=cache_dir)


def test_tokenizer_ids_beyond_model_vocabulary(tiny_tokenizer, cache_dir):
    from transformers import LlamaConfig, LlamaForCausalLM

    small = LlamaForCausalLM(LlamaConfig(vocab_size=200, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512))
    with pytest.raises(TokenizerError, match=r"embedding has only 200 rows.*own tokenizer"):
        evaluate(small, tiny_tokenizer, str(CORPUS_TXT), 128, cache_dir=cache_dir)


def test_seqlen_beyond_positions_needs_force(tiny_model, tiny_tokenizer, cache_dir):
    with pytest.raises(ModelError, match=r"exceeds the model's max_position_embeddings \(512\).*allow_long_seqlen"):
        evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), 1024, cache_dir=cache_dir)
    forced = evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), 1024, cache_dir=cache_dir,
                      allow_long_seqlen=True, max_windows=1)
    assert forced.seqlen == 1024


def test_default_seqlen_is_min_of_positions_and_4096(tiny_model, tiny_tokenizer, cache_dir):
    r = evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), max_windows=1, cache_dir=cache_dir)
    assert r.seqlen == 512
    tiny_model.seqlen = 128
    assert evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), max_windows=1, cache_dir=cache_dir).seqlen == 128


class NoLogits(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()

    def forward(self, input_ids, **kw):
        return {"hidden": self.inner.model(input_ids).last_hidden_state}


def test_model_without_logits(tiny_model, tiny_tokenizer, cache_dir):
    with pytest.raises(ModelError, match=r"without \.logits.*AutoModelForCausalLM"):
        evaluate(NoLogits(tiny_model), tiny_tokenizer, str(CORPUS_TXT), 128, cache_dir=cache_dir, max_windows=1)


def test_masked_lm_is_refused(tiny_tokenizer, cache_dir):
    from transformers import BertConfig, BertForMaskedLM

    bert = BertForMaskedLM(BertConfig(vocab_size=1024, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=64))
    with pytest.raises(ModelError, match="not a causal language model"):
        evaluate(bert, tiny_tokenizer, str(CORPUS_TXT), 128, cache_dir=cache_dir)


def test_meta_device_model_is_refused(tiny_tokenizer, cache_dir):
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(vocab_size=1024, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    with pytest.raises(ModelError, match="meta device"):
        evaluate(model, tiny_tokenizer, str(CORPUS_TXT), 128, cache_dir=cache_dir)


def test_nan_perplexity_is_reported_as_such(tiny_model, tiny_tokenizer, cache_dir):
    with torch.no_grad():
        tiny_model.model.layers[0].mlp.down_proj.weight[0, 0] = float("nan")
    r = evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), 128, cache_dir=cache_dir, max_windows=3)
    assert r.finite is False and r.to_dict()["ppl"] is None and r.to_dict()["finite"] is False
    import json

    assert json.loads(json.dumps(r.to_dict(), allow_nan=False))["window_nll"][0] is None  # JSON-safe, as it claims


def test_inf_perplexity(tiny_model, tiny_tokenizer, cache_dir):
    with torch.no_grad():
        tiny_model.lm_head.weight.mul_(1e30)
    r = evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), 128, cache_dir=cache_dir, max_windows=2)
    assert not r.finite


def test_unknown_protocol_and_bad_batch(tiny_model, tiny_tokenizer, cache_dir):
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), 128, protocol="bogus", cache_dir=cache_dir)
    with pytest.raises(SettingsError, match="batch_size"):
        evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), 128, batch_size=0, cache_dir=cache_dir)


def test_tokenizer_not_resolvable(tiny_model, cache_dir):
    tiny_model.name_or_path = ""
    tiny_model.config._name_or_path = ""
    with pytest.raises(TokenizerError, match="pass the tokenizer explicitly"):
        evaluate(tiny_model, None, str(CORPUS_TXT), 128, cache_dir=cache_dir)


def test_tokenizer_resolved_from_model_path(tiny_model, tiny_tokenizer, cache_dir):
    a = evaluate(tiny_model, None, str(CORPUS_TXT), 128, cache_dir=cache_dir, max_windows=3)
    b = evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), 128, cache_dir=cache_dir, max_windows=3)
    assert a.ppl == b.ppl


def test_wider_dtype_than_weights_refused(tiny_model, tiny_tokenizer, cache_dir):
    tiny_model.to(torch.bfloat16)
    with pytest.raises(SettingsError, match="wider than the model's weights"):
        evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), 128, dtype="float32", cache_dir=cache_dir)


def test_out_of_memory_at_batch_one_names_the_fix(tiny_model, tiny_tokenizer, cache_dir, monkeypatch):
    from pytest_llmppl.measure import engine

    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(engine, "token_ce", oom)
    with pytest.raises(ModelError, match=r"out of memory evaluating one window of 128 tokens.*--ppl-seqlen"):
        evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), 128, batch_size=4, cache_dir=cache_dir, max_windows=2)
