"""Test-suite wiring: the bundled fixture model, tokenizer and corpus, offline."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
FIXTURES = ROOT / "fixtures"
TINY = FIXTURES / "tiny-llama"
CORPUS_TXT = FIXTURES / "corpus" / "test.txt"
CORPUS_JSONL = FIXTURES / "corpus" / "test.jsonl"

# Tests never touch the user's Hugging Face cache: a fresh one per run, set before datasets is imported.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="llmppl-hf-home-")
os.environ["HF_DATASETS_CACHE"] = os.path.join(os.environ["HF_HOME"], "datasets")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):  # one thread per worker: no oversubscription on small runners
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY)


@pytest.fixture()
def tiny_model():
    """A fresh float32 copy per test (tests may prune or poison it)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(TINY, dtype="float32")


@pytest.fixture()
def cache_dir(tmp_path):
    return tmp_path / "llmppl-cache"


@pytest.fixture(autouse=True)
def _fresh_memo():
    """Each test starts without the in-process corpus/token memo, so disk behaviour is visible."""
    from pytest_llmppl import corpus, tokens

    corpus._MEMO.clear()
    corpus._FAILED.clear()
    tokens._MEMO.clear()
    yield


def _smollm2_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("get_smollm2", FIXTURES / "get_smollm2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def smollm2_dir():
    """SmolLM2-135M-Instruct as converted by fixtures/get_smollm2.py (.ci/run fetches it)."""
    script = _smollm2_script()
    if not script.is_ready():
        pytest.skip(f"SmolLM2 is not fetched ({script.model_dir()}): run python fixtures/get_smollm2.py")
    return script.model_dir()


@pytest.fixture(scope="session")
def smollm2(smollm2_dir):
    """(model, tokenizer), float32 on the CPU; tests must not modify the model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(smollm2_dir).eval(), AutoTokenizer.from_pretrained(smollm2_dir)
