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
