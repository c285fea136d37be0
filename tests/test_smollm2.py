"""A real pretrained GQA model (SmolLM2-135M-Instruct: 30 layers, 9 heads, 3 KV heads, 49k vocabulary).

Engine, CLI and top-1 against the reference loop on short windows (CPU seconds each); the
fixtures and budgets run in the example suite (tests/test_examples.py).  Skipped, with the
command to run, until fixtures/get_smollm2.py has fetched the model; .ci/run fetches it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from pytest_llmppl import evaluate
from pytest_llmppl.measure.windows import spread_subset

from conftest import CORPUS_TXT, ROOT
from reference import tp_ppl, tp_window_nlls

SEQLEN, WINDOWS = 128, 3


def _ids(tok):
    return tok(CORPUS_TXT.read_text(encoding="utf-8"), verbose=False)["input_ids"]


def test_engine_equals_the_reference_loop(smollm2, cache_dir):
    model, tok = smollm2
    assert model.config.num_attention_heads == 9 and model.config.num_key_value_heads == 3
    r = evaluate(model, tok, str(CORPUS_TXT), SEQLEN, max_windows=WINDOWS, cache_dir=cache_dir, top1=True)
    ids = _ids(tok)
    chosen = spread_subset(len(ids) // SEQLEN, WINDOWS)
    assert r.head_path == "chunked" and r.window_index == tuple(chosen)
    assert list(r.window_nll) == pytest.approx(tp_window_nlls(model, ids, SEQLEN, chosen), rel=1e-6)
    assert r.ppl == pytest.approx(tp_ppl(model, ids, SEQLEN, chosen), rel=1e-6)
    assert 5 < r.ppl < 100  # a real language model on English text
    with torch.no_grad():  # top-1: the argmax of the model's own logits at every scored position
        x = torch.as_tensor(ids[chosen[0] * SEQLEN:(chosen[0] + 1) * SEQLEN])[None]
        want = model(x).logits[0, :-1].argmax(-1).numpy()
    assert np.mean(r.top1[chosen[0]] == want) > 0.999


def test_cli_on_the_real_model(smollm2_dir, smollm2, cache_dir):
    model, tok = smollm2
    env = {**os.environ, "PYTEST_LLMPPL_CACHE_DIR": str(cache_dir)}
    p = subprocess.run([sys.executable, "-m", "pytest_llmppl", "eval", "--model", str(smollm2_dir), "--corpus",
                        str(CORPUS_TXT), "--seqlen", str(SEQLEN), "--max-windows", "2", "--device", "cpu", "--json"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    ids = _ids(tok)
    assert data["ppl"] == pytest.approx(tp_ppl(model, ids, SEQLEN, spread_subset(len(ids) // SEQLEN, 2)), rel=1e-6)
    assert data["n_windows"] == 2 and data["head_path"] == "chunked"


def test_torch_pruning_prunes_the_real_gqa_model(smollm2):
    from pytest_llmppl.pruning import prune_causal_lm

    model, tok = smollm2
    pruned = prune_causal_lm(model, 0.1, copy_model=True, timeout=300)
    cfg = pruned.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (6, 3, 64)  # one query head per KV head
    assert cfg.hidden_size % 6 == 0 and cfg.hidden_size < 576 and cfg.intermediate_size < 1536
    r = evaluate(pruned, tok, str(CORPUS_TXT), SEQLEN, max_windows=1, use_cache=False)
    assert r.finite and r.ppl > 100  # runs; and, without recovery, a 135M model does not survive it
    assert model.config.num_attention_heads == 9  # the dense model is untouched
