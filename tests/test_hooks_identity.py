"""A model changed through hooks is a different model: never served the dense model's result."""

from __future__ import annotations

import threading

import pytest

from conftest import CORPUS_TXT
from plugin_support import project, rows

MASKED = """
import os
import torch

def mask_heads(model, keep):
    \"\"\"Head pruning by masking: a pre-hook on each o_proj zeroes every head but the first ``keep``.\"\"\"
    head_dim = model.config.head_dim
    def zero_heads(module, args):
        (x,) = args
        x = x.clone()
        x[..., keep * head_dim:] = 0
        return (x,)
    for layer in model.model.layers:
        layer.self_attn.o_proj.register_forward_pre_hook(zero_heads)

def test_masked(model, tok, ppl_baseline, ppl_check):
    base = ppl_baseline(model, tok)
    mask_heads(model, int(os.environ.get("KEEP", "1")))
    ppl_check(model, tok, baseline=base, budget="1%")
"""


def test_a_hook_masked_model_fails_its_check_and_is_cached_as_itself(pytester, monkeypatch):
    project(pytester, MASKED)
    first = pytester.runpytest("--ppl-report=report.json")
    first.assert_outcomes(failed=1)
    (check,) = rows(pytester, "check")
    assert check["measured_source"] == "measured" and check["measured"] > 2 * check["baseline"]
    masked_id = check["model_id"]
    assert masked_id != rows(pytester, "baseline")[0]["model_id"]
    # the same hook in a new process: the same identity, served from the store, still a failure
    second = pytester.runpytest("--ppl-report=report.json")
    second.assert_outcomes(failed=1)
    (check,) = rows(pytester, "check")
    assert check["measured_source"] == "cache" and check["model_id"] == masked_id
    # another mask (what the hook closes over changed): another identity, measured
    monkeypatch.setenv("KEEP", "3")
    pytester.runpytest("--ppl-report=report.json")
    (check,) = rows(pytester, "check")
    assert check["measured_source"] == "measured" and check["model_id"] != masked_id


def _identity(model):
    from pytest_llmppl.measure.measurement import function_fingerprint

    return function_fingerprint(model)


def test_hooks_and_overrides_change_the_identity(tiny_model):
    import torch

    plain, why = _identity(tiny_model)
    assert why == "" and plain == _identity(tiny_model)[0]
    scale = torch.tensor(0.5)
    handle = tiny_model.model.layers[0].mlp.register_forward_hook(lambda m, a, out: out * scale)
    hooked = _identity(tiny_model)[0]
    assert hooked != plain and _identity(tiny_model)[0] == hooked  # stable
    scale.fill_(0.25)  # a closed-over tensor, by content
    assert _identity(tiny_model)[0] not in (plain, hooked)
    handle.remove()
    assert _identity(tiny_model)[0] == plain
    original = tiny_model.model.layers[1].forward
    tiny_model.model.layers[1].forward = lambda *a, **k: original(*a, **k)  # an instance-level override
    assert _identity(tiny_model)[0] != plain
    del tiny_model.model.layers[1].forward
    g = torch.nn.modules.module.register_module_forward_hook(lambda m, a, out: None)
    try:
        assert _identity(tiny_model)[0] != plain
    finally:
        g.remove()


def test_a_hook_that_cannot_be_pinned_down_is_measured_and_says_why(tiny_model, tiny_tokenizer, tmp_path):
    from pytest_llmppl.session import PPLSession
    from pytest_llmppl.settings import Settings

    lock = threading.Lock()

    def hook(module, args):
        with lock:
            return None

    tiny_model.model.layers[0].register_forward_pre_hook(hook)
    fp, why = _identity(tiny_model)
    assert "lock" in why and fp != _identity(tiny_model)[0]  # unique each call: never served
    session = PPLSession(Settings(corpus=str(CORPUS_TXT), seqlen=128, max_windows=4, cache_dir=str(tmp_path)))
    session.measure(tiny_model, tiny_tokenizer, test="t")
    session.measure(tiny_model, tiny_tokenizer, test="t")
    assert [r.measured_source.value for r in session.pending] == ["measured", "measured"]
    from pytest_llmppl.report.render import terminal_table

    assert "measured (unpinned)" in terminal_table(session.pending)


def test_torch_prune_masks_are_in_the_state_dict(tiny_model):
    from torch.nn.utils import prune

    plain = _identity(tiny_model)[0]
    prune.l1_unstructured(tiny_model.model.layers[0].mlp.up_proj, "weight", amount=0.5)
    pruned = _identity(tiny_model)[0]
    assert pruned != plain and _identity(tiny_model)[0] == pruned
    assert "model.layers.0.mlp.up_proj.weight_mask" in tiny_model.state_dict()


@pytest.mark.parametrize("keep", [1])
def test_engine_sees_the_hook(tiny_model, tiny_tokenizer, keep):
    """The masked number is the model's own: equal to a plain loop over the hooked model."""
    from pytest_llmppl import evaluate

    from reference import tp_ppl

    head_dim = tiny_model.config.head_dim
    for layer in tiny_model.model.layers:
        layer.self_attn.o_proj.register_forward_pre_hook(
            lambda m, a: (a[0] * (__import__("torch").arange(a[0].shape[-1]) < keep * head_dim),))
    r = evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), 128, max_windows=4)
    ids = tiny_tokenizer(CORPUS_TXT.read_text(encoding="utf-8"), verbose=False)["input_ids"]
    from pytest_llmppl.measure.windows import spread_subset

    assert r.ppl == pytest.approx(tp_ppl(tiny_model, ids, 128, spread_subset(len(ids) // 128, 4)), rel=1e-6)
