"""Where model loading goes: load the dense model once per session, hand out fresh copies.

Replace TINY with your checkpoint (a local path or a hub id) and, on a GPU runner, load
it straight onto the GPU (device_map="cuda", dtype=torch.bfloat16).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TINY = Path(__file__).resolve().parent.parent / "fixtures" / "tiny-llama"
MODEL = os.environ.get("LLMPPL_EXAMPLE_MODEL", str(TINY))


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MODEL)


@pytest.fixture(scope="session")
def dense_model():
    """The unpruned model. Tests must not modify it: prune copies (ppl_pruned does)."""
    import torch
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() and os.environ.get("LLMPPL_EXAMPLE_DEVICE", "") != "cpu" else "cpu"
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32 if device == "cpu" else torch.bfloat16)
    return model.to(device).eval()

# The SmolLM2 suite is its own project (its own pytest.ini and baselines): `pytest examples/smollm2`.
collect_ignore = ["smollm2"]
