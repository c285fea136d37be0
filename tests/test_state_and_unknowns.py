"""State left behind by an evaluation, one measurement under two spellings, and an SE that
cannot be estimated."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import CORPUS_TXT


def _session(tmp_path, **kw):
    from pytest_llmppl.session import PPLSession
    from pytest_llmppl.settings import Settings

    return PPLSession(Settings(corpus=str(CORPUS_TXT), seqlen=128, cache_dir=str(tmp_path), **kw))


def test_every_module_keeps_its_training_flag(tiny_model, tiny_tokenizer):
    from pytest_llmppl import evaluate

    tiny_model.train()
    tiny_model.model.layers[0].eval()
    before = {name: m.training for name, m in tiny_model.named_modules()}
    assert not all(before.values()) and any(before.values())
    evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), 128, max_windows=2)
    assert {name: m.training for name, m in tiny_model.named_modules()} == before


def test_a_move_that_fails_part_way_is_undone(tiny_model, tiny_tokenizer, monkeypatch):
    """The model goes back where it was when moving it to the evaluation device fails (an
    out-of-memory error or Ctrl-C half-way), and its modes and config are restored."""
    from pytest_llmppl.measure import engine

    calls = []
    real_to = tiny_model.to

    def failing_to(device, *a, **k):
        calls.append(str(device))
        if len(calls) == 1:
            real_to(torch.float64)  # half-way: something changed before the failure
            raise KeyboardInterrupt
        return real_to(torch.float32)

    monkeypatch.setattr(tiny_model, "to", failing_to)
    tiny_model.train()
    with pytest.raises(KeyboardInterrupt), engine._evaluation_mode(tiny_model, torch.device("cuda", 0)):
        pass
    assert calls == ["cuda:0", "cpu"]  # moved back to where the model was
    assert tiny_model.training and tiny_model.config.use_cache in (True, None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_partial_gpu_move_is_undone_on_the_gpu(tiny_model, tiny_tokenizer, monkeypatch):
    from pytest_llmppl import evaluate

    layer = tiny_model.model.layers[1]
    real_apply = layer._apply

    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("simulated")

    monkeypatch.setattr(layer, "_apply", oom)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), 128, max_windows=2, device="cuda")
    monkeypatch.setattr(layer, "_apply", real_apply)
    assert {p.device.type for p in tiny_model.parameters()} == {"cpu"}


def test_default_and_explicit_stride_are_one_measurement(tiny_model, tiny_tokenizer, tmp_path):
    session = _session(tmp_path, protocol="sliding", max_windows=4)
    a = session.baseline(tiny_model, tiny_tokenizer, test="t")
    b = session.measure(tiny_model, tiny_tokenizer, test="t", stride=128)
    assert b.window_nll == a.result.window_nll
    assert [r.measured_source.value for r in session.pending if r.kind == "measure"] == ["memory"]
    session.check(tiny_model, tiny_tokenizer, baseline=a, budget=__import__("pytest_llmppl.settings").settings
                  .parse_budget("1%"), test="t", stride=128)  # no "stride differs" refusal


def test_one_window_has_an_unknown_se(tiny_model, tiny_tokenizer, tmp_path):
    from pytest_llmppl.judge.records import to_json
    from pytest_llmppl.report.render import terminal_table
    from pytest_llmppl.settings import parse_budget

    session = _session(tmp_path, max_windows=1)
    base = session.baseline(tiny_model, tiny_tokenizer, test="t")
    with torch.no_grad():
        tiny_model.model.layers[0].mlp.up_proj.weight.mul_(0.9)
    session.check(tiny_model, tiny_tokenizer, baseline=base, budget=parse_budget("50%"), test="t")
    record = session.pending[-1]
    assert math.isnan(record.paired.delta_ppl_se) and math.isnan(record.top1.se)
    data = json.loads(json.dumps(to_json(record)))
    assert data["delta_se"] is None and data["paired"]["delta_ppl_se"] is None and data["top1"]["se"] is None
    table = terminal_table([record])
    assert "± n/a" in table and "± 0.0000" not in table
