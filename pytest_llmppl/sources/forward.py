"""The last source, which always serves: a forward of the model, under the store's lock so xdist
workers needing the same result measure it once (the one that waited is served what the other
stored); a complete result is stored."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from ..judge.records import Source
from .served import Served

if TYPE_CHECKING:
    from ..keep.result_store import ResultStore
    from ..measure.call import Call
    from ..measure.perplexity_result import PerplexityResult
    from .memory import Memory
    from .reference import Divergences
    from .stored import Stored


class Forward:
    """``again``: the store's source, asked once more under the lock (another worker may have
    measured it while this one waited), or None when the store may not serve (``--ppl-remeasure``);
    ``progress``: (label) -> the engine's progress callback, or None."""

    def __init__(self, memory: Memory, results: ResultStore | None, again: Stored | None, run_id: str,
                 divergences: Divergences, progress: Any = None):
        self.memory = memory
        self.results = results
        self.again = again
        self.run_id = run_id
        self.divergences = divergences
        self.progress = progress

    def measure(self, model: Any, call: Call, order: list[int] | None = None, stop: Any = None,
                served_before: bool = False) -> Served:
        """A candidate measured against a dense reference (``call.reference``) comes with its KL
        divergence from it, kept beside its result.  ``served_before``: the chain served a result
        that lacked what the check needs (its KL): the store is not asked again, it would serve the same."""
        if self.results is None or call.spec.unpinned:
            result = self.forward(model, call, order, stop)
            return Served(result, Source.MEASURED, kl=self.divergences.measured(call, result))
        t0 = time.perf_counter()
        with self.results.lock(call.spec):
            found = self.again.serve(call) if self.again is not None and not served_before else None
            if found is not None:
                return dataclasses.replace(found, waited=time.perf_counter() - t0)
            result = self.forward(model, call, order, stop)
            kl = self.divergences.measured(call, result)  # None unless measured against a dense reference
            reference = call.reference
            dense = reference.identity.model if kl is not None and reference is not None and reference.identity \
                else None
            self.results.put(call.spec, result, run=self.run_id, kl=(dense, kl) if dense else None)
            return Served(result, Source.MEASURED, kl=kl)

    def forward(self, model: Any, call: Call, order: list[int] | None = None, stop: Any = None) -> PerplexityResult:
        from ..measure.measurement import run

        s = call.settings
        shown = self.progress(call.label) if self.progress is not None else None
        try:
            result = run(model, call.prepared, batch_size=s.batch_size, device=call.device,
                         dtype=call.spec.dtype, order=order, stop=stop, top1=True,
                         identity=call.spec, progress=shown, keep_topk=call.keep_topk, reference=call.reference)
        finally:
            if shown is not None:
                shown.close()
        self.memory.measured(call.spec, result)
        return result
