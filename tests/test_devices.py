"""Device choice (--ppl-device=auto) and models spread with device_map (CPU tests of GPU paths)."""

from __future__ import annotations

import pytest

from pytest_llmppl.measure.devices import pick_device, visible_gpus, worker_index

from conftest import CORPUS_TXT, TINY
from plugin_support import project


@pytest.mark.parametrize("worker,visible,want", [
    (None, [], ("cpu", None)),
    ("gw0", [], ("cpu", None)),
    (None, ["0", "1"], ("cuda:0", None)),
    ("gw0", ["0", "1"], ("cuda:0", "0")),
    ("gw1", ["0", "1"], ("cuda:0", "1")),
    ("gw2", ["0", "1"], ("cuda:0", "0")),
    ("gw3", ["3", "5"], ("cuda:0", "5")),
    ("gw5", ["7"], ("cuda:0", "7")),
])
def test_pick_device(worker, visible, want):
    assert pick_device(worker, visible) == want


def test_worker_index_and_visible(monkeypatch):
    assert worker_index("gw12") == 12 and worker_index(None) is None and worker_index("master") is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 4")
    assert visible_gpus() == ["2", "4"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


def test_auto_without_gpus_is_cpu(pytester, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU here, on any machine
    project(pytester, "def test_x(ppl_budget):\n    pass\n")
    result = pytester.runpytest("--ppl-device=auto")
    result.stdout.fnmatch_lines(["llmppl:*device=cpu*"])


@pytest.mark.parametrize("how", ["option", "per-call"])
def test_auto_on_a_cpu_only_torch_is_the_cpu_whatever_cuda_visible_devices_says(pytester, monkeypatch, how):
    """A GPU runner's environment (CUDA_VISIBLE_DEVICES=0) with a CPU-only torch installed."""
    import torch

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None)
    call = "ppl_of(model, tok, max_windows=2" + (", device='auto')" if how == "per-call" else ")")
    project(pytester, f"def test_x(model, tok, ppl_of):\n    assert {call} < 10\n")
    args = ["--ppl-device=auto"] if how == "option" else []
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=1)
    if how == "option":
        result.stdout.fnmatch_lines(["llmppl:*device=cpu*"])


def test_auto_pins_each_xdist_worker_to_one_gpu(pytester, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    project(pytester, "\n".join(
        f"def test_{i}(ppl_budget, worker_id):\n"
        f"    import os\n"
        f"    open(f'seen-{{worker_id}}-{i}', 'w').write(os.environ['CUDA_VISIBLE_DEVICES'])\n" for i in range(8)))
    pytester.runpytest("-n2", "--ppl-device=auto").assert_outcomes(passed=8)
    seen = {}
    for f in pytester.path.glob("seen-*"):
        seen.setdefault(f.name.split("-")[1], set()).add(f.read_text())
    assert seen == {"gw0": {"3"}, "gw1": {"5"}}


def test_device_map_model_is_evaluated_in_place(tiny_tokenizer, cache_dir, tmp_path):
    """A model dispatched by accelerate over several places (here CPU and disk offload): inputs go
    to the input embedding's device, nothing is moved, the hooks bring offloaded weights."""
    from transformers import AutoModelForCausalLM

    from pytest_llmppl import evaluate

    from reference import tp_ppl

    placement = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
                 "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(TINY, device_map=placement, offload_folder=str(tmp_path / "off"))
    assert model.hf_device_map["model.layers.1"] == "disk"
    r = evaluate(model, tiny_tokenizer, str(CORPUS_TXT), 128, max_windows=4, device="cpu", cache_dir=cache_dir)
    ids = tiny_tokenizer(CORPUS_TXT.read_text(encoding="utf-8"), verbose=False)["input_ids"]
    from pytest_llmppl.measure.windows import spread_subset

    assert r.ppl == pytest.approx(tp_ppl(model, ids, 128, spread_subset(len(ids) // 128, 4)), rel=1e-6)
