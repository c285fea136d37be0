"""The dense model's side of a check's KL divergence: its top-k reference, read or measured only
when a check needs it, and what is known of a candidate's divergence from it (identical weights,
this run, the store, the check's entry in the committed file)."""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import PPLFailure

if TYPE_CHECKING:
    from ..keep.result_store import ResultStore
    from ..measure.call import Call
    from ..measure.divergence import KLDivergence
    from ..measure.perplexity_result import PerplexityResult
    from .forward import Forward

ReferenceMaker = Callable[..., "PerplexityResult"]


class Divergences:
    """Candidates' KL statistics, by (candidate identity key, dense weights)."""

    def __init__(self, results: ResultStore | None):
        self.results = results
        self._known: dict[tuple[str, str], KLDivergence] = {}

    def remember_recorded(self, call: Call, recorded: Any) -> None:
        """The KL a committed entry recorded against the dense weights it names."""
        if isinstance(recorded, dict) and isinstance(recorded.get("dense_model_fingerprint"), str):
            from ..measure.divergence import KLDivergence

            self._known.setdefault((call.spec.key, recorded["dense_model_fingerprint"]),
                                   KLDivergence.from_json(recorded))

    def known(self, call: Call, base: PerplexityResult | None, result: PerplexityResult) -> KLDivergence | None:
        """A served candidate's KL against this dense model, when known."""
        if base is None or base.identity is None:
            return None
        dense = base.identity.model
        if dense == call.identity.model:
            from ..measure.divergence import TOP_K, KLDivergence
            from ..measure.protocols import get

            tokens = get(result.protocol).scored_tokens(list(result.window_weight))
            return KLDivergence.identical(TOP_K, int(tokens), result.n_windows)
        found = self._known.get((call.spec.key, dense))
        if found is None and self.results is not None:
            found = self.results.kl(call.spec, dense)
        return found

    def measured(self, call: Call, result: PerplexityResult) -> KLDivergence | None:
        """The KL statistics of a candidate just measured against ``call.reference``; remembered
        for this run (``Forward`` keeps them in the store beside the result)."""
        base = call.reference
        if result.divergence is None or base is None or base.identity is None:
            return None
        kl = result.kl
        if kl is not None and not result.subset:
            self._known[(call.spec.key, base.identity.model)] = kl
        return kl


def reference_maker(model: Any, call: Call, found: PerplexityResult, results: ResultStore | None,
                    forward: Forward, from_store: bool) -> ReferenceMaker:
    """A baseline served without the dense top-k gets it only when a check needs it: from the
    store when it kept it and may serve it (``from_store``; a measured check then reports KL),
    else, for a KL budget (``forward``), from one forward of the dense model if its weights are
    still the baseline's.  An unchanged candidate served with its recorded KL needs neither."""
    held = weakref.ref(model)  # never keeps a dense model alive that the test let go (GPU memory)
    read: list[Any] = []  # the store is read once per baseline

    def make(forward_allowed: bool = True) -> PerplexityResult:
        if not read:
            read.append(results.topk(call.spec) if results is not None and from_store else None)
        if read[0] is not None and read[0].covers(found.window_index):
            return dataclasses.replace(found, topk=read[0])
        if not forward_allowed:
            return found
        dense = _unchanged_dense(held(), call)
        measured = forward.forward(dense, call)
        if results is not None and measured.topk is not None:
            results.put_topk(call.spec, measured.topk)
        if measured.topk is None or not measured.topk.covers(found.window_index):
            return found
        read[0] = measured.topk
        return dataclasses.replace(found, topk=measured.topk)

    return make


def _unchanged_dense(dense: Any, call: Call) -> Any:
    """The baseline's dense model, still alive and still with the baseline's weights."""
    from ..measure.measurement import function_fingerprint

    why = "the KL budget needs the dense model's top-k, which is measured on first use, but"
    if dense is None:
        raise PPLFailure(f"ppl_check: {why} {call.model_name} was freed after ppl_baseline: keep it until the check, "
                         "or keep the local store between runs.")
    if function_fingerprint(dense)[0] != call.identity.model:
        raise PPLFailure(f"ppl_check: {why} {call.model_name} was changed after ppl_baseline (pruned in place?): "
                         "prune a copy (copy.deepcopy(model) or the ppl_pruned fixture), or keep the local store "
                         "between runs.")
    return dense
