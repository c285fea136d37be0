"""A call, made concrete: tokenizer resolved, corpus loaded, tokens (cached), seqlen, the
device and dtype it will run with, and its identity; then run through the engine.

``prepare`` does everything that needs no forward, so bad input (a corpus shorter than a
window, a seqlen beyond the model's positions) fails before any compute, and the
identity exists before the cache is asked.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from ..errors import TokenizerError
from ..identity.spec import MeasurementSpec
from ..keep.store import Store
from .corpus import Corpus, load_corpus
from .perplexity_result import PerplexityResult
from .protocols import Protocol
from .windows import Window


class Prepared:
    """Everything a measurement needs except the forward passes.  The tokens are made on first
    use (from the store, else by tokenizing): a result the committed file serves needs none, so
    a fresh runner judges an unchanged model without tokenizing the corpus."""

    def __init__(self, tokenizer: Any, tokenizer_fp: str | None, corpus: Corpus, seqlen: int, protocol: Protocol,
                 stride: int | None, max_windows: int | None, store: Store | None, facts: Any = None):
        self.facts = facts  # model_facts.ModelFacts of the model it was prepared for
        self.tokenizer = tokenizer
        self.tokenizer_fp = tokenizer_fp  # known once identified; else the tokens compute it
        self.corpus = corpus
        self.seqlen = seqlen
        self.rules = protocol  # the protocol: its windows, stream and loss (``protocols/``)
        self.protocol = protocol.name
        self.stride = stride
        self.max_windows = max_windows
        self._store = store

    @cached_property
    def _tokens(self) -> tuple[Any, str, list[Window], list[int] | None]:
        from .tokens import tokenize, tokenize_documents

        lengths = None
        if self.corpus.documents:
            ids, lengths, source = tokenize_documents(self.corpus, self.tokenizer, self._store, self.tokenizer_fp)
        else:
            ids, source = tokenize(self.corpus, self.tokenizer, self._store, self.tokenizer_fp)
        ids, windows = self.rules.cut(ids, self.seqlen, self.tokenizer, self.stride, self.corpus.first_windows, lengths)
        return ids, source, windows, lengths

    @property
    def doc_lengths(self) -> list[int] | None:
        """Each document's length in the token stream (a document corpus: the lm-eval protocol)."""
        return self._tokens[3]

    @property
    def ids(self) -> Any:
        """1-D numpy array of token ids."""
        return self._tokens[0]

    @property
    def tokens_source(self) -> str:
        return self._tokens[1]

    @property
    def windows(self) -> list[Window]:
        """Every window of the corpus under the protocol (before any subset)."""
        return self._tokens[2]

    @property
    def n_windows_total(self) -> int:
        return len(self.windows)


def resolve_tokenizer(model: Any, tokenizer: Any = None) -> Any:
    """The given tokenizer, else the one saved with the model (``config.name_or_path``)."""
    if tokenizer is not None and not isinstance(tokenizer, str):
        return tokenizer
    config = getattr(model, "config", None)
    name = tokenizer or getattr(model, "name_or_path", None) or getattr(config, "_name_or_path", None)
    if not name:
        raise TokenizerError(
            f"no tokenizer given and {type(model).__name__} does not say where it was loaded from "
            "(name_or_path is empty): pass the tokenizer explicitly."
        )
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for "cannot load"
        raise TokenizerError(
            f"could not load a tokenizer from {name!r} ({type(exc).__name__}: {exc}); "
            "pass the tokenizer explicitly."
        ) from None


def prepare(model: Any, tokenizer: Any, corpus: str | Corpus, seqlen: int | None, *, protocol: str,
            stride: int | None, max_windows: int | None, store: Store | None,
            allow_long_seqlen: bool = False) -> Prepared:
    from .model_facts import describe
    from .protocols import get

    tok = resolve_tokenizer(model, tokenizer)
    rules = get(protocol)
    documents = rules.documents
    text = corpus if isinstance(corpus, Corpus) else load_corpus(corpus, documents=documents)
    if documents and not text.documents:
        from ..errors import CorpusError

        raise CorpusError(f"the lm-eval protocol needs a corpus of documents; {text.name} was loaded as one text: "
                          "pass its name or path instead.")
    facts = describe(model, seqlen, allow_long=allow_long_seqlen, lm_eval=documents, tokenizer=tok)
    seqlen = facts.seqlen
    return Prepared(tok, None, text, seqlen, rules, rules.stride(stride, seqlen),
                    max_windows, store, facts)


def prepare_and_identify(model: Any, tokenizer: Any, corpus: str | Corpus, seqlen: int | None, *, protocol: str,
                         stride: int | None, max_windows: int | None, store: Store | None, allow_long_seqlen: bool,
                         device: str | None, dtype: str | None) -> tuple[Prepared, MeasurementSpec]:
    """``prepare`` then ``identify`` (without tokens): what a fixture call knows before it is served
    or measured."""
    prepared = prepare(model, tokenizer, corpus, seqlen, protocol=protocol, stride=stride, max_windows=max_windows,
                       store=store, allow_long_seqlen=allow_long_seqlen)
    return prepared, identify(model, prepared, device, dtype, tokens=False)


def identify(model: Any, prepared: Prepared, device: str | None, dtype: str | None,
             tokens: bool = True) -> MeasurementSpec:
    """The identity of measuring ``model`` on ``prepared`` at ``device`` (resolved, never
    ``auto``; None = where the model is) in ``dtype`` (None = the weights' dtype).  Without
    ``tokens`` the corpus is not tokenized when it need not be (no window subset): the
    spec's ``n_windows_total`` (for messages, not part of the identity) is then 0 until
    someone fills it in."""
    runtime = prepared.facts
    if runtime is None:
        from .model_facts import describe

        runtime = describe(model, prepared.seqlen, allow_long=True)
    where = runtime.input_device if device is None or getattr(model, "hf_device_map", None) else device
    dtype = dtype or outer_autocast(str(where).split(":")[0], runtime.dtype)
    if prepared.max_windows and prepared.tokenizer_fp is None:  # a subset reads the tokens, keyed by it
        from ..identity.fingerprint import tokenizer_fingerprint

        prepared.tokenizer_fp = tokenizer_fingerprint(prepared.tokenizer)
    spec = MeasurementSpec.identify(
        model, prepared.tokenizer, prepared.tokenizer_fp,
        corpus=prepared.corpus.fingerprint,
        seqlen=prepared.seqlen,
        protocol=prepared.protocol,
        stride=prepared.stride,
        max_windows=_subset(prepared.max_windows, prepared.n_windows_total) if prepared.max_windows else None,
        device_type=str(where).split(":")[0],
        dtype=dtype or runtime.dtype,
        attn_implementation=runtime.attn_implementation,
        corpus_name=prepared.corpus.name,
        n_windows_total=prepared.n_windows_total if tokens or prepared.max_windows else 0,
    )
    prepared.tokenizer_fp = spec.tokenizer  # the tokens' cache key needs it: computed once
    return spec


def outer_autocast(device_type: str, weights: str) -> str | None:
    """The dtype of a ``torch.autocast`` the caller wrapped the call in, for the device type it
    runs on, where it is narrower than the weights: the forward runs in it, so that is what is
    measured (the same measurement as asking for that dtype)."""
    import torch

    try:
        if not torch.is_autocast_enabled(device_type):
            return None
        cast = torch.get_autocast_dtype(device_type)
        narrower = torch.finfo(cast).bits < torch.finfo(getattr(torch, weights)).bits
    except (AttributeError, RuntimeError, TypeError):  # an older torch, a device type autocast does not know
        return None
    return str(cast).replace("torch.", "") if narrower else None


def function_fingerprint(model: Any) -> tuple[str, str]:
    """The model's identity (``model_identity``: everything its forward reads) and why, if it
    could not be pinned down (the fingerprint is then unique to this call, so nothing is ever
    served for it)."""
    from ..identity.model_identity import model_identity

    found = model_identity(model)
    return found.digest, found.unpinned


def _subset(max_windows: int | None, total: int) -> int | None:
    """A subset that covers every window is the whole corpus: one identity for both."""
    return max_windows if max_windows and max_windows < total else None


def run(model: Any, prepared: Prepared, *, batch_size: Any = "auto", device: str | None = None,
        dtype: str | None = None, progress: Any = None, order: list[int] | None = None, stop: Any = None,
        top1: bool = False, identity: MeasurementSpec | None = None, keep_topk: int = 0,
        reference: PerplexityResult | None = None) -> PerplexityResult:
    """Forward the prepared windows through ``model`` and return the result; with ``keep_topk``
    it keeps the model's top-k (a baseline), with ``reference`` (a result that kept its top-k)
    the per-token divergence from that model."""
    from .engine import evaluate_ids
    from .perplexity_result import ppl_from

    out = evaluate_ids(model, prepared.ids, seqlen=prepared.seqlen, protocol=prepared.rules,
                       stride=prepared.stride, max_windows=prepared.max_windows,
                       first_windows=prepared.corpus.first_windows, doc_lengths=prepared.doc_lengths,
                       windows=prepared.windows, batch_size=batch_size, device=device,
                       dtype=dtype, progress=progress, order=order, stop=stop, want_argmax=top1,
                       keep_topk=keep_topk, reference=reference.topk if reference is not None else None,
                       reference_key=reference.identity.key if reference is not None and reference.identity else "")
    metrics = None
    if prepared.corpus.documents and len(out.window_index) == out.n_windows_total:
        import math

        from .lmeval import DocumentStats, LMEvalMetrics

        metrics = LMEvalMetrics.of(math.fsum(out.window_nll), DocumentStats.of(prepared.corpus.documents))
    return PerplexityResult(
        ppl=ppl_from(out.window_nll, out.window_weight),
        corpus=prepared.corpus.name,
        protocol=prepared.protocol,
        seqlen=prepared.seqlen,
        stride=prepared.stride,
        n_tokens=len(prepared.ids),
        n_windows=len(out.window_index),
        n_windows_total=out.n_windows_total,
        window_index=tuple(out.window_index),
        window_nll=tuple(out.window_nll),
        window_weight=tuple(out.window_weight),
        seconds=out.seconds,
        tokens_per_second=out.tokens_forwarded / out.seconds if out.seconds > 0 else 0.0,
        device=out.device,
        dtype=out.dtype,
        batch_size=out.batch_size,
        head_path=out.head_path,
        tokens_source=prepared.tokens_source,
        lm_eval=metrics,
        top1=out.top1,
        topk=out.topk,
        divergence=out.divergence,
        identity=identity,
        size=identity.size if identity is not None and identity.size is not None else _size(model),
    )


def _size(model: Any) -> Any:
    from ..identity.model_identity import unwrap_compiled
    from ..identity.tensors import size_facts

    return size_facts(unwrap_compiled(model))
