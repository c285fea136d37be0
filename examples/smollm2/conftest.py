"""SmolLM2-135M-Instruct, converted once by fixtures/get_smollm2.py (no weights in the repo)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).resolve().parents[2] / "fixtures" / "get_smollm2.py"


def _fixture_script():
    spec = importlib.util.spec_from_file_location("get_smollm2", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    script = _fixture_script()
    if not script.is_ready():
        pytest.skip(f"SmolLM2 is not fetched yet ({script.model_dir()}): run python fixtures/get_smollm2.py")
    return script.model_dir()


@pytest.fixture(scope="session")
def tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="session")
def dense_model(smollm2_dir):
    """The unpruned model (float32 on the CPU, bfloat16 on a GPU). Tests prune copies."""
    import torch
    from transformers import AutoModelForCausalLM

    on_gpu = torch.cuda.is_available() and os.environ.get("LLMPPL_EXAMPLE_DEVICE", "") != "cpu"
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.bfloat16 if on_gpu else torch.float32)
    return model.to("cuda" if on_gpu else "cpu").eval()
