"""``evaluate``: corpus -> tokens (cached) -> engine -> PerplexityResult."""

from __future__ import annotations

from typing import Any

from .cache import Store
from .corpus import Corpus
from .measurement import prepare, resolve_tokenizer, run
from .result import PerplexityResult

__all__ = ["evaluate", "resolve_tokenizer"]


def evaluate(model: Any, tokenizer: Any = None, corpus: str | Corpus = "wikitext2", seqlen: int | None = None, *,
             protocol: str = "torch-pruning", stride: int | None = None, max_windows: int | None = None,
             batch_size: Any = "auto", device: str | None = None, dtype: str | None = None,
             cache_dir: str | None = None, use_cache: bool = True, allow_long_seqlen: bool = False,
             progress: Any = None, top1: bool = False) -> PerplexityResult:
    """Perplexity of ``model`` on ``corpus`` under ``protocol`` (default: Torch-Pruning's).

    Tokens are cached on disk (``cache_dir``, ``$PYTEST_LLMPPL_CACHE_DIR`` or the user cache);
    ``use_cache=False`` tokenizes afresh and writes nothing.  ``device=None`` evaluates where
    the model is.  ``top1=True`` keeps each scored position's argmax in ``result.top1``.
    """
    store = Store(cache_dir) if use_cache else None
    prepared = prepare(model, tokenizer, corpus, seqlen, protocol=protocol, stride=stride,
                       max_windows=max_windows, store=store, allow_long_seqlen=allow_long_seqlen)
    return run(model, prepared, batch_size=batch_size, device=device, dtype=dtype, progress=progress, top1=top1)
