"""pytest-llmppl: perplexity regression checks for pruned language models.

Public names only, loaded on first use: importing this package (as pytest does for
every run) imports neither torch, transformers, datasets nor numpy.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PerplexityResult", "__version__", "evaluate", "load_corpus"]
__version__ = "0.4.0"


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        from .api import evaluate

        return evaluate
    if name == "load_corpus":
        from .measure.corpus import load_corpus

        return load_corpus
    if name == "PerplexityResult":
        from .measure.perplexity_result import PerplexityResult

        return PerplexityResult
    raise AttributeError(f"module 'pytest_llmppl' has no attribute {name!r}")
