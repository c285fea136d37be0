"""``evaluate``: corpus -> tokens (cached) -> engine -> PerplexityResult."""

from __future__ import annotations

from typing import Any

from .keep.store import CacheWarning, Store, StoreRefused
from .measure.corpus import Corpus
from .measure.measurement import prepare, resolve_tokenizer, run
from .measure.perplexity_result import PerplexityResult

__all__ = ["evaluate", "resolve_tokenizer"]


def evaluate(model: Any, tokenizer: Any = None, corpus: str | Corpus = "wikitext2", seqlen: int | None = None, *,
             protocol: str = "torch-pruning", stride: int | None = None, max_windows: int | None = None,
             batch_size: Any = "auto", device: str | None = None, dtype: str | None = None,
             cache_dir: str | None = None, use_cache: bool = True, allow_long_seqlen: bool = False,
             progress: Any = None, top1: bool = False, keep_topk: int = 0,
             reference: PerplexityResult | None = None) -> PerplexityResult:
    """Perplexity of ``model`` on ``corpus`` under ``protocol`` (default: Torch-Pruning's).

    Tokens are cached on disk (``cache_dir``, ``$PYTEST_LLMPPL_CACHE_DIR`` or the user cache);
    ``use_cache=False`` tokenizes afresh and writes nothing.  ``device=None`` evaluates where
    the model is.  ``top1=True`` keeps each scored position's argmax in ``result.top1``;
    ``keep_topk=16`` the model's top-16 at each scored position (``result.topk``), and a later
    ``evaluate(pruned, ..., reference=dense_result)`` then gives ``result.kl``: the KL
    divergence from the dense model, as llama.cpp reports it.
    """
    store = None
    if use_cache:
        try:
            store = Store(cache_dir)
        except StoreRefused as exc:
            import warnings

            warnings.warn(str(exc), CacheWarning, stacklevel=2)
    prepared = prepare(model, tokenizer, corpus, seqlen, protocol=protocol, stride=stride,
                       max_windows=max_windows, store=store, allow_long_seqlen=allow_long_seqlen)
    if reference is not None and reference.topk is None:
        from .errors import SettingsError

        raise SettingsError("reference= needs a result that kept its top-k: evaluate the dense model with keep_topk=16")
    return run(model, prepared, batch_size=batch_size, device=device, dtype=dtype, progress=progress, top1=top1,
               keep_topk=keep_topk, reference=reference)
