"""``evaluate``: corpus -> tokens (cached) -> engine -> PerplexityResult."""

from __future__ import annotations

from .cache import Store
from .corpus import Corpus, load_corpus
from .engine import evaluate_ids, ppl_from, resolve_seqlen
from .errors import TokenizerError
from .result import PerplexityResult
from .tokens import tokenize


def resolve_tokenizer(model, tokenizer=None):
    """The given tokenizer, else the one saved with the model (``config.name_or_path``)."""
    if tokenizer is not None and not isinstance(tokenizer, str):
        return tokenizer
    name = tokenizer or getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    if not name:
        raise TokenizerError(
            f"no tokenizer given and {type(model).__name__} does not say where it was loaded from "
            "(name_or_path is empty): pass the tokenizer explicitly."
        )
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name)
    except Exception as exc:
        raise TokenizerError(
            f"could not load a tokenizer from {name!r} ({type(exc).__name__}: {exc}); "
            "pass the tokenizer explicitly."
        ) from exc


def evaluate(model, tokenizer=None, corpus: str | Corpus = "wikitext2", seqlen: int | None = None, *,
             protocol: str = "torch-pruning", stride: int | None = None, max_windows: int | None = None,
             batch_size="auto", device=None, dtype=None, cache_dir=None, use_cache: bool = True,
             allow_long_seqlen: bool = False, progress=None, store: Store | None = None,
             order=None, stop=None, top1: bool = False) -> PerplexityResult:
    """Perplexity of ``model`` on ``corpus`` under ``protocol`` (default: Torch-Pruning's).

    Tokens are cached on disk (``cache_dir``, ``$PYTEST_LLMPPL_CACHE_DIR`` or the user cache);
    ``use_cache=False`` tokenizes afresh and writes nothing.  ``order``/``stop`` (used by early
    verdicts) evaluate windows in that order and may end the run early.  ``top1=True`` keeps
    each scored position's argmax in ``result.extra["top1"]`` (window -> int32 array).
    """
    tok = resolve_tokenizer(model, tokenizer)
    text = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
    if store is None and use_cache:
        store = Store(cache_dir)
    info: dict = {}
    ids = tokenize(text, tok, store if use_cache else None, info)
    seqlen = resolve_seqlen(model, seqlen, allow_long_seqlen)
    out = evaluate_ids(model, ids, seqlen=seqlen, protocol=protocol, stride=stride,
                       max_windows=max_windows, cap=text.max_windows, batch_size=batch_size,
                       device=device, dtype=dtype, progress=progress, order=order, stop=stop,
                       want_argmax=top1)
    return build_result(out, text, ids, seqlen, protocol, stride, info)


def build_result(out, corpus: Corpus, ids, seqlen: int, protocol: str, stride, info: dict) -> PerplexityResult:
    return PerplexityResult(
        ppl=ppl_from(out.window_nll, out.window_weight),
        corpus=corpus.name,
        protocol=protocol,
        seqlen=seqlen,
        stride=stride if protocol == "sliding" else None,
        n_tokens=int(len(ids)),
        n_windows=len(out.window_index),
        n_windows_total=out.extra["n_windows_total"],
        window_index=tuple(out.window_index),
        window_nll=tuple(out.window_nll),
        window_weight=tuple(out.window_weight),
        seconds=out.seconds,
        tokens_per_second=out.tokens_forwarded / out.seconds if out.seconds > 0 else 0.0,
        device=out.device,
        dtype=out.dtype,
        batch_size=out.batch_size,
        extra={**info, "head_path": out.head_path, **({"top1": out.top1} if out.top1 is not None else {})},
    )
