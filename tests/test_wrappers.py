"""Wrapped, hooked, subclassed and offloaded models give their own number (the reference loop's).

The chunked-head shortcut (decoder, then the head in chunks) is taken only when it is
provably the model's own computation; everything else runs the model's forward.
"""

from __future__ import annotations

import pytest
import torch

from pytest_llmppl import evaluate
from pytest_llmppl.measure.model_facts import head_path
from pytest_llmppl.measure.windows import spread_subset

from conftest import CORPUS_TXT, TINY
from reference import tp_ppl

SEQLEN, WINDOWS = 128, 4


def _ids(tok):
    return tok(CORPUS_TXT.read_text(encoding="utf-8"), verbose=False)["input_ids"]


def _reference(model, tok):
    ids = _ids(tok)
    return tp_ppl(model, ids, SEQLEN, spread_subset(len(ids) // SEQLEN, WINDOWS))


def _ours(model, tok, cache_dir):
    return evaluate(model, tok, str(CORPUS_TXT), SEQLEN, max_windows=WINDOWS, cache_dir=cache_dir)


def test_stock_model_takes_the_chunked_path(tiny_model):
    assert head_path(tiny_model) == "chunked"


def test_peft_lora_model_gives_the_merged_models_number(tiny_model, tiny_tokenizer, cache_dir):
    """Before: the chunked path found PEFT's wrapper through base_model_prefix and crashed."""
    peft = pytest.importorskip("peft")
    wrapped = peft.get_peft_model(tiny_model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                              init_lora_weights=False, task_type="CAUSAL_LM"))
    assert head_path(wrapped) == "full"
    got = _ours(wrapped, tiny_tokenizer, cache_dir)
    assert got.head_path == "full"
    want = _reference(wrapped, tiny_tokenizer)
    merged = wrapped.merge_and_unload()
    assert got.ppl == pytest.approx(want, rel=1e-6)
    assert got.ppl == pytest.approx(_ours(merged, tiny_tokenizer, cache_dir).ppl, rel=1e-5)


def test_torch_compiled_model(tiny_model, tiny_tokenizer, cache_dir):
    compiled = torch.compile(tiny_model, backend="eager")
    assert head_path(compiled) == "full"
    assert _ours(compiled, tiny_tokenizer, cache_dir).ppl == pytest.approx(_reference(tiny_model, tiny_tokenizer),
                                                                           rel=1e-6)


def test_forward_hook_on_the_model_fires(tiny_model, tiny_tokenizer, cache_dir):
    """A user's hook on the model is part of its computation: it must run, and its effect count."""
    calls = []

    def halve_logits(module, args, output):
        calls.append(1)
        output.logits = output.logits / 2
        return output

    tiny_model.register_forward_hook(halve_logits)
    assert head_path(tiny_model) == "full"
    got = _ours(tiny_model, tiny_tokenizer, cache_dir)
    assert calls and got.ppl == pytest.approx(_reference(tiny_model, tiny_tokenizer), rel=1e-6)


def test_subclass_with_its_own_forward_is_not_bypassed(tiny_tokenizer, cache_dir):
    from transformers import LlamaForCausalLM

    class Tempered(LlamaForCausalLM):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 0.5
            return out

    model = Tempered.from_pretrained(TINY)
    assert head_path(model) == "full"
    plain = LlamaForCausalLM.from_pretrained(TINY)
    got = _ours(model, tiny_tokenizer, cache_dir).ppl
    assert got == pytest.approx(_reference(model, tiny_tokenizer), rel=1e-6)
    assert got != pytest.approx(_ours(plain, tiny_tokenizer, cache_dir).ppl, rel=1e-3)


def test_disk_offloaded_model_is_fingerprinted_from_its_offload(tiny_model, tiny_tokenizer, tmp_path):
    """accelerate keeps offloaded weights on ``meta``: they are read from the offload, one at a time,
    so the identity equals the same weights loaded plainly; a ppl_baseline works."""
    from transformers import AutoModelForCausalLM

    from pytest_llmppl.measure.measurement import function_fingerprint
    from pytest_llmppl.session import PPLSession
    from pytest_llmppl.settings import Settings

    placement = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
                 "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "disk"}
    offloaded = AutoModelForCausalLM.from_pretrained(TINY, device_map=placement, offload_folder=str(tmp_path / "off"))
    assert offloaded.model.layers[1].mlp.up_proj.weight.is_meta
    assert function_fingerprint(offloaded) == function_fingerprint(tiny_model)
    session = PPLSession(Settings(corpus=str(CORPUS_TXT), seqlen=SEQLEN, max_windows=WINDOWS,
                                  cache_dir=str(tmp_path / "cache")))
    base = session.baseline(offloaded, tiny_tokenizer, test="t")
    assert base.ppl == pytest.approx(_reference(tiny_model, tiny_tokenizer), rel=1e-6)
    assert session.baseline(tiny_model, tiny_tokenizer, test="t").source.value == "memory"  # one identity


def test_meta_model_without_offload_names_the_way_out(tiny_tokenizer, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from pytest_llmppl.errors import ModelError
    from pytest_llmppl.measure.measurement import function_fingerprint

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(vocab_size=1024, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    with pytest.raises(ModelError, match=r"meta device.*no offloaded copy.*offload_folder"):
        function_fingerprint(model)
