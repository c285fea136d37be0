"""The identity is the whole function: whatever the forward reads changes it, and nothing else does.

Each refactor of ``identity_changes`` leaves the state dict alone; each gets another identity
and, recorded before the change, is measured and judged on its true perplexity.  The converse:
the same model rebuilt, evaluated, compiled or quantized the same way keeps its identity.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from identity_changes import CHANGES, GLOBAL_CHANGES, ScaledLinears, scaled_mask, team_attention, team_mask

from conftest import CORPUS_TXT, TINY
from plugin_support import INI, forwards, project, rows

WINDOWS = 24  # an evenly spread subset: the same windows recorded, measured and in the reference


def _id(model) -> str:
    from pytest_llmppl.identity.model_identity import model_identity

    found = model_identity(model)
    assert found.unpinned == "", found.unpinned
    return found.digest


def _load():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(TINY)


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_each_change_of_the_function_changes_the_identity(change):
    model = _load()
    scaled_mask(model, 1.0)
    before, state = _id(model), {k: v.clone() for k, v in model.state_dict().items()}
    CHANGES[change](model)
    assert _id(model) != before
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)


def test_a_class_method_patched_at_run_time_and_a_subclass_are_code(tiny_model):
    from transformers.models.llama import modeling_llama

    plain = _id(tiny_model)
    stock = modeling_llama.LlamaMLP.forward

    def patched(self, x):
        return stock(self, x) * 0.5

    modeling_llama.LlamaMLP.forward = patched
    try:
        assert _id(tiny_model) != plain
    finally:
        modeling_llama.LlamaMLP.forward = stock
    assert _id(tiny_model) == plain

    class Halved(modeling_llama.LlamaMLP):
        def forward(self, x):
            return super().forward(x) * 0.5

    class Doubled(modeling_llama.LlamaMLP):
        def forward(self, x):
            return super().forward(x) * 2.0

    ids = []
    for cls in (Halved, Doubled):
        tiny_model.model.layers[0].mlp.__class__ = cls
        ids.append(_id(tiny_model))
    tiny_model.model.layers[0].mlp.__class__ = modeling_llama.LlamaMLP
    assert len({plain, *ids}) == 3


def _loss(model) -> float:
    ids = torch.arange(1, 33)[None]
    with torch.no_grad():
        return model(ids, labels=ids).loss.item()


@pytest.mark.parametrize("change", sorted(GLOBAL_CHANGES))
def test_a_library_function_rebound_in_its_module_changes_the_identity(change, tiny_model):
    """The library's forward looks its helpers up in its module when it runs: one rebound there
    (by the user, or by a kernel library under the library's name) is another function."""
    plain, loss = _id(tiny_model), _loss(tiny_model)
    with pytest.MonkeyPatch.context() as mp:
        GLOBAL_CHANGES[change](mp)
        assert _loss(tiny_model) != pytest.approx(loss, rel=1e-6)  # the forward reads it
        assert _id(tiny_model) != plain
    assert _id(tiny_model) == plain and _loss(tiny_model) == loss


def test_a_rebound_helper_that_cannot_be_compared_makes_the_model_unpinned_and_names_it(tiny_model, monkeypatch):
    import threading

    from transformers.models.llama import modeling_llama

    from pytest_llmppl.identity.model_identity import model_identity

    stock = modeling_llama.apply_rotary_pos_emb

    class LockedRope:
        def __init__(self):
            self.lock = threading.Lock()

        def __call__(self, *args, **kwargs):
            return stock(*args, **kwargs)

    monkeypatch.setattr(modeling_llama, "apply_rotary_pos_emb", LockedRope())
    found = model_identity(tiny_model)
    assert "modeling_llama.apply_rotary_pos_emb" in found.unpinned and "lock" in found.unpinned


def test_a_registered_attention_the_model_selects_is_code(tiny_model, monkeypatch):
    """An attention function registered under a name (``AttentionInterface.register``): the name
    is in the identity, and so is the code registered under it."""
    tiny_model.config._attn_implementation = "team_attn"
    ids = []
    for sharpen in (1.0, 2.0):
        with pytest.MonkeyPatch.context() as mp:
            team_attention(mp, sharpen)
            ids.append((_id(tiny_model), _loss(tiny_model)))
    assert ids[0][1] != pytest.approx(ids[1][1], rel=1e-6) and ids[0][0] != ids[1][0]


def test_an_installed_attention_registered_under_the_selected_name_is_in_the_identity(tiny_model):
    """An installed callable registered under the name the config selects is described when it is
    not a plain function of the registry's own library: another package's (a kernel library's
    attention), or the library's own with arguments bound (``partial``).  Swapping one for another
    changes the identity; the same registered under a name no model selects does not."""
    import functools

    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    registry = AttentionInterface._global_mapping
    plain = _id(tiny_model)
    tiny_model.config._attn_implementation = "team_attn"
    found = {}
    choices = {"library": sdpa_attention_forward, "bound": functools.partial(sdpa_attention_forward, is_causal=False),
               "torch": torch.nn.functional.scaled_dot_product_attention,
               "torch other": torch.nn.functional.multi_head_attention_forward}
    for name, fn in choices.items():
        with pytest.MonkeyPatch.context() as mp:
            mp.setitem(registry, "team_attn", fn)
            found[name] = _id(tiny_model)
            if name in ("library", "bound"):  # these two run: bound arguments are another function
                found[name + " loss"] = _loss(tiny_model)
    assert found["library loss"] != pytest.approx(found["bound loss"], rel=1e-6)
    assert len({found[n] for n in choices}) == len(choices)
    tiny_model.config._attn_implementation = "sdpa"
    assert _id(tiny_model) == plain
    with pytest.MonkeyPatch.context() as mp:  # registered, not selected
        mp.setitem(registry, "unused", functools.partial(sdpa_attention_forward, is_causal=False))
        mp.setitem(registry, "unused torch", torch.nn.functional.scaled_dot_product_attention)
        assert _id(tiny_model) == plain


def test_the_mask_registered_for_the_models_attention_is_code(tiny_model):
    """``create_causal_mask`` (a helper of the model's module) reads the mask registered under the
    config's attention name: the team's mask is in the identity, and a refactor of it changes it."""
    tiny_model.config._attn_implementation = "team_attn"
    found, calls = [], []
    for window in (None, 8):
        with pytest.MonkeyPatch.context() as mp:
            team_attention(mp)
            team_mask(mp, window, calls)
            found.append((_id(tiny_model), _loss(tiny_model)))
    assert calls and found[0][1] != pytest.approx(found[1][1], rel=1e-6) and found[0][0] != found[1][0]


def test_a_torch_mode_active_around_the_call_is_in_the_identity(tiny_model):
    """The forward goes through every active function (or dispatch) mode: one that rewrites ops
    is another function, another setting of it another again, and none the plain model."""
    found = []
    for k in (None, 1.5, 2.0):
        if k is None:
            found.append((_id(tiny_model), _loss(tiny_model)))
            continue
        with ScaledLinears(k):
            found.append((_id(tiny_model), _loss(tiny_model)))
    assert len({i for i, _ in found}) == 3 and len({round(loss, 6) for _, loss in found}) == 3
    assert _id(tiny_model) == found[0][0]


def test_a_tensor_kept_as_a_plain_attribute_is_content(tiny_model):
    plain = _id(tiny_model)
    tiny_model.model.layers[0].mlp.gate = torch.ones(4)
    gated = _id(tiny_model)
    tiny_model.model.layers[0].mlp.gate[2] = 0.5
    assert len({plain, gated, _id(tiny_model)}) == 3


def test_an_object_that_cannot_be_compared_makes_the_model_unpinned_and_says_where(tiny_model):
    import threading

    from pytest_llmppl.identity.model_identity import model_identity

    tiny_model.model.layers[1].self_attn.guard = threading.Lock()
    found = model_identity(tiny_model)
    assert "model.layers.1.self_attn" in found.unpinned and "guard" in found.unpinned
    assert "lock" in found.unpinned.lower() and model_identity(tiny_model).digest != found.digest


class CachingRotary(torch.nn.Module):
    """Caches cos/sin on first use (as older transformers' rotary embeddings did), and counts
    how often the cache served: state a forward fills, derived from the rest."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self._cos_cached = None
        self.cache_hits = 0
        self.register_buffer("sin_cached", torch.zeros(0), persistent=False)

    def forward(self, x, position_ids):
        if self._cos_cached is None:
            self._cos_cached, sin = self.inner(x, position_ids)
            self.sin_cached = sin
        else:
            self.cache_hits += 1
        return self.inner(x, position_ids)


def test_the_identity_is_the_same_before_and_after_an_evaluation():
    from pytest_llmppl import evaluate

    model = _load()
    model.model.rotary_emb = CachingRotary(model.model.rotary_emb)
    model.train()
    before = _id(model)
    from transformers import AutoTokenizer

    evaluate(model, AutoTokenizer.from_pretrained(TINY), str(CORPUS_TXT), 64, max_windows=2, batch_size=1)
    assert model.model.rotary_emb._cos_cached is not None and model.model.rotary_emb.cache_hits > 0
    assert model.training and _id(model) == before


def test_a_compiled_model_has_the_identity_of_the_module_it_wraps(tiny_model):
    plain = _id(tiny_model)
    compiled = torch.compile(tiny_model)
    assert _id(compiled) == _id(tiny_model) == plain
    tiny_model.compile()  # in place: the same function, compiled
    assert _id(tiny_model) == plain


def _quantized():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(_load(), {torch.nn.Linear}, dtype=torch.qint8)


def test_an_int8_dynamic_quantized_model_is_identified_by_its_integers_and_scales():
    first, second = _quantized(), _quantized()
    assert _id(first) == _id(second) != _id(_load())
    packed = second.model.layers[0].mlp.up_proj
    weight, bias = packed._weight_bias()
    ints = weight.int_repr()
    ints[0, 0] += 1
    requantized = torch._make_per_tensor_quantized_tensor(ints, weight.q_scale(), weight.q_zero_point())
    packed.set_weight_bias(requantized, bias)
    assert _id(second) != _id(first)


def test_peft_adapters_and_their_scaling_are_in_the_identity():
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(_load(), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                         init_lora_weights=False))
    plain = _id(model)
    assert _id(model) == plain
    for module in model.modules():
        if hasattr(module, "scaling") and isinstance(module.scaling, dict) and "default" in module.scaling:
            module.scaling["default"] *= 2
    scaled = _id(model)
    assert scaled != plain
    with model.disable_adapter():
        assert _id(model) not in (plain, scaled)


def test_the_structured_pattern_that_left_the_linear_hash_unchanged_changes_it():
    """+t, -2t, +t at positions i, i+2, i+4 cancelled in a sum of bits times position constants
    (k_{i+4} - 2 k_{i+2} + k_i = 0 for k linear in i): the mixed hash sees it."""
    from pytest_llmppl.identity.device_hash import _torch_hash, as_words

    words = torch.arange(1000, dtype=torch.int32) * 7919
    for t in (1, 3, 1 << 20):
        changed = words.clone()
        changed[[10, 12, 14]] += torch.tensor([t, -2 * t, t], dtype=torch.int32)
        assert _torch_hash(changed) != _torch_hash(words)
    weights = torch.randn(1001, dtype=torch.bfloat16)
    body, tail = as_words(weights)
    assert body.numel() == 500 and len(tail) == 2  # 2002 bytes: 500 words and two bytes on the host


SUITE = """
import os
from identity_changes import CHANGES, scaled_mask

def test_candidate(model, tok, ppl_check):
    scaled_mask(model, 1.0)  # a re-parametrised candidate (the pruning_method row changes its scale)
    if os.environ.get("CHANGE"):
        CHANGES[os.environ["CHANGE"]](model)
    ppl_check(model, tok, baseline=100.0)
"""


@pytest.mark.heavy
def test_a_recorded_check_whose_function_changed_is_measured_and_judged(pytester, monkeypatch):
    """Recorded unchanged; then, one run per row of the table, only that change: measured (served
    nothing), with its true perplexity, a failure wherever that is worse than the record."""
    from transformers import AutoTokenizer

    from pytest_llmppl import evaluate

    project(pytester, SUITE, ini=INI + f"ppl_max_windows = {WINDOWS}\n")
    path = pytester.path / "ppl-baselines.json"
    fresh = (f"--ppl-baselines={path}", "--ppl-no-cache", "--ppl-report=report.json", "-p", "no:cacheprovider")
    pytester.runpytest(*fresh, "--ppl-update-baselines").assert_outcomes(passed=1)
    (recorded,) = rows(pytester, "check")
    forwards(pytester)
    tok = AutoTokenizer.from_pretrained(TINY)
    for change in sorted(CHANGES):
        monkeypatch.setenv("CHANGE", change)
        result = pytester.runpytest(*fresh, "--ppl-strict")
        (check,) = rows(pytester, "check")
        assert check["measured_source"] == "measured" and forwards(pytester) > 0, change
        model = _load()
        scaled_mask(model, 1.0)
        CHANGES[change](model)
        true = evaluate(model, tok, str(CORPUS_TXT), 128, max_windows=WINDOWS).ppl
        assert check["measured"] == pytest.approx(true, rel=1e-9), change
        if true > recorded["measured"] * 1.01:
            result.assert_outcomes(failed=1)
            assert check["against_record"] == "worse", change
        else:  # non-causal attention sees the next token: better, and measured
            assert change == "is_causal"
            result.assert_outcomes(passed=1)


REBOUND_SUITE = """
import contextlib, os
from identity_changes import GLOBAL_CHANGES, ScaledLinears, team_attention

def test_candidate(model, tok, ppl_check, monkeypatch):
    model.config._attn_implementation = "team_attn"
    team_attention(monkeypatch, float(os.environ.get("SHARPEN", "1")))
    if os.environ.get("CHANGE"):
        GLOBAL_CHANGES[os.environ["CHANGE"]](monkeypatch)
    with ScaledLinears(float(os.environ["MODE"])) if os.environ.get("MODE") else contextlib.nullcontext():
        ppl_check(model, tok, baseline=100.0)
"""


@pytest.mark.heavy
def test_a_recorded_check_whose_library_helpers_were_rebound_is_measured(pytester, monkeypatch):
    """Recorded with the team's attention; then a helper of the library's forward rebound (the
    user's rope, another package's function, torch's attention), the team's attention refactored
    under its registered name, or the call made inside an op-rewriting torch mode: each is
    measured with its true perplexity, never served the record."""
    from transformers import AutoTokenizer

    from pytest_llmppl import evaluate

    project(pytester, REBOUND_SUITE, ini=INI + f"ppl_max_windows = {WINDOWS}\n")
    path = pytester.path / "ppl-baselines.json"
    fresh = (f"--ppl-baselines={path}", "--ppl-no-cache", "--ppl-report=report.json", "-p", "no:cacheprovider")
    pytester.runpytest(*fresh, "--ppl-update-baselines").assert_outcomes(passed=1)
    forwards(pytester)
    pytester.runpytest(*fresh, "--ppl-strict").assert_outcomes(passed=1)
    (same,) = rows(pytester, "check")
    assert same["measured_source"] == "file" and forwards(pytester) == 0  # unchanged: served
    tok = AutoTokenizer.from_pretrained(TINY)
    for env, change in (*(("CHANGE", c) for c in sorted(GLOBAL_CHANGES)), ("SHARPEN", "2"), ("MODE", "1.5")):
        with monkeypatch.context() as run:
            run.setenv(env, change)
            pytester.runpytest(*fresh, "--ppl-strict")
            (check,) = rows(pytester, "check")
            assert check["measured_source"] == "measured" and forwards(pytester) > 0, change
            model = _load()
            model.config._attn_implementation = "team_attn"
            with pytest.MonkeyPatch.context() as patched:
                team_attention(patched, 2.0 if env == "SHARPEN" else 1.0)
                if env == "CHANGE":
                    GLOBAL_CHANGES[change](patched)
                with ScaledLinears(float(change)) if env == "MODE" else contextlib.nullcontext():
                    true = evaluate(model, tok, str(CORPUS_TXT), 128, max_windows=WINDOWS).ppl
            assert check["measured"] == pytest.approx(true, rel=1e-9) != same["measured"], change


@pytest.mark.heavy
def test_a_compiled_model_is_served_with_zero_forwards(pytester, monkeypatch):
    """Recorded as the plain model; the compiled one computes the same function: served from the
    committed file, never compiled or run."""
    project(pytester, """
import torch

import os

def test_compiled(model, tok, ppl_check):
    ppl_check(torch.compile(model) if os.environ.get("COMPILE") else model, tok, baseline=100.0)
""")
    path = pytester.path / "ppl-baselines.json"
    fresh = (f"--ppl-baselines={path}", "--ppl-no-cache", "--ppl-report=report.json", "-p", "no:cacheprovider")
    pytester.runpytest(*fresh, "--ppl-update-baselines").assert_outcomes(passed=1)
    forwards(pytester)
    monkeypatch.setenv("COMPILE", "1")
    pytester.runpytest(*fresh, "--ppl-strict").assert_outcomes(passed=1)
    (check,) = rows(pytester, "check")
    assert check["measured_source"] == "file" and check["against_record"] == "unchanged"
    assert forwards(pytester) == 0
