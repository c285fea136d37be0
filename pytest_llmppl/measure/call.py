"""One fixture call made concrete: its settings, its prepared corpus and its identity.

Everything after this (the sources, the judge, the committed file) reads the call, never the
fixture's raw arguments, so each question about the model and the corpus is asked once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import LLMPPLError
from ..settings import Settings

if TYPE_CHECKING:
    from ..identity.spec import MeasurementSpec
    from .measurement import Prepared
    from .perplexity_result import PerplexityResult


@dataclass
class Call:
    """``identity`` is known without the tokens; ``spec`` is the same with the corpus's window count,
    from the result that served the call (``learn_windows``) or, failing that, from the tokens."""

    settings: Settings
    prepared: Prepared
    identity: MeasurementSpec
    device: str | None
    model_name: str
    fixture: str = ""  # ppl_of, ppl_baseline or ppl_check
    test: str = ""
    keep_topk: int = 0  # a baseline keeps the dense model's top-k reference (for KL divergence)
    reference: PerplexityResult | None = None  # a check measured against this dense result's reference

    @property
    def label(self) -> str:
        """What a progress line names: ``ppl_check test_x.py::test_y``."""
        return f"{self.fixture} {self.test}".strip()

    @property
    def is_baseline(self) -> bool:
        return self.fixture == "ppl_baseline"

    @property
    def spec(self) -> MeasurementSpec:
        if not self.identity.n_windows_total:
            self.identity = dataclasses.replace(self.identity, n_windows_total=self.prepared.n_windows_total)
        return self.identity

    def learn_windows(self, n_windows_total: int) -> None:
        """The window count from a result that serves this call (no tokens needed)."""
        if not self.identity.n_windows_total:
            self.identity = dataclasses.replace(self.identity, n_windows_total=int(n_windows_total))


def make_call(model: Any, tokenizer: Any, settings: Settings, *, fixture: str, test: str, device: str | None,
              store: Any) -> Call:
    """Checks the arguments, prepares the corpus and identifies the model (no tokens yet)."""
    from .measurement import prepare_and_identify

    check_arguments(model, tokenizer, fixture)
    prepared, spec = prepare_and_identify(
        model, tokenizer, settings.corpus, settings.seqlen, protocol=settings.protocol, stride=settings.stride,
        max_windows=settings.max_windows, store=store, allow_long_seqlen=settings.allow_long_seqlen,
        device=device, dtype=None if settings.dtype == "auto" else settings.dtype)
    return Call(settings, prepared, spec, device, model_name(model), fixture, test)


def check_arguments(model: Any, tokenizer: Any, fixture: str) -> None:
    """The model first, then the tokenizer (or None, or a name to load it from): one message that
    names the fix rather than an AttributeError from deep inside."""
    def is_tokenizer(x: Any) -> bool:
        return hasattr(x, "get_vocab") and hasattr(x, "encode") and not hasattr(x, "parameters")

    if is_tokenizer(model) and hasattr(tokenizer, "parameters"):
        raise LLMPPLError(f"{fixture}(model, tokenizer): the arguments are swapped (got a {type(model).__name__} "
                          f"first and a {type(tokenizer).__name__} second): call {fixture}(model, tokenizer)")
    if not hasattr(model, "parameters") or not callable(model):
        raise LLMPPLError(f"{fixture}(model, tokenizer): the first argument must be the model (a torch.nn.Module "
                          f"causal LM), got {type(model).__name__}")
    if tokenizer is not None and not isinstance(tokenizer, str) and not hasattr(tokenizer, "encode"):
        raise LLMPPLError(f"{fixture}(model, tokenizer): the second argument must be the model's tokenizer (or "
                          f"its name, or None to load it from the model's path), got {type(tokenizer).__name__}")


def model_name(model: Any) -> str:
    name = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    return str(name or type(model).__name__)
