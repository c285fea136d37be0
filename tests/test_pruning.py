"""torch-pruning helper on Llama, Mistral, Qwen2 and Qwen3, MHA and GQA (heads per KV head 1, 2, 3, 4, 7, 8).

Each pruned model: heads kept whole, each kept query head still served by the KV head it had
(recovered from the weights themselves), runs, and round-trips through save/from_pretrained
with identical logits.  Every case runs under a timeout, so a hang fails instead of stalling CI.
"""

from __future__ import annotations

import pytest
import torch

from pytest_llmppl.errors import ModelError, SettingsError
from pytest_llmppl.pruning import heads_to_remove, prune_causal_lm, prune_mlp

HEAD_DIM, KV_HEADS = 16, 2


def _model(kind, heads=8, kv_heads=8, layers=2, **extra):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(kind, vocab_size=256, hidden_size=heads * HEAD_DIM, intermediate_size=128,
                                  num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                                  head_dim=HEAD_DIM, max_position_embeddings=256, **extra)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def _origin(pruned_rows, dense_rows, kept_cols):
    """For each head block of ``pruned_rows``, the index of the dense head block it was cut from."""
    dense = dense_rows[:, kept_cols]
    out = []
    for h in range(pruned_rows.shape[0] // HEAD_DIM):
        block = pruned_rows[h * HEAD_DIM:(h + 1) * HEAD_DIM]
        found = [o for o in range(dense.shape[0] // HEAD_DIM)
                 if torch.equal(block, dense[o * HEAD_DIM:(o + 1) * HEAD_DIM])]
        assert len(found) == 1, "a pruned head is not a whole dense head"
        out.append(found[0])
    return out


def _kept_hidden(pruned, dense):
    """Which hidden channels survived, from the embedding's columns (copied exactly)."""
    d, p = dense.get_input_embeddings().weight, pruned.get_input_embeddings().weight
    return [next(j for j in range(d.shape[1]) if torch.equal(p[:, i], d[:, j])) for i in range(p.shape[1])]


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("error::UserWarning")  # e.g. torch-pruning guessing a dimension for Qwen3's q/k norms
@pytest.mark.parametrize("rep", [1, 2, 3, 4, 7, 8])
@pytest.mark.parametrize("kind", ["llama", "mistral", "qwen2", "qwen3"])
def test_prunes_every_head_layout(kind, rep, tmp_path):
    from transformers import AutoModelForCausalLM

    heads = KV_HEADS * rep
    dense = _model(kind, heads=heads, kv_heads=KV_HEADS)
    pruned = prune_causal_lm(dense, 0.25, copy_model=True, timeout=90)
    cfg = pruned.config
    removed = heads_to_remove(heads, KV_HEADS, 0.25)
    want_heads = heads - removed * (KV_HEADS if rep > 1 else 1)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (want_heads, KV_HEADS if rep > 1 else want_heads)
    assert cfg.head_dim == HEAD_DIM and cfg.hidden_size < dense.config.hidden_size
    assert cfg.intermediate_size < dense.config.intermediate_size
    cols = _kept_hidden(pruned, dense)
    for p_layer, d_layer in zip(pruned.model.layers, dense.model.layers):
        pa, da = p_layer.self_attn, d_layer.self_attn
        q_from = _origin(pa.q_proj.weight, da.q_proj.weight, cols)
        kv_from = _origin(pa.k_proj.weight, da.k_proj.weight, cols)
        assert q_from == sorted(q_from)  # order kept
        new_rep = cfg.num_attention_heads // cfg.num_key_value_heads
        for h, o in enumerate(q_from):  # query head h is served by KV head h // new_rep: the one it had
            assert kv_from[h // new_rep] == o // rep
    x = torch.randint(0, 256, (2, 24))
    with torch.no_grad():
        out = pruned(x).logits
    assert out.shape == (2, 24, 256) and torch.isfinite(out).all()
    assert pruned.config._attn_implementation == dense.config._attn_implementation  # traced eager, then put back
    pruned.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x).logits, out, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_tied_embeddings_stay_tied(kind, tmp_path):
    """Llama-3.2-1B/3B, Qwen2-0.5B/1.5B and SmolLM2 share the embedding with lm_head: pruning the hidden
    size must not leave two copies of the vocabulary matrix (memory) behind a config that says tied."""
    from transformers import AutoModelForCausalLM

    dense = _model(kind, heads=8, kv_heads=2, tie_word_embeddings=True)
    assert dense.lm_head.weight is dense.model.embed_tokens.weight
    pruned = prune_causal_lm(dense, 0.25, copy_model=True)
    assert pruned.lm_head.weight is pruned.model.embed_tokens.weight and pruned.config.tie_word_embeddings
    unique = {id(p): p.numel() for p in pruned.parameters()}
    assert sum(unique.values()) == sum(v.numel() for k, v in pruned.state_dict().items() if k != "lm_head.weight")
    x = torch.randint(0, 256, (1, 16))
    pruned.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x).logits, pruned(x).logits, rtol=0, atol=0)


def test_a_tie_that_no_longer_holds_is_not_claimed():
    from pytest_llmppl.pruning import _retie_embeddings

    model = _model("llama", tie_word_embeddings=True)
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach() + 1)
    _retie_embeddings(model)
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    assert model.config.tie_word_embeddings is False  # a reload keeps both matrices


def test_copy_leaves_the_dense_model_untouched():
    model = _model("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = prune_causal_lm(model, 0.5, copy_model=True)
    assert pruned is not model and pruned.config.hidden_size == 64 and model.config.hidden_size == 128
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_a_hang_becomes_a_clear_error(monkeypatch):
    """The watchdog: whatever torch-pruning does past the timeout is stopped with a message."""
    import time

    import torch_pruning as tp

    def forever(*args, **kwargs):
        while True:
            time.sleep(0.01)

    monkeypatch.setattr(tp.pruner.MetaPruner, "__init__", forever)
    # the message proves the watchdog fired (a hang would never return); no wall-clock bound: CI can be loaded
    with pytest.raises(ModelError, match=r"did not finish within 0\.5 s.*PYTEST_LLMPPL_PRUNE_TIMEOUT"):
        prune_causal_lm(_model("llama"), 0.2, timeout=0.5)


def test_prune_mlp_works_on_gqa(tmp_path):
    from transformers import AutoModelForCausalLM

    model = _model("llama", kv_heads=2)
    pruned = prune_mlp(model, 0.25, copy_model=True)
    assert pruned.config.intermediate_size == 96 and model.config.intermediate_size == 128
    x = torch.randint(0, 256, (1, 16))
    with torch.no_grad():
        out = pruned(x).logits
    pruned.save_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(tmp_path)(x).logits, out)


def test_bad_ratio_and_unsupported_model():
    with pytest.raises(SettingsError, match=r"ratio 1\.0 is outside"):
        prune_causal_lm(_model("llama"), 1.0)
    from transformers import AutoConfig, AutoModelForCausalLM

    gpt2 = AutoModelForCausalLM.from_config(AutoConfig.for_model("gpt2", n_embd=32, n_layer=1, n_head=2))
    with pytest.raises(ModelError, match="supports llama"):
        prune_causal_lm(gpt2, 0.2)
    uneven = _model("llama", heads=8, kv_heads=8)
    uneven.model.layers[1].self_attn.q_proj = torch.nn.Linear(128, 96, bias=False)
    with pytest.raises(ModelError, match="uniform models only"):
        prune_causal_lm(uneven, 0.2)
