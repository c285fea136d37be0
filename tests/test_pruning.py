"""torch-pruning helper: MHA Llama and Qwen2 from configs, save/load round trip, GQA refused fast."""

from __future__ import annotations

import time

import pytest
import torch

from pytest_llmppl.errors import ModelError
from pytest_llmppl.pruning import prune_causal_lm, prune_mlp


def _model(kind, kv_heads=8):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(kind, vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                  num_attention_heads=8, num_key_value_heads=kv_heads, head_dim=16,
                                  max_position_embeddings=256)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("kind", ["llama", "qwen2", "mistral"])
def test_prune_runs_and_round_trips(kind, tmp_path):
    from transformers import AutoModelForCausalLM

    model = _model(kind)
    pruned = prune_causal_lm(model, 0.25)
    cfg = pruned.config
    assert cfg.num_attention_heads == 6 and cfg.num_key_value_heads == 6 and cfg.head_dim == 16
    assert cfg.hidden_size == 96 and cfg.intermediate_size == 192
    assert pruned.model.layers[0].self_attn.q_proj.out_features == 6 * 16
    x = torch.randint(0, 512, (2, 24))
    with torch.no_grad():
        out = pruned(x).logits
    assert out.shape == (2, 24, 512) and torch.isfinite(out).all()
    pruned.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x).logits, out)


def test_copy_leaves_the_dense_model_untouched():
    model = _model("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = prune_causal_lm(model, 0.5, copy_model=True)
    assert pruned is not model and pruned.config.hidden_size == 64 and model.config.hidden_size == 128
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_gqa_is_refused_quickly_with_a_way_out():
    model = _model("llama", kv_heads=2)
    t0 = time.perf_counter()
    with pytest.raises(ModelError, match="grouped-query attention.*prune_mlp"):
        prune_causal_lm(model, 0.2)
    assert time.perf_counter() - t0 < 5  # never hangs: refused before torch-pruning builds groups


def test_prune_mlp_works_on_gqa(tmp_path):
    from transformers import AutoModelForCausalLM

    model = _model("llama", kv_heads=2)
    pruned = prune_mlp(model, 0.25, copy_model=True)
    assert pruned.config.intermediate_size == 192 and model.config.intermediate_size == 256
    x = torch.randint(0, 512, (1, 16))
    with torch.no_grad():
        out = pruned(x).logits
    pruned.save_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(tmp_path)(x).logits, out)


def test_bad_ratio_and_unsupported_model():
    with pytest.raises(ValueError, match="ratio"):
        prune_causal_lm(_model("llama"), 1.0)
    from transformers import AutoConfig, AutoModelForCausalLM

    gpt2 = AutoModelForCausalLM.from_config(AutoConfig.for_model("gpt2", n_embd=32, n_layer=1, n_head=2))
    with pytest.raises(ModelError, match="supports llama"):
        prune_causal_lm(gpt2, 0.2)
