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



def _keep_libraries_between_inline_runs() -> None:
    """pytester runs inner sessions in-process and then drops every module they imported;
    torch (and the C extensions around it) cannot be imported twice in one process.  Keep
    every module except those of the inner projects themselves (their conftest and test
    files, written under pytest's temp root), which must be fresh for each run."""
    import getpass
    import sys

    from _pytest import pytester

    scratch = os.path.join(tempfile.gettempdir(), f"pytest-of-{getpass.getuser()}")

    class KeepLibraries(pytester.SysModulesSnapshot):
        def __init__(self, preserve=None):
            def keep(name: str) -> bool:
                path = getattr(sys.modules.get(name), "__file__", None) or ""
                return not path.startswith(scratch) or bool(preserve and preserve(name))

            super().__init__(preserve=keep)

    pytester.SysModulesSnapshot = KeepLibraries


_keep_libraries_between_inline_runs()


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
    from pytest_llmppl.measure import corpus, tokens

    corpus._MEMO.clear()
    corpus._FAILED.clear()
    tokens._MEMO.clear()
    yield


@pytest.fixture(scope="session")
def smollm2_dir():
    """SmolLM2-135M-Instruct as converted by fixtures/get_smollm2.py (.ci/run fetches it)."""
    from fixtures.get_smollm2 import is_ready, model_dir

    if not is_ready():
        pytest.skip(f"SmolLM2 is not fetched ({model_dir()}): run python fixtures/get_smollm2.py")
    return model_dir()


@pytest.fixture(scope="session")
def smollm2(smollm2_dir):
    """(model, tokenizer), float32 on the CPU; tests must not modify the model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(smollm2_dir).eval(), AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(params=[[], ["-n", "2"]], ids=["serial", "xdist"])
def plugin_args(request):
    """Extra pytest arguments for a plugin test that must hold serially and under pytest-xdist."""
    return request.param


def pytest_configure(config):
    config.addinivalue_line("markers", "heavy: a long test, scheduled first so xdist workers finish together")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)  # stable: heavy tests first
