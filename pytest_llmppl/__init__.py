"""pytest-llmppl: perplexity regression checks for pruned language models.

Public names only.  Importing this package imports neither torch, transformers nor
datasets; ``evaluate`` and ``load_corpus`` import them when called.
"""

from __future__ import annotations

from .result import PerplexityResult

__all__ = ["evaluate", "load_corpus", "PerplexityResult", "__version__"]
__version__ = "0.1.0"


def __getattr__(name):
    if name == "evaluate":
        from .api import evaluate

        return evaluate
    if name == "load_corpus":
        from .corpus import load_corpus

        return load_corpus
    raise AttributeError(f"module 'pytest_llmppl' has no attribute {name!r}")
